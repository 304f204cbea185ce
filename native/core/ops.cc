#include "ops.h"

#include <cmath>
#include <sstream>

namespace krad {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

Status same_backend(const Tensor& a, const Tensor& b, const char* op) {
  if (a.backend() != b.backend())
    return Status::Error(Code::BACKEND_MISMATCH, std::string(op) + ": tensors live on different backends (" +
                                                     a.backend()->name() + " and " + b.backend()->name() + ")");
  return Status::Ok();
}

Status same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  if (a.dtype() != b.dtype())
    return Status::Error(Code::DTYPE_MISMATCH, std::string(op) + ": expected tensors of one dtype but got " +
                                                   dtype_name(a.dtype()) + " and " + dtype_name(b.dtype()));
  return Status::Ok();
}

Status compatible(const Tensor& a, const Tensor& b, const char* op) {
  KRAD_RETURN_IF_ERROR(same_backend(a, b, op));
  return same_dtype(a, b, op);
}

Status need_rank(const Tensor& t, int rank, const char* op, const char* what) {
  if (t.rank() != rank)
    return Status::Error(Code::SHAPE_MISMATCH, std::string(op) + ": expected " + what + " of rank " +
                                                   std::to_string(rank) + " but got " + t.describe());
  return Status::Ok();
}

Status need_square(const Tensor& t, const char* op, const char* what) {
  if (t.rank() != 2 || t.shape()[0] != t.shape()[1])
    return Status::Error(Code::SHAPE_MISMATCH, std::string(op) + ": expected " + what +
                                                   " to be a batch of square matrices but got " + t.describe());
  return Status::Ok();
}

Status batch_fits(int64_t b, int64_t target, const char* op, const char* what) {
  if (b != target && b != 1)
    return Status::Error(Code::SHAPE_MISMATCH, std::string(op) + ": batch of " + what + " is " + std::to_string(b) +
                                                   ", expected 1 or " + std::to_string(target));
  return Status::Ok();
}

Status need_coeffs(const std::vector<double>& c, int64_t batch, const char* op) {
  if (!c.empty() && static_cast<int64_t>(c.size()) != batch)
    return Status::Error(Code::SHAPE_MISMATCH, std::string(op) + ": expected " + std::to_string(batch) +
                                                   " per-item coefficients but got " + std::to_string(c.size()));
  return Status::Ok();
}

// Splits a rank-k item shape around `mode` into p = prod(before), q = dims[mode], r = prod(after).
void split3(const std::vector<int64_t>& dims, int mode, int64_t* p, int64_t* q, int64_t* r) {
  *p = 1;
  *r = 1;
  for (int i = 0; i < mode; ++i) *p *= dims[i];
  *q = dims[mode];
  for (size_t i = mode + 1; i < dims.size(); ++i) *r *= dims[i];
}

Status need_mode(const Tensor& g, int mode, const char* op) {
  if (g.rank() < 1 || mode < 0 || mode >= g.rank())
    return Status::Error(Code::INVALID_ARGUMENT, std::string(op) + ": mode " + std::to_string(mode) +
                                                     " is out of range for " + g.describe());
  return Status::Ok();
}

// Scratch buffer released at scope exit.
class Scratch {
 public:
  explicit Scratch(Backend* b) : b_(b) {}
  ~Scratch() {
    for (void* p : ptrs_) b_->release(p);
  }
  Status get(size_t bytes, void** out) {
    KRAD_RETURN_IF_ERROR(b_->allocate(bytes, out));
    ptrs_.push_back(*out);
    return Status::Ok();
  }

 private:
  Backend* b_;
  std::vector<void*> ptrs_;
};

}  // namespace

std::string Tensor::describe() const {
  std::ostringstream o;
  o << dtype_name(dtype_) << " batch " << batch_ << " of " << shape_str(shape_);
  return o.str();
}

Status checked_numel(int64_t batch, const std::vector<int64_t>& shape, int64_t* out) {
  const int64_t limit = int64_t(1) << 53;
  if (batch < 1 || batch > limit)
    return Status::Error(Code::INVALID_ARGUMENT, "batch must be an integer in [1, 2^53], got " + std::to_string(batch));
  int64_t n = batch;
  for (auto d : shape) {
    if (d < 1) return Status::Error(Code::INVALID_ARGUMENT, "dimensions must be >= 1, got " + shape_str(shape));
    if (d > limit / n)
      return Status::Error(Code::INVALID_ARGUMENT, "batch " + std::to_string(batch) + " of " + shape_str(shape) +
                                                       " has more than 2^53 elements");
    n *= d;
  }
  *out = n;
  return Status::Ok();
}

Status make_tensor(Backend* backend, DType dtype, int64_t batch, const std::vector<int64_t>& shape,
                   TensorPtr* out) {
  int64_t n = 0;
  KRAD_RETURN_IF_ERROR(checked_numel(batch, shape, &n));
  if (n > (int64_t(1) << 40)) return Status::Error(Code::INVALID_ARGUMENT, "tensor too large: " + shape_str(shape));
  size_t bytes = static_cast<size_t>(n) * dtype_size(dtype);
  void* p = nullptr;
  KRAD_RETURN_IF_ERROR(backend->allocate(bytes, &p));
  auto storage = std::make_shared<Storage>(backend, p, bytes);
  KRAD_RETURN_IF_ERROR(backend->fill(dtype, p, static_cast<size_t>(n), 0.0));
  *out = std::make_shared<Tensor>(backend, dtype, batch, shape, std::move(storage));
  return Status::Ok();
}

