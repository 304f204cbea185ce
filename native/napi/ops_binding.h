#pragma once
#include <napi.h>

namespace krad_napi {
// Adds the tensor constructors and ops (gemm, gram, modeProduct, eigh[Async], matpow[Async],
// axpby, scale, addIdentity, symmetrize, copy, fill, mulAcc, divSqrt, dot, frobNorm, trace,
// allFinite, boxes) to `exports`.
void InitOps(Napi::Env env, Napi::Object exports);
}  // namespace krad_napi
