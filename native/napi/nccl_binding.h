// NCCL device collectives (CUDA addon only): the N-API side of native/cuda/nccl.h.
#pragma once
#include <napi.h>

namespace krad_napi {

void InitNccl(Napi::Env env, Napi::Object exports);

}  // namespace krad_napi
