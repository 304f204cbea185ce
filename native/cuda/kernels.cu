// Our kernels for the CUDA backend: the elementwise, symmetrize, add-identity, scaling,
// reduction, finiteness, transpose and box pieces. Each mirrors the CPU backend's loop
// (native/cpu/cpu_backend.cc) operation by operation. Products and sums that the CPU code
// writes as separate operations use the explicitly rounded intrinsics (__fmul_rn, ...),
// so nvcc does not contract them into FMAs: the elementwise results are then the CPU's
// bit for bit. Reductions accumulate in double in a fixed two-pass order (deterministic
// from run to run, not the CPU's sequential order).
#include <algorithm>
#include <cmath>

#include "kernels.h"

namespace krad {
namespace cuda_kernels {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(size_t n) {
  size_t g = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::min<size_t>(std::max<size_t>(g, 1), size_t(1) << 20));
}
unsigned grid_y(int64_t items) { return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(items, 1), 65535)); }

#define KRAD_GRID_STRIDE(i, n) \
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)blockDim.x * gridDim.x)

// Explicitly rounded arithmetic (never fused).
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float sqrt_rn(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double sqrt_rn(double a) { return __dsqrt_rn(a); }

// Sum over the block (blockDim.x == kThreads); the result is valid in thread 0. Ends with a
// barrier so the shared buffer can be reused at once.
__device__ double block_sum(double v) {
  __shared__ double warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  double total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  __syncthreads();
  return total;
}

template <typename T>
__global__ void fill_k(T* dst, size_t n, T v) {
  KRAD_GRID_STRIDE(i, n) dst[i] = v;
}

template <typename S, typename D>
__global__ void cast_k(const S* src, D* dst, size_t n) {
  KRAD_GRID_STRIDE(i, n) dst[i] = static_cast<D>(src[i]);
}

// dst[b][j][i][t] = src[b][i][j][t]; src items are p x q x r.
template <typename T>
__global__ void transpose3_k(const T* src, T* dst, int64_t batch, int64_t p, int64_t q, int64_t r) {
  const size_t total = (size_t)batch * p * q * r;
  KRAD_GRID_STRIDE(idx, total) {
    int64_t rest = (int64_t)idx;
    const int64_t t = rest % r;
    rest /= r;
    const int64_t i = rest % p;
    rest /= p;
    const int64_t j = rest % q;
    const int64_t b = rest / q;
    dst[idx] = src[((b * p + i) * q + j) * r + t];
  }
}

// r == 1: a batch of p x q matrix transposes through 32 x 33 shared tiles (coalesced on
// both sides). Block (32, 8); grid (tiles over q, tiles over p, items).
template <typename T>
__global__ void transpose_tiles_k(const T* src, T* dst, int64_t batch, int64_t p, int64_t q) {
  __shared__ T tile[32][33];
  const int64_t j0 = (int64_t)blockIdx.x * 32, i0 = (int64_t)blockIdx.y * 32;
  for (int64_t b = blockIdx.z; b < batch; b += gridDim.z) {
    const T* s = src + b * p * q;
    T* d = dst + b * p * q;
    const int64_t j = j0 + threadIdx.x;
    for (int k = threadIdx.y; k < 32; k += 8) {
      const int64_t i = i0 + k;
      if (i < p && j < q) tile[k][threadIdx.x] = s[i * q + j];
    }
    __syncthreads();
    const int64_t i = i0 + threadIdx.x;
    for (int k = threadIdx.y; k < 32; k += 8) {
      const int64_t jj = j0 + k;
      if (jj < q && i < p) d[jj * p + i] = tile[threadIdx.x][k];
    }
    __syncthreads();
  }
}

// f[k] = max(w[k], floor)^p, computed in double and rounded to T (as the CPU does).
template <typename T>
__global__ void eig_f_k(const T* w, T* f, size_t n, double p, double floor) {
  KRAD_GRID_STRIDE(k, n) {
    const double x = static_cast<double>(w[k]);
    f[k] = static_cast<T>(pow(x < floor ? floor : x, p));  // std::max(x, floor): NaN stays NaN
  }
}
template <typename T>
__global__ void eig_scale_k(const T* v, const T* f, T* out, int64_t n, size_t total) {
  KRAD_GRID_STRIDE(idx, total) {
    const int64_t b = (int64_t)idx / (n * n), j = (int64_t)idx % n;
    out[idx] = mul_rn(v[idx], f[b * n + j]);
  }
}

template <typename T>
__global__ void axpby_k(int64_t count, size_t total, const double* alphas, double alpha, const T* x,
                        const double* betas, double beta, T* y) {
  KRAD_GRID_STRIDE(i, total) {
    const int64_t b = (int64_t)i / count;
    const T a = static_cast<T>(alphas ? alphas[b] : alpha), be = static_cast<T>(betas ? betas[b] : beta);
    if (a == T(0))
      y[i] = mul_rn(be, y[i]);
    else if (be == T(0))  // y may be uninitialised: never read it
      y[i] = mul_rn(a, x[i]);
    else
      y[i] = add_rn(mul_rn(a, x[i]), mul_rn(be, y[i]));
  }
}

template <typename T>
__global__ void mul_acc_k(size_t n, T a, T b, const T* x, const T* y, T* acc) {
  KRAD_GRID_STRIDE(i, n) acc[i] = add_rn(mul_rn(a, acc[i]), mul_rn(mul_rn(b, x[i]), y[i]));
}

template <typename T>
__global__ void div_sqrt_k(size_t n, const T* x, const T* acc, T scale, T eps, T* out) {
  KRAD_GRID_STRIDE(i, n) out[i] = div_rn(x[i], add_rn(sqrt_rn(mul_rn(acc[i], scale)), eps));
}

template <typename T>
__global__ void add_identity_k(T* a, int64_t n, size_t total, const double* alphas, double alpha) {
  KRAD_GRID_STRIDE(k, total) {
    const int64_t b = (int64_t)k / n, i = (int64_t)k % n;
    a[b * n * n + i * (n + 1)] += static_cast<T>(alphas ? alphas[b] : alpha);
  }
}

template <typename T>
__global__ void symmetrize_k(T* a, int64_t n, size_t total) {
  KRAD_GRID_STRIDE(idx, total) {
    const int64_t b = (int64_t)idx / (n * n), rem = (int64_t)idx % (n * n), i = rem / n, j = rem % n;
    if (i < j) {
      T* m = a + b * n * n;
      const T s = div_rn(add_rn(m[i * n + j], m[j * n + i]), T(2));
      m[i * n + j] = s;
      m[j * n + i] = s;
    }
  }
}

// Grid (chunks, items): partials[b * chunks + c] = the chunk's share of sum x*y.
template <typename T>
__global__ void dot_partial_k(const T* x, const T* y, int64_t batch, int64_t count, double* partials) {
  for (int64_t b = blockIdx.y; b < batch; b += gridDim.y) {
    const T* xb = x + b * count;
    const T* yb = y + b * count;
    double s = 0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (int64_t)blockDim.x * gridDim.x)
      s += static_cast<double>(xb[i]) * static_cast<double>(yb[i]);
    s = block_sum(s);
    if (threadIdx.x == 0) partials[b * gridDim.x + blockIdx.x] = s;
  }
}
__global__ void sum_partials_k(const double* partials, int64_t chunks, int64_t batch, double* out) {
  KRAD_GRID_STRIDE(b, (size_t)batch) {
    double s = 0;
    for (int64_t c = 0; c < chunks; ++c) s += partials[b * chunks + c];
    out[b] = s;
  }
}

