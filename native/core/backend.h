// The Backend interface: the primitives every device (CPU, CUDA) implements. Everything
// above it (native/core/ops.cc, the N-API layer, the TypeScript optimizers) is written
// once against these. No napi.h and no CUDA headers here.
//
// Memory model: a backend owns raw buffers (host memory on CPU, device memory on CUDA).
// Tensors (tensor.h) are a batch of same-shape row-major arrays stored back to back in
// one buffer. Every primitive is stream-ordered on its backend; results that come back to
// the host (reductions, finiteness, solver info) synchronize.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "status.h"

namespace krad {

enum class DType : int { F32 = 0, F64 = 1 };
inline size_t dtype_size(DType d) { return d == DType::F32 ? 4 : 8; }
inline const char* dtype_name(DType d) { return d == DType::F32 ? "float32" : "float64"; }

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;   // "cpu" | "cuda"
  virtual std::string device() const = 0; // human-readable device description

  // ---- memory -------------------------------------------------------------------------
  virtual Status allocate(size_t bytes, void** ptr) = 0;
  virtual void release(void* ptr) = 0;
  virtual Status upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual Status download(void* host_dst, const void* src, size_t bytes) = 0;
  virtual Status copy(void* dst, const void* src, size_t bytes) = 0;
  virtual Status fill(DType dt, void* dst, size_t count, double value) = 0;
  virtual Status cast(DType src_dt, const void* src, DType dst_dt, void* dst, size_t count) = 0;
  virtual Status synchronize() = 0;

  // ---- products -----------------------------------------------------------------------
  // Row-major strided-batched GEMM: C_b = alpha * op(A_b) op(B_b) + beta * C_b for
  // b < batch, op(A) is m x k, op(B) is k x n, C is m x n. A stride of 0 broadcasts.
  virtual Status gemm(DType dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                      double alpha, const void* a, int64_t lda, int64_t stride_a,
                      const void* b, int64_t ldb, int64_t stride_b, double beta, void* c,
                      int64_t ldc, int64_t stride_c, int64_t batch) = 0;

  // Row-major symmetric rank-k product: C_b = alpha op(A_b) op(A_b)^T + beta C_b, C n x n,
  // op(A) = A (n x k, trans = false) or A^T (A is k x n, trans = true). All of C is read
  // when beta != 0 (it need not be symmetric); with beta = 0 C is only written and comes
  // out exactly symmetric. The default is the equivalent gemm; backends override it with
  // syrk (half the flops) plus a mirror of the computed triangle.
  virtual Status syrk(DType dt, bool trans, int64_t n, int64_t k, double alpha, const void* a, int64_t lda,
                      int64_t stride_a, double beta, void* c, int64_t batch) {
    return gemm(dt, trans, !trans, n, n, k, alpha, a, lda, stride_a, a, lda, stride_a, beta, c, n, n * n, batch);
  }

  // dst[q][p][r] = src[p][q][r] for each of `batch` items of p x q x r elements: swaps the
  // first two axes of a 3-axis view. Unfolding mode i of a rank-k tensor is this with
  // p = prod(dims before i), q = dims[i], r = prod(dims after i).
  virtual Status transpose3(DType dt, const void* src, void* dst, int64_t batch, int64_t p,
                            int64_t q, int64_t r) = 0;

  // ---- symmetric eigensolver ----------------------------------------------------------
  // For each of `batch` symmetric n x n matrices A_b (row-major, the lower triangle is
  // read): w_b ascending eigenvalues, V_b[i][j] = component i of eigenvector j.
  // `a` is not modified. info[b] = 0 on success, > 0 when that item did not converge
  // (then its w/V are unspecified). A non-OK Status is reserved for calls that could not run.
  virtual Status syevd(DType dt, const void* a, void* w, void* v, int64_t n, int64_t batch,
                       std::vector<int>* info) = 0;

  // out_b[i][j] = V_b[i][j] * f(w_b[j]) with f(x) = max(x, floor)^p: the left factor of
  // V diag(f(w)) V^T.
  virtual Status eig_scale(DType dt, const void* v, const void* w, void* out, int64_t n,
                           int64_t batch, double p, double floor) = 0;

