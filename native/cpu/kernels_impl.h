// The kernels of kernels.h, written once and compiled per instruction set: a kernels_*.cc
// file includes its standard headers, then sets `#pragma GCC target`, defines
// KRAD_KERNELS_NAME / KRAD_KERNELS_FN and includes this file. Everything here has internal
// linkage and calls only compiler builtins, so no code built for one instruction set can
// be picked by the linker for another (an inline std:: function instantiated here would
// be a shared COMDAT).
//
// Shape of every kernel: the span is cut into tiles of kTile elements; a tile's inputs are
// read, its outputs computed into local arrays (so outputs may alias inputs), checked for
// finiteness there when asked, and stored, with non-temporal stores when `stream` (large
// outputs that would only evict the caches; the caller decides). The per-element
// expressions are those of the scalar code they replace, with the coefficient branches
// (a == 0, b == 0, flags) taken once per call instead of per element.
#ifndef KRAD_KERNELS_NAME
#error "define KRAD_KERNELS_NAME, KRAD_KERNELS_FN and KRAD_KERNELS_VEC before including kernels_impl.h"
#endif

namespace krad {
namespace cpu {
namespace {

constexpr int64_t kTile = 512;

template <typename T>
struct Bits;
template <>
struct Bits<float> {
  using U = uint32_t;
  static constexpr U exp = 0x7f800000u;
};
template <>
struct Bits<double> {
  using U = uint64_t;
  static constexpr U exp = 0x7ff0000000000000ull;
};

template <typename T>
inline bool finite_n(const T* __restrict x, int64_t n) {
  using U = typename Bits<T>::U;
  U bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    U u;
    __builtin_memcpy(&u, x + i, sizeof u);
    bad |= static_cast<U>((u & Bits<T>::exp) == Bits<T>::exp);
  }
  return bad == 0;
}

// Non-temporal stores as wide as the instruction set allows (KRAD_KERNELS_VEC bytes):
// full-line stores let the write-combining buffers go out without reading the line; with
// 16-byte stores, measured on Zen 4, a streamed triad ran at half the speed of 64-byte ones.
template <typename T>
inline void store_n(T* dst, const T* __restrict src, int64_t n, bool stream) {
#if defined(__x86_64__) || defined(__SSE2__)
  if (stream && (reinterpret_cast<uintptr_t>(dst) % KRAD_KERNELS_VEC) == 0) {
    constexpr int64_t w = KRAD_KERNELS_VEC / sizeof(T);
    int64_t i = 0;
    for (; i + w <= n; i += w) {
#if KRAD_KERNELS_VEC == 64
      _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i), _mm512_loadu_si512(reinterpret_cast<const void*>(src + i)));
#elif KRAD_KERNELS_VEC == 32
      _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
#else
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i), _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
#endif
    }
    for (; i < n; ++i) dst[i] = src[i];
    return;
  }
#endif
  (void)stream;
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

inline void store_fence(bool stream) {
#if defined(__x86_64__) || defined(__SSE2__)
  if (stream) _mm_sfence();  // non-temporal stores are weakly ordered: visible before we return
#else
  (void)stream;
#endif
}

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// ---- axpby family ----------------------------------------------------------------------
// Mode of ax_by(a, x, b, y) = a == 0 ? b y : (b == 0 ? a x : a x + b y).
enum AxBy : int { A_ZERO = 0, B_ZERO = 1, BOTH = 2 };
template <typename T>
inline AxBy axby_mode(T a, T b) {
  return a == T(0) ? A_ZERO : (b == T(0) ? B_ZERO : BOTH);
}

template <typename T, int M>
inline void axby_tile(const T* __restrict x, const T* __restrict y, T* __restrict out, int64_t n, T a, T b) {
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (M == A_ZERO)
      out[i] = b * y[i];
    else if constexpr (M == B_ZERO)
      out[i] = a * x[i];
    else
      out[i] = a * x[i] + b * y[i];
  }
}