__global__ void norm_ratio_k(const double* na, const double* nd, double eps, double* f, int64_t batch) {
  KRAD_GRID_STRIDE(b, (size_t)batch) f[b] = sqrt(na[b]) / (sqrt(nd[b]) + eps);
}
__global__ void inverse_coeffs_k(const double* x, int64_t n, bool trace, double* r, int64_t batch) {
  KRAD_GRID_STRIDE(b, (size_t)batch) r[b] = trace ? -1.0 / (n * (1.0 + x[b])) : -1.0 / (1.0 + sqrt(x[b]));
}

template <typename T>
__global__ void trace_k(const T* a, int64_t n, int64_t batch, double* out) {
  for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
    double s = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += static_cast<double>(a[b * n * n + i * (n + 1)]);
    s = block_sum(s);
    if (threadIdx.x == 0) out[b] = s;
  }
}

template <typename T>
__global__ void all_finite_k(const T* x, int64_t batch, int64_t count, uint8_t* finite) {
  for (int64_t b = blockIdx.y; b < batch; b += gridDim.y) {
    const T* xb = x + b * count;
    bool ok = true;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (int64_t)blockDim.x * gridDim.x)
      ok = ok && isfinite(xb[i]);
    if (!ok) finite[b] = 0;  // benign race: every writer writes 0
  }
}

// Row-major upper triangle <- lower triangle (the lower one is only read: no race); with
// `finite`, items whose flag is 0 become the identity instead (eigensolver input).
template <typename T>
__global__ void mirror_lower_k(T* a, int64_t n, size_t total, const uint8_t* finite) {
  KRAD_GRID_STRIDE(idx, total) {
    const int64_t b = (int64_t)idx / (n * n), rem = (int64_t)idx % (n * n), i = rem / n, j = rem % n;
    if (finite && !finite[b])
      a[idx] = (i == j) ? T(1) : T(0);
    else if (i < j)
      a[idx] = a[b * n * n + j * n + i];
  }
}