  // ---- elementwise (count = elements per item; per-item coefficient arrays may be null,
  // then the scalar is used) ------------------------------------------------------------
  // y = alpha_b * x + beta_b * y
  virtual Status axpby(DType dt, int64_t batch, int64_t count, const double* alphas,
                       double alpha, const void* x, const double* betas, double beta,
                       void* y) = 0;
  // acc = a * acc + b * x * y     (x == y gives running squares)
  virtual Status mul_acc(DType dt, size_t count, double a, double b, const void* x,
                         const void* y, void* acc) = 0;
  // out = x / (sqrt(acc * scale) + eps)
  virtual Status div_sqrt(DType dt, size_t count, const void* x, const void* acc, double scale,
                          double eps, void* out) = 0;
  // A_b += alpha_b I (n x n items)
  virtual Status add_identity(DType dt, void* a, int64_t n, int64_t batch, const double* alphas,
                              double alpha) = 0;
  // A_b = (A_b + A_b^T) / 2
  virtual Status symmetrize(DType dt, void* a, int64_t n, int64_t batch) = 0;

  // ---- reductions (results come back to the host, one per item) -----------------------
  virtual Status dot(DType dt, const void* x, const void* y, int64_t batch, int64_t count,
                     std::vector<double>* out) = 0;
  virtual Status trace(DType dt, const void* a, int64_t n, int64_t batch,
                       std::vector<double>* out) = 0;
  // finite[b] = 1 when item b has no NaN/Inf
  virtual Status all_finite(DType dt, const void* x, int64_t batch, int64_t count,
                            std::vector<uint8_t>* finite) = 0;

  // ---- block gather/scatter -----------------------------------------------------------
  // For each box j < nbox, the sub-box of `src` (rank-r array with dims src_dims) starting
  // at offsets[j*r .. j*r+r) with extents box_dims is copied into item j of `dst` (boxes
  // laid back to back, row-major). scatter == true copies the other way (dst -> src).
  virtual Status boxes(DType dt, void* src, const std::vector<int64_t>& src_dims,
                       const std::vector<int64_t>& box_dims, const std::vector<int64_t>& offsets,
                       void* dst, bool scatter) = 0;

  // ---- fused pieces of the optimizers (defaults built from the primitives above; a
  // device backend overrides them to avoid the host round trip of the reductions) -------
  // d_b *= ||a_b||_F / (||d_b||_F + eps)  (norm grafting)
  virtual Status scale_by_norm_ratio(DType dt, void* d, const void* a, int64_t batch, int64_t count, double eps);
  enum class Normalizer : int { TRACE = 0, FROBENIUS = 1 };
  // L_b -= T_b / s_b with s_b = n (1 + tr(M_b)) (TRACE) or 1 + ||M_b||_F (FROBENIUS):
  // KrADagrad's inverse-statistics update, M = H L.
  virtual Status inverse_update(DType dt, void* l, const void* t, const void* m, int64_t n, int64_t batch,
                                Normalizer kind);
  // finite[j] = 1 when buffer j (dtypes[j], counts[j] elements) has no NaN/Inf: one
  // synchronization for many tensors.
  virtual Status all_finite_many(const std::vector<DType>& dtypes, const std::vector<const void*>& ptrs,
                                 const std::vector<int64_t>& counts, std::vector<uint8_t>* finite);

