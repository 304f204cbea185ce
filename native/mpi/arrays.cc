#include "arrays.h"

#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>

#include "errors.h"

namespace krad_mpi_napi {
namespace {

// Live exposed allocations by base address. Process-wide, because an allocation can
// outlive the environment that made it (a job still running when its worker ends). The
// entry is V8's share of the Allocation, dropped by the ArrayBuffer's finalizer; jobs hold
// their own shares.
struct Registry {
  std::mutex mu;
  std::map<uintptr_t, std::shared_ptr<krad_mpi::Allocation>> live;
};
Registry& registry() {
  static Registry* r = new Registry();  // leaked: finalizers may run late at exit
  return *r;
}

std::shared_ptr<krad_mpi::Allocation> find(const char* p, size_t n) {
  if (!p) return nullptr;
  Registry& r = registry();
  std::lock_guard<std::mutex> g(r.mu);
  auto it = r.live.upper_bound(reinterpret_cast<uintptr_t>(p));
  if (it == r.live.begin()) return nullptr;
  --it;
  const uintptr_t base = it->first, end = base + it->second->bytes(), q = reinterpret_cast<uintptr_t>(p);
  if (q >= base && q + n <= end) return it->second;
  return nullptr;
}

void unregister(krad_mpi::Allocation* a) {
  Registry& r = registry();
  std::lock_guard<std::mutex> g(r.mu);
  auto it = r.live.find(reinterpret_cast<uintptr_t>(a->data()));
  if (it != r.live.end() && it->second.get() == a) r.live.erase(it);
}

size_t element_bytes(napi_typedarray_type t) {
  switch (t) {
    case napi_float64_array: return 8;
    case napi_float32_array:
    case napi_int32_array: return 4;
    default: return 1;
  }
}

}  // namespace

const char* array_type_name(napi_typedarray_type t) {
  switch (t) {
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_int8_array: return "Int8Array";
    case napi_uint8_clamped_array: return "Uint8ClampedArray";
    case napi_int16_array: return "Int16Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_uint32_array: return "Uint32Array";
    case napi_bigint64_array: return "BigInt64Array";
    case napi_biguint64_array: return "BigUint64Array";
  }
  return "a typed array";
}

std::string describe_value(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsBoolean()) return std::string("boolean ") + (v.As<Napi::Boolean>().Value() ? "true" : "false");
  if (v.IsNumber()) {
    char buf[64];
    snprintf(buf, sizeof buf, "number %g", v.As<Napi::Number>().DoubleValue());
    return buf;
  }
  if (v.IsString()) return "string \"" + v.As<Napi::String>().Utf8Value().substr(0, 40) + "\"";
  if (v.IsTypedArray()) return array_type_name(v.As<Napi::TypedArray>().TypedArrayType());
  if (v.IsArray()) return "an array";
  if (v.IsFunction()) return "a function";
  return "an object";
}

napi_typedarray_type typed_array_type(krad_mpi::DType d) {
  switch (d) {
    case krad_mpi::DType::F32: return napi_float32_array;
    case krad_mpi::DType::F64: return napi_float64_array;
    case krad_mpi::DType::I32: return napi_int32_array;
    case krad_mpi::DType::U8: return napi_uint8_array;
  }
  return napi_float32_array;
}

ArrayArg array_arg(Napi::Env env, const Napi::Value& v, const char* what) {
  if (v.IsTypedArray()) {
    ArrayArg a;
    a.array = v.As<Napi::TypedArray>();
    void* data = nullptr;
    napi_value ab;
    size_t offset = 0;
    // napi_get_typedarray_info gives the data pointer for SharedArrayBuffer views too
    // (Napi::ArrayBuffer::Data() would refuse those).
    napi_status s = napi_get_typedarray_info(env, a.array, &a.type, &a.length, &data, &ab, &offset);
    if (s == napi_ok) {
      bool ok = true;
      switch (a.type) {
        case napi_float32_array: a.dtype = krad_mpi::DType::F32; break;
        case napi_float64_array: a.dtype = krad_mpi::DType::F64; break;
        case napi_int32_array: a.dtype = krad_mpi::DType::I32; break;
        case napi_uint8_array: a.dtype = krad_mpi::DType::U8; break;
        default: ok = false;
      }
      if (ok) {
        a.data = static_cast<char*>(data);
        a.bytes = a.length * element_bytes(a.type);
        if (!a.data) a.length = a.bytes = 0;  // detached
        return a;
      }
    }
  }
  throw_error(env, "INVALID_ARGUMENT",
              std::string("Expected a Float32Array, Float64Array, Int32Array or Uint8Array for ") + what +
                  " but received " + describe_value(v));
}

bool overlaps(const ArrayArg& a, const ArrayArg& b) {
  if (!a.data || !b.data || a.bytes == 0 || b.bytes == 0) return false;
  const uintptr_t a0 = reinterpret_cast<uintptr_t>(a.data), b0 = reinterpret_cast<uintptr_t>(b.data);
  return a0 < b0 + b.bytes && b0 < a0 + a.bytes;
}

bool same_memory(const ArrayArg& a, const ArrayArg& b) { return a.data == b.data && a.bytes == b.bytes; }

krad_mpi::Span acquire(Napi::Env env, const ArrayArg& a, bool copy_in, bool* staged) {
  if (auto owner = find(a.data, a.bytes)) {
    *staged = false;
    return krad_mpi::Span{owner, a.data, a.bytes};
  }
  auto stage = std::make_shared<krad_mpi::Allocation>(a.bytes, false);
  if (!stage->valid())
    throw_error(env, "OUT_OF_MEMORY", "could not allocate a " + std::to_string(a.bytes) + "-byte staging buffer");
  if (copy_in && a.bytes) std::memcpy(stage->data(), a.data, a.bytes);
  *staged = true;
  return krad_mpi::Span{stage, stage->data(), a.bytes};
}

bool is_allocated(const ArrayArg& a) { return a.bytes > 0 && find(a.data, a.bytes) != nullptr; }

Napi::TypedArray expose(Napi::Env env, std::shared_ptr<krad_mpi::Allocation> alloc, napi_typedarray_type type,
                        size_t length) {
  const size_t bytes = length * element_bytes(type);
  Napi::ArrayBuffer ab;
  if (bytes == 0) {
    ab = Napi::ArrayBuffer::New(env, 0);
  } else {
    krad_mpi::Allocation* raw = alloc.get();
    {
      Registry& r = registry();
      std::lock_guard<std::mutex> g(r.mu);
      r.live[reinterpret_cast<uintptr_t>(raw->data())] = alloc;
    }
    try {
      ab = Napi::ArrayBuffer::New(
          env, raw->data(), bytes, [](Napi::Env, void*, krad_mpi::Allocation* a) { unregister(a); }, raw);
    } catch (const Napi::Error&) {
      // Runtimes that forbid external buffers (V8 sandbox builds): an ordinary copy,
      // which later collectives then stage like any other array.
      unregister(raw);
      ab = Napi::ArrayBuffer::New(env, bytes);
      std::memcpy(ab.Data(), raw->data(), bytes);
    }
  }
  napi_value out;
  napi_status s = napi_create_typedarray(env, type, length, ab, 0, &out);
  if (s != napi_ok) throw_error(env, "INTERNAL", "could not create the result array");
  return Napi::TypedArray(env, out);
}

}  // namespace krad_mpi_napi
