#include "errors.h"

#include "addon_data.h"

namespace krad_napi {
namespace {
Napi::FunctionReference* error_ctor_ref(Napi::Env env) {
  AddonData* d = addon_data(env);
  return d ? &d->error_ctor : nullptr;
}
}  // namespace

void set_error_class(Napi::Env env, Napi::Function ctor) { addon_data(env)->error_ctor = Napi::Persistent(ctor); }

Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message) {
  auto* ref = error_ctor_ref(env);
  if (ref && !ref->IsEmpty()) {
    Napi::Value v = ref->New({Napi::String::New(env, message), Napi::String::New(env, code)});
    return Napi::Error(env, v);
  }
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

void throw_error(Napi::Env env, const std::string& code, const std::string& message) {
  throw make_error(env, code, message);
}

void check(Napi::Env env, const krad::Status& s) {
  if (!s.ok()) throw status_error(env, s);
}

Napi::Error status_error(Napi::Env env, const krad::Status& s) {
  Napi::Error e = make_error(env, krad::code_name(s.code), s.message);
  if (s.info) {
    // The same field as KradagradError.details on the TypeScript side.
    Napi::Object details = Napi::Object::New(env);
    details.Set("info", Napi::Number::New(env, static_cast<double>(s.info)));
    e.Set("details", details);
  }
  return e;
}

}  // namespace krad_napi
