#pragma once
#include <napi.h>

namespace krad_napi {
// Adds to `exports` the tensor constructors, every op (the single ops, their multi-tensor
// forms, the fused optimizer stages, root / rootRefresh / guardFinite) and crc32c. While a
// job is being recorded (job.h), mutating ops are recorded instead of run and ops that
// return values to JavaScript refuse. lib/native.ts's NativeAddon declares the same names
// (test/addon_interface.test.ts checks it).
void InitOps(Napi::Env env, Napi::Object exports);
}  // namespace krad_napi