Status reshape(const TensorPtr& t, int64_t batch, const std::vector<int64_t>& shape, TensorPtr* out) {
  int64_t n = 0;
  Status s = checked_numel(batch, shape, &n);
  if (!s.ok()) return Status::Error(s.code, "reshape: " + s.message);
  if (n != t->numel())
    return Status::Error(Code::SHAPE_MISMATCH, "reshape: cannot view " + t->describe() + " as batch " +
                                                   std::to_string(batch) + " of " + shape_str(shape));
  *out = std::make_shared<Tensor>(t->backend(), t->dtype(), batch, shape, t->storage());
  return Status::Ok();
}

Status gemm(const Tensor& a, const Tensor& b, Tensor& c, bool ta, bool tb, double alpha, double beta) {
  const char* op = "gemm";
  KRAD_RETURN_IF_ERROR(compatible(a, b, op));
  KRAD_RETURN_IF_ERROR(compatible(a, c, op));
  KRAD_RETURN_IF_ERROR(need_rank(a, 2, op, "A"));
  KRAD_RETURN_IF_ERROR(need_rank(b, 2, op, "B"));
  KRAD_RETURN_IF_ERROR(need_rank(c, 2, op, "C"));
  int64_t m = ta ? a.shape()[1] : a.shape()[0];
  int64_t k = ta ? a.shape()[0] : a.shape()[1];
  int64_t kb = tb ? b.shape()[1] : b.shape()[0];
  int64_t n = tb ? b.shape()[0] : b.shape()[1];
  if (k != kb || c.shape()[0] != m || c.shape()[1] != n)
    return Status::Error(Code::SHAPE_MISMATCH, std::string("gemm: op(A) is ") + std::to_string(m) + "x" +
                                                   std::to_string(k) + ", op(B) is " + std::to_string(kb) + "x" +
                                                   std::to_string(n) + ", C is " + c.describe());
  KRAD_RETURN_IF_ERROR(batch_fits(a.batch(), c.batch(), op, "A"));
  KRAD_RETURN_IF_ERROR(batch_fits(b.batch(), c.batch(), op, "B"));
  if (c.data() == a.data() || c.data() == b.data())
    return Status::Error(Code::INVALID_ARGUMENT, "gemm: C must not alias A or B");
  return c.backend()->gemm(c.dtype(), ta, tb, m, n, k, alpha, a.data(), a.shape()[1],
                           a.batch() == 1 ? 0 : a.item_numel(), b.data(), b.shape()[1],
                           b.batch() == 1 ? 0 : b.item_numel(), beta, c.data(), n, c.item_numel(), c.batch());
}

Status gram(const Tensor& g, int mode, Tensor& h, double alpha, double beta) {
  const char* op = "gram";
  KRAD_RETURN_IF_ERROR(compatible(g, h, op));
  KRAD_RETURN_IF_ERROR(need_mode(g, mode, op));
  int64_t p, q, r;
  split3(g.shape(), mode, &p, &q, &r);
  KRAD_RETURN_IF_ERROR(need_square(h, op, "H"));
  if (h.shape()[0] != q || h.batch() != g.batch())
    return Status::Error(Code::SHAPE_MISMATCH, "gram: H must be batch " + std::to_string(g.batch()) + " of [" +
                                                   std::to_string(q) + ", " + std::to_string(q) + "] but is " +
                                                   h.describe());
  if (h.data() == g.data()) return Status::Error(Code::INVALID_ARGUMENT, "gram: H must not alias G");
  Backend* be = g.backend();
  const int64_t item = g.item_numel();
  if (p == 1)  // G is q x r: H = G G^T
    return be->syrk(g.dtype(), false, q, r, alpha, g.data(), r, item, beta, h.data(), g.batch());
  if (r == 1)  // G is p x q: H = G^T G
    return be->syrk(g.dtype(), true, q, p, alpha, g.data(), q, item, beta, h.data(), g.batch());
  Scratch s(be);
  void* t = nullptr;
  KRAD_RETURN_IF_ERROR(s.get(g.bytes(), &t));
  KRAD_RETURN_IF_ERROR(be->transpose3(g.dtype(), g.data(), t, g.batch(), p, q, r));  // -> q x (p r)
  return be->syrk(g.dtype(), false, q, p * r, alpha, t, p * r, item, beta, h.data(), g.batch());
}

