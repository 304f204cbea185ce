#include "parallel.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace krad {
namespace cpu {
namespace {

// One parallel_for call. The caller owns it (on its stack) and returns only when every
// index has run and no worker holds it any more; a worker's last access to it is under mu.
struct Task {
  void (*fn)(void*, int64_t);
  void* ctx;
  int64_t n;
  int helpers;                   // workers that may join (threads() - 1 at submission)
  std::atomic<int64_t> next{0};  // next index to run
  int joined = 0;                // workers that took it (under the pool's mutex)
  std::mutex mu;                 // guards done and inside
  std::condition_variable cv;
  int64_t done = 0;              // indices finished
  int inside = 0;                // workers working on it
};

// Runs indices of t until none are left; returns how many this thread ran.
int64_t work_on(Task* t) {
  int64_t ran = 0;
  for (;;) {
    const int64_t i = t->next.fetch_add(1, std::memory_order_relaxed);
    if (i >= t->n) break;
    t->fn(t->ctx, i);
    ++ran;
  }
  return ran;
}

// Workers are created on demand and never destroyed: the pool is allocated once and
// deliberately never freed, so no static destructor runs while a worker waits on it.
class Pool {
 public:
  void run(Task* t) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (static_cast<int>(workers_.size()) < t->helpers) {
        workers_.emplace_back([this] { loop(); });
        workers_.back().detach();
      }
      queue_.push_back(t);
    }
    cv_.notify_all();
    const int64_t ran = work_on(t);
    {
      // Off the queue before waiting: no worker joins it after this point.
      std::lock_guard<std::mutex> lock(mu_);
      auto it = std::find(queue_.begin(), queue_.end(), t);
      if (it != queue_.end()) queue_.erase(it);
    }
    std::unique_lock<std::mutex> lock(t->mu);
    t->done += ran;
    t->cv.wait(lock, [t] { return t->done == t->n && t->inside == 0; });
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return !queue_.empty(); });
      Task* t = queue_.front();
      if (++t->joined >= t->helpers) queue_.pop_front();
      {
        std::lock_guard<std::mutex> tl(t->mu);
        ++t->inside;
      }
      lock.unlock();
      const int64_t ran = work_on(t);
      {
        std::lock_guard<std::mutex> tl(t->mu);
        t->done += ran;
        --t->inside;
        t->cv.notify_all();
      }
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task*> queue_;
  std::vector<std::thread> workers_;
};

Pool* pool() {
  static Pool* p = new Pool();
  return p;
}

// The thread setting and OpenBLAS's count (see parallel.h): `applied` is what OpenBLAS has.
std::mutex settings_mu;
std::condition_variable settings_cv;
std::atomic<int> setting{0};  // 0: not read yet
int applied = 0;
int single = 0;            // live active SingleThreadedBlas
int threaded = 0;          // ThreadedLapack in flight
int threaded_waiting = 0;  // ThreadedLapack waiting to start

int initial_threads() {
  if (const char* e = std::getenv("KRADAGRAD_NUM_THREADS")) {
    char* end = nullptr;
    const long v = std::strtol(e, &end, 10);
    if (end != e && *end == '\0' && v >= 1 && v <= 4096) return static_cast<int>(v);
  }
  return std::max(1, openblas_get_num_threads());
}

// Under settings_mu.
void apply(int n) {
  if (applied != n) {
    openblas_set_num_threads(n);
    applied = n;
  }
}

// Under settings_mu: reads the default once.
int setting_locked() {
  int n = setting.load(std::memory_order_relaxed);
  if (n == 0) {
    n = initial_threads();
    setting.store(n, std::memory_order_relaxed);
    applied = std::max(1, openblas_get_num_threads());
    apply(n);
  }
  return n;
}

}  // namespace

int threads() {
  const int n = setting.load(std::memory_order_relaxed);
  if (n > 0) return n;
  std::lock_guard<std::mutex> lock(settings_mu);
  return setting_locked();
}

void set_threads(int n) {
  n = std::max(1, n);
  std::lock_guard<std::mutex> lock(settings_mu);
  setting_locked();
  setting.store(n, std::memory_order_relaxed);
  if (single == 0 && threaded == 0) apply(n);
  settings_cv.notify_all();
}

void parallel_for_raw(int64_t n, void (*fn)(void*, int64_t), void* ctx) {
  const int t = threads();
  if (n <= 1 || t <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(ctx, i);
    return;
  }
  Task task;
  task.fn = fn;
  task.ctx = ctx;
  task.n = n;
  task.helpers = static_cast<int>(std::min<int64_t>(t - 1, n - 1));
  pool()->run(&task);
}

SingleThreadedBlas::SingleThreadedBlas(bool wait) {
  std::unique_lock<std::mutex> lock(settings_mu);
  setting_locked();
  if (!wait && (threaded > 0 || threaded_waiting > 0)) return;
  settings_cv.wait(lock, [] { return threaded == 0 && threaded_waiting == 0; });
  if (single++ == 0) apply(1);
  active_ = true;
}

SingleThreadedBlas::~SingleThreadedBlas() {
  if (!active_) return;
  std::lock_guard<std::mutex> lock(settings_mu);
  if (--single == 0) {
    apply(setting.load(std::memory_order_relaxed));
    settings_cv.notify_all();
  }
}

ThreadedLapack::ThreadedLapack() {
  std::unique_lock<std::mutex> lock(settings_mu);
  const int n = setting_locked();
  (void)n;
  ++threaded_waiting;
  // Joins calls in flight only when they run with the current setting.
  settings_cv.wait(lock, [] {
    return single == 0 && (threaded == 0 || applied == setting.load(std::memory_order_relaxed));
  });
  --threaded_waiting;
  apply(setting.load(std::memory_order_relaxed));
  ++threaded;
}

ThreadedLapack::~ThreadedLapack() {
  std::lock_guard<std::mutex> lock(settings_mu);
  if (--threaded == 0) {
    apply(setting.load(std::memory_order_relaxed));
    settings_cv.notify_all();
  }
}

}  // namespace cpu
}  // namespace krad