template <typename T, int M>
void axpby3_m(const T* x, const T* y, T* z, int64_t n, T a, T b, bool stream) {
  alignas(64) T t[kTile];
  for (int64_t s = 0; s < n; s += kTile) {
    const int64_t k = min64(kTile, n - s);
    axby_tile<T, M>(M == A_ZERO ? x : x + s, M == B_ZERO ? y : y + s, t, k, a, b);  // x or y may be null when unread
    store_n(z + s, t, k, stream);
  }
  store_fence(stream);
}

template <typename T>
void axpby3_k(const T* x, const T* y, T* z, int64_t n, T a, T b, bool stream) {
  switch (axby_mode(a, b)) {
    case A_ZERO: return axpby3_m<T, A_ZERO>(x, y, z, n, a, b, stream);
    case B_ZERO: return axpby3_m<T, B_ZERO>(x, y, z, n, a, b, stream);
    default: return axpby3_m<T, BOTH>(x, y, z, n, a, b, stream);
  }
}

// y = a x + b y: axpby3 into y itself (a == 0 never reads x, b == 0 never reads y).
template <typename T>
void axpby_k(const T* x, T* y, int64_t n, T a, T b) {
  axpby3_k<T>(x, y, y, n, a, b, false);
}

template <typename T>
void mul_acc_k(const T* x, const T* y, T* acc, int64_t n, T a, T b) {
  alignas(64) T t[kTile];
  for (int64_t s = 0; s < n; s += kTile) {
    const int64_t k = min64(kTile, n - s);
    const T* __restrict xs = x + s;
    const T* __restrict ys = y + s;
    const T* __restrict as = acc + s;
    for (int64_t i = 0; i < k; ++i) t[i] = a * as[i] + b * xs[i] * ys[i];
    store_n(acc + s, t, k, false);
  }
}

template <typename T>
void div_sqrt_k(const T* x, const T* acc, T* out, int64_t n, T scale, T eps, bool stream) {
  alignas(64) T t[kTile];
  for (int64_t s = 0; s < n; s += kTile) {
    const int64_t k = min64(kTile, n - s);
    const T* __restrict xs = x + s;
    const T* __restrict as = acc + s;
    for (int64_t i = 0; i < k; ++i) {
      if constexpr (sizeof(T) == 4)
        t[i] = xs[i] / (__builtin_sqrtf(as[i] * scale) + eps);
      else
        t[i] = xs[i] / (__builtin_sqrt(as[i] * scale) + eps);
    }
    store_n(out + s, t, k, stream);
  }
  store_fence(stream);
}

template <typename T>
inline T sqrt_t(T v) {
  if constexpr (sizeof(T) == 4)
    return __builtin_sqrtf(v);
  else
    return __builtin_sqrt(v);
}

// ---- the optimizers' fused stages ------------------------------------------------------
// Flags of the update: which branches of the per-element formula apply.
enum : int { U_L2 = 1, U_MOM = 2, U_NEST = 4, U_EXT = 8, U_DEC = 16 };

