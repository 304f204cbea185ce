// CUDA backend: cuBLAS (strided-batched GEMM), cuSOLVER (syevd / syevjBatched) and our
// own kernels (kernels.cu) behind the Backend interface, on one device per process (0
// unless chosen: cuda_select_device, KRADAGRAD_CUDA_DEVICE). Row-major
// everywhere, with exactly the CPU backend's semantics. No CUDA headers here: core and
// the N-API layer include this file.
#pragma once
#include <functional>

#include "../core/backend.h"

namespace krad {

// The process-wide CUDA backend (device 0), created on the first call. Returns a non-OK
// status (CUDA_FAILED) with the reason when there is no usable driver or device, or when
// the handles cannot be created; the outcome of the first call is kept, later calls are
// cheap. Thread-safe; never throws.
Status cuda_backend(Backend** out);

// The device the backend is created on, chosen before it is created (one rank per GPU:
// the rank's local index). Without a call: KRADAGRAD_CUDA_DEVICE, else 0. After creation,
// choosing the device it already uses is accepted and any other is INVALID_ARGUMENT
// (a process's CUDA tensors all live on one device). INVALID_ARGUMENT for a negative index.
Status cuda_select_device(int device);
// The backend's device: the one chosen (or the default) before creation, the one in use after.
int cuda_device();

// Runs f(stream, device) with the backend's lock held and its device current on this
// thread, `stream` being the backend's cudaStream_t: work f enqueues there is ordered after
// every primitive enqueued before and before every primitive enqueued after (the NCCL
// collectives use it). f must not call the backend. CUDA_FAILED when the backend is unusable.
Status cuda_with_stream(const std::function<Status(void* stream, int device)>& f);

}  // namespace krad
