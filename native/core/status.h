// Status values returned by every core and backend function. The N-API layer turns a
// non-OK status into a JS KradagradError whose `code` is code_name(code).
#pragma once
#include <string>
#include <utility>

namespace krad {

enum class Code : int {
  OK = 0,
  INVALID_ARGUMENT,   // bad option or argument value
  SHAPE_MISMATCH,     // tensors whose shapes/batches do not fit together
  DTYPE_MISMATCH,     // tensors of different dtypes where one dtype is required
  NONFINITE,          // NaN/Inf where finite values are required
  EIGH_FAILED,        // symmetric eigensolver did not converge (info > 0)
  OUT_OF_MEMORY,      // host allocation failed
  BACKEND_MISMATCH,   // tensors of different backends in one op
  UNSUPPORTED,        // op not available on this backend
  CUDA_FAILED,        // CUDA runtime error
  CUDA_OOM,           // cudaMalloc failed
  CUBLAS_FAILED,      // cuBLAS status != SUCCESS
  CUSOLVER_FAILED,    // cuSOLVER status != SUCCESS (info carried in Status::info)
  INTERNAL,           // a bug in kradagrad
  NCCL_UNAVAILABLE,   // NCCL (kradagrad_nccl.so, libnccl) cannot be loaded or used here
  COMM_FAILED,        // a collective failed; its communicator is unusable afterwards
};

inline const char* code_name(Code c) {
  switch (c) {
    case Code::OK: return "OK";
    case Code::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case Code::SHAPE_MISMATCH: return "SHAPE_MISMATCH";
    case Code::DTYPE_MISMATCH: return "DTYPE_MISMATCH";
    case Code::NONFINITE: return "NONFINITE";
    case Code::EIGH_FAILED: return "EIGH_FAILED";
    case Code::OUT_OF_MEMORY: return "OUT_OF_MEMORY";
    case Code::BACKEND_MISMATCH: return "BACKEND_MISMATCH";
    case Code::UNSUPPORTED: return "UNSUPPORTED";
    case Code::CUDA_FAILED: return "CUDA_FAILED";
    case Code::CUDA_OOM: return "CUDA_OOM";
    case Code::CUBLAS_FAILED: return "CUBLAS_FAILED";
    case Code::CUSOLVER_FAILED: return "CUSOLVER_FAILED";
    case Code::INTERNAL: return "INTERNAL";
    case Code::NCCL_UNAVAILABLE: return "NCCL_UNAVAILABLE";
    case Code::COMM_FAILED: return "COMM_FAILED";
  }
  return "INTERNAL";
}

struct Status {
  Code code = Code::OK;
  std::string message;
  long long info = 0;  // solver info / index of the failing batch item, when meaningful

  static Status Ok() { return Status{}; }
  static Status Error(Code c, std::string msg, long long info = 0) {
    Status s;
    s.code = c;
    s.message = std::move(msg);
    s.info = info;
    return s;
  }
  bool ok() const { return code == Code::OK; }
};

#define KRAD_RETURN_IF_ERROR(expr)        \
  do {                                    \
    ::krad::Status _krad_s = (expr);      \
    if (!_krad_s.ok()) return _krad_s;    \
  } while (0)

}  // namespace krad