template <typename T, int F>
bool update_f(const Backend::UpdateSpan& s, int64_t b, int64_t e, const Backend::UpdateParams& p, bool stream) {
  const T wd = static_cast<T>(p.wd), mu = static_cast<T>(p.mu), nlr = static_cast<T>(-p.lr);
  const T dec = static_cast<T>(1 - p.lr * p.wd), one = T(1);
  alignas(64) T tm[kTile], tw[kTile];
  bool ok = true;
  for (int64_t s0 = b; s0 < e; s0 += kTile) {
    const int64_t k = min64(kTile, e - s0);
    const T* __restrict D = static_cast<const T*>(s.d) + s0;
    const T* __restrict W = static_cast<const T*>(s.w) + s0;
    const T* __restrict M = (F & U_MOM) ? static_cast<const T*>(s.m) + s0 : nullptr;
    const T* __restrict U = (F & U_EXT) ? static_cast<const T*>(s.u) + s0 : nullptr;
    for (int64_t i = 0; i < k; ++i) {
      T d = D[i];
      if constexpr ((F & U_L2) != 0) d = wd * W[i] + one * d;  // ax_by(wd, w, 1, d), wd != 0
      T mn = T(0);
      if constexpr ((F & U_MOM) != 0) mn = one * d + mu * M[i];  // ax_by(1, d, mu, m), mu > 0
      T u;
      if constexpr ((F & U_EXT) != 0)
        u = U[i];
      else if constexpr ((F & U_MOM) != 0 && (F & U_NEST) != 0)
        u = mu * mn + one * d;  // ax_by(mu, m', 1, d)
      else if constexpr ((F & U_MOM) != 0)
        u = mn;
      else
        u = d;
      T w = W[i];
      if constexpr ((F & U_DEC) != 0) w = dec * w;  // ax_by(0, w, dec, w)
      tw[i] = nlr * u + one * w;                      // ax_by(-lr, u, 1, w), lr != 0
      if constexpr ((F & U_MOM) != 0) tm[i] = mn;
    }
    ok = finite_n(tw, k) && ok;
    store_n(static_cast<T*>(s.w_out) + s0, tw, k, stream);
    if constexpr ((F & U_MOM) != 0) {
      ok = finite_n(tm, k) && ok;
      store_n(static_cast<T*>(s.m_out) + s0, tm, k, stream);
    }
  }
  store_fence(stream);
  return ok;
}

// The scalar form, for the coefficient cases the flags do not cover (l2 with wd == 0,
// lr == 0): the code the kernels replace, element by element.
template <typename T>
inline T ax_by(T a, T x, T b, T y) {
  return a == T(0) ? b * y : (b == T(0) ? a * x : a * x + b * y);
}
template <typename T>
inline bool isfinite_t(T x) {
  return finite_n(&x, 1);
}

template <typename T>
bool update_scalar(const Backend::UpdateSpan& s, int64_t b, int64_t e, const Backend::UpdateParams& p) {
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
  for (int64_t i = b; i < e; ++i) {
    T d = D[i];
    if (p.l2) d = ax_by(wd, W[i], one, d);
    T mn = zero;
    if (mom) {
      mn = ax_by(one, d, mu, M[i]);
      ok = ok && isfinite_t(mn);
    }
    const T u = p.ext ? U[i] : mom ? (p.nesterov ? ax_by(mu, mn, one, d) : mn) : d;
    T w = W[i];
    if (p.decoupled) w = ax_by(zero, w, dec, w);
    const T wn = ax_by(nlr, u, one, w);
    ok = ok && isfinite_t(wn);
    if (mom) MO[i] = mn;
    WO[i] = wn;
  }
  return ok;
}

template <typename T, int F>
struct UpdateTable {
  static void fill(bool (**t)(const Backend::UpdateSpan&, int64_t, int64_t, const Backend::UpdateParams&, bool)) {
    t[F] = &update_f<T, F>;
    if constexpr (F > 0) UpdateTable<T, F - 1>::fill(t);
  }
};

template <typename T>
bool update_k(const Backend::UpdateSpan& s, int64_t b, int64_t e, const Backend::UpdateParams& p, bool stream) {
  using Fn = bool (*)(const Backend::UpdateSpan&, int64_t, int64_t, const Backend::UpdateParams&, bool);
  static const struct Table {
    Fn f[32];
    Table() { UpdateTable<T, 31>::fill(f); }
  } table;
  const T wd = static_cast<T>(p.wd), nlr = static_cast<T>(-p.lr);
  if ((p.l2 && wd == T(0)) || nlr == T(0)) return update_scalar<T>(s, b, e, p);
  const bool mom = p.mu > 0;
  const int f = (p.l2 ? U_L2 : 0) | (mom ? U_MOM : 0) | (mom && p.nesterov ? U_NEST : 0) | (p.ext ? U_EXT : 0) |
                (p.decoupled ? U_DEC : 0);
  return table.f[f](s, b, e, p, stream);
}

enum : int { A_L2 = 1, A_DEC = 2, A_B1Z = 4 };

