// Turns core Status values and argument problems into JS errors of one class with a
// stable `code`. The TypeScript loader registers that class (KradagradError) at load time;
// until then a plain Error with a `code` property is thrown.
#pragma once
#include <napi.h>

#include <string>

#include "../core/status.h"

namespace krad_napi {

void set_error_class(Napi::Env env, Napi::Function ctor);
Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message);
[[noreturn]] void throw_error(Napi::Env env, const std::string& code, const std::string& message);
// The coded error of a failed status (its `info`, when set, in `details.info`).
Napi::Error status_error(Napi::Env env, const krad::Status& s);
// Throws status_error(s) when !s.ok().
void check(Napi::Env env, const krad::Status& s);

}  // namespace krad_napi
