// The CPU backend's elementwise kernels and reductions, compiled once per instruction set
// (kernels_generic.cc, kernels_avx2.cc, kernels_avx512.cc from kernels_impl.h) and picked
// at load by what the CPU supports (KRADAGRAD_CPU_KERNELS=generic|avx2|avx512 forces a
// lower one, for tests).
//
// Every kernel computes each element with exactly the scalar expression, in the same order
// and the span's dtype, that the backend used before it was vectorised (no FMA contraction:
// -ffp-contract=off; no reassociation): results are bitwise those of the scalar loops
// whatever the instruction set, the thread count or the split into chunks. Reductions
// (dot, norms) add in double with one accumulator in index order, as the scalar code did:
// their results are bitwise those of earlier releases and independent of the thread count;
// threads reduce different items or tensors at once, never parts of one sum.
#pragma once
#include <cstdint>

#include "../core/backend.h"

namespace krad {
namespace cpu {

// Elements per parallel work piece of the elementwise kernels.
constexpr int64_t kChunk = 16384;

template <typename T>
struct KernelFns {
  // y = a x + b y with axpby's branches: a == 0 never reads x, b == 0 never reads y.
  void (*axpby)(const T* x, T* y, int64_t n, T a, T b);
  // z = ax_by(a, x, b, y) (same branches as axpby; z may alias x or y).
  void (*axpby3)(const T* x, const T* y, T* z, int64_t n, T a, T b, bool stream);
  // acc = a acc + b x y
  void (*mul_acc)(const T* x, const T* y, T* acc, int64_t n, T a, T b);
  // out = x / (sqrt(acc scale) + eps)
  void (*div_sqrt)(const T* x, const T* acc, T* out, int64_t n, T scale, T eps, bool stream);
  // The fused stages over elements [b, e) of one span (backend.h gives the formulas); the
  // two that report return whether every value written is finite.
  bool (*update)(const Backend::UpdateSpan& s, int64_t b, int64_t e, const Backend::UpdateParams& p, bool stream);
  bool (*adam)(const Backend::AdamSpan& s, int64_t b, int64_t e, const Backend::AdamParams& p, bool stream);
  void (*graft)(Backend::Graft kind, const Backend::GraftSpan& s, int64_t b, int64_t e, const Backend::GraftParams& p,
                bool stream);
  // sum of x_i y_i in double over [0, n), in index order.
  double (*dot)(const T* x, const T* y, int64_t n);
  // both sums of squares at once, each in index order (norm grafting).
  void (*sumsq2)(const T* x, const T* z, int64_t n, double* sx, double* sz);
  // no NaN/Inf in x[0, n)
  bool (*finite)(const T* x, int64_t n);
  // dst = src (regular or non-temporal stores)
  void (*copy)(const T* src, T* dst, int64_t n, bool stream);
};

struct KernelTable {
  const char* name;
  KernelFns<float> f32;
  KernelFns<double> f64;
  void (*cast_f32_f64)(const float* s, double* d, int64_t n);
  void (*cast_f64_f32)(const double* s, float* d, int64_t n);
};

// The table in use (chosen once).
const KernelTable& kernels();
template <typename T>
inline const KernelFns<T>& kernels_for();
template <>
inline const KernelFns<float>& kernels_for<float>() {
  return kernels().f32;
}
template <>
inline const KernelFns<double>& kernels_for<double>() {
  return kernels().f64;
}

// The tables compiled into this addon (generic first); null entries are not built here.
const KernelTable* kernels_generic();
const KernelTable* kernels_avx2();
const KernelTable* kernels_avx512();

}  // namespace cpu
}  // namespace krad
