// Launchers for our own kernels (kernels.cu). All are asynchronous on `stream`; they only
// enqueue work and return the launch error (cudaGetLastError), if any. Pointers are device
// pointers unless named host_*. Row-major layouts as in core/backend.h.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../core/backend.h"

namespace krad {
namespace cuda_kernels {

cudaError_t fill(DType dt, void* dst, size_t count, double value, cudaStream_t s);
cudaError_t cast(DType src_dt, const void* src, DType dst_dt, void* dst, size_t count, cudaStream_t s);
cudaError_t transpose3(DType dt, const void* src, void* dst, int64_t batch, int64_t p, int64_t q, int64_t r,
                       cudaStream_t s);

// f_scratch: n * batch elements of dt (one f(w) per eigenvalue).
cudaError_t eig_scale(DType dt, const void* v, const void* w, void* out, void* f_scratch, int64_t n,
                      int64_t batch, double p, double floor, cudaStream_t s);

// alphas/betas: device arrays of `batch` doubles, or null (then the scalar is used).
cudaError_t axpby(DType dt, int64_t batch, int64_t count, const double* alphas, double alpha, const void* x,
                  const double* betas, double beta, void* y, cudaStream_t s);
cudaError_t mul_acc(DType dt, size_t count, double a, double b, const void* x, const void* y, void* acc,
                    cudaStream_t s);
cudaError_t div_sqrt(DType dt, size_t count, const void* x, const void* acc, double scale, double eps, void* out,
                     cudaStream_t s);
cudaError_t add_identity(DType dt, void* a, int64_t n, int64_t batch, const double* alphas, double alpha,
                         cudaStream_t s);
cudaError_t symmetrize(DType dt, void* a, int64_t n, int64_t batch, cudaStream_t s);
// Row-major A_b[i][j] = A_b[j][i] for i < j (upper <- lower).
cudaError_t mirror_lower(DType dt, void* a, int64_t n, int64_t batch, cudaStream_t s);

// Per-item sums in double, deterministic (fixed two-pass order). `partials` needs
// batch * dot_chunks(count) doubles.
int64_t dot_chunks(int64_t count);
cudaError_t dot(DType dt, const void* x, const void* y, int64_t batch, int64_t count, double* partials, double* out,
                cudaStream_t s);
cudaError_t trace(DType dt, const void* a, int64_t n, int64_t batch, double* out, cudaStream_t s);
// finite[b] = 1 when item b holds no NaN/Inf, else 0.
cudaError_t all_finite(DType dt, const void* x, int64_t batch, int64_t count, uint8_t* finite, cudaStream_t s);
// Prepares eigensolver input in place: items with finite[b] == 0 become the identity (so a
// solver never sees NaN); the others get their row-major lower triangle mirrored onto the upper.
cudaError_t eigh_input(DType dt, void* a, int64_t n, int64_t batch, const uint8_t* finite, cudaStream_t s);

// Per-item coefficients computed on the device from device reductions (no host round
// trip), in double exactly as Backend's default implementations compute them on the host:
// f[b] = sqrt(na[b]) / (sqrt(nd[b]) + eps)                          (norm grafting)
// r[b] = -1 / (n (1 + x[b]))  (trace)   or   -1 / (1 + sqrt(x[b]))   (frobenius)
cudaError_t norm_ratio(const double* na, const double* nd, double eps, double* f, int64_t batch, cudaStream_t s);
cudaError_t inverse_coeffs(const double* x, int64_t n, bool trace, double* r, int64_t batch, cudaStream_t s);

// meta: device int64 array [box_dims (r)][src strides (r)][offsets (nbox * r)].
cudaError_t boxes(DType dt, void* src, const int64_t* meta, int r, int64_t nbox, int64_t box_numel, void* dst,
                  bool scatter, cudaStream_t s);

// Multi-tensor forms (one launch per dtype). A span's roles follow Backend::Span; `op` is
// Backend::Multi as an int (the constants below). Tables live in device memory.
struct MultiSpan {
  const void* x;
  const void* y;
  void* z;
  int64_t count;
};
constexpr int kMultiAxpby = 0, kMultiMulAcc = 1, kMultiDivSqrt = 2, kMultiCopy = 3;
cudaError_t multi_elementwise(DType dt, int op, const MultiSpan* spans, int64_t nspan, int64_t max_count, double a,
                              double b, cudaStream_t s);
// z *= ||x|| / (||z|| + eps) per span. off: nspan + 1 prefix sums of dot_chunks(count);
// pa, pd: off[nspan] doubles each; f: nspan doubles.
cudaError_t multi_norm_ratio(DType dt, const MultiSpan* spans, const int64_t* off, int64_t nspan, int64_t max_chunks,
                             int64_t max_count, double eps, double* pa, double* pd, double* f, cudaStream_t s);

// finite flags of many spans: *(uint8_t*)span.z = 0 when span.x holds a NaN/Inf (the
// caller sets the flags to 1 first).
cudaError_t multi_all_finite(DType dt, const MultiSpan* spans, int64_t nspan, int64_t max_count, cudaStream_t s);
// Boxes of several sources in one launch. meta (device): [box dims (r)], then per box
// [source pointer, destination item pointer, source strides (r), offsets (r)] as int64.
cudaError_t boxes_many(DType dt, const int64_t* meta, int r, int64_t nbox, int64_t box_numel, bool scatter,
                       cudaStream_t s);

// inverse_update (see Backend) for small items in one launch: one block per item.
cudaError_t inverse_update_small(DType dt, void* l, const void* t, const void* m, int64_t n, int64_t batch, bool trace,
                                 cudaStream_t s);

// The optimizers' fused final stages (Backend::update_many, adam_many, graft_many,
// axpby_out_many), one launch per dtype over a span table in device memory; the CPU
// backend's element formulas with the rounded intrinsics. Coefficients are doubles
// computed on the host as the CPU backend computes them (nlr = -lr, dec = 1 - lr wd,
// a1 = 1 - b1, a2 = 1 - b2, sc = 1 / bc2, step = -lr / bc1, c1 = 1 / bc1). `finite` points at
// a flag byte the caller set to 1; a span with a non-finite result writes 0 there.
struct UpdateSpanK {
  const void* d;
  const void* m;
  const void* w;
  const void* u;
  void* m_out;
  void* w_out;
  uint8_t* finite;
  int64_t count;
};
struct UpdateParamsK {
  double wd, mu, nlr, dec;
  bool mom, nesterov, l2, decoupled, ext;
};
struct AdamSpanK {
  const void* g;
  const void* m;
  const void* v;
  const void* w;
  void* m_out;
  void* v_out;
  void* w_out;
  uint8_t* finite;
  int64_t count;
};
struct AdamParamsK {
  double wd, dec, a1, b1, b2, a2, sc, eps, step;
  bool l2, decoupled;
};
struct GraftSpanK {
  const void* g;
  const void* acc;
  const void* mom;
  void* acc_out;
  void* mom_out;
  void* dir;
  int64_t count;
};
struct GraftParamsK {
  double eps, a1, b1, b2, a2, sc, c1;
  bool adam;
};
cudaError_t update_many(DType dt, const UpdateSpanK* spans, int64_t nspan, int64_t max_count, const UpdateParamsK& p,
                        cudaStream_t s);
cudaError_t adam_many(DType dt, const AdamSpanK* spans, int64_t nspan, int64_t max_count, const AdamParamsK& p,
                      cudaStream_t s);
cudaError_t graft_many(DType dt, const GraftSpanK* spans, int64_t nspan, int64_t max_count, const GraftParamsK& p,
                       cudaStream_t s);
// z = a x + b y per span (x, y, z of MultiSpan); z may alias x or y.
cudaError_t axpby_out_many(DType dt, const MultiSpan* spans, int64_t nspan, int64_t max_count, double a, double b,
                           cudaStream_t s);

// Probes that the module has a kernel image for the current device.
cudaError_t probe();

}  // namespace cuda_kernels
}  // namespace krad
