#include "backends.h"

#include "../cpu/cpu_backend.h"
#ifdef KRAD_WITH_CUDA
#include "../cuda/cuda_backend.h"
#endif

namespace krad_napi {

std::vector<BackendEntry> list_backends() {
  std::vector<BackendEntry> out;
  out.push_back({"cpu", krad::cpu_backend(), ""});
#ifdef KRAD_WITH_CUDA
  krad::Backend* cuda = nullptr;
  krad::Status s = krad::cuda_backend(&cuda);
  out.push_back({"cuda", s.ok() ? cuda : nullptr, s.ok() ? "" : s.message});
#endif
  return out;
}

krad::Backend* find_backend(const std::string& name, std::string* reason) {
  for (auto& e : list_backends())
    if (e.name == name) {
      if (!e.backend) *reason = e.reason;
      return e.backend;
    }
  *reason = "backend '" + name + "' is not built into this addon";
  return nullptr;
}

}  // namespace krad_napi
