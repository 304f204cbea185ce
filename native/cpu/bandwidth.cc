#include "bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>

#include "cpu_backend.h"
#include "kernels.h"
#include "parallel.h"

namespace krad {
namespace cpu {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The arrays come from the backend's allocator, so they get the pages tensors get.
struct Free {
  void operator()(float* p) const { cpu_backend()->release(p); }
};
float* alloc(size_t bytes) {
  void* p = nullptr;
  return cpu_backend()->allocate(bytes, &p).ok() ? static_cast<float*>(p) : nullptr;
}

// Seconds of one parallel pass of f over [0, n) in kChunk pieces.
template <typename F>
double timed(int64_t n, F&& f) {
  const int64_t pieces = (n + kChunk - 1) / kChunk;
  const double t0 = now_s();
  parallel_for(pieces, [&](int64_t i) {
    const int64_t b = i * kChunk;
    f(b, std::min(n, b + kChunk) - b);
  });
  return now_s() - t0;
}

}  // namespace

Status measure_bandwidth(int64_t elements, int reps, Bandwidth* out) {
  if (elements < kChunk || reps < 1)
    return Status::Error(Code::INVALID_ARGUMENT, "measure_bandwidth: need at least one chunk and one repetition");
  const size_t bytes = static_cast<size_t>(elements) * sizeof(float);
  std::unique_ptr<float, Free> x(alloc(bytes));
  std::unique_ptr<float, Free> y(alloc(bytes));
  std::unique_ptr<float, Free> z(alloc(bytes));
  if (!x || !y || !z) return Status::Error(Code::OUT_OF_MEMORY, "measure_bandwidth: allocation failed");
  const KernelFns<float>& k = kernels().f32;
  float* X = x.get();
  float* Y = y.get();
  float* Z = z.get();
  // First touch in parallel, as the kernels will use them.
  timed(elements, [&](int64_t b, int64_t n) {
    std::fill(X + b, X + b + n, 1.0f);
    std::fill(Y + b, Y + b + n, 2.0f);
    std::fill(Z + b, Z + b + n, 0.0f);
  });
  double copy = 1e30, copy_nt = 1e30, triad = 1e30, triad_nt = 1e30, read = 1e30;
  volatile bool sink = true;
  for (int r = 0; r < reps; ++r) {
    copy = std::min(copy, timed(elements, [&](int64_t b, int64_t n) { k.copy(X + b, Z + b, n, false); }));
    copy_nt = std::min(copy_nt, timed(elements, [&](int64_t b, int64_t n) { k.copy(X + b, Z + b, n, true); }));
    triad = std::min(triad, timed(elements, [&](int64_t b, int64_t n) { k.axpby3(X + b, Y + b, Z + b, n, 0.5f, 1.0f, false); }));
    triad_nt =
        std::min(triad_nt, timed(elements, [&](int64_t b, int64_t n) { k.axpby3(X + b, Y + b, Z + b, n, 0.5f, 1.0f, true); }));
    read = std::min(read, timed(elements, [&](int64_t b, int64_t n) { sink = k.finite(Y + b, n) && sink; }));
  }
  const double gb = static_cast<double>(bytes) / 1e9;
  out->copy_gbs = 2 * gb / copy;
  out->copy_stream_gbs = 2 * gb / copy_nt;
  out->triad_gbs = 3 * gb / triad;
  out->triad_stream_gbs = 3 * gb / triad_nt;
  out->read_gbs = gb / read;
  out->bytes_per_array = static_cast<int64_t>(bytes);
  out->reps = reps;
  out->threads = threads();
  return Status::Ok();
}

}  // namespace cpu
}  // namespace krad