template <typename T, int F>
bool adam_f(const Backend::AdamSpan& s, int64_t b, int64_t e, const Backend::AdamParams& p, bool stream) {
  const T wd = static_cast<T>(p.wd), dec = static_cast<T>(1 - p.lr * p.wd), one = T(1);
  const T a1 = static_cast<T>(1 - p.b1), b1 = static_cast<T>(p.b1), b2 = static_cast<T>(p.b2),
          a2 = static_cast<T>(1 - p.b2), sc = static_cast<T>(1 / p.bc2), eps = static_cast<T>(p.eps),
          step = static_cast<T>(-p.lr / p.bc1);
  alignas(64) T tm[kTile], tv[kTile], tw[kTile];
  bool ok = true;
  for (int64_t s0 = b; s0 < e; s0 += kTile) {
    const int64_t k = min64(kTile, e - s0);
    const T* __restrict G = static_cast<const T*>(s.g) + s0;
    const T* __restrict M = static_cast<const T*>(s.m) + s0;
    const T* __restrict V = static_cast<const T*>(s.v) + s0;
    const T* __restrict W = static_cast<const T*>(s.w) + s0;
    for (int64_t i = 0; i < k; ++i) {
      T g = G[i];
      if constexpr ((F & A_L2) != 0) g = wd * W[i] + one * g;  // ax_by(wd, w, 1, g), wd != 0
      T w = W[i];
      if constexpr ((F & A_DEC) != 0) w = dec * w;  // ax_by(0, w, dec, w)
      T m;
      if constexpr ((F & A_B1Z) != 0)
        m = a1 * g;  // ax_by(a1, g, 0, m)
      else
        m = a1 * g + b1 * M[i];  // ax_by(a1, g, b1, m), a1 != 0
      const T v = b2 * V[i] + a2 * g * g;
      const T dir = m / (sqrt_t(v * sc) + eps);
      tw[i] = step * dir + one * w;  // ax_by(step, dir, 1, w), step != 0
      tm[i] = m;
      tv[i] = v;
    }
    ok = finite_n(tm, k) && finite_n(tv, k) && finite_n(tw, k) && ok;
    store_n(static_cast<T*>(s.m_out) + s0, tm, k, stream);
    store_n(static_cast<T*>(s.v_out) + s0, tv, k, stream);
    store_n(static_cast<T*>(s.w_out) + s0, tw, k, stream);
  }
  store_fence(stream);
  return ok;
}

template <typename T>
bool adam_scalar(const Backend::AdamSpan& s, int64_t b, int64_t e, const Backend::AdamParams& p) {
  const T *G = static_cast<const T*>(s.g), *M = static_cast<const T*>(s.m), *V = static_cast<const T*>(s.v),
          *W = static_cast<const T*>(s.w);
  T *MO = static_cast<T*>(s.m_out), *VO = static_cast<T*>(s.v_out), *WO = static_cast<T*>(s.w_out);
  const T wd = static_cast<T>(p.wd), dec = static_cast<T>(1 - p.lr * p.wd), one = T(1), zero = T(0);
  const T a1 = static_cast<T>(1 - p.b1), b1 = static_cast<T>(p.b1), b2 = static_cast<T>(p.b2),
          a2 = static_cast<T>(1 - p.b2), sc = static_cast<T>(1 / p.bc2), eps = static_cast<T>(p.eps),
          step = static_cast<T>(-p.lr / p.bc1);
  bool ok = true;
  for (int64_t i = b; i < e; ++i) {
    T g = G[i];
    if (p.l2) g = ax_by(wd, W[i], one, g);
    T w = W[i];
    if (p.decoupled) w = ax_by(zero, w, dec, w);
    const T m = ax_by(a1, g, b1, M[i]);
    const T v = b2 * V[i] + a2 * g * g;
    const T dir = m / (sqrt_t(v * sc) + eps);
    const T wn = ax_by(step, dir, one, w);
    ok = ok && isfinite_t(m) && isfinite_t(v) && isfinite_t(wn);
    MO[i] = m;
    VO[i] = v;
    WO[i] = wn;
  }
  return ok;
}