Status mode_product(const Tensor& g, int mode, const Tensor& m, Tensor& out, bool tm) {
  const char* op = "mode_product";
  KRAD_RETURN_IF_ERROR(compatible(g, m, op));
  KRAD_RETURN_IF_ERROR(compatible(g, out, op));
  KRAD_RETURN_IF_ERROR(need_mode(g, mode, op));
  KRAD_RETURN_IF_ERROR(need_rank(m, 2, op, "M"));
  int64_t p, q, r;
  split3(g.shape(), mode, &p, &q, &r);
  const int64_t n_out = tm ? m.shape()[1] : m.shape()[0];
  const int64_t n_in = tm ? m.shape()[0] : m.shape()[1];
  if (n_in != q)
    return Status::Error(Code::SHAPE_MISMATCH, "mode_product: M contracts a dimension of " + std::to_string(n_in) +
                                                   " but mode " + std::to_string(mode) + " of G has " +
                                                   std::to_string(q) + " (" + g.describe() + ")");
  std::vector<int64_t> want = g.shape();
  want[mode] = n_out;
  if (out.shape() != want || out.batch() != g.batch())
    return Status::Error(Code::SHAPE_MISMATCH, "mode_product: out must be batch " + std::to_string(g.batch()) +
                                                   " of " + shape_str(want) + " but is " + out.describe());
  KRAD_RETURN_IF_ERROR(batch_fits(m.batch(), g.batch(), op, "M"));
  if (out.data() == g.data() || out.data() == m.data())
    return Status::Error(Code::INVALID_ARGUMENT, "mode_product: out must not alias G or M");
  Backend* be = g.backend();
  const DType dt = g.dtype();
  const int64_t sm = m.batch() == 1 ? 0 : m.item_numel();
  const int64_t gi = g.item_numel(), oi = out.item_numel();
  const int64_t ldm = m.shape()[1];
  if (p == 1) {  // G: q x r, out: n_out x r = op(M) G
    return be->gemm(dt, tm, false, n_out, r, q, 1.0, m.data(), ldm, sm, g.data(), r, gi, 0.0, out.data(), r, oi,
                    g.batch());
  }
  if (r == 1) {  // G: p x q, out: p x n_out = G op(M)^T
    return be->gemm(dt, false, !tm, p, n_out, q, 1.0, g.data(), q, gi, m.data(), ldm, sm, 0.0, out.data(), n_out,
                    oi, g.batch());
  }
  Scratch s(be);
  void *t = nullptr, *y = nullptr;
  KRAD_RETURN_IF_ERROR(s.get(g.bytes(), &t));
  KRAD_RETURN_IF_ERROR(s.get(out.bytes(), &y));
  KRAD_RETURN_IF_ERROR(be->transpose3(dt, g.data(), t, g.batch(), p, q, r));  // q x (p r)
  KRAD_RETURN_IF_ERROR(be->gemm(dt, tm, false, n_out, p * r, q, 1.0, m.data(), ldm, sm, t, p * r, gi, 0.0, y,
                                p * r, oi, g.batch()));                      // n_out x (p r)
  return be->transpose3(dt, y, out.data(), g.batch(), n_out, p, r);         // p x n_out x r
}

Status eigh(const Tensor& a, Tensor& w, Tensor& v, std::vector<int>* info) {
  const char* op = "eigh";
  KRAD_RETURN_IF_ERROR(compatible(a, w, op));
  KRAD_RETURN_IF_ERROR(compatible(a, v, op));
  KRAD_RETURN_IF_ERROR(need_square(a, op, "A"));
  const int64_t n = a.shape()[0];
  if (w.rank() != 1 || w.shape()[0] != n || w.batch() != a.batch())
    return Status::Error(Code::SHAPE_MISMATCH, "eigh: W must be batch " + std::to_string(a.batch()) + " of [" +
                                                   std::to_string(n) + "] but is " + w.describe());
  if (v.shape() != a.shape() || v.batch() != a.batch())
    return Status::Error(Code::SHAPE_MISMATCH, "eigh: V must have A's shape " + a.describe() + " but is " +
                                                   v.describe());
  return a.backend()->syevd(a.dtype(), a.data(), w.data(), v.data(), n, a.batch(), info);
}

Status matpow(const Tensor& a, double p, double floor, double ridge, Tensor& out, std::vector<int>* info) {
  const char* op = "matpow";
  KRAD_RETURN_IF_ERROR(compatible(a, out, op));
  KRAD_RETURN_IF_ERROR(need_square(a, op, "A"));
  if (out.shape() != a.shape() || out.batch() != a.batch())
    return Status::Error(Code::SHAPE_MISMATCH, "matpow: out must have A's shape " + a.describe() + " but is " +
                                                   out.describe());
  if (!std::isfinite(p) || !std::isfinite(floor) || !std::isfinite(ridge))
    return Status::Error(Code::INVALID_ARGUMENT, "matpow: exponent, floor and ridge must be finite");
  if (p < 0 && !(floor > 0))
    return Status::Error(Code::INVALID_ARGUMENT, "matpow: a negative exponent needs an eigenvalue floor > 0");
  Backend* be = a.backend();
  const DType dt = a.dtype();
  const int64_t n = a.shape()[0], b = a.batch(), nn = n * n;
  const size_t mat_bytes = a.bytes(), es = dtype_size(dt);
  Scratch s(be);
  void *a2, *w, *v, *vs, *res;
  KRAD_RETURN_IF_ERROR(s.get(mat_bytes, &a2));
  KRAD_RETURN_IF_ERROR(s.get(static_cast<size_t>(n * b) * es, &w));
  KRAD_RETURN_IF_ERROR(s.get(mat_bytes, &v));
  KRAD_RETURN_IF_ERROR(s.get(mat_bytes, &vs));
  KRAD_RETURN_IF_ERROR(s.get(mat_bytes, &res));
  KRAD_RETURN_IF_ERROR(be->copy(a2, a.data(), mat_bytes));
  if (ridge != 0) KRAD_RETURN_IF_ERROR(be->add_identity(dt, a2, n, b, nullptr, ridge));
  KRAD_RETURN_IF_ERROR(be->syevd(dt, a2, w, v, n, b, info));
  KRAD_RETURN_IF_ERROR(be->eig_scale(dt, v, w, vs, n, b, p, floor));
  KRAD_RETURN_IF_ERROR(be->gemm(dt, false, true, n, n, n, 1.0, vs, n, nn, v, n, nn, 0.0, res, n, nn, b));
  // A converged eigh does not make the power finite: an eigenvalue at a floor that is 0 in
  // this dtype with p < 0, or max(w, floor)^p past the dtype's range, gives Inf/NaN. Such
  // an item counts as failed, and `out` keeps its previous contents.
  std::vector<uint8_t> finite;
  KRAD_RETURN_IF_ERROR(be->all_finite(dt, res, b, nn, &finite));
  for (int64_t i = 0; i < b; ++i)
    if ((*info)[i] == 0 && !finite[i]) (*info)[i] = kNonFiniteResult;
  bool all_ok = true;
  for (int x : *info) all_ok = all_ok && x == 0;
  if (all_ok) return be->copy(out.data(), res, mat_bytes);
  for (int64_t i = 0; i < b; ++i) {
    if ((*info)[i] != 0) continue;
    KRAD_RETURN_IF_ERROR(be->copy(static_cast<char*>(out.data()) + i * nn * es,
                                  static_cast<char*>(res) + i * nn * es, nn * es));
  }
  return Status::Ok();
}