  // ---- multi-tensor forms: the optimizers' per-parameter work in one call. Spans may
  // differ in dtype and size. The defaults loop the single primitives above; a device
  // backend fuses them (one launch per dtype) and must round exactly like its single forms.
  struct Span {
    DType dt;
    const void* x;
    const void* y;
    void* z;
    int64_t count;
  };
  enum class Multi : int {
    AXPBY = 0,     // z = a x + b z         (axpby with scalar coefficients)
    MUL_ACC = 1,   // z = a z + b x y       (mul_acc)
    DIV_SQRT = 2,  // z = x / (sqrt(y a) + b) (div_sqrt)
    COPY = 3,      // z = x
  };
  virtual Status multi_elementwise(Multi op, const std::vector<Span>& spans, double a, double b);
  // boxes() for several sources sharing one box shape: entry e moves the boxes at
  // e.offsets of e.src (dims e.src_dims) to/from the items that start at e.dst.
  struct BoxEntry {
    void* src;
    std::vector<int64_t> src_dims;
    const std::vector<int64_t>* offsets;
    void* dst;
  };
  virtual Status boxes_many(DType dt, const std::vector<int64_t>& box_dims, const std::vector<BoxEntry>& entries,
                            bool scatter) {
    for (const BoxEntry& e : entries) KRAD_RETURN_IF_ERROR(boxes(dt, e.src, e.src_dims, box_dims, *e.offsets, e.dst, scatter));
    return Status::Ok();
  }
  // z *= ||x||_F / (||z||_F + eps) per span (scale_by_norm_ratio of one item each).
  virtual Status multi_norm_ratio(const std::vector<Span>& spans, double eps);

  // ---- the optimizers' final stages, out of place (a step computes into spare buffers and
  // commits by swapping them in, so a rejected step changes nothing). Each returns, per
  // span, whether the values it wrote are all finite (one host read). Arithmetic, element
  // by element and in the span's dtype, is exactly that of the single ops they replace
  // (the comment of each says which), so results are bitwise those of the unfused chains.
  // The defaults (backend.cc) are built from the primitives above, with scratch.

  // z = a x + b y                                  (copy y -> z, then axpby)
  struct Axpby3 {
    DType dt;
    const void* x;
    const void* y;
    void* z;
    int64_t count;
  };
  virtual Status axpby_out_many(const std::vector<Axpby3>& spans, double a, double b);

  // Direction d -> momentum m -> parameters w, per element:
  //   d' = l2 ? wd w + d : d                        (axpby(w, d, wd, 1))
  //   m' = d' + mu m                                (axpby(d, m, 1, mu); only when mu > 0)
  //   u  = ext ? u_ext : mu > 0 ? (nesterov ? mu m' + d' : m') : d'
  //   w' = (decoupled ? (1 - lr wd) w : w) - lr u   (axpby(w, w, 0, 1 - lr wd); axpby(u, w, -lr, 1))
  // into m_out and w_out (either may alias its input). finite[j]: w' (and m') of span j.
  struct UpdateSpan {
    DType dt;
    const void* d;
    const void* m;    // null when mu == 0
    const void* w;
    const void* u;    // the external direction when ext, else null
    void* m_out;      // null when mu == 0
    void* w_out;
    int64_t count;
  };
  struct UpdateParams {
    double lr = 0, mu = 0, wd = 0;
    bool nesterov = false, l2 = false, decoupled = false, ext = false;
  };
  virtual Status update_many(const std::vector<UpdateSpan>& spans, const UpdateParams& p, std::vector<uint8_t>* finite);

  // Adam, per element (the chain of axpby / mul_acc / div_sqrt / axpby it replaces):
  //   g' = l2 ? wd w + g : g;  w0 = decoupled ? (1 - lr wd) w : w
  //   m' = (1 - b1) g' + b1 m;  v' = b2 v + (1 - b2) g' g';  w' = -(lr / bc1) m' / (sqrt(v' / bc2) + eps) + w0
  // finite[j]: m', v' and w' of span j.
  struct AdamSpan {
    DType dt;
    const void* g;
    const void* m;
    const void* v;
    const void* w;
    void* m_out;
    void* v_out;
    void* w_out;
    int64_t count;
  };
  struct AdamParams {
    double lr = 0, b1 = 0, b2 = 0, eps = 0, wd = 0, bc1 = 1, bc2 = 1;
    bool l2 = false, decoupled = false;
  };
  virtual Status adam_many(const std::vector<AdamSpan>& spans, const AdamParams& p, std::vector<uint8_t>* finite);