template <typename T>
__global__ void boxes_k(T* src, const int64_t* meta, int r, int64_t box_numel, size_t total, T* dst, bool scatter) {
  const int64_t* bd = meta;
  const int64_t* stride = meta + r;
  KRAD_GRID_STRIDE(idx, total) {
    const int64_t j = (int64_t)idx / box_numel;
    const int64_t* off = meta + 2 * r + j * r;
    int64_t rem = (int64_t)idx % box_numel, o = 0;
    for (int d = r - 1; d >= 0; --d) {
      const int64_t c = rem % bd[d];
      rem /= bd[d];
      o += (off[d] + c) * stride[d];
    }
    if (scatter)
      src[o] = dst[idx];
    else
      dst[idx] = src[o];
  }
}


// ---- multi-tensor forms: blockIdx.y walks the spans, blockIdx.x/threadIdx.x the elements
// of each. Every op repeats its single kernel's arithmetic (same rounded intrinsics, same
// coefficient casts), so fused and one-by-one results are bit-identical.
template <typename T, int OP>
__global__ void multi_ew_k(const MultiSpan* spans, int64_t nspan, double a_, double b_) {
  const T a = static_cast<T>(a_), b = static_cast<T>(b_);
  for (int64_t s = blockIdx.y; s < nspan; s += gridDim.y) {
    const MultiSpan sp = spans[s];
    const T* x = static_cast<const T*>(sp.x);
    const T* y = static_cast<const T*>(sp.y);
    T* z = static_cast<T*>(sp.z);
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < sp.count; i += (int64_t)blockDim.x * gridDim.x) {
      if (OP == kMultiAxpby) {  // axpby_k with scalar coefficients
        if (a == T(0))
          z[i] = mul_rn(b, z[i]);
        else if (b == T(0))
          z[i] = mul_rn(a, x[i]);
        else
          z[i] = add_rn(mul_rn(a, x[i]), mul_rn(b, z[i]));
      } else if (OP == kMultiMulAcc) {  // mul_acc_k
        z[i] = add_rn(mul_rn(a, z[i]), mul_rn(mul_rn(b, x[i]), y[i]));
      } else if (OP == kMultiDivSqrt) {  // div_sqrt_k: scale a, eps b
        z[i] = div_rn(x[i], add_rn(sqrt_rn(mul_rn(y[i], a)), b));
      } else {  // copy
        z[i] = x[i];
      }
    }
  }
}

// Norm grafting of many spans, as dot_partial_k + sum_partials_k + norm_ratio_k + axpby_k
// do for one: span s uses chunks = off[s+1] - off[s] blocks (dot_chunks of its count),
// each striding by blockDim.x * chunks, so its partial sums are the single form's.
template <typename T>
__global__ void multi_dot2_partial_k(const MultiSpan* spans, const int64_t* off, int64_t nspan, double* pa,
                                     double* pd) {
  for (int64_t s = blockIdx.y; s < nspan; s += gridDim.y) {
    const int64_t chunks = off[s + 1] - off[s];
    if ((int64_t)blockIdx.x >= chunks) continue;  // uniform per block: block_sum's barriers stay safe
    const MultiSpan sp = spans[s];
    const T* a = static_cast<const T*>(sp.x);
    const T* d = static_cast<const T*>(sp.z);
    double sa = 0, sd = 0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < sp.count; i += (int64_t)blockDim.x * chunks) {
      sa += static_cast<double>(a[i]) * static_cast<double>(a[i]);
      sd += static_cast<double>(d[i]) * static_cast<double>(d[i]);
    }
    sa = block_sum(sa);
    sd = block_sum(sd);
    if (threadIdx.x == 0) {
      pa[off[s] + blockIdx.x] = sa;
      pd[off[s] + blockIdx.x] = sd;
    }
  }
}
__global__ void multi_norm_ratio_k(const int64_t* off, int64_t nspan, const double* pa, const double* pd, double eps,
                                   double* f) {
  KRAD_GRID_STRIDE(s, (size_t)nspan) {
    double na = 0, nd = 0;
    for (int64_t c = off[s]; c < off[s + 1]; ++c) na += pa[c];
    for (int64_t c = off[s]; c < off[s + 1]; ++c) nd += pd[c];
    f[s] = sqrt(na) / (sqrt(nd) + eps);
  }
}
template <typename T>
__global__ void multi_scale_k(const MultiSpan* spans, int64_t nspan, const double* f) {
  for (int64_t s = blockIdx.y; s < nspan; s += gridDim.y) {
    const MultiSpan sp = spans[s];
    T* z = static_cast<T*>(sp.z);
    const T be = static_cast<T>(f[s]);
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < sp.count; i += (int64_t)blockDim.x * gridDim.x)
      z[i] = mul_rn(be, z[i]);
  }
}

// Finiteness of many spans: span s clears the byte at sp.z when it holds a NaN/Inf (the
// flags start at 1; every writer writes 0, a benign race), as all_finite_k does per item.
template <typename T>
__global__ void multi_all_finite_k(const MultiSpan* spans, int64_t nspan) {
  for (int64_t s = blockIdx.y; s < nspan; s += gridDim.y) {
    const MultiSpan sp = spans[s];
    const T* x = static_cast<const T*>(sp.x);
    bool ok = true;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < sp.count; i += (int64_t)blockDim.x * gridDim.x)
      ok = ok && isfinite(x[i]);
    if (!ok) *static_cast<uint8_t*>(sp.z) = 0;
  }
}

