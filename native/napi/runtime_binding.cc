// The CPU backend's runtime settings and diagnostics: the thread count (OpenBLAS and our
// kernels together), which kernel build runs, the primitive profile behind
// `kradagrad bench step`'s breakdown, and the memory bandwidth its floors use.
#include "runtime_binding.h"

#include "../cpu/bandwidth.h"
#include "../cpu/kernels.h"
#include "../cpu/parallel.h"
#include "../cpu/profile.h"
#include "args.h"
#include "errors.h"
#include "job.h"

namespace krad_napi {
namespace {

constexpr int64_t kMaxThreads = 4096;

// setThreads(n): n an integer in [1, 4096].
Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ImmediateOnly(env, "setThreads");
  const int64_t n = int_arg(env, info, 0, "the thread count");
  if (n < 1 || n > kMaxThreads)
    throw_error(env, "INVALID_ARGUMENT",
                "Expected an integer between 1 and 4096 for the thread count but received " + std::to_string(n));
  krad::cpu::set_threads(static_cast<int>(n));
  return env.Undefined();
}

Napi::Value GetThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), krad::cpu::threads());
}

Napi::Value CpuKernels(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), krad::cpu::kernels().name);
}

// profileStart(): zeroes the counters and starts counting.
Napi::Value ProfileStart(const Napi::CallbackInfo& info) {
  ImmediateOnly(info.Env(), "profileStart");
  krad::cpu::profile_reset();
  krad::cpu::g_profiling.store(true, std::memory_order_relaxed);
  return info.Env().Undefined();
}

// profileStop() -> {<kind>: {ms, calls}}: stops counting and returns what was counted.
Napi::Value ProfileStop(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ImmediateOnly(env, "profileStop");
  krad::cpu::g_profiling.store(false, std::memory_order_relaxed);
  Napi::Object o = Napi::Object::New(env);
  for (int i = 0; i < static_cast<int>(krad::cpu::Prof::COUNT_); ++i) {
    Napi::Object e = Napi::Object::New(env);
    e.Set("ms", Napi::Number::New(env, krad::cpu::g_prof.ns[i].load() / 1e6));
    e.Set("calls", Napi::Number::New(env, static_cast<double>(krad::cpu::g_prof.calls[i].load())));
    o.Set(krad::cpu::prof_name(static_cast<krad::cpu::Prof>(i)), e);
  }
  return o;
}

// measureBandwidth(elements, reps) -> {copy, copyStream, triad, triadStream, read} GB/s.
Napi::Value MeasureBandwidth(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ImmediateOnly(env, "measureBandwidth");
  const int64_t elements = int_arg(env, info, 0, "elements");
  const int64_t reps = int_arg(env, info, 1, "reps");
  if (elements < krad::cpu::kChunk || elements > (int64_t(1) << 32) || reps < 1 || reps > 1000)
    throw_error(env, "INVALID_ARGUMENT", "measureBandwidth expects elements in [16384, 2^32] and reps in [1, 1000]");
  krad::cpu::Bandwidth bw;
  check(env, krad::cpu::measure_bandwidth(elements, static_cast<int>(reps), &bw));
  Napi::Object o = Napi::Object::New(env);
  o.Set("copy", bw.copy_gbs);
  o.Set("copyStream", bw.copy_stream_gbs);
  o.Set("triad", bw.triad_gbs);
  o.Set("triadStream", bw.triad_stream_gbs);
  o.Set("read", bw.read_gbs);
  o.Set("bytesPerArray", static_cast<double>(bw.bytes_per_array));
  o.Set("threads", bw.threads);
  return o;
}

}  // namespace

void InitRuntime(Napi::Env env, Napi::Object exports) {
  exports.Set("setThreads", Napi::Function::New(env, SetThreads, "setThreads"));
  exports.Set("getThreads", Napi::Function::New(env, GetThreads, "getThreads"));
  exports.Set("cpuKernels", Napi::Function::New(env, CpuKernels, "cpuKernels"));
  exports.Set("profileStart", Napi::Function::New(env, ProfileStart, "profileStart"));
  exports.Set("profileStop", Napi::Function::New(env, ProfileStop, "profileStop"));
  exports.Set("measureBandwidth", Napi::Function::New(env, MeasureBandwidth, "measureBandwidth"));
}

}  // namespace krad_napi
