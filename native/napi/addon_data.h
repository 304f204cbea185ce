// Per-environment state of the addon (worker threads each load their own).
#pragma once
#include <napi.h>

#include <memory>

namespace krad_napi {

struct Job;

struct AddonData {
  Napi::FunctionReference tensor_ctor;  // TensorHandle
  Napi::FunctionReference job_ctor;     // the Job handle (job.cc)
  Napi::FunctionReference error_ctor;   // KradagradError, registered by the TS loader
  std::shared_ptr<Job> recording;       // the job being recorded, if any (job.h)
};

inline AddonData* addon_data(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

}  // namespace krad_napi
