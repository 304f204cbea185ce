// Per-environment state of the addon (worker threads each load their own).
#pragma once
#include <napi.h>

namespace krad_napi {

struct AddonData {
  Napi::FunctionReference tensor_ctor;  // TensorHandle
  Napi::FunctionReference error_ctor;   // KradagradError, registered by the TS loader
};

inline AddonData* addon_data(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

}  // namespace krad_napi
