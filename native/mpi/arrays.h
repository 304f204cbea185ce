// Typed arrays in and out of the MPI addon, and the memory the comm thread works on.
//
// The comm thread must never touch memory that JS owns: an ArrayBuffer can be collected,
// detached (transferred to a worker, structuredClone with transfer) or freed with its
// worker's environment while a collective runs. So a collective on an ordinary typed
// array works on a staging copy (copied in on the JS thread at the call, copied back on
// the JS thread when it completes). Arrays made by `allocate()` (and the arrays that
// allGather returns) are views of addon-owned Allocations, shared between V8 and the
// jobs: the collective uses them in place, with no copy.
#pragma once
#include <napi.h>

#include <memory>
#include <string>

#include "engine.h"

namespace krad_mpi_napi {

// A typed array argument of one of the communicated types.
struct ArrayArg {
  Napi::TypedArray array;
  napi_typedarray_type type = napi_float32_array;
  krad_mpi::DType dtype = krad_mpi::DType::F32;
  char* data = nullptr;
  size_t length = 0;  // elements
  size_t bytes = 0;
};

// Float32Array, Float64Array, Int32Array or Uint8Array; anything else is INVALID_ARGUMENT.
ArrayArg array_arg(Napi::Env env, const Napi::Value& v, const char* what);
const char* array_type_name(napi_typedarray_type t);
std::string describe_value(const Napi::Value& v);

// Whether two arrays share any byte.
bool overlaps(const ArrayArg& a, const ArrayArg& b);
// The same bytes exactly (an in-place operation).
bool same_memory(const ArrayArg& a, const ArrayArg& b);

// The span a job uses for `a`: the addon allocation behind it when there is one (zero
// copy), else a fresh staging Allocation, filled from `a` when `copy_in`. `staged` says
// which. Throws OUT_OF_MEMORY when staging cannot be allocated.
krad_mpi::Span acquire(Napi::Env env, const ArrayArg& a, bool copy_in, bool* staged);

// A JS typed array of `type` and `length` elements over `alloc` (registered, so later
// collectives on it are zero-copy). Falls back to a copy when external ArrayBuffers are
// not allowed in this runtime.
Napi::TypedArray expose(Napi::Env env, std::shared_ptr<krad_mpi::Allocation> alloc, napi_typedarray_type type,
                        size_t length);

// Whether `a` is a view of an addon allocation.
bool is_allocated(const ArrayArg& a);

napi_typedarray_type typed_array_type(krad_mpi::DType d);

}  // namespace krad_mpi_napi
