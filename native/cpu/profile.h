// Where the CPU backend's time goes, for `kradagrad bench step`'s breakdown: wall time
// and call counts of its primitives by kind, accumulated while profiling is on (off by
// default; then a scope costs one relaxed atomic load). Only the outermost scope on a
// thread counts, so a primitive built from others is charged once, to its own kind.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>

namespace krad {
namespace cpu {

enum class Prof : int {
  GEMM = 0,     // gemm (BLAS)
  SYRK,         // syrk (BLAS) and the mirror of its triangle
  EIGH,         // the LAPACK call of syevd
  EIGH_AUX,     // syevd's own copies, finiteness check, mirror and transpose
  ELEMENTWISE,  // elementwise kernels: axpby, the fused stages, eig_scale, ...
  REDUCTION,    // dot, trace, finiteness
  COPY,         // copy, cast, fill, transpose3, boxes
  ALLOC,        // allocate / release
  COUNT_
};
inline const char* prof_name(Prof p) {
  static const char* names[] = {"gemm", "syrk", "eigh", "eigh_aux", "elementwise", "reduction", "copy", "alloc"};
  return names[static_cast<int>(p)];
}

struct ProfCounters {
  std::atomic<int64_t> ns[static_cast<int>(Prof::COUNT_)];
  std::atomic<int64_t> calls[static_cast<int>(Prof::COUNT_)];
};
extern std::atomic<bool> g_profiling;
extern ProfCounters g_prof;

void profile_reset();

class ProfScope {
 public:
  explicit ProfScope(Prof p) : p_(p) {
    if (!g_profiling.load(std::memory_order_relaxed)) return;
    nested_ = true;
    if (depth()++ > 0) return;
    on_ = true;
    t0_ = std::chrono::steady_clock::now();
  }
  ~ProfScope() {
    if (!nested_) return;
    --depth();
    if (!on_) return;
    const auto dt = std::chrono::steady_clock::now() - t0_;
    const int i = static_cast<int>(p_);
    g_prof.ns[i].fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(dt).count(), std::memory_order_relaxed);
    g_prof.calls[i].fetch_add(1, std::memory_order_relaxed);
  }
  ProfScope(const ProfScope&) = delete;
  ProfScope& operator=(const ProfScope&) = delete;

 private:
  static int& depth() {
    thread_local int d = 0;
    return d;
  }
  Prof p_;
  bool nested_ = false;  // counted in depth()
  bool on_ = false;      // the outermost scope: times
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace cpu
}  // namespace krad