namespace {
Status check_axpby(const Tensor& x, const Tensor& y) {
  KRAD_RETURN_IF_ERROR(compatible(x, y, "axpby"));
  if (x.batch() != y.batch() || x.item_numel() != y.item_numel())
    return Status::Error(Code::SHAPE_MISMATCH, "axpby: x is " + x.describe() + " but y is " + y.describe());
  return Status::Ok();
}
Status check_copy(const Tensor& src, const Tensor& dst) {
  KRAD_RETURN_IF_ERROR(same_backend(src, dst, "copy"));
  if (src.numel() != dst.numel())
    return Status::Error(Code::SHAPE_MISMATCH, "copy: " + src.describe() + " into " + dst.describe() +
                                                   " (element counts differ)");
  return Status::Ok();
}
Status check_mul_acc(const Tensor& x, const Tensor& y, const Tensor& acc) {
  KRAD_RETURN_IF_ERROR(compatible(x, acc, "mul_acc"));
  KRAD_RETURN_IF_ERROR(compatible(y, acc, "mul_acc"));
  if (x.numel() != acc.numel() || y.numel() != acc.numel())
    return Status::Error(Code::SHAPE_MISMATCH, "mul_acc: element counts differ (" + x.describe() + ", " +
                                                   y.describe() + ", " + acc.describe() + ")");
  return Status::Ok();
}
Status check_div_sqrt(const Tensor& x, const Tensor& acc, const Tensor& out) {
  KRAD_RETURN_IF_ERROR(compatible(x, acc, "div_sqrt"));
  KRAD_RETURN_IF_ERROR(compatible(x, out, "div_sqrt"));
  if (x.numel() != acc.numel() || x.numel() != out.numel())
    return Status::Error(Code::SHAPE_MISMATCH, "div_sqrt: element counts differ (" + x.describe() + ", " +
                                                   acc.describe() + ", " + out.describe() + ")");
  return Status::Ok();
}
Status check_norm_ratio(const Tensor& d, const Tensor& a, double eps) {
  KRAD_RETURN_IF_ERROR(compatible(d, a, "scale_by_norm_ratio"));
  if (d.batch() != a.batch() || d.item_numel() != a.item_numel())
    return Status::Error(Code::SHAPE_MISMATCH, "scale_by_norm_ratio: d is " + d.describe() + " but a is " + a.describe());
  if (!(eps >= 0)) return Status::Error(Code::INVALID_ARGUMENT, "scale_by_norm_ratio: eps must be >= 0");
  return Status::Ok();
}
}  // namespace

Status axpby(const Tensor& x, Tensor& y, const std::vector<double>& alphas, double alpha,
             const std::vector<double>& betas, double beta) {
  const char* op = "axpby";
  KRAD_RETURN_IF_ERROR(check_axpby(x, y));
  KRAD_RETURN_IF_ERROR(need_coeffs(alphas, y.batch(), op));
  KRAD_RETURN_IF_ERROR(need_coeffs(betas, y.batch(), op));
  return y.backend()->axpby(y.dtype(), y.batch(), y.item_numel(), alphas.empty() ? nullptr : alphas.data(), alpha,
                            x.data(), betas.empty() ? nullptr : betas.data(), beta, y.data());
}

Status scale(Tensor& x, const std::vector<double>& alphas, double alpha) {
  KRAD_RETURN_IF_ERROR(need_coeffs(alphas, x.batch(), "scale"));
  // y = 0 * y + alpha y: axpby with x = y reads and writes the same element only.
  return x.backend()->axpby(x.dtype(), x.batch(), x.item_numel(), nullptr, 0.0, x.data(),
                            alphas.empty() ? nullptr : alphas.data(), alpha, x.data());
}

