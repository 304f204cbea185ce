// The backends this addon was built with. The CPU addon has "cpu"; the CUDA addon adds
// "cuda", which may still be unavailable at run time (no driver, no device): then its
// reason says why.
#pragma once
#include <string>
#include <vector>

#include "../core/backend.h"

namespace krad_napi {

struct BackendEntry {
  std::string name;
  krad::Backend* backend;  // null when unavailable
  std::string reason;      // why unavailable
};

std::vector<BackendEntry> list_backends();
krad::Backend* find_backend(const std::string& name, std::string* reason);

}  // namespace krad_napi
