// The CPU backend's threads: one setting for OpenBLAS and for our own kernels, and the
// small pool that runs the kernels.
//
// Why our own pool (std::thread) and not OpenMP: kernels run on whatever thread runs a
// job, the main thread or a libuv pool thread, and several may run at once. Each
// parallel_for call is one task in a shared queue; the calling thread always works on its
// own task too, so a call finishes even when every worker is busy with another call (no
// nesting deadlock, no spinning on a busy team), and workers never touch JavaScript or
// any Node-API state. libgomp would give every calling thread its own team, and its spin
// waits would compete with OpenBLAS's threads.
//
// Results never depend on the thread count: elementwise kernels compute each element
// alone, and a reduction (a dot or a norm of one item) always runs on one thread in index
// order; threads take different items (see kernels.h).
#pragma once
#include <cstdint>
#include <type_traits>
#include <utility>

namespace krad {
namespace cpu {

// The thread count (>= 1): OpenBLAS's and our kernels'. Defaults to KRADAGRAD_NUM_THREADS
// when set to a positive integer, else to what OpenBLAS chose at load (OPENBLAS_NUM_THREADS,
// or the number of cores).
int threads();
// Sets both. n >= 1 (callers validate; values above OpenBLAS's MAX_THREADS are capped there
// for BLAS calls, not for our kernels). Safe while other threads run kernels or BLAS calls:
// OpenBLAS gets the new count as soon as no LAPACK call is in flight (see below), and a
// LAPACK call started after this returns runs with it.
void set_threads(int n);

// Runs fn(ctx, i) for every i in [0, n), on up to threads() threads (the caller included),
// and returns when all have run. fn must not throw. Small n or threads() == 1 runs inline.
void parallel_for_raw(int64_t n, void (*fn)(void*, int64_t), void* ctx);

template <typename F>
void parallel_for(int64_t n, F&& f) {
  if (n <= 0) return;
  if (n == 1 || threads() == 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  using Fn = std::remove_reference_t<F>;
  parallel_for_raw(
      n, [](void* c, int64_t i) { (*static_cast<Fn*>(c))(i); }, const_cast<void*>(static_cast<const void*>(&f)));
}

// OpenBLAS has one process-wide thread count, and LAPACK's results depend on it (0.3.21
// threads the level-2 BLAS of syevd's tridiagonal reduction for any n, so the sums run in
// another order: eigenpairs differ in the last bits between 1 and 2 threads; gemm and
// syrk do not). So that a LAPACK call's result depends only on which of the two kinds of
// scope below it runs in, never on what other threads do at the same time, the count is
// changed only while no LAPACK call is in flight:
//
//  * SingleThreadedBlas: while one lives, BLAS/LAPACK calls run on one thread, so several
//    of our threads can each run one at once (a batch of eigh, small batched products).
//    With wait = false it does not wait for threaded LAPACK calls in flight and is then
//    inactive (active() == false): for callers whose results do not depend on the count
//    (gemm, syrk), which then just run their items one after the other.
//  * ThreadedLapack: a LAPACK call that runs with threads() threads; waits until no
//    SingleThreadedBlas lives.
class SingleThreadedBlas {
 public:
  explicit SingleThreadedBlas(bool wait = true);
  ~SingleThreadedBlas();
  bool active() const { return active_; }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  bool active_ = false;
};

class ThreadedLapack {
 public:
  ThreadedLapack();
  ~ThreadedLapack();
  ThreadedLapack(const ThreadedLapack&) = delete;
  ThreadedLapack& operator=(const ThreadedLapack&) = delete;
};

}  // namespace cpu
}  // namespace krad