Status add_identity(Tensor& a, const std::vector<double>& alphas, double alpha) {
  KRAD_RETURN_IF_ERROR(need_square(a, "add_identity", "A"));
  KRAD_RETURN_IF_ERROR(need_coeffs(alphas, a.batch(), "add_identity"));
  return a.backend()->add_identity(a.dtype(), a.data(), a.shape()[0], a.batch(),
                                   alphas.empty() ? nullptr : alphas.data(), alpha);
}

Status symmetrize(Tensor& a) {
  KRAD_RETURN_IF_ERROR(need_square(a, "symmetrize", "A"));
  return a.backend()->symmetrize(a.dtype(), a.data(), a.shape()[0], a.batch());
}

Status copy(const Tensor& src, Tensor& dst) {
  KRAD_RETURN_IF_ERROR(check_copy(src, dst));
  if (src.data() == dst.data() && src.dtype() == dst.dtype()) return Status::Ok();
  if (src.dtype() == dst.dtype()) return dst.backend()->copy(dst.data(), src.data(), src.bytes());
  return dst.backend()->cast(src.dtype(), src.data(), dst.dtype(), dst.data(), static_cast<size_t>(src.numel()));
}

Status fill(Tensor& x, double value) {
  return x.backend()->fill(x.dtype(), x.data(), static_cast<size_t>(x.numel()), value);
}

Status mul_acc(const Tensor& x, const Tensor& y, Tensor& acc, double a, double b) {
  KRAD_RETURN_IF_ERROR(check_mul_acc(x, y, acc));
  return acc.backend()->mul_acc(acc.dtype(), static_cast<size_t>(acc.numel()), a, b, x.data(), y.data(), acc.data());
}

Status div_sqrt(const Tensor& x, const Tensor& acc, Tensor& out, double scale, double eps) {
  KRAD_RETURN_IF_ERROR(check_div_sqrt(x, acc, out));
  return out.backend()->div_sqrt(out.dtype(), static_cast<size_t>(out.numel()), x.data(), acc.data(), scale, eps,
                                 out.data());
}

Status dot(const Tensor& x, const Tensor& y, std::vector<double>* out) {
  KRAD_RETURN_IF_ERROR(compatible(x, y, "dot"));
  if (x.batch() != y.batch() || x.item_numel() != y.item_numel())
    return Status::Error(Code::SHAPE_MISMATCH, "dot: x is " + x.describe() + " but y is " + y.describe());
  return x.backend()->dot(x.dtype(), x.data(), y.data(), x.batch(), x.item_numel(), out);
}

Status frob_norm(const Tensor& x, std::vector<double>* out) {
  KRAD_RETURN_IF_ERROR(x.backend()->dot(x.dtype(), x.data(), x.data(), x.batch(), x.item_numel(), out));
  for (auto& v : *out) v = std::sqrt(v);
  return Status::Ok();
}

Status trace(const Tensor& a, std::vector<double>* out) {
  KRAD_RETURN_IF_ERROR(need_square(a, "trace", "A"));
  return a.backend()->trace(a.dtype(), a.data(), a.shape()[0], a.batch(), out);
}

Status all_finite(const Tensor& x, std::vector<uint8_t>* out) {
  return x.backend()->all_finite(x.dtype(), x.data(), x.batch(), x.item_numel(), out);
}

Status scale_by_norm_ratio(Tensor& d, const Tensor& a, double eps) {
  KRAD_RETURN_IF_ERROR(check_norm_ratio(d, a, eps));
  return d.backend()->scale_by_norm_ratio(d.dtype(), d.data(), a.data(), d.batch(), d.item_numel(), eps);
}

Status inverse_update(Tensor& l, const Tensor& t, const Tensor& m, Backend::Normalizer kind) {
  const char* op = "inverse_update";
  KRAD_RETURN_IF_ERROR(compatible(l, t, op));
  KRAD_RETURN_IF_ERROR(compatible(l, m, op));
  KRAD_RETURN_IF_ERROR(need_square(l, op, "L"));
  if (t.shape() != l.shape() || m.shape() != l.shape() || t.batch() != l.batch() || m.batch() != l.batch())
    return Status::Error(Code::SHAPE_MISMATCH, "inverse_update: L, T and M must have one shape, got " + l.describe() +
                                                   ", " + t.describe() + ", " + m.describe());
  if (l.data() == t.data() || l.data() == m.data())
    return Status::Error(Code::INVALID_ARGUMENT, "inverse_update: L must not alias T or M");
  return l.backend()->inverse_update(l.dtype(), l.data(), t.data(), m.data(), l.shape()[0], l.batch(), kind);
}

Status all_finite_many(const std::vector<const Tensor*>& xs, std::vector<uint8_t>* out) {
  out->clear();
  if (xs.empty()) return Status::Ok();
  std::vector<DType> dts;
  std::vector<const void*> ptrs;
  std::vector<int64_t> counts;
  for (const Tensor* x : xs) {
    KRAD_RETURN_IF_ERROR(same_backend(*xs[0], *x, "all_finite_many"));
    dts.push_back(x->dtype());
    ptrs.push_back(x->data());
    counts.push_back(x->numel());
  }
  return xs[0]->backend()->all_finite_many(dts, ptrs, counts, out);
}

