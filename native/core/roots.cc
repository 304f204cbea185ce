// Matrix roots of batches of symmetric PSD factors, the optimizers' root refresh in one
// native call: an optional GEMM-only coupled Newton iteration, eigh (matpow) for the items
// it leaves, a float64 retry of float32 items that still fail, and the previous root kept
// for whatever fails after that. No host round trip beyond the solver's own info and the
// Newton residual norms.
#include <cmath>

#include "ops.h"

namespace krad {
namespace {

Status temp_like(const Tensor& a, DType dt, TensorPtr* out) { return make_tensor(a.backend(), dt, a.batch(), a.shape(), out); }

// Copies item b of `src` to item b of `dst` (same dtype, same item size).
Status copy_item(const Tensor& src, Tensor& dst, int64_t b) {
  const size_t item = static_cast<size_t>(dst.item_numel()) * dtype_size(dst.dtype());
  return dst.backend()->copy(static_cast<char*>(dst.data()) + b * item, static_cast<const char*>(src.data()) + b * item,
                             item);
}

// ||M - I||_F per item (T is scratch of M's shape).
Status residual(const Tensor& M, Tensor& T, std::vector<double>* out) {
  KRAD_RETURN_IF_ERROR(copy(M, T));
  KRAD_RETURN_IF_ERROR(add_identity(T, {}, -1.0));
  return frob_norm(T, out);
}

Status mm(const Tensor& a, const Tensor& b, Tensor& c) { return gemm(a, b, c, false, false, 1.0, 0.0); }

}  // namespace

// The coupled Newton iteration for inverse r-th roots (Guo & Higham 2006), batched:
//   X_0 = z^(1/r) I, M_0 = z A, z = (1 + r) / (2 ||A||_F)     (cold start)
//   X_0 = P_prev,    M_0 = X_0^r A                            (warm start, p = -1/r, when
//                                                              every item has ||M_0 - I|| < 1/2)
//   T = ((r + 1) I - M) / r;  X <- X T;  M <- T^r M           until ||M - I||_F <= tol sqrt(n)
// X converges to A^(-1/r); the positive root is A^(1/r) = A X^(r-1) (all commute). A is the
// factor plus ridge I. Converged items are written to `out` with info 0; the others keep
// `out` and get info 1. Exponents that are not +-1/r give info 1 for every item.
Status newton_root(const Tensor& a, const Tensor& prev, Tensor& out, const RootSpec& s, std::vector<int>* info) {
  const int64_t batch = a.batch(), n = a.shape()[0];
  info->assign(batch, 1);
  const double r_real = 1 / std::fabs(s.p);
  const int r = static_cast<int>(std::lround(r_real));
  if (!(r >= 1 && std::fabs(std::fabs(s.p) * r - 1) < 1e-12)) return Status::Ok();
  const double tol = (s.tolerance > 0 ? s.tolerance : (a.dtype() == DType::F32 ? 1e-5 : 1e-12)) * std::sqrt((double)n);
  const int max_iter = s.max_iterations > 0 ? s.max_iterations : 40;
  TensorPtr A, X, M, T, U, V;
  for (TensorPtr* t : {&A, &X, &M, &T, &U, &V}) KRAD_RETURN_IF_ERROR(temp_like(a, a.dtype(), t));
  KRAD_RETURN_IF_ERROR(copy(a, *A));
  if (s.ridge != 0) KRAD_RETURN_IF_ERROR(add_identity(*A, {}, s.ridge));
  std::vector<double> norms;
  KRAD_RETURN_IF_ERROR(frob_norm(*A, &norms));
  for (double x : norms)
    if (!std::isfinite(x) || x <= 0) return Status::Ok();
  bool warm = false;
  if (s.p < 0) {
    KRAD_RETURN_IF_ERROR(copy(prev, *X));
    KRAD_RETURN_IF_ERROR(copy(*A, *M));
    for (int j = 0; j < r; ++j) {
      KRAD_RETURN_IF_ERROR(mm(*X, *M, *U));
      KRAD_RETURN_IF_ERROR(copy(*U, *M));
    }
    std::vector<double> e;
    KRAD_RETURN_IF_ERROR(residual(*M, *T, &e));
    warm = true;
    for (double x : e) warm = warm && x < 0.5;
  }
  if (!warm) {
    std::vector<double> z(batch), zr(batch);
    for (int64_t b = 0; b < batch; ++b) {
      z[b] = (1.0 + r) / (2 * norms[b]);
      zr[b] = std::pow(z[b], 1.0 / r);
    }
    KRAD_RETURN_IF_ERROR(fill(*X, 0.0));
    KRAD_RETURN_IF_ERROR(add_identity(*X, zr, 0.0));
    KRAD_RETURN_IF_ERROR(copy(*A, *M));
    KRAD_RETURN_IF_ERROR(scale(*M, z, 0.0));
  }
  std::vector<double> err;
  KRAD_RETURN_IF_ERROR(residual(*M, *T, &err));
  auto unconverged = [&](const std::vector<double>& e) {
    for (double x : e)
      if (!(x <= tol)) return true;
    return false;
  };
  for (int it = 0; it < max_iter && unconverged(err); ++it) {
    KRAD_RETURN_IF_ERROR(copy(*M, *T));  // T = ((r + 1) I - M) / r
    KRAD_RETURN_IF_ERROR(scale(*T, {}, -1.0 / r));
    KRAD_RETURN_IF_ERROR(add_identity(*T, {}, (r + 1.0) / r));
    KRAD_RETURN_IF_ERROR(mm(*X, *T, *U));
    KRAD_RETURN_IF_ERROR(copy(*U, *X));
    for (int j = 0; j < r; ++j) {  // M = T^r M
      KRAD_RETURN_IF_ERROR(mm(*T, *M, *U));
      KRAD_RETURN_IF_ERROR(copy(*U, *M));
    }
    std::vector<double> next;
    KRAD_RETURN_IF_ERROR(residual(*M, *T, &next));
    bool stop = false;
    for (int64_t b = 0; b < batch; ++b)
      stop = stop || !std::isfinite(next[b]) || (it > 8 && next[b] > err[b] && next[b] > tol);
    err = next;
    if (stop) break;
  }
  Tensor* result = X.get();
  if (s.p > 0) {  // A^(1/r) = A X^(r-1)
    KRAD_RETURN_IF_ERROR(copy(*A, *U));
    for (int j = 0; j < r - 1; ++j) {
      KRAD_RETURN_IF_ERROR(mm(*U, *X, *V));
      KRAD_RETURN_IF_ERROR(copy(*V, *U));
    }
    result = U.get();
  }
  KRAD_RETURN_IF_ERROR(symmetrize(*result));
  for (int64_t b = 0; b < batch; ++b) {
    if (!(err[b] <= tol)) continue;
    KRAD_RETURN_IF_ERROR(copy_item(*result, out, b));
    (*info)[b] = 0;
  }
  return Status::Ok();
}

Status root(const Tensor& a, const Tensor& prev, Tensor& out, const RootSpec& s, std::vector<int>* info) {
  const char* op = "root";
  if (a.backend() != prev.backend() || a.backend() != out.backend())
    return Status::Error(Code::BACKEND_MISMATCH, "root: tensors live on different backends");
  if (a.dtype() != prev.dtype() || a.dtype() != out.dtype())
    return Status::Error(Code::DTYPE_MISMATCH, "root: factor, previous root and output must share one dtype");
  if (a.rank() != 2 || a.shape()[0] != a.shape()[1] || prev.shape() != a.shape() || out.shape() != a.shape() ||
      prev.batch() != a.batch() || out.batch() != a.batch())
    return Status::Error(Code::SHAPE_MISMATCH, std::string(op) + ": expected one batch of square matrices for factor, "
                                                   "previous root and output, got " + a.describe() + ", " +
                                                   prev.describe() + ", " + out.describe());
  if (out.data() == a.data()) return Status::Error(Code::INVALID_ARGUMENT, "root: the output must not alias the factor");
  if (!std::isfinite(s.p) || !std::isfinite(s.floor) || !std::isfinite(s.ridge))
    return Status::Error(Code::INVALID_ARGUMENT, "root: exponent, floor and ridge must be finite");
  if (s.p < 0 && !(s.floor > 0))
    return Status::Error(Code::INVALID_ARGUMENT, "root: a negative exponent needs an eigenvalue floor > 0");
  const int64_t batch = a.batch();
  if (out.data() != prev.data()) KRAD_RETURN_IF_ERROR(copy(prev, out));
  info->assign(batch, 1);
  if (s.newton) KRAD_RETURN_IF_ERROR(newton_root(a, prev, out, s, info));
  bool any = false;
  for (int x : *info) any = any || x != 0;
  if (!any) return Status::Ok();
  if (!s.newton) {
    // eigh for every item, straight into `out` (failed items keep the previous root).
    KRAD_RETURN_IF_ERROR(matpow(a, s.p, s.floor, s.ridge, out, info));
  } else {
    // eigh only for the items Newton left (into a copy, so converged items stay).
    TensorPtr e;
    KRAD_RETURN_IF_ERROR(temp_like(a, a.dtype(), &e));
    KRAD_RETURN_IF_ERROR(copy(out, *e));
    std::vector<int> ie;
    KRAD_RETURN_IF_ERROR(matpow(a, s.p, s.floor, s.ridge, *e, &ie));
    for (int64_t b = 0; b < batch; ++b) {
      if ((*info)[b] == 0) continue;
      (*info)[b] = ie[b];
      if (ie[b] == 0) KRAD_RETURN_IF_ERROR(copy_item(*e, out, b));
    }
  }
  any = false;
  for (int x : *info) any = any || x != 0;
  if (!any || a.dtype() != DType::F32 || !s.retry_float64) return Status::Ok();
  // float64 retry of the float32 items that failed: the factor and current root in float64,
  // matpow there, and only the items it solves come back (rounded to float32).
  TensorPtr s64, r64;
  KRAD_RETURN_IF_ERROR(temp_like(a, DType::F64, &s64));
  KRAD_RETURN_IF_ERROR(temp_like(a, DType::F64, &r64));
  KRAD_RETURN_IF_ERROR(copy(a, *s64));
  KRAD_RETURN_IF_ERROR(copy(out, *r64));
  std::vector<int> i64;
  KRAD_RETURN_IF_ERROR(matpow(*s64, s.p, s.floor, s.ridge, *r64, &i64));
  // Rounded to float32 aside first: a root finite in float64 may overflow float32, and then
  // the item fails and keeps its previous root (out may be prev: it is not written before).
  TensorPtr r32;
  KRAD_RETURN_IF_ERROR(temp_like(a, DType::F32, &r32));
  KRAD_RETURN_IF_ERROR(copy(*r64, *r32));
  std::vector<uint8_t> finite;
  KRAD_RETURN_IF_ERROR(all_finite(*r32, &finite));
  for (int64_t b = 0; b < batch; ++b) {
    if ((*info)[b] == 0) continue;
    (*info)[b] = i64[b] == 0 && !finite[b] ? kNonFiniteResult : i64[b];
    if ((*info)[b] != 0) continue;
    KRAD_RETURN_IF_ERROR(copy_item(*r32, out, b));
  }
  return Status::Ok();
}

}  // namespace krad
