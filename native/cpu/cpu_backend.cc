#include "cpu_backend.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

namespace krad {
namespace {

template <typename T>
void gemm_t(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const T* a, int64_t lda, int64_t sa,
            const T* b, int64_t ldb, int64_t sb, double beta, T* c, int64_t ldc, int64_t sc, int64_t batch) {
  const CBLAS_TRANSPOSE tA = ta ? CblasTrans : CblasNoTrans, tB = tb ? CblasTrans : CblasNoTrans;
  for (int64_t i = 0; i < batch; ++i) {
    if constexpr (sizeof(T) == 4)
      cblas_sgemm(CblasRowMajor, tA, tB, (int)m, (int)n, (int)k, (float)alpha, a + i * sa, (int)lda, b + i * sb,
                  (int)ldb, (float)beta, c + i * sc, (int)ldc);
    else
      cblas_dgemm(CblasRowMajor, tA, tB, (int)m, (int)n, (int)k, alpha, a + i * sa, (int)lda, b + i * sb, (int)ldb,
                  beta, c + i * sc, (int)ldc);
  }
}

// C = alpha op(A) op(A)^T per item: BLAS syrk fills the lower triangle, mirrored onto the upper.
template <typename T>
void syrk_t(bool trans, int64_t n, int64_t k, double alpha, const T* a, int64_t lda, int64_t sa, T* c,
            int64_t batch) {
  const CBLAS_TRANSPOSE t = trans ? CblasTrans : CblasNoTrans;
  for (int64_t b = 0; b < batch; ++b) {
    T* cb = c + b * n * n;
    if constexpr (sizeof(T) == 4)
      cblas_ssyrk(CblasRowMajor, CblasLower, t, (int)n, (int)k, (float)alpha, a + b * sa, (int)lda, 0.0f, cb, (int)n);
    else
      cblas_dsyrk(CblasRowMajor, CblasLower, t, (int)n, (int)k, alpha, a + b * sa, (int)lda, 0.0, cb, (int)n);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) cb[i * n + j] = cb[j * n + i];
  }
}

template <typename T>
void transpose3_t(const T* src, T* dst, int64_t batch, int64_t p, int64_t q, int64_t r) {
  const int64_t item = p * q * r;
  for (int64_t b = 0; b < batch; ++b) {
    const T* s = src + b * item;
    T* d = dst + b * item;
    for (int64_t i = 0; i < p; ++i)
      for (int64_t j = 0; j < q; ++j) std::memcpy(d + (j * p + i) * r, s + (i * q + j) * r, sizeof(T) * r);
  }
}

// Column-major LAPACK on a row-major symmetric matrix sees A^T = A. We mirror the
// row-major lower triangle (the one our eigh reads) onto the upper, then let LAPACK read
// its column-major lower triangle ('L'), the path torch.linalg.eigh and numpy take by
// default: on ill-conditioned float32 statistics the 'U' path loses the small
// eigenvalues to rounding that 'L' keeps (the golden shampoo_ill_conditioned_fp32 case:
// first-step error 3.8e-6 with 'U', 3e-8 with 'L'). Eigenvectors come back as columns in
// column-major, i.e. rows in row-major; a transpose puts them in columns.
template <typename T>
int syevd_one(T* v, T* w, int64_t n) {
  if (n == 1) {
    w[0] = v[0];
    v[0] = 1;
    return std::isfinite(w[0]) ? 0 : 1;
  }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) v[i * n + j] = v[j * n + i];
  lapack_int info;
  if constexpr (sizeof(T) == 4)
    info = LAPACKE_ssyevd(LAPACK_COL_MAJOR, 'V', 'L', (lapack_int)n, v, (lapack_int)n, w);
  else
    info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', (lapack_int)n, v, (lapack_int)n, w);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) std::swap(v[i * n + j], v[j * n + i]);
  return info < 0 ? 1000 - info : static_cast<int>(info);  // < 0 would be our bug: report it as failed
}