// boxes_k for boxes of several source tensors at once. meta: [box dims (r)], then per box
// [source pointer, destination pointer (its item), source strides (r), offsets (r)].
template <typename T>
__global__ void boxes_many_k(const int64_t* meta, int r, int64_t box_numel, size_t total, bool scatter) {
  const int64_t* bd = meta;
  KRAD_GRID_STRIDE(idx, total) {
    const int64_t j = (int64_t)idx / box_numel;
    const int64_t* m = meta + r + j * (2 + 2 * r);
    T* src = reinterpret_cast<T*>(m[0]);
    T* dst = reinterpret_cast<T*>(m[1]);
    const int64_t* stride = m + 2;
    const int64_t* off = m + 2 + r;
    const int64_t e = (int64_t)idx % box_numel;
    int64_t rem = e, o = 0;
    for (int d = r - 1; d >= 0; --d) {
      const int64_t c = rem % bd[d];
      rem /= bd[d];
      o += (off[d] + c) * stride[d];
    }
    if (scatter)
      src[o] = dst[e];
    else
      dst[e] = src[o];
  }
}

// inverse_update for small items in one launch: one block per item reduces M (its trace,
// or its squared Frobenius norm), computes the coefficient and updates L, repeating the
// arithmetic of trace_k / dot_partial_k (single chunk), inverse_coeffs_k and axpby_k.
template <typename T>
__global__ void inverse_update_small_k(T* l, const T* t, const T* m, int64_t n, int64_t batch, bool trace) {
  __shared__ double coeff;
  const int64_t nn = n * n;
  for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
    const T* mb = m + b * nn;
    double s = 0;
    if (trace)
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += static_cast<double>(mb[i * (n + 1)]);
    else
      for (int64_t k = threadIdx.x; k < nn; k += blockDim.x) s += static_cast<double>(mb[k]) * static_cast<double>(mb[k]);
    s = block_sum(s);
    if (threadIdx.x == 0) coeff = trace ? -1.0 / (n * (1.0 + s)) : -1.0 / (1.0 + sqrt(s));
    __syncthreads();
    const T a = static_cast<T>(coeff), one = T(1);
    T* lb = l + b * nn;
    const T* tb = t + b * nn;
    for (int64_t k = threadIdx.x; k < nn; k += blockDim.x)
      lb[k] = a == T(0) ? mul_rn(one, lb[k]) : add_rn(mul_rn(a, tb[k]), mul_rn(one, lb[k]));
    __syncthreads();  // coeff is rewritten for the next item
  }
}

// ---- the optimizers' fused final stages (Backend::update_many, adam_many, graft_many,
// axpby_out_many), one launch per dtype over a span table. Each element repeats the CPU
// backend's loop (native/cpu/cpu_backend.cc: update_span, adam_span, graft_span, ax_by)
// operation by operation with the rounded intrinsics, so the results are the default
// chains' (axpby_k, mul_acc_k, div_sqrt_k) bit for bit. Coefficients come in double,
// computed on the host exactly as the CPU backend computes them, and are cast here.
// Only with KRADAGRAD_CUDA_FUSED_STAGES=1 (cuda_backend.cc); the default is the chains.

// axpby_k's element: a == 0 never reads x, b == 0 never reads y.
template <typename T>
__device__ __forceinline__ T ax_by(T a, T x, T b, T y) {
  return a == T(0) ? mul_rn(b, y) : (b == T(0) ? mul_rn(a, x) : add_rn(mul_rn(a, x), mul_rn(b, y)));
}

template <typename T>
__global__ void update_k(const UpdateSpanK* spans, int64_t nspan, UpdateParamsK p) {
  const T wd = static_cast<T>(p.wd), mu = static_cast<T>(p.mu), nlr = static_cast<T>(p.nlr),
          dec = static_cast<T>(p.dec), one = T(1), zero = T(0);
  for (int64_t s = blockIdx.y; s < nspan; s += gridDim.y) {
    const UpdateSpanK sp = spans[s];
    const T* D = static_cast<const T*>(sp.d);
    const T* M = static_cast<const T*>(sp.m);
    const T* W = static_cast<const T*>(sp.w);
    const T* U = static_cast<const T*>(sp.u);
    T* MO = static_cast<T*>(sp.m_out);
    T* WO = static_cast<T*>(sp.w_out);
    bool ok = true;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < sp.count; i += (int64_t)blockDim.x * gridDim.x) {
      T d = D[i];
      if (p.l2) d = ax_by(wd, W[i], one, d);
      T mn = zero;
      if (p.mom) {
        mn = ax_by(one, d, mu, M[i]);
        ok = ok && isfinite(mn);
      }
      const T u = p.ext ? U[i] : p.mom ? (p.nesterov ? ax_by(mu, mn, one, d) : mn) : d;
      T w = W[i];
      if (p.decoupled) w = ax_by(zero, w, dec, w);
      const T wn = ax_by(nlr, u, one, w);
      ok = ok && isfinite(wn);
      if (p.mom) MO[i] = mn;
      WO[i] = wn;
    }
    if (!ok) *sp.finite = 0;
  }
}