  // Graft directions (norm grafting's source), per element:
  //   ADAGRAD: acc' = acc + g g;  dir = g / (sqrt(acc') + eps)
  //   ADAM:    mom' = (1 - b1) g + b1 mom;  acc' = b2 acc + (1 - b2) g g;
  //            dir = (1 / bc1) (mom' / (sqrt(acc' / bc2) + eps))
  enum class Graft : int { ADAGRAD = 0, ADAM = 1 };
  struct GraftSpan {
    DType dt;
    const void* g;
    const void* acc;
    const void* mom;  // ADAM only
    void* acc_out;
    void* mom_out;    // ADAM only
    void* dir;
    int64_t count;
  };
  struct GraftParams {
    double eps = 0, b1 = 0, b2 = 0, bc1 = 1, bc2 = 1;
  };
  virtual Status graft_many(Graft kind, const std::vector<GraftSpan>& spans, const GraftParams& p);
};

inline Status Backend::multi_elementwise(Multi op, const std::vector<Span>& spans, double a, double b) {
  for (const Span& s : spans) {
    switch (op) {
      case Multi::AXPBY:
        KRAD_RETURN_IF_ERROR(axpby(s.dt, 1, s.count, nullptr, a, s.x, nullptr, b, s.z));
        break;
      case Multi::MUL_ACC:
        KRAD_RETURN_IF_ERROR(mul_acc(s.dt, static_cast<size_t>(s.count), a, b, s.x, s.y, s.z));
        break;
      case Multi::DIV_SQRT:
        KRAD_RETURN_IF_ERROR(div_sqrt(s.dt, static_cast<size_t>(s.count), s.x, s.y, a, b, s.z));
        break;
      case Multi::COPY:
        KRAD_RETURN_IF_ERROR(copy(s.z, s.x, static_cast<size_t>(s.count) * dtype_size(s.dt)));
        break;
    }
  }
  return Status::Ok();
}

inline Status Backend::multi_norm_ratio(const std::vector<Span>& spans, double eps) {
  for (const Span& s : spans) KRAD_RETURN_IF_ERROR(scale_by_norm_ratio(s.dt, s.z, s.x, 1, s.count, eps));
  return Status::Ok();
}

inline Status Backend::scale_by_norm_ratio(DType dt, void* d, const void* a, int64_t batch, int64_t count,
                                           double eps) {
  std::vector<double> na, nd;
  KRAD_RETURN_IF_ERROR(dot(dt, a, a, batch, count, &na));
  KRAD_RETURN_IF_ERROR(dot(dt, d, d, batch, count, &nd));
  std::vector<double> f(batch);
  for (int64_t b = 0; b < batch; ++b) f[b] = std::sqrt(na[b]) / (std::sqrt(nd[b]) + eps);
  return axpby(dt, batch, count, nullptr, 0.0, d, f.data(), 0.0, d);
}

inline Status Backend::inverse_update(DType dt, void* l, const void* t, const void* m, int64_t n, int64_t batch,
                                      Normalizer kind) {
  std::vector<double> r;
  if (kind == Normalizer::TRACE) {
    KRAD_RETURN_IF_ERROR(trace(dt, m, n, batch, &r));
    for (auto& x : r) x = -1.0 / (n * (1.0 + x));
  } else {
    KRAD_RETURN_IF_ERROR(dot(dt, m, m, batch, n * n, &r));
    for (auto& x : r) x = -1.0 / (1.0 + std::sqrt(x));
  }
  return axpby(dt, batch, n * n, r.data(), 0.0, t, nullptr, 1.0, l);
}

inline Status Backend::all_finite_many(const std::vector<DType>& dtypes, const std::vector<const void*>& ptrs,
                                       const std::vector<int64_t>& counts, std::vector<uint8_t>* finite) {
  finite->assign(ptrs.size(), 1);
  for (size_t j = 0; j < ptrs.size(); ++j) {
    std::vector<uint8_t> f;
    KRAD_RETURN_IF_ERROR(all_finite(dtypes[j], ptrs[j], 1, counts[j], &f));
    (*finite)[j] = f[0];
  }
  return Status::Ok();
}

}  // namespace krad