template <typename T>
bool finite_block(const T* x, int64_t count) {
  for (int64_t i = 0; i < count; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

// One element of axpby's y = a x + b y, with its branches: a == 0 never reads x, b == 0
// never reads y (axpby_t below). The fused stages use it so they round exactly as the
// chains of single ops they replace.
template <typename T>
inline T ax_by(T a, T x, T b, T y) {
  return a == T(0) ? b * y : (b == T(0) ? a * x : a * x + b * y);
}

template <typename T>
bool update_span(const Backend::UpdateSpan& s, const Backend::UpdateParams& p) {
  const T* D = static_cast<const T*>(s.d);
  const T* M = static_cast<const T*>(s.m);
  const T* W = static_cast<const T*>(s.w);
  const T* U = static_cast<const T*>(s.u);
  T* MO = static_cast<T*>(s.m_out);
  T* WO = static_cast<T*>(s.w_out);
  const T wd = static_cast<T>(p.wd), mu = static_cast<T>(p.mu), nlr = static_cast<T>(-p.lr);
  const T dec = static_cast<T>(1 - p.lr * p.wd), one = T(1), zero = T(0);
  const bool mom = p.mu > 0;
  bool ok = true;
  for (int64_t i = 0; i < s.count; ++i) {
    T d = D[i];
    if (p.l2) d = ax_by(wd, W[i], one, d);
    T mn = zero;
    if (mom) {
      mn = ax_by(one, d, mu, M[i]);
      ok = ok && std::isfinite(mn);
    }
    const T u = p.ext ? U[i] : mom ? (p.nesterov ? ax_by(mu, mn, one, d) : mn) : d;
    T w = W[i];
    if (p.decoupled) w = ax_by(zero, w, dec, w);
    const T wn = ax_by(nlr, u, one, w);
    ok = ok && std::isfinite(wn);
    if (mom) MO[i] = mn;
    WO[i] = wn;
  }
  return ok;
}

template <typename T>
bool adam_span(const Backend::AdamSpan& s, const Backend::AdamParams& p) {
  const T *G = static_cast<const T*>(s.g), *M = static_cast<const T*>(s.m), *V = static_cast<const T*>(s.v),
          *W = static_cast<const T*>(s.w);
  T *MO = static_cast<T*>(s.m_out), *VO = static_cast<T*>(s.v_out), *WO = static_cast<T*>(s.w_out);
  const T wd = static_cast<T>(p.wd), dec = static_cast<T>(1 - p.lr * p.wd), one = T(1), zero = T(0);
  const T a1 = static_cast<T>(1 - p.b1), b1 = static_cast<T>(p.b1), b2 = static_cast<T>(p.b2),
          a2 = static_cast<T>(1 - p.b2), sc = static_cast<T>(1 / p.bc2), eps = static_cast<T>(p.eps),
          step = static_cast<T>(-p.lr / p.bc1);
  bool ok = true;
  for (int64_t i = 0; i < s.count; ++i) {
    T g = G[i];
    if (p.l2) g = ax_by(wd, W[i], one, g);
    T w = W[i];
    if (p.decoupled) w = ax_by(zero, w, dec, w);
    const T m = ax_by(a1, g, b1, M[i]);
    const T v = b2 * V[i] + a2 * g * g;
    const T dir = m / (std::sqrt(v * sc) + eps);
    const T wn = ax_by(step, dir, one, w);
    ok = ok && std::isfinite(m) && std::isfinite(v) && std::isfinite(wn);
    MO[i] = m;
    VO[i] = v;
    WO[i] = wn;
  }
  return ok;
}

template <typename T>
void graft_span(Backend::Graft kind, const Backend::GraftSpan& s, const Backend::GraftParams& p) {
  const T* G = static_cast<const T*>(s.g);
  const T* A = static_cast<const T*>(s.acc);
  T* AO = static_cast<T*>(s.acc_out);
  T* DIR = static_cast<T*>(s.dir);
  const T one = T(1), zero = T(0), eps = static_cast<T>(p.eps);
  if (kind == Backend::Graft::ADAGRAD) {
    for (int64_t i = 0; i < s.count; ++i) {
      const T g = G[i];
      const T a = one * A[i] + one * g * g;
      AO[i] = a;
      DIR[i] = g / (std::sqrt(a * one) + eps);
    }
    return;
  }
  const T* MO_in = static_cast<const T*>(s.mom);
  T* MO = static_cast<T*>(s.mom_out);
  const T a1 = static_cast<T>(1 - p.b1), b1 = static_cast<T>(p.b1), b2 = static_cast<T>(p.b2),
          a2 = static_cast<T>(1 - p.b2), sc = static_cast<T>(1 / p.bc2), c1 = static_cast<T>(1 / p.bc1);
  for (int64_t i = 0; i < s.count; ++i) {
    const T g = G[i];
    const T m = ax_by(a1, g, b1, MO_in[i]);
    const T a = b2 * A[i] + a2 * g * g;
    MO[i] = m;
    AO[i] = a;
    const T d = m / (std::sqrt(a * sc) + eps);
    DIR[i] = ax_by(zero, d, c1, d);
  }
}

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  std::string device() const override {
    const char* cfg = openblas_get_config();
    return std::string("CPU (OpenBLAS ") + (cfg ? cfg : "?") + ", " + std::to_string(openblas_get_num_threads()) +
           " threads)";
  }

  Status allocate(size_t bytes, void** ptr) override {
    void* p = std::aligned_alloc(64, std::max<size_t>(64, (bytes + 63) / 64 * 64));
    if (!p) return Status::Error(Code::OUT_OF_MEMORY, "host allocation of " + std::to_string(bytes) + " bytes failed");
    *ptr = p;
    return Status::Ok();
  }
  void release(void* ptr) override { std::free(ptr); }
  Status upload(void* dst, const void* src, size_t bytes) override { return copy(dst, src, bytes); }
  Status download(void* dst, const void* src, size_t bytes) override { return copy(dst, src, bytes); }
  Status copy(void* dst, const void* src, size_t bytes) override {
    if (dst != src && bytes) std::memmove(dst, src, bytes);
    return Status::Ok();
  }
  Status fill(DType dt, void* dst, size_t count, double value) override {
    if (dt == DType::F32)
      std::fill_n(static_cast<float*>(dst), count, static_cast<float>(value));
    else
      std::fill_n(static_cast<double*>(dst), count, value);
    return Status::Ok();
  }
  Status cast(DType sdt, const void* src, DType ddt, void* dst, size_t count) override {
    if (sdt == ddt) return copy(dst, src, count * dtype_size(sdt));
    if (sdt == DType::F32) {
      auto s = static_cast<const float*>(src);
      auto d = static_cast<double*>(dst);
      for (size_t i = 0; i < count; ++i) d[i] = s[i];
    } else {
      auto s = static_cast<const double*>(src);
      auto d = static_cast<float*>(dst);
      for (size_t i = 0; i < count; ++i) d[i] = static_cast<float>(s[i]);
    }
    return Status::Ok();
  }
  Status synchronize() override { return Status::Ok(); }

  Status gemm(DType dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const void* a, int64_t lda,
              int64_t sa, const void* b, int64_t ldb, int64_t sb, double beta, void* c, int64_t ldc, int64_t sc,
              int64_t batch) override {
    if (dt == DType::F32)
      gemm_t<float>(ta, tb, m, n, k, alpha, (const float*)a, lda, sa, (const float*)b, ldb, sb, beta, (float*)c, ldc,
                    sc, batch);
    else
      gemm_t<double>(ta, tb, m, n, k, alpha, (const double*)a, lda, sa, (const double*)b, ldb, sb, beta, (double*)c,
                     ldc, sc, batch);
    return Status::Ok();
  }

  Status transpose3(DType dt, const void* src, void* dst, int64_t batch, int64_t p, int64_t q, int64_t r) override {
    if (dt == DType::F32)
      transpose3_t((const float*)src, (float*)dst, batch, p, q, r);
    else
      transpose3_t((const double*)src, (double*)dst, batch, p, q, r);
    return Status::Ok();
  }

  Status syrk(DType dt, bool trans, int64_t n, int64_t k, double alpha, const void* a, int64_t lda, int64_t sa,
              double beta, void* c, int64_t batch) override {
    if (n <= 0 || batch <= 0) return Status::Ok();
    const size_t count = static_cast<size_t>(n * n * batch);
    // beta != 0: the symmetric product into a buffer, then C = S + beta C (BLAS syrk's own
    // beta would update one triangle of a C that may be unsymmetric).
    std::vector<char> buf(beta != 0.0 ? count * dtype_size(dt) : 0);
    void* out = beta != 0.0 ? static_cast<void*>(buf.data()) : c;
    if (k == 0)
      KRAD_RETURN_IF_ERROR(fill(dt, out, count, 0.0));
    else if (dt == DType::F32)
      syrk_t(trans, n, k, alpha, (const float*)a, lda, sa, (float*)out, batch);
    else
      syrk_t(trans, n, k, alpha, (const double*)a, lda, sa, (double*)out, batch);
    if (beta == 0.0) return Status::Ok();
    return axpby(dt, 1, (int64_t)count, nullptr, 1.0, out, nullptr, beta, c);
  }

  Status syevd(DType dt, const void* a, void* w, void* v, int64_t n, int64_t batch, std::vector<int>* info) override {
    info->assign(batch, 0);
    const size_t es = dtype_size(dt), nn = static_cast<size_t>(n * n);
    std::memcpy(v, a, nn * batch * es);
    for (int64_t b = 0; b < batch; ++b) {
      // A skipped (non-finite) item gets NaN eigenvalues: callers such as matpow still read
      // w of failed items, which must not be uninitialised memory.
      if (dt == DType::F32) {
        float* vb = (float*)v + b * nn;
        float* wb = (float*)w + b * n;
        if (finite_block(vb, nn)) {
          (*info)[b] = syevd_one(vb, wb, n);
        } else {
          (*info)[b] = 1;
          std::fill_n(wb, n, NAN);
        }
      } else {
        double* vb = (double*)v + b * nn;
        double* wb = (double*)w + b * n;
        if (finite_block(vb, nn)) {
          (*info)[b] = syevd_one(vb, wb, n);
        } else {
          (*info)[b] = 1;
          std::fill_n(wb, n, NAN);
        }
      }
    }
    return Status::Ok();
  }

  Status eig_scale(DType dt, const void* v, const void* w, void* out, int64_t n, int64_t batch, double p,
                   double floor) override {
    if (dt == DType::F32)
      eig_scale_t((const float*)v, (const float*)w, (float*)out, n, batch, p, floor);
    else
      eig_scale_t((const double*)v, (const double*)w, (double*)out, n, batch, p, floor);
    return Status::Ok();
  }

  Status axpby(DType dt, int64_t batch, int64_t count, const double* alphas, double alpha, const void* x,
               const double* betas, double beta, void* y) override {
    if (dt == DType::F32)
      axpby_t(batch, count, alphas, alpha, (const float*)x, betas, beta, (float*)y);
    else
      axpby_t(batch, count, alphas, alpha, (const double*)x, betas, beta, (double*)y);
    return Status::Ok();
  }

  Status mul_acc(DType dt, size_t count, double a, double b, const void* x, const void* y, void* acc) override {
    if (dt == DType::F32) {
      const float *xs = (const float*)x, *ys = (const float*)y;
      float* s = (float*)acc;
      const float fa = (float)a, fb = (float)b;
      for (size_t i = 0; i < count; ++i) s[i] = fa * s[i] + fb * xs[i] * ys[i];
    } else {
      const double *xs = (const double*)x, *ys = (const double*)y;
      double* s = (double*)acc;
      for (size_t i = 0; i < count; ++i) s[i] = a * s[i] + b * xs[i] * ys[i];
    }
    return Status::Ok();
  }

  Status div_sqrt(DType dt, size_t count, const void* x, const void* acc, double scale, double eps,
                  void* out) override {
    if (dt == DType::F32) {
      const float *xs = (const float*)x, *s = (const float*)acc;
      float* o = (float*)out;
      const float fs = (float)scale, fe = (float)eps;
      for (size_t i = 0; i < count; ++i) o[i] = xs[i] / (std::sqrt(s[i] * fs) + fe);
    } else {
      const double *xs = (const double*)x, *s = (const double*)acc;
      double* o = (double*)out;
      for (size_t i = 0; i < count; ++i) o[i] = xs[i] / (std::sqrt(s[i] * scale) + eps);
    }
    return Status::Ok();
  }

  Status add_identity(DType dt, void* a, int64_t n, int64_t batch, const double* alphas, double alpha) override {
    for (int64_t b = 0; b < batch; ++b) {
      const double al = alphas ? alphas[b] : alpha;
      for (int64_t i = 0; i < n; ++i) {
        if (dt == DType::F32)
          ((float*)a)[b * n * n + i * n + i] += (float)al;
        else
          ((double*)a)[b * n * n + i * n + i] += al;
      }
    }
    return Status::Ok();
  }

  Status symmetrize(DType dt, void* a, int64_t n, int64_t batch) override {
    if (dt == DType::F32)
      symmetrize_t((float*)a, n, batch);
    else
      symmetrize_t((double*)a, n, batch);
    return Status::Ok();
  }

  Status dot(DType dt, const void* x, const void* y, int64_t batch, int64_t count, std::vector<double>* out) override {
    out->assign(batch, 0.0);
    for (int64_t b = 0; b < batch; ++b) {
      double s = 0;
      if (dt == DType::F32) {
        const float *xs = (const float*)x + b * count, *ys = (const float*)y + b * count;
        for (int64_t i = 0; i < count; ++i) s += (double)xs[i] * ys[i];
      } else {
        const double *xs = (const double*)x + b * count, *ys = (const double*)y + b * count;
        for (int64_t i = 0; i < count; ++i) s += xs[i] * ys[i];
      }
      (*out)[b] = s;
    }
    return Status::Ok();
  }

  Status trace(DType dt, const void* a, int64_t n, int64_t batch, std::vector<double>* out) override {
    out->assign(batch, 0.0);
    for (int64_t b = 0; b < batch; ++b) {
      double s = 0;
      for (int64_t i = 0; i < n; ++i)
        s += dt == DType::F32 ? (double)((const float*)a)[b * n * n + i * (n + 1)]
                              : ((const double*)a)[b * n * n + i * (n + 1)];
      (*out)[b] = s;
    }
    return Status::Ok();
  }

  Status all_finite(DType dt, const void* x, int64_t batch, int64_t count, std::vector<uint8_t>* out) override {
    out->assign(batch, 1);
    for (int64_t b = 0; b < batch; ++b)
      (*out)[b] = dt == DType::F32 ? finite_block((const float*)x + b * count, count)
                                   : finite_block((const double*)x + b * count, count);
    return Status::Ok();
  }

  Status axpby_out_many(const std::vector<Axpby3>& spans, double a, double b) override {
    for (const Axpby3& s : spans) {
      if (s.dt == DType::F32)
        axpby3_t<float>(s, a, b);
      else
        axpby3_t<double>(s, a, b);
    }
    return Status::Ok();
  }

  Status update_many(const std::vector<UpdateSpan>& spans, const UpdateParams& p,
                     std::vector<uint8_t>* finite) override {
    finite->assign(spans.size(), 1);
    for (size_t j = 0; j < spans.size(); ++j)
      (*finite)[j] = spans[j].dt == DType::F32 ? update_span<float>(spans[j], p) : update_span<double>(spans[j], p);
    return Status::Ok();
  }

  Status adam_many(const std::vector<AdamSpan>& spans, const AdamParams& p, std::vector<uint8_t>* finite) override {
    finite->assign(spans.size(), 1);
    for (size_t j = 0; j < spans.size(); ++j)
      (*finite)[j] = spans[j].dt == DType::F32 ? adam_span<float>(spans[j], p) : adam_span<double>(spans[j], p);
    return Status::Ok();
  }

  Status graft_many(Graft kind, const std::vector<GraftSpan>& spans, const GraftParams& p) override {
    for (const GraftSpan& s : spans) {
      if (s.dt == DType::F32)
        graft_span<float>(kind, s, p);
      else
        graft_span<double>(kind, s, p);
    }
    return Status::Ok();
  }

  Status boxes(DType dt, void* src, const std::vector<int64_t>& sd, const std::vector<int64_t>& bd,
               const std::vector<int64_t>& offsets, void* dst, bool scatter) override {
    const int r = static_cast<int>(sd.size());
    const size_t es = dtype_size(dt);
    int64_t box_numel = 1;
    for (auto d : bd) box_numel *= d;
    const int64_t nbox = r ? static_cast<int64_t>(offsets.size()) / r : 1;
    std::vector<int64_t> sstride(r, 1);
    for (int i = r - 2; i >= 0; --i) sstride[i] = sstride[i + 1] * sd[i + 1];
    const int64_t row = r ? bd[r - 1] : 1;  // contiguous run along the last axis
    const int64_t rows = row ? box_numel / row : 0;
    std::vector<int64_t> idx(r, 0);
    for (int64_t j = 0; j < nbox; ++j) {
      char* blk = static_cast<char*>(dst) + j * box_numel * es;
      for (int64_t q = 0; q < rows; ++q) {
        // Decompose q into the box's leading r-1 indices.
        int64_t rem = q, off = 0;
        for (int i = r - 2; i >= 0; --i) {
          idx[i] = rem % bd[i];
          rem /= bd[i];
        }
        for (int i = 0; i < r - 1; ++i) off += (offsets[j * r + i] + idx[i]) * sstride[i];
        if (r) off += offsets[j * r + r - 1];
        char* full = static_cast<char*>(src) + off * es;
        char* part = blk + q * row * es;
        if (scatter)
          std::memcpy(full, part, row * es);
        else
          std::memcpy(part, full, row * es);
      }
    }
    return Status::Ok();
  }

 private:
  template <typename T>
  static void eig_scale_t(const T* v, const T* w, T* out, int64_t n, int64_t batch, double p, double floor) {
    std::vector<T> f(n);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t j = 0; j < n; ++j) f[j] = static_cast<T>(std::pow(std::max<double>(w[b * n + j], floor), p));
      const T* vb = v + b * n * n;
      T* ob = out + b * n * n;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) ob[i * n + j] = vb[i * n + j] * f[j];
    }
  }
  template <typename T>
  static void axpby_t(int64_t batch, int64_t count, const double* alphas, double alpha, const T* x,
                      const double* betas, double beta, T* y) {
    for (int64_t b = 0; b < batch; ++b) {
      const T a = static_cast<T>(alphas ? alphas[b] : alpha), be = static_cast<T>(betas ? betas[b] : beta);
      const T* xs = x + b * count;
      T* ys = y + b * count;
      if (a == T(0)) {
        for (int64_t i = 0; i < count; ++i) ys[i] = be * ys[i];
      } else if (be == T(0)) {  // y may be uninitialised: never read it
        for (int64_t i = 0; i < count; ++i) ys[i] = a * xs[i];
      } else {
        for (int64_t i = 0; i < count; ++i) ys[i] = a * xs[i] + be * ys[i];
      }
    }
  }
  template <typename T>
  static void axpby3_t(const Axpby3& s, double a, double b) {
    const T fa = static_cast<T>(a), fb = static_cast<T>(b);
    const T* x = static_cast<const T*>(s.x);
    const T* y = static_cast<const T*>(s.y);
    T* z = static_cast<T*>(s.z);
    for (int64_t i = 0; i < s.count; ++i) z[i] = ax_by(fa, x[i], fb, y[i]);
  }
  template <typename T>
  static void symmetrize_t(T* a, int64_t n, int64_t batch) {
    for (int64_t b = 0; b < batch; ++b) {
      T* m = a + b * n * n;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = i + 1; j < n; ++j) {
          T s = (m[i * n + j] + m[j * n + i]) / T(2);
          m[i * n + j] = s;
          m[j * n + i] = s;
        }
    }
  }
};

}  // namespace

Backend* cpu_backend() {
  static CpuBackend instance;
  return &instance;
}

}  // namespace krad