template <typename T>
__global__ void adam_k(const AdamSpanK* spans, int64_t nspan, AdamParamsK p) {
  const T wd = static_cast<T>(p.wd), dec = static_cast<T>(p.dec), one = T(1), zero = T(0);
  const T a1 = static_cast<T>(p.a1), b1 = static_cast<T>(p.b1), b2 = static_cast<T>(p.b2), a2 = static_cast<T>(p.a2),
          sc = static_cast<T>(p.sc), eps = static_cast<T>(p.eps), step = static_cast<T>(p.step);
  for (int64_t s = blockIdx.y; s < nspan; s += gridDim.y) {
    const AdamSpanK sp = spans[s];
    const T *G = static_cast<const T*>(sp.g), *M = static_cast<const T*>(sp.m), *V = static_cast<const T*>(sp.v),
            *W = static_cast<const T*>(sp.w);
    T *MO = static_cast<T*>(sp.m_out), *VO = static_cast<T*>(sp.v_out), *WO = static_cast<T*>(sp.w_out);
    bool ok = true;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < sp.count; i += (int64_t)blockDim.x * gridDim.x) {
      T g = G[i];
      if (p.l2) g = ax_by(wd, W[i], one, g);
      T w = W[i];
      if (p.decoupled) w = ax_by(zero, w, dec, w);
      const T m = ax_by(a1, g, b1, M[i]);
      const T v = add_rn(mul_rn(b2, V[i]), mul_rn(mul_rn(a2, g), g));
      const T dir = div_rn(m, add_rn(sqrt_rn(mul_rn(v, sc)), eps));
      const T wn = ax_by(step, dir, one, w);
      ok = ok && isfinite(m) && isfinite(v) && isfinite(wn);
      MO[i] = m;
      VO[i] = v;
      WO[i] = wn;
    }
    if (!ok) *sp.finite = 0;
  }
}

template <typename T>
__global__ void graft_k(const GraftSpanK* spans, int64_t nspan, GraftParamsK p) {
  const T one = T(1), zero = T(0), eps = static_cast<T>(p.eps), a1 = static_cast<T>(p.a1), b1 = static_cast<T>(p.b1),
          b2 = static_cast<T>(p.b2), a2 = static_cast<T>(p.a2), sc = static_cast<T>(p.sc), c1 = static_cast<T>(p.c1);
  for (int64_t s = blockIdx.y; s < nspan; s += gridDim.y) {
    const GraftSpanK sp = spans[s];
    const T* G = static_cast<const T*>(sp.g);
    const T* A = static_cast<const T*>(sp.acc);
    const T* MI = static_cast<const T*>(sp.mom);
    T* AO = static_cast<T*>(sp.acc_out);
    T* MO = static_cast<T*>(sp.mom_out);
    T* DIR = static_cast<T*>(sp.dir);
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < sp.count; i += (int64_t)blockDim.x * gridDim.x) {
      const T g = G[i];
      if (!p.adam) {  // mul_acc_k (1, 1), then div_sqrt_k (scale 1)
        const T a = add_rn(mul_rn(one, A[i]), mul_rn(mul_rn(one, g), g));
        AO[i] = a;
        DIR[i] = div_rn(g, add_rn(sqrt_rn(mul_rn(a, one)), eps));
        continue;
      }
      const T m = ax_by(a1, g, b1, MI[i]);
      const T a = add_rn(mul_rn(b2, A[i]), mul_rn(mul_rn(a2, g), g));
      MO[i] = m;
      AO[i] = a;
      const T d = div_rn(m, add_rn(sqrt_rn(mul_rn(a, sc)), eps));
      DIR[i] = ax_by(zero, d, c1, d);
    }
  }
}

// z = a x + b y per span (MultiSpan: x, y, z); z may alias x or y.
template <typename T>
__global__ void axpby3_k(const MultiSpan* spans, int64_t nspan, double a_, double b_) {
  const T a = static_cast<T>(a_), b = static_cast<T>(b_);
  for (int64_t s = blockIdx.y; s < nspan; s += gridDim.y) {
    const MultiSpan sp = spans[s];
    const T* x = static_cast<const T*>(sp.x);
    const T* y = static_cast<const T*>(sp.y);
    T* z = static_cast<T*>(sp.z);
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < sp.count; i += (int64_t)blockDim.x * gridDim.x)
      z[i] = ax_by(a, x[i], b, y[i]);  // as the CPU: ax_by does not use x when a == 0, nor y when b == 0 (unless a == 0)
  }
}

