#include "args.h"

#include <cmath>

#include "errors.h"

namespace krad_napi {

std::string describe_value(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsBoolean()) return std::string("boolean ") + (v.As<Napi::Boolean>().Value() ? "true" : "false");
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    char buf[64];
    snprintf(buf, sizeof buf, "number %g", d);
    return buf;
  }
  if (v.IsString()) return "string \"" + v.As<Napi::String>().Utf8Value().substr(0, 40) + "\"";
  if (v.IsTypedArray()) {
    switch (v.As<Napi::TypedArray>().TypedArrayType()) {
      case napi_float32_array: return "Float32Array";
      case napi_float64_array: return "Float64Array";
      default: return "an integer typed array";
    }
  }
  if (v.IsArray()) return "an array";
  if (v.IsFunction()) return "a function";
  return "an object";
}

Napi::TypedArray typed_array_arg(Napi::Env env, const Napi::Value& v, const char* what) {
  if (v.IsTypedArray()) {
    auto t = v.As<Napi::TypedArray>().TypedArrayType();
    if (t == napi_float32_array || t == napi_float64_array) return v.As<Napi::TypedArray>();
  }
  throw_error(env, "INVALID_ARGUMENT",
              std::string("Expected a Float32Array or Float64Array for ") + what + " but received " + describe_value(v));
}

krad::DType dtype_of(const Napi::TypedArray& a) {
  return a.TypedArrayType() == napi_float32_array ? krad::DType::F32 : krad::DType::F64;
}
const char* array_name(krad::DType d) { return d == krad::DType::F32 ? "Float32Array" : "Float64Array"; }
// The element data of a typed array, whatever buffer backs it (an ArrayBuffer or a
// SharedArrayBuffer: a.ArrayBuffer().Data() fails on the latter). Null when detached.
void* typed_data(const Napi::TypedArray& a) {
  void* data = nullptr;
  size_t length = 0;
  if (napi_get_typedarray_info(a.Env(), a, nullptr, &length, &data, nullptr, nullptr) != napi_ok) return nullptr;
  return data;
}

krad::DType dtype_arg(Napi::Env env, const Napi::Value& v, const char* what) {
  if (v.IsString()) {
    std::string s = v.As<Napi::String>().Utf8Value();
    if (s == "float32") return krad::DType::F32;
    if (s == "float64") return krad::DType::F64;
  }
  throw_error(env, "INVALID_ARGUMENT",
              std::string("Expected 'float32' or 'float64' for ") + what + " but received " + describe_value(v));
}

double number_arg(Napi::Env env, const Napi::CallbackInfo& info, size_t i, const char* what) {
  Napi::Value v = i < info.Length() ? info[i] : env.Undefined();
  if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue()))
    throw_error(env, "INVALID_ARGUMENT",
                std::string("Expected a finite number for ") + what + " but received " + describe_value(v));
  return v.As<Napi::Number>().DoubleValue();
}

double number_or(Napi::Env env, const Napi::CallbackInfo& info, size_t i, const char* what, double dflt) {
  if (i >= info.Length() || info[i].IsUndefined()) return dflt;
  return number_arg(env, info, i, what);
}

int64_t int_arg(Napi::Env env, const Napi::CallbackInfo& info, size_t i, const char* what) {
  double d = number_arg(env, info, i, what);
  if (d != std::floor(d) || std::fabs(d) > 9007199254740991.0)
    throw_error(env, "INVALID_ARGUMENT", std::string("Expected an integer for ") + what + " but received " +
                                             describe_value(info[i]));
  return static_cast<int64_t>(d);
}

bool bool_or(Napi::Env env, const Napi::CallbackInfo& info, size_t i, const char* what, bool dflt) {
  if (i >= info.Length() || info[i].IsUndefined()) return dflt;
  if (!info[i].IsBoolean())
    throw_error(env, "INVALID_ARGUMENT",
                std::string("Expected a boolean for ") + what + " but received " + describe_value(info[i]));
  return info[i].As<Napi::Boolean>().Value();
}

std::vector<int64_t> int_list_arg(Napi::Env env, const Napi::Value& v, const char* what) {
  std::vector<int64_t> out;
  if (!v.IsArray())
    throw_error(env, "INVALID_ARGUMENT",
                std::string("Expected an array of integers for ") + what + " but received " + describe_value(v));
  Napi::Array a = v.As<Napi::Array>();
  out.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    double d = e.IsNumber() ? e.As<Napi::Number>().DoubleValue() : NAN;
    if (!(d == std::floor(d)) || std::fabs(d) > 9007199254740991.0)
      throw_error(env, "INVALID_ARGUMENT", std::string("Expected an array of integers for ") + what +
                                               " but element " + std::to_string(i) + " is " + describe_value(e));
    out.push_back(static_cast<int64_t>(d));
  }
  return out;
}

std::vector<int64_t> shape_arg(Napi::Env env, const Napi::Value& v, const char* what) {
  std::vector<int64_t> s = int_list_arg(env, v, what);
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] < 1)
      throw_error(env, "INVALID_ARGUMENT", std::string("Expected positive dimensions for ") + what + " but dim " +
                                               std::to_string(i) + " is " + std::to_string(s[i]));
  return s;
}

void coeff_arg(Napi::Env env, const Napi::CallbackInfo& info, size_t i, const char* what, double dflt,
               double* scalar, std::vector<double>* per_item) {
  per_item->clear();
  *scalar = dflt;
  if (i >= info.Length() || info[i].IsUndefined()) return;
  Napi::Value v = info[i];
  if (v.IsNumber()) {
    *scalar = number_arg(env, info, i, what);
    return;
  }
  if (v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_float64_array) {
    Napi::Float64Array a = v.As<Napi::Float64Array>();
    per_item->assign(a.Data(), a.Data() + a.ElementLength());
  } else if (v.IsArray()) {
    Napi::Array a = v.As<Napi::Array>();
    for (uint32_t k = 0; k < a.Length(); ++k) {
      Napi::Value e = a.Get(k);
      if (!e.IsNumber())
        throw_error(env, "INVALID_ARGUMENT", std::string("Expected numbers in ") + what + " but element " +
                                                 std::to_string(k) + " is " + describe_value(e));
      per_item->push_back(e.As<Napi::Number>().DoubleValue());
    }
  } else {
    throw_error(env, "INVALID_ARGUMENT", std::string("Expected a number or an array of numbers for ") + what +
                                             " but received " + describe_value(v));
  }
  // An empty (or detached) array is not "no coefficients": it would silently mean the
  // default for every item.
  if (per_item->empty())
    throw_error(env, "INVALID_ARGUMENT", std::string("Expected one coefficient per item for ") + what +
                                             " but received an empty array");
  for (size_t k = 0; k < per_item->size(); ++k)
    if (!std::isfinite((*per_item)[k]))
      throw_error(env, "NONFINITE", std::string(what) + "[" + std::to_string(k) + "] is not finite");
}

}  // namespace krad_napi