template <typename T>
bool adam_k(const Backend::AdamSpan& s, int64_t b, int64_t e, const Backend::AdamParams& p, bool stream) {
  const T wd = static_cast<T>(p.wd), a1 = static_cast<T>(1 - p.b1), b1 = static_cast<T>(p.b1),
          step = static_cast<T>(-p.lr / p.bc1);
  if ((p.l2 && wd == T(0)) || a1 == T(0) || step == T(0)) return adam_scalar<T>(s, b, e, p);
  const int f = (p.l2 ? A_L2 : 0) | (p.decoupled ? A_DEC : 0) | (b1 == T(0) ? A_B1Z : 0);
  switch (f) {
    case 0: return adam_f<T, 0>(s, b, e, p, stream);
    case 1: return adam_f<T, 1>(s, b, e, p, stream);
    case 2: return adam_f<T, 2>(s, b, e, p, stream);
    case 3: return adam_f<T, 3>(s, b, e, p, stream);
    case 4: return adam_f<T, 4>(s, b, e, p, stream);
    case 5: return adam_f<T, 5>(s, b, e, p, stream);
    case 6: return adam_f<T, 6>(s, b, e, p, stream);
    default: return adam_f<T, 7>(s, b, e, p, stream);
  }
}

template <typename T>
void graft_adagrad(const Backend::GraftSpan& s, int64_t b, int64_t e, const Backend::GraftParams& p, bool stream) {
  const T one = T(1), eps = static_cast<T>(p.eps);
  alignas(64) T ta[kTile], td[kTile];
  for (int64_t s0 = b; s0 < e; s0 += kTile) {
    const int64_t k = min64(kTile, e - s0);
    const T* __restrict G = static_cast<const T*>(s.g) + s0;
    const T* __restrict A = static_cast<const T*>(s.acc) + s0;
    for (int64_t i = 0; i < k; ++i) {
      const T g = G[i];
      const T a = one * A[i] + one * g * g;
      ta[i] = a;
      td[i] = g / (sqrt_t(a * one) + eps);
    }
    store_n(static_cast<T*>(s.acc_out) + s0, ta, k, stream);
    store_n(static_cast<T*>(s.dir) + s0, td, k, stream);
  }
  store_fence(stream);
}

template <typename T, bool B1Z>
void graft_adam(const Backend::GraftSpan& s, int64_t b, int64_t e, const Backend::GraftParams& p, bool stream) {
  const T eps = static_cast<T>(p.eps);
  const T a1 = static_cast<T>(1 - p.b1), b1 = static_cast<T>(p.b1), b2 = static_cast<T>(p.b2),
          a2 = static_cast<T>(1 - p.b2), sc = static_cast<T>(1 / p.bc2), c1 = static_cast<T>(1 / p.bc1);
  alignas(64) T tm[kTile], ta[kTile], td[kTile];
  for (int64_t s0 = b; s0 < e; s0 += kTile) {
    const int64_t k = min64(kTile, e - s0);
    const T* __restrict G = static_cast<const T*>(s.g) + s0;
    const T* __restrict A = static_cast<const T*>(s.acc) + s0;
    const T* __restrict MI = static_cast<const T*>(s.mom) + s0;
    for (int64_t i = 0; i < k; ++i) {
      const T g = G[i];
      T m;
      if constexpr (B1Z)
        m = a1 * g;  // ax_by(a1, g, 0, m)
      else
        m = a1 * g + b1 * MI[i];  // ax_by(a1, g, b1, m), a1 != 0
      const T a = b2 * A[i] + a2 * g * g;
      tm[i] = m;
      ta[i] = a;
      const T d = m / (sqrt_t(a * sc) + eps);
      td[i] = c1 * d;  // ax_by(0, d, c1, d)
    }
    store_n(static_cast<T*>(s.mom_out) + s0, tm, k, stream);
    store_n(static_cast<T*>(s.acc_out) + s0, ta, k, stream);
    store_n(static_cast<T*>(s.dir) + s0, td, k, stream);
  }
  store_fence(stream);
}