namespace {
Status check_boxes(const Tensor& full, const Tensor& blocks, const std::vector<int64_t>& offsets, int64_t first) {
  const char* op = "boxes";
  KRAD_RETURN_IF_ERROR(compatible(full, blocks, op));
  const int r = full.rank();
  if (full.batch() != 1)
    return Status::Error(Code::SHAPE_MISMATCH, "boxes: the full tensor must have batch 1, got " + full.describe());
  if (blocks.rank() != r)
    return Status::Error(Code::SHAPE_MISMATCH, "boxes: blocks " + blocks.describe() + " must have the rank of " +
                                                   full.describe());
  if (r == 0 || offsets.size() % r != 0)
    return Status::Error(Code::SHAPE_MISMATCH, "boxes: expected rank-" + std::to_string(r) +
                                                   " offsets per box but got " + std::to_string(offsets.size()) + " numbers");
  const int64_t nbox = static_cast<int64_t>(offsets.size()) / r;
  if (first < 0 || first + nbox > blocks.batch())
    return Status::Error(Code::SHAPE_MISMATCH, "boxes: items " + std::to_string(first) + ".." +
                                                   std::to_string(first + nbox - 1) + " do not exist in " + blocks.describe());
  for (int64_t j = 0; j < nbox; ++j)
    for (int i = 0; i < r; ++i) {
      int64_t o = offsets[j * r + i];
      if (o < 0 || o + blocks.shape()[i] > full.shape()[i])
        return Status::Error(Code::INVALID_ARGUMENT, "boxes: box " + std::to_string(j) + " at offset " +
                                                         std::to_string(o) + " in dim " + std::to_string(i) +
                                                         " overruns " + full.describe());
    }
  if (full.data() == blocks.data()) return Status::Error(Code::INVALID_ARGUMENT, "boxes: tensors must not alias");
  return Status::Ok();
}

// The multi-tensor forms: every entry is checked (same backend as the first, then the
// single op's own checks) before any runs, so a bad entry changes nothing.
template <class Check, class Run>
Status for_all(const char* op, size_t n, const std::vector<const Tensor*>& all, Check check, Run run) {
  for (const Tensor* t : all) KRAD_RETURN_IF_ERROR(same_backend(*all[0], *t, op));
  for (size_t i = 0; i < n; ++i) {
    Status s = check(i);
    if (!s.ok()) return Status::Error(s.code, std::string(op) + ": entry " + std::to_string(i) + ": " + s.message, (long long)i);
  }
  for (size_t i = 0; i < n; ++i) KRAD_RETURN_IF_ERROR(run(i));
  return Status::Ok();
}
Status need_lengths(const char* op, size_t n, std::initializer_list<size_t> others) {
  for (size_t m : others)
    if (m != n)
      return Status::Error(Code::SHAPE_MISMATCH, std::string(op) + ": the tensor lists have different lengths (" +
                                                     std::to_string(n) + " and " + std::to_string(m) + ")");
  return Status::Ok();
}
template <class... L>
std::vector<const Tensor*> joined(const L&... lists) {
  std::vector<const Tensor*> out;
  (out.insert(out.end(), lists.begin(), lists.end()), ...);
  return out;
}
// Checks every entry, then runs the backend's fused elementwise form over one span per entry.
template <class Check, class SpanOf>
Status elementwise_many(const char* op, Backend::Multi m, size_t n, const std::vector<const Tensor*>& all, Check check,
                        SpanOf span_of, double a, double b) {
  std::vector<Backend::Span> spans;
  KRAD_RETURN_IF_ERROR(for_all(op, n, all, check, [&](size_t i) {
    spans.push_back(span_of(i));
    return Status::Ok();
  }));
  return spans.empty() ? Status::Ok() : all[0]->backend()->multi_elementwise(m, spans, a, b);
}
}  // namespace

Status boxes(Tensor& full, Tensor& blocks, const std::vector<int64_t>& offsets, bool scatter, int64_t first) {
  KRAD_RETURN_IF_ERROR(check_boxes(full, blocks, offsets, first));
  char* dst = static_cast<char*>(blocks.data()) + first * blocks.item_numel() * dtype_size(blocks.dtype());
  return full.backend()->boxes(full.dtype(), full.data(), full.shape(), blocks.shape(), offsets, dst, scatter);
}

Status axpby_many(const std::vector<const Tensor*>& xs, const std::vector<Tensor*>& ys, double alpha, double beta) {
  const char* op = "axpby_many";
  KRAD_RETURN_IF_ERROR(need_lengths(op, xs.size(), {ys.size()}));
  return elementwise_many(
      op, Backend::Multi::AXPBY, xs.size(), joined(xs, ys), [&](size_t i) { return check_axpby(*xs[i], *ys[i]); },
      [&](size_t i) { return Backend::Span{ys[i]->dtype(), xs[i]->data(), nullptr, ys[i]->data(), ys[i]->numel()}; },
      alpha, beta);
}

