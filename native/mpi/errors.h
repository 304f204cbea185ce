// Coded JS errors for the MPI addon (the pattern of native/napi/errors.h, per environment:
// the TypeScript loader registers KradagradError; until then a plain Error with `code`).
#pragma once
#include <napi.h>

#include <string>

namespace krad_mpi_napi {

Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message);
[[noreturn]] void throw_error(Napi::Env env, const std::string& code, const std::string& message);

}  // namespace krad_mpi_napi
