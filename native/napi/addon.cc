// Module entry: one per addon (CPU or CUDA build of the same sources).
#include <napi.h>

#include "addon_data.h"
#include "job.h"
#ifdef KRAD_WITH_CUDA
#include "nccl_binding.h"
#endif
#include "ops_binding.h"
#include "runtime_binding.h"
#include "tensor_handle.h"

namespace krad_napi {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  Napi::Function ctor = TensorHandle::Init(env);
  data->tensor_ctor = Napi::Persistent(ctor);
  exports.Set("NativeTensor", ctor);
  InitOps(env, exports);
  InitJobs(env, exports);
  InitRuntime(env, exports);
#ifdef KRAD_WITH_CUDA
  InitNccl(env, exports);  // loads nothing of NCCL until ncclStatus/ncclUniqueId/ncclCommInit
  exports.Set("flavor", Napi::String::New(env, "cuda"));
#else
  exports.Set("flavor", Napi::String::New(env, "cpu"));
#endif
  // KRAD_ABI_VERSION comes from package.json ("kradagrad": {"abi"}) through the build,
  // the one place the TypeScript loader reads it from too.
  exports.Set("abiVersion", Napi::Number::New(env, KRAD_ABI_VERSION));
  return exports;
}

}  // namespace krad_napi

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return krad_napi::Init(env, exports); }
NODE_API_MODULE(kradagrad, InitAddon)