template <typename T>
void graft_adam_scalar(const Backend::GraftSpan& s, int64_t b, int64_t e, const Backend::GraftParams& p) {
  const T* G = static_cast<const T*>(s.g);
  const T* A = static_cast<const T*>(s.acc);
  const T* MO_in = static_cast<const T*>(s.mom);
  T* AO = static_cast<T*>(s.acc_out);
  T* DIR = static_cast<T*>(s.dir);
  T* MO = static_cast<T*>(s.mom_out);
  const T zero = T(0), eps = static_cast<T>(p.eps);
  const T a1 = static_cast<T>(1 - p.b1), b1 = static_cast<T>(p.b1), b2 = static_cast<T>(p.b2),
          a2 = static_cast<T>(1 - p.b2), sc = static_cast<T>(1 / p.bc2), c1 = static_cast<T>(1 / p.bc1);
  for (int64_t i = b; i < e; ++i) {
    const T g = G[i];
    const T m = ax_by(a1, g, b1, MO_in[i]);
    const T a = b2 * A[i] + a2 * g * g;
    MO[i] = m;
    AO[i] = a;
    const T d = m / (sqrt_t(a * sc) + eps);
    DIR[i] = ax_by(zero, d, c1, d);
  }
}

template <typename T>
void graft_k(Backend::Graft kind, const Backend::GraftSpan& s, int64_t b, int64_t e, const Backend::GraftParams& p,
             bool stream) {
  if (kind == Backend::Graft::ADAGRAD) return graft_adagrad<T>(s, b, e, p, stream);
  const T a1 = static_cast<T>(1 - p.b1), b1 = static_cast<T>(p.b1);
  if (a1 == T(0)) return graft_adam_scalar<T>(s, b, e, p);
  if (b1 == T(0)) return graft_adam<T, true>(s, b, e, p, stream);
  return graft_adam<T, false>(s, b, e, p, stream);
}

// ---- reductions ------------------------------------------------------------------------
// One accumulator, elements in index order: exactly the sums the backend computed before
// it had threads (results stay bitwise those of earlier releases; parallelism comes from
// reducing several items or tensors at once). The products are exact for float32 inputs.
template <typename T>
double dot_k(const T* __restrict x, const T* __restrict y, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * static_cast<double>(y[i]);
  return s;
}

// Both sums of squares in one pass (two independent chains: twice the throughput of two
// passes, each chain in index order).
template <typename T>
void sumsq2_k(const T* __restrict x, const T* __restrict z, int64_t n, double* sx, double* sz) {
  double a = 0, b = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double u = static_cast<double>(x[i]), v = static_cast<double>(z[i]);
    a += u * u;
    b += v * v;
  }
  *sx = a;
  *sz = b;
}

template <typename T>
bool finite_k(const T* x, int64_t n) {
  return finite_n(x, n);
}

template <typename T>
void copy_k(const T* src, T* dst, int64_t n, bool stream) {
  if (!stream) {
    __builtin_memcpy(dst, src, static_cast<size_t>(n) * sizeof(T));
    return;
  }
  for (int64_t s = 0; s < n; s += kTile) store_n(dst + s, src + s, min64(kTile, n - s), true);
  store_fence(true);
}

void cast_fd(const float* __restrict s, double* __restrict d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = s[i];
}
void cast_df(const double* __restrict s, float* __restrict d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = static_cast<float>(s[i]);
}

template <typename T>
KernelFns<T> fns() {
  KernelFns<T> f;
  f.axpby = &axpby_k<T>;
  f.axpby3 = &axpby3_k<T>;
  f.mul_acc = &mul_acc_k<T>;
  f.div_sqrt = &div_sqrt_k<T>;
  f.update = &update_k<T>;
  f.adam = &adam_k<T>;
  f.graft = &graft_k<T>;
  f.dot = &dot_k<T>;
  f.sumsq2 = &sumsq2_k<T>;
  f.finite = &finite_k<T>;
  f.copy = &copy_k<T>;
  return f;
}

}  // namespace

const KernelTable* KRAD_KERNELS_FN() {
  static const KernelTable t = {KRAD_KERNELS_NAME, fns<float>(), fns<double>(), &cast_fd, &cast_df};
  return &t;
}

}  // namespace cpu
}  // namespace krad