Status copy_many(const std::vector<const Tensor*>& srcs, const std::vector<Tensor*>& dsts) {
  const char* op = "copy_many";
  KRAD_RETURN_IF_ERROR(need_lengths(op, srcs.size(), {dsts.size()}));
  std::vector<Backend::Span> spans;  // same-dtype copies, fused; casts run one by one
  KRAD_RETURN_IF_ERROR(for_all(
      op, srcs.size(), joined(srcs, dsts), [&](size_t i) { return check_copy(*srcs[i], *dsts[i]); },
      [&](size_t i) {
        const Tensor& s = *srcs[i];
        Tensor& d = *dsts[i];
        if (s.dtype() != d.dtype()) return copy(s, d);
        if (s.data() != d.data()) spans.push_back({d.dtype(), s.data(), nullptr, d.data(), d.numel()});
        return Status::Ok();
      }));
  return spans.empty() ? Status::Ok() : srcs[0]->backend()->multi_elementwise(Backend::Multi::COPY, spans, 0, 0);
}

Status mul_acc_many(const std::vector<const Tensor*>& xs, const std::vector<const Tensor*>& ys,
                    const std::vector<Tensor*>& accs, double a, double b) {
  const char* op = "mul_acc_many";
  KRAD_RETURN_IF_ERROR(need_lengths(op, xs.size(), {ys.size(), accs.size()}));
  return elementwise_many(
      op, Backend::Multi::MUL_ACC, xs.size(), joined(xs, ys, accs),
      [&](size_t i) { return check_mul_acc(*xs[i], *ys[i], *accs[i]); },
      [&](size_t i) {
        return Backend::Span{accs[i]->dtype(), xs[i]->data(), ys[i]->data(), accs[i]->data(), accs[i]->numel()};
      },
      a, b);
}

Status div_sqrt_many(const std::vector<const Tensor*>& xs, const std::vector<const Tensor*>& accs,
                     const std::vector<Tensor*>& outs, double scale, double eps) {
  const char* op = "div_sqrt_many";
  KRAD_RETURN_IF_ERROR(need_lengths(op, xs.size(), {accs.size(), outs.size()}));
  return elementwise_many(
      op, Backend::Multi::DIV_SQRT, xs.size(), joined(xs, accs, outs),
      [&](size_t i) { return check_div_sqrt(*xs[i], *accs[i], *outs[i]); },
      [&](size_t i) {
        return Backend::Span{outs[i]->dtype(), xs[i]->data(), accs[i]->data(), outs[i]->data(), outs[i]->numel()};
      },
      scale, eps);
}

Status scale_by_norm_ratio_many(const std::vector<Tensor*>& ds, const std::vector<const Tensor*>& as, double eps) {
  const char* op = "scale_by_norm_ratio_many";
  KRAD_RETURN_IF_ERROR(need_lengths(op, ds.size(), {as.size()}));
  std::vector<Backend::Span> spans;  // one per item
  KRAD_RETURN_IF_ERROR(for_all(
      op, ds.size(), joined(ds, as), [&](size_t i) { return check_norm_ratio(*ds[i], *as[i], eps); },
      [&](size_t i) {
        const Tensor& d = *ds[i];
        const size_t item = static_cast<size_t>(d.item_numel()) * dtype_size(d.dtype());
        for (int64_t b = 0; b < d.batch(); ++b)
          spans.push_back({d.dtype(), static_cast<const char*>(as[i]->data()) + b * item, nullptr,
                           static_cast<char*>(d.data()) + b * item, d.item_numel()});
        return Status::Ok();
      }));
  return spans.empty() ? Status::Ok() : ds[0]->backend()->multi_norm_ratio(spans, eps);
}

Status boxes_many(const std::vector<Tensor*>& fulls, Tensor& blocks, const std::vector<std::vector<int64_t>>& offsets,
                  const std::vector<int64_t>& firsts, bool scatter) {
  const char* op = "boxes_many";
  KRAD_RETURN_IF_ERROR(need_lengths(op, fulls.size(), {offsets.size(), firsts.size()}));
  std::vector<const Tensor*> all = joined(fulls);
  all.push_back(&blocks);
  std::vector<Backend::BoxEntry> entries;
  const size_t item = static_cast<size_t>(blocks.item_numel()) * dtype_size(blocks.dtype());
  KRAD_RETURN_IF_ERROR(for_all(
      op, fulls.size(), all, [&](size_t i) { return check_boxes(*fulls[i], blocks, offsets[i], firsts[i]); },
      [&](size_t i) {
        entries.push_back({fulls[i]->data(), fulls[i]->shape(), &offsets[i],
                           static_cast<char*>(blocks.data()) + firsts[i] * item});
        return Status::Ok();
      }));
  if (entries.empty()) return Status::Ok();
  return blocks.backend()->boxes_many(blocks.dtype(), blocks.shape(), entries, scatter);
}

namespace {
Status same_all(const std::vector<const Tensor*>& ts, const char* op) {
  for (const Tensor* t : ts) {
    if (!t) continue;
    KRAD_RETURN_IF_ERROR(compatible(*ts[0], *t, op));
    if (t->numel() != ts[0]->numel())
      return Status::Error(Code::SHAPE_MISMATCH, std::string(op) + ": element counts differ (" + ts[0]->describe() +
                                                     " and " + t->describe() + ")");
  }
  return Status::Ok();
}
// Entry-wise check with the index in the message (nothing runs when any entry is bad).
template <class Check>
Status check_entries(const char* op, size_t n, Check check) {
  for (size_t i = 0; i < n; ++i) {
    Status s = check(i);
    if (!s.ok()) return Status::Error(s.code, std::string(op) + ": entry " + std::to_string(i) + ": " + s.message, (long long)i);
  }
  return Status::Ok();
}
Status need(bool ok, const char* what) {
  return ok ? Status::Ok() : Status::Error(Code::INVALID_ARGUMENT, what);
}
}  // namespace