// Blocks per span for the elementwise multi kernels: enough for the largest span, capped
// so that small spans do not launch a sea of idle blocks.
dim3 multi_grid(int64_t nspan, int64_t max_count) {
  return dim3(std::min<unsigned>(grid_for((size_t)max_count), 1024u), grid_y(nspan));
}
}  // namespace

#define KRAD_DISPATCH(dt, ...)         \
  do {                                 \
    if ((dt) == DType::F32) {          \
      using T = float;                 \
      __VA_ARGS__;                     \
    } else {                           \
      using T = double;                \
      __VA_ARGS__;                     \
    }                                  \
  } while (0)

cudaError_t fill(DType dt, void* dst, size_t count, double value, cudaStream_t s) {
  if (!count) return cudaSuccess;
  KRAD_DISPATCH(dt, fill_k<T><<<grid_for(count), kThreads, 0, s>>>((T*)dst, count, static_cast<T>(value)));
  return cudaGetLastError();
}

cudaError_t cast(DType sdt, const void* src, DType ddt, void* dst, size_t count, cudaStream_t s) {
  if (!count) return cudaSuccess;
  if (sdt == DType::F32 && ddt == DType::F64)
    cast_k<float, double><<<grid_for(count), kThreads, 0, s>>>((const float*)src, (double*)dst, count);
  else if (sdt == DType::F64 && ddt == DType::F32)
    cast_k<double, float><<<grid_for(count), kThreads, 0, s>>>((const double*)src, (float*)dst, count);
  else
    return cudaMemcpyAsync(dst, src, count * dtype_size(sdt), cudaMemcpyDeviceToDevice, s);
  return cudaGetLastError();
}

cudaError_t transpose3(DType dt, const void* src, void* dst, int64_t batch, int64_t p, int64_t q, int64_t r,
                       cudaStream_t s) {
  const size_t total = (size_t)batch * p * q * r;
  if (!total) return cudaSuccess;
  const int64_t tiles_p = (p + 31) / 32;
  if (r == 1 && tiles_p <= 65535) {
    dim3 grid((unsigned)((q + 31) / 32), (unsigned)tiles_p, grid_y(batch)), block(32, 8);
    KRAD_DISPATCH(dt, transpose_tiles_k<T><<<grid, block, 0, s>>>((const T*)src, (T*)dst, batch, p, q));
  } else {
    KRAD_DISPATCH(dt, transpose3_k<T><<<grid_for(total), kThreads, 0, s>>>((const T*)src, (T*)dst, batch, p, q, r));
  }
  return cudaGetLastError();
}

cudaError_t eig_scale(DType dt, const void* v, const void* w, void* out, void* f, int64_t n, int64_t batch,
                      double p, double floor, cudaStream_t s) {
  const size_t nw = (size_t)n * batch, total = nw * n;
  if (!total) return cudaSuccess;
  KRAD_DISPATCH(dt, {
    eig_f_k<T><<<grid_for(nw), kThreads, 0, s>>>((const T*)w, (T*)f, nw, p, floor);
    eig_scale_k<T><<<grid_for(total), kThreads, 0, s>>>((const T*)v, (const T*)f, (T*)out, n, total);
  });
  return cudaGetLastError();
}

cudaError_t axpby(DType dt, int64_t batch, int64_t count, const double* alphas, double alpha, const void* x,
                  const double* betas, double beta, void* y, cudaStream_t s) {
  const size_t total = (size_t)batch * count;
  if (!total) return cudaSuccess;
  KRAD_DISPATCH(dt, axpby_k<T><<<grid_for(total), kThreads, 0, s>>>(count, total, alphas, alpha, (const T*)x, betas,
                                                                     beta, (T*)y));
  return cudaGetLastError();
}

cudaError_t mul_acc(DType dt, size_t count, double a, double b, const void* x, const void* y, void* acc,
                    cudaStream_t s) {
  if (!count) return cudaSuccess;
  KRAD_DISPATCH(dt, mul_acc_k<T><<<grid_for(count), kThreads, 0, s>>>(count, static_cast<T>(a), static_cast<T>(b),
                                                                       (const T*)x, (const T*)y, (T*)acc));
  return cudaGetLastError();
}

cudaError_t div_sqrt(DType dt, size_t count, const void* x, const void* acc, double scale, double eps, void* out,
                     cudaStream_t s) {
  if (!count) return cudaSuccess;
  KRAD_DISPATCH(dt, div_sqrt_k<T><<<grid_for(count), kThreads, 0, s>>>(count, (const T*)x, (const T*)acc,
                                                                        static_cast<T>(scale), static_cast<T>(eps),
                                                                        (T*)out));
  return cudaGetLastError();
}

cudaError_t add_identity(DType dt, void* a, int64_t n, int64_t batch, const double* alphas, double alpha,
                         cudaStream_t s) {
  const size_t total = (size_t)n * batch;
  if (!total) return cudaSuccess;
  KRAD_DISPATCH(dt, add_identity_k<T><<<grid_for(total), kThreads, 0, s>>>((T*)a, n, total, alphas, alpha));
  return cudaGetLastError();
}

