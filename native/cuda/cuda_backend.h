// CUDA backend: cuBLAS (strided-batched GEMM), cuSOLVER (syevd / syevjBatched) and our
// own kernels (kernels.cu) behind the Backend interface, on device 0. Row-major
// everywhere, with exactly the CPU backend's semantics. No CUDA headers here: core and
// the N-API layer include this file.
#pragma once
#include "../core/backend.h"

namespace krad {

// The process-wide CUDA backend (device 0), created on the first call. Returns a non-OK
// status (CUDA_FAILED) with the reason when there is no usable driver or device, or when
// the handles cannot be created; the outcome of the first call is kept, later calls are
// cheap. Thread-safe; never throws.
Status cuda_backend(Backend** out);

}  // namespace krad
