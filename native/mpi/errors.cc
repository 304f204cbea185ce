#include "errors.h"

#include "env_data.h"

namespace krad_mpi_napi {

Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message) {
  EnvData* d = env.GetInstanceData<EnvData>();
  if (d && !d->error_ctor.IsEmpty()) {
    Napi::Value v = d->error_ctor.New({Napi::String::New(env, message), Napi::String::New(env, code)});
    return Napi::Error(env, v);
  }
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

void throw_error(Napi::Env env, const std::string& code, const std::string& message) {
  throw make_error(env, code, message);
}

}  // namespace krad_mpi_napi
