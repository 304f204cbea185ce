// CPU backend: OpenBLAS (cblas) for products, LAPACK ssyevd/dsyevd for eigh, plain loops
// for the elementwise pieces. Host memory; every call is synchronous and thread-safe.
#pragma once
#include "../core/backend.h"

namespace krad {

// The process-wide CPU backend.
Backend* cpu_backend();

}  // namespace krad