cudaError_t symmetrize(DType dt, void* a, int64_t n, int64_t batch, cudaStream_t s) {
  const size_t total = (size_t)n * n * batch;
  if (!total) return cudaSuccess;
  KRAD_DISPATCH(dt, symmetrize_k<T><<<grid_for(total), kThreads, 0, s>>>((T*)a, n, total));
  return cudaGetLastError();
}

int64_t dot_chunks(int64_t count) {
  return std::min<int64_t>(std::max<int64_t>((count + kThreads * 4 - 1) / (kThreads * 4), 1), 256);
}

cudaError_t dot(DType dt, const void* x, const void* y, int64_t batch, int64_t count, double* partials, double* out,
                cudaStream_t s) {
  if (batch <= 0) return cudaSuccess;
  const int64_t chunks = dot_chunks(count);
  dim3 grid((unsigned)chunks, grid_y(batch));
  KRAD_DISPATCH(dt, dot_partial_k<T><<<grid, kThreads, 0, s>>>((const T*)x, (const T*)y, batch, count, partials));
  sum_partials_k<<<grid_for((size_t)batch), kThreads, 0, s>>>(partials, chunks, batch, out);
  return cudaGetLastError();
}

cudaError_t trace(DType dt, const void* a, int64_t n, int64_t batch, double* out, cudaStream_t s) {
  if (batch <= 0) return cudaSuccess;
  const unsigned grid = (unsigned)std::min<int64_t>(batch, 1 << 20);
  KRAD_DISPATCH(dt, trace_k<T><<<grid, kThreads, 0, s>>>((const T*)a, n, batch, out));
  return cudaGetLastError();
}

cudaError_t norm_ratio(const double* na, const double* nd, double eps, double* f, int64_t batch, cudaStream_t s) {
  if (batch <= 0) return cudaSuccess;
  norm_ratio_k<<<grid_for((size_t)batch), kThreads, 0, s>>>(na, nd, eps, f, batch);
  return cudaGetLastError();
}

cudaError_t inverse_coeffs(const double* x, int64_t n, bool trace, double* r, int64_t batch, cudaStream_t s) {
  if (batch <= 0) return cudaSuccess;
  inverse_coeffs_k<<<grid_for((size_t)batch), kThreads, 0, s>>>(x, n, trace, r, batch);
  return cudaGetLastError();
}

cudaError_t all_finite(DType dt, const void* x, int64_t batch, int64_t count, uint8_t* finite, cudaStream_t s) {
  if (batch <= 0) return cudaSuccess;
  cudaError_t e = cudaMemsetAsync(finite, 1, (size_t)batch, s);
  if (e != cudaSuccess) return e;
  dim3 grid((unsigned)dot_chunks(count), grid_y(batch));
  KRAD_DISPATCH(dt, all_finite_k<T><<<grid, kThreads, 0, s>>>((const T*)x, batch, count, finite));
  return cudaGetLastError();
}

cudaError_t mirror_lower(DType dt, void* a, int64_t n, int64_t batch, cudaStream_t s) {
  const size_t total = (size_t)n * n * batch;
  if (!total) return cudaSuccess;
  KRAD_DISPATCH(dt, mirror_lower_k<T><<<grid_for(total), kThreads, 0, s>>>((T*)a, n, total, nullptr));
  return cudaGetLastError();
}
cudaError_t eigh_input(DType dt, void* a, int64_t n, int64_t batch, const uint8_t* finite, cudaStream_t s) {
  const size_t total = (size_t)n * n * batch;
  if (!total) return cudaSuccess;
  KRAD_DISPATCH(dt, mirror_lower_k<T><<<grid_for(total), kThreads, 0, s>>>((T*)a, n, total, finite));
  return cudaGetLastError();
}

cudaError_t boxes(DType dt, void* src, const int64_t* meta, int r, int64_t nbox, int64_t box_numel, void* dst,
                  bool scatter, cudaStream_t s) {
  const size_t total = (size_t)nbox * box_numel;
  if (!total) return cudaSuccess;
  KRAD_DISPATCH(dt, boxes_k<T><<<grid_for(total), kThreads, 0, s>>>((T*)src, meta, r, box_numel, total, (T*)dst,
                                                                     scatter));
  return cudaGetLastError();
}

