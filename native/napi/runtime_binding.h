#pragma once
#include <napi.h>

namespace krad_napi {
// Adds the CPU runtime settings and diagnostics to `exports`: setThreads, getThreads,
// cpuKernels, profileStart, profileStop, measureBandwidth.
void InitRuntime(Napi::Env env, Napi::Object exports);
}  // namespace krad_napi
