// Argument helpers for the N-API layer. Every failure throws a coded JS error whose
// message says what was expected and what was received.
#pragma once
#include <napi.h>

#include <string>
#include <vector>

#include "../core/backend.h"

namespace krad_napi {

std::string describe_value(const Napi::Value& v);
Napi::TypedArray typed_array_arg(Napi::Env env, const Napi::Value& v, const char* what);  // Float32/64Array
krad::DType dtype_of(const Napi::TypedArray& a);
const char* array_name(krad::DType d);
void* typed_data(const Napi::TypedArray& a);
krad::DType dtype_arg(Napi::Env env, const Napi::Value& v, const char* what);
double number_arg(Napi::Env env, const Napi::CallbackInfo& info, size_t i, const char* what);
double number_or(Napi::Env env, const Napi::CallbackInfo& info, size_t i, const char* what, double dflt);
int64_t int_arg(Napi::Env env, const Napi::CallbackInfo& info, size_t i, const char* what);
bool bool_or(Napi::Env env, const Napi::CallbackInfo& info, size_t i, const char* what, bool dflt);
std::vector<int64_t> shape_arg(Napi::Env env, const Napi::Value& v, const char* what);
std::vector<int64_t> int_list_arg(Napi::Env env, const Napi::Value& v, const char* what);
// A number (-> scalar, empty vector) or an array / Float64Array of numbers (-> per item).
void coeff_arg(Napi::Env env, const Napi::CallbackInfo& info, size_t i, const char* what, double dflt,
               double* scalar, std::vector<double>* per_item);

}  // namespace krad_napi