cudaError_t multi_elementwise(DType dt, int op, const MultiSpan* spans, int64_t nspan, int64_t max_count, double a,
                              double b, cudaStream_t s) {
  if (nspan <= 0 || max_count <= 0) return cudaSuccess;
  const dim3 grid = multi_grid(nspan, max_count);
  switch (op) {
    case kMultiAxpby:
      KRAD_DISPATCH(dt, multi_ew_k<T, kMultiAxpby><<<grid, kThreads, 0, s>>>(spans, nspan, a, b));
      break;
    case kMultiMulAcc:
      KRAD_DISPATCH(dt, multi_ew_k<T, kMultiMulAcc><<<grid, kThreads, 0, s>>>(spans, nspan, a, b));
      break;
    case kMultiDivSqrt:
      KRAD_DISPATCH(dt, multi_ew_k<T, kMultiDivSqrt><<<grid, kThreads, 0, s>>>(spans, nspan, a, b));
      break;
    case kMultiCopy:
      KRAD_DISPATCH(dt, multi_ew_k<T, kMultiCopy><<<grid, kThreads, 0, s>>>(spans, nspan, a, b));
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}
cudaError_t multi_norm_ratio(DType dt, const MultiSpan* spans, const int64_t* off, int64_t nspan, int64_t max_chunks,
                             int64_t max_count, double eps, double* pa, double* pd, double* f, cudaStream_t s) {
  if (nspan <= 0) return cudaSuccess;
  const dim3 pgrid((unsigned)std::max<int64_t>(max_chunks, 1), grid_y(nspan));
  KRAD_DISPATCH(dt, multi_dot2_partial_k<T><<<pgrid, kThreads, 0, s>>>(spans, off, nspan, pa, pd));
  multi_norm_ratio_k<<<grid_for((size_t)nspan), kThreads, 0, s>>>(off, nspan, pa, pd, eps, f);
  if (max_count > 0)
    KRAD_DISPATCH(dt, multi_scale_k<T><<<multi_grid(nspan, max_count), kThreads, 0, s>>>(spans, nspan, f));
  return cudaGetLastError();
}
cudaError_t multi_all_finite(DType dt, const MultiSpan* spans, int64_t nspan, int64_t max_count, cudaStream_t s) {
  if (nspan <= 0 || max_count <= 0) return cudaSuccess;
  const dim3 grid(std::min<unsigned>((unsigned)dot_chunks(max_count), 1024u), grid_y(nspan));
  KRAD_DISPATCH(dt, multi_all_finite_k<T><<<grid, kThreads, 0, s>>>(spans, nspan));
  return cudaGetLastError();
}
cudaError_t boxes_many(DType dt, const int64_t* meta, int r, int64_t nbox, int64_t box_numel, bool scatter,
                       cudaStream_t s) {
  const size_t total = (size_t)nbox * box_numel;
  if (!total) return cudaSuccess;
  KRAD_DISPATCH(dt, boxes_many_k<T><<<grid_for(total), kThreads, 0, s>>>(meta, r, box_numel, total, scatter));
  return cudaGetLastError();
}
cudaError_t inverse_update_small(DType dt, void* l, const void* t, const void* m, int64_t n, int64_t batch, bool trace,
                                 cudaStream_t s) {
  if (batch <= 0 || n <= 0) return cudaSuccess;
  const unsigned grid = (unsigned)std::min<int64_t>(batch, 1 << 20);
  KRAD_DISPATCH(dt, inverse_update_small_k<T><<<grid, kThreads, 0, s>>>((T*)l, (const T*)t, (const T*)m, n, batch, trace));
  return cudaGetLastError();
}
cudaError_t update_many(DType dt, const UpdateSpanK* spans, int64_t nspan, int64_t max_count, const UpdateParamsK& p,
                        cudaStream_t s) {
  if (nspan <= 0 || max_count <= 0) return cudaSuccess;
  KRAD_DISPATCH(dt, update_k<T><<<multi_grid(nspan, max_count), kThreads, 0, s>>>(spans, nspan, p));
  return cudaGetLastError();
}
cudaError_t adam_many(DType dt, const AdamSpanK* spans, int64_t nspan, int64_t max_count, const AdamParamsK& p,
                      cudaStream_t s) {
  if (nspan <= 0 || max_count <= 0) return cudaSuccess;
  KRAD_DISPATCH(dt, adam_k<T><<<multi_grid(nspan, max_count), kThreads, 0, s>>>(spans, nspan, p));
  return cudaGetLastError();
}
cudaError_t graft_many(DType dt, const GraftSpanK* spans, int64_t nspan, int64_t max_count, const GraftParamsK& p,
                       cudaStream_t s) {
  if (nspan <= 0 || max_count <= 0) return cudaSuccess;
  KRAD_DISPATCH(dt, graft_k<T><<<multi_grid(nspan, max_count), kThreads, 0, s>>>(spans, nspan, p));
  return cudaGetLastError();
}
cudaError_t axpby_out_many(DType dt, const MultiSpan* spans, int64_t nspan, int64_t max_count, double a, double b,
                           cudaStream_t s) {
  if (nspan <= 0 || max_count <= 0) return cudaSuccess;
  KRAD_DISPATCH(dt, axpby3_k<T><<<multi_grid(nspan, max_count), kThreads, 0, s>>>(spans, nspan, a, b));
  return cudaGetLastError();
}
cudaError_t probe() {
  cudaFuncAttributes attr;
  return cudaFuncGetAttributes(&attr, fill_k<float>);
}

}  // namespace cuda_kernels
}  // namespace krad