Status update_many(const std::vector<UpdateEntry>& es, const Backend::UpdateParams& p, std::vector<uint8_t>* finite) {
  finite->clear();
  if (es.empty()) return Status::Ok();
  const bool mom = p.mu > 0;
  KRAD_RETURN_IF_ERROR(check_entries("update_many", es.size(), [&](size_t i) {
    const UpdateEntry& e = es[i];
    KRAD_RETURN_IF_ERROR(need(e.d && e.w && e.w_out, "direction, parameter and output are required"));
    KRAD_RETURN_IF_ERROR(need(mom == (e.m != nullptr && e.m_out != nullptr), "momentum buffers must be given exactly when momentum > 0"));
    KRAD_RETURN_IF_ERROR(need(p.ext == (e.u != nullptr), "an external direction must be given exactly in the external mode"));
    KRAD_RETURN_IF_ERROR(same_all({e.d, e.w, e.w_out, e.m, e.m_out, e.u}, "update_many"));
    return same_backend(*es[0].d, *e.d, "update_many");
  }));
  std::vector<Backend::UpdateSpan> spans;
  for (const UpdateEntry& e : es)
    spans.push_back({e.w->dtype(), e.d->data(), e.m ? e.m->data() : nullptr, e.w->data(), e.u ? e.u->data() : nullptr,
                     e.m_out ? e.m_out->data() : nullptr, e.w_out->data(), e.w->numel()});
  return es[0].d->backend()->update_many(spans, p, finite);
}

Status adam_many(const std::vector<AdamEntry>& es, const Backend::AdamParams& p, std::vector<uint8_t>* finite) {
  finite->clear();
  if (es.empty()) return Status::Ok();
  KRAD_RETURN_IF_ERROR(check_entries("adam_many", es.size(), [&](size_t i) {
    const AdamEntry& e = es[i];
    KRAD_RETURN_IF_ERROR(need(e.g && e.m && e.v && e.w && e.m_out && e.v_out && e.w_out, "every tensor is required"));
    KRAD_RETURN_IF_ERROR(same_all({e.g, e.m, e.v, e.w, e.m_out, e.v_out, e.w_out}, "adam_many"));
    return same_backend(*es[0].g, *e.g, "adam_many");
  }));
  std::vector<Backend::AdamSpan> spans;
  for (const AdamEntry& e : es)
    spans.push_back({e.w->dtype(), e.g->data(), e.m->data(), e.v->data(), e.w->data(), e.m_out->data(), e.v_out->data(),
                     e.w_out->data(), e.w->numel()});
  return es[0].g->backend()->adam_many(spans, p, finite);
}

Status graft_many(Backend::Graft kind, const std::vector<GraftEntry>& es, const Backend::GraftParams& p) {
  if (es.empty()) return Status::Ok();
  const bool adam = kind == Backend::Graft::ADAM;
  KRAD_RETURN_IF_ERROR(check_entries("graft_many", es.size(), [&](size_t i) {
    const GraftEntry& e = es[i];
    KRAD_RETURN_IF_ERROR(need(e.g && e.acc && e.acc_out && e.dir, "gradient, accumulator, its output and the direction are required"));
    KRAD_RETURN_IF_ERROR(need(adam == (e.mom != nullptr && e.mom_out != nullptr), "moment buffers must be given exactly for Adam grafting"));
    KRAD_RETURN_IF_ERROR(same_all({e.g, e.acc, e.acc_out, e.dir, e.mom, e.mom_out}, "graft_many"));
    return same_backend(*es[0].g, *e.g, "graft_many");
  }));
  std::vector<Backend::GraftSpan> spans;
  for (const GraftEntry& e : es)
    spans.push_back({e.g->dtype(), e.g->data(), e.acc->data(), e.mom ? e.mom->data() : nullptr, e.acc_out->data(),
                     e.mom_out ? e.mom_out->data() : nullptr, e.dir->data(), e.g->numel()});
  return es[0].g->backend()->graft_many(kind, spans, p);
}

Status axpby_out_many(const std::vector<const Tensor*>& xs, const std::vector<const Tensor*>& ys,
                      const std::vector<Tensor*>& zs, double a, double b) {
  const char* op = "axpby_out_many";
  KRAD_RETURN_IF_ERROR(need_lengths(op, xs.size(), {ys.size(), zs.size()}));
  if (xs.empty()) return Status::Ok();
  KRAD_RETURN_IF_ERROR(check_entries(op, xs.size(), [&](size_t i) {
    KRAD_RETURN_IF_ERROR(same_all({xs[i], ys[i], zs[i]}, op));
    return same_backend(*xs[0], *xs[i], op);
  }));
  std::vector<Backend::Axpby3> spans;
  for (size_t i = 0; i < xs.size(); ++i) spans.push_back({zs[i]->dtype(), xs[i]->data(), ys[i]->data(), zs[i]->data(), zs[i]->numel()});
  return xs[0]->backend()->axpby_out_many(spans, a, b);
}

}  // namespace krad
