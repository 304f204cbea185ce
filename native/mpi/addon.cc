// Module entry of the optional MPI addon (build-mpi/Release/kradagrad_mpi.node): argument
// checks and promises on the JS thread; the collectives themselves run on the engine's
// communication thread (engine.h), and their results come back through the environment's
// thread-safe function (env_data.h). The TypeScript layer is lib/distributed.
#include <napi.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "arrays.h"
#include "engine.h"
#include "env_data.h"
#include "errors.h"

namespace krad_mpi_napi {
namespace {

using krad_mpi::Job;

EnvData* env_data(Napi::Env env) { return env.GetInstanceData<EnvData>(); }

Napi::Object info_object(Napi::Env env, const krad_mpi::WorldInfo& w) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("rank", w.rank);
  o.Set("size", w.size);
  o.Set("localRank", w.local_rank);
  o.Set("localSize", w.local_size);
  o.Set("threadLevel", w.thread_level);
  o.Set("threadMain", w.thread_main);
  o.Set("library", w.library);
  o.Set("processor", w.processor);
  return o;
}

void settle(Napi::Env env, Pending& p, Job& job) {
  if (!job.status.ok()) {
    p.deferred.Reject(make_error(env, job.status.code, job.status.message).Value());
    return;
  }
  switch (p.result) {
    case Pending::Result::Info:
      p.deferred.Resolve(info_object(env, job.info));
      return;
    case Pending::Result::Undefined:
      p.deferred.Resolve(env.Undefined());
      return;
    case Pending::Result::Array: {
      Napi::Object target = p.target.Value();
      if (p.copy_back) {
        ArrayArg t = array_arg(env, target, "the result array");
        if (t.bytes != job.out.bytes)
          throw_error(env, "INVALID_ARGUMENT",
                      "the array was detached or resized while the collective ran; its result is lost on this rank");
        if (t.bytes) std::memcpy(t.data, job.out.data, t.bytes);
      }
      p.deferred.Resolve(target);
      return;
    }
    case Pending::Result::NewArray: {
      int64_t total = 0;
      for (int64_t c : job.counts) total += c;
      p.deferred.Resolve(expose(env, job.out.owner, p.type, static_cast<size_t>(total)));
      return;
    }
  }
}

Napi::Value submit(Napi::Env env, std::unique_ptr<Job> job, Pending p) {
  EnvLink& link = *env_data(env)->link;
  const uint64_t id = link.next_id++;
  job->id = id;
  job->delivery = env_data(env)->link;
  Napi::Promise promise = p.deferred.Promise();
  krad_mpi::Status s = krad_mpi::submit(std::move(job));
  if (!s.ok()) {
    p.deferred.Reject(make_error(env, s.code, s.message).Value());
    return promise;
  }
  // The job cannot complete before this returns: completions run on this thread.
  link.pending.emplace(id, std::move(p));
  if (link.pending.size() == 1) link.tsfn.Ref(env);  // keep the event loop alive while collectives run
  return promise;
}

krad_mpi::Op op_arg(Napi::Env env, const Napi::Value& v) {
  if (v.IsString()) {
    std::string s = v.As<Napi::String>().Utf8Value();
    if (s == "sum") return krad_mpi::Op::Sum;
    if (s == "mean") return krad_mpi::Op::Mean;
    if (s == "max") return krad_mpi::Op::Max;
    if (s == "min") return krad_mpi::Op::Min;
  }
  throw_error(env, "INVALID_ARGUMENT",
              "Expected 'sum', 'mean', 'max' or 'min' for op but received " + describe_value(v));
}

int64_t int_arg(Napi::Env env, const Napi::Value& v, const char* what, double lo, double hi) {
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (std::isfinite(d) && d == std::floor(d) && d >= lo && d <= hi) return static_cast<int64_t>(d);
  }
  char range[96];
  snprintf(range, sizeof range, "an integer in [%.0f, %.0f]", lo, hi);
  throw_error(env, "INVALID_ARGUMENT", std::string("Expected ") + range + " for " + what + " but received " +
                                           describe_value(v));
}

bool given(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && !info[i].IsUndefined() && !info[i].IsNull();
}

void check_same_type(Napi::Env env, const ArrayArg& x, const ArrayArg& into) {
  if (into.type != x.type)
    throw_error(env, "DTYPE_MISMATCH", std::string("Expected a ") + array_type_name(x.type) +
                                           " for into (the type of x) but received " + array_type_name(into.type));
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_unique<Job>();
  job->type = Job::Type::Init;
  Pending p(env);
  p.result = Pending::Result::Info;
  return submit(env, std::move(job), std::move(p));
}

// allReduce(x, op, into?): into defaults to x (in place).
Napi::Value AllReduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ArrayArg x = array_arg(env, info[0], "x");
  krad_mpi::Op op = op_arg(env, info[1]);
  ArrayArg into = given(info, 2) ? array_arg(env, info[2], "into") : x;
  check_same_type(env, x, into);
  if (into.length != x.length)
    throw_error(env, "SHAPE_MISMATCH", "Expected into to have the length of x (" + std::to_string(x.length) +
                                           ") but it has " + std::to_string(into.length));
  if (op == krad_mpi::Op::Mean && x.dtype != krad_mpi::DType::F32 && x.dtype != krad_mpi::DType::F64)
    throw_error(env, "INVALID_ARGUMENT", std::string("allReduce 'mean' needs a Float32Array or Float64Array, not ") +
                                             array_type_name(x.type));
  const bool in_place = same_memory(x, into);
  if (!in_place && overlaps(x, into))
    throw_error(env, "INVALID_ARGUMENT", "x and into overlap without being the same array view");
  auto job = std::make_unique<Job>();
  job->kind = krad_mpi::Kind::AllReduce;
  job->dtype = x.dtype;
  job->op = op;
  job->count = static_cast<int64_t>(x.length);
  bool staged_in = false, staged_out = false;
  job->in = acquire(env, x, true, &staged_in);
  if (in_place) {
    job->out = job->in;
    job->in_place = true;
    staged_out = staged_in;
  } else {
    job->out = acquire(env, into, false, &staged_out);
  }
  Pending p(env);
  p.result = Pending::Result::Array;
  p.target = Napi::Persistent(into.array.As<Napi::Object>());
  p.copy_back = staged_out;
  return submit(env, std::move(job), std::move(p));
}

// allGather(x, into?): without into, a new array of the total length.
Napi::Value AllGather(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ArrayArg x = array_arg(env, info[0], "x");
  const bool has_into = given(info, 1);
  ArrayArg into;
  if (has_into) {
    into = array_arg(env, info[1], "into");
    check_same_type(env, x, into);
    if (overlaps(x, into)) throw_error(env, "INVALID_ARGUMENT", "allGather: x and into must not overlap");
  }
  auto job = std::make_unique<Job>();
  job->kind = krad_mpi::Kind::AllGather;
  job->dtype = x.dtype;
  job->count = static_cast<int64_t>(x.length);
  job->out_count = has_into ? static_cast<int64_t>(into.length) : -1;
  bool staged_in = false, staged_out = false;
  job->in = acquire(env, x, true, &staged_in);
  if (has_into) job->out = acquire(env, into, false, &staged_out);
  Pending p(env);
  if (has_into) {
    p.result = Pending::Result::Array;
    p.target = Napi::Persistent(into.array.As<Napi::Object>());
    p.copy_back = staged_out;
  } else {
    p.result = Pending::Result::NewArray;
    p.type = x.type;
  }
  return submit(env, std::move(job), std::move(p));
}

// broadcast(x, root): x is overwritten with root's data on the other ranks.
Napi::Value Broadcast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ArrayArg x = array_arg(env, info[0], "x");
  const int64_t root = int_arg(env, info.Length() > 1 ? info[1] : env.Undefined(), "root", 0, 2147483647.0);
  auto job = std::make_unique<Job>();
  job->kind = krad_mpi::Kind::Broadcast;
  job->dtype = x.dtype;
  job->root = root;
  job->count = static_cast<int64_t>(x.length);
  bool staged = false;
  job->in = acquire(env, x, true, &staged);
  job->out = job->in;
  Pending p(env);
  p.result = Pending::Result::Array;
  p.target = Napi::Persistent(x.array.As<Napi::Object>());
  p.copy_back = staged;
  return submit(env, std::move(job), std::move(p));
}

Napi::Value Barrier(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_unique<Job>();
  job->kind = krad_mpi::Kind::Barrier;
  Pending p(env);
  return submit(env, std::move(job), std::move(p));
}

Napi::Value Finalize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_unique<Job>();
  job->type = Job::Type::Finalize;
  Pending p(env);
  return submit(env, std::move(job), std::move(p));
}

// For process exit, where a promise could no longer be delivered.
Napi::Value FinalizeSync(const Napi::CallbackInfo& info) {
  krad_mpi::Status s = krad_mpi::finalize_sync();
  if (!s.ok()) throw_error(info.Env(), s.code, s.message);
  return info.Env().Undefined();
}

// Ends the MPI job; returns only when MPI is not active in this process.
Napi::Value Abort(const Napi::CallbackInfo& info) {
  const int64_t code = int_arg(info.Env(), info.Length() > 0 ? info[0] : info.Env().Undefined(), "code", 0, 255);
  krad_mpi::abort_job(static_cast<int>(code));
  return info.Env().Undefined();
}

Napi::Value Allocate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  krad_mpi::DType d = krad_mpi::DType::F32;
  std::string name = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  if (name == "float32") d = krad_mpi::DType::F32;
  else if (name == "float64") d = krad_mpi::DType::F64;
  else if (name == "int32") d = krad_mpi::DType::I32;
  else if (name == "uint8") d = krad_mpi::DType::U8;
  else
    throw_error(env, "INVALID_ARGUMENT",
                "Expected 'float32', 'float64', 'int32' or 'uint8' for dtype but received " +
                    describe_value(info.Length() > 0 ? info[0] : env.Undefined()));
  // 2^32 bytes: the largest ArrayBuffer Node 20 creates.
  const double max_len = 4294967296.0 / static_cast<double>(krad_mpi::dtype_bytes(d));
  const int64_t length = int_arg(env, info.Length() > 1 ? info[1] : env.Undefined(), "length", 0, max_len);
  auto a = std::make_shared<krad_mpi::Allocation>(static_cast<size_t>(length) * krad_mpi::dtype_bytes(d), true);
  if (!a->valid()) throw_error(env, "OUT_OF_MEMORY", "could not allocate " + std::to_string(a->bytes()) + " bytes");
  return expose(env, a, typed_array_type(d), static_cast<size_t>(length));
}

Napi::Value IsAllocated(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), is_allocated(array_arg(info.Env(), info[0], "x")));
}

Napi::Value State(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("active", krad_mpi::mpi_active());
  o.Set("finalizing", krad_mpi::finalizing());
  return o;
}

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction())
    throw_error(info.Env(), "INVALID_ARGUMENT", "Expected a constructor for setErrorClass");
  env_data(info.Env())->error_ctor = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

}  // namespace

void call_js(Napi::Env env, Napi::Function, EnvLink* link, Job* raw) {
  std::unique_ptr<Job> job(raw);
  if (env == nullptr || link == nullptr) return;  // the thread-safe function is being torn down
  auto it = link->pending.find(job->id);
  if (it == link->pending.end()) return;
  Pending p = std::move(it->second);
  link->pending.erase(it);
  // Nothing may escape: an exception out of a thread-safe-function callback ends the
  // process. Node-API calls fail (and node-addon-api throws) when the environment is
  // terminating, e.g. a worker whose terminate() has begun while a completion was
  // queued; then the promise can no longer be settled, and the result is dropped.
  try {
    if (link->pending.empty()) link->tsfn.Unref(env);
    Napi::HandleScope scope(env);
    try {
      settle(env, p, *job);
    } catch (const Napi::Error& e) {
      p.deferred.Reject(e.Value());
    } catch (const std::exception& e) {
      p.deferred.Reject(make_error(env, "INTERNAL", e.what()).Value());
    }
  } catch (...) {
  }
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  auto* data = new EnvData();
  env.SetInstanceData<EnvData>(data);
  data->link = std::make_shared<EnvLink>();
  // The thread-safe function's own share of the link, released by its finalizer, which
  // also closes the link (it may run before or after the cleanup hook below).
  auto* share = new std::shared_ptr<EnvLink>(data->link);
  data->link->tsfn = Tsfn::New(
      env, "kradagrad_mpi", 0, 1, data->link.get(),
      [](Napi::Env, std::shared_ptr<EnvLink>* s, EnvLink*) {
        (*s)->close();
        delete s;
      },
      share);
  data->link->tsfn.Unref(env);  // an idle addon must not keep the process alive
  // Environment teardown (a worker ending, or the main thread's normal exit): stop
  // deliveries, then drop the pending promises' references while the environment can
  // still release them. Jobs still running keep their buffers and end harmlessly.
  std::shared_ptr<EnvLink> link = data->link;
  env.AddCleanupHook([link]() {
    link->close();
    link->pending.clear();
  });

  exports.Set("flavor", Napi::String::New(env, "mpi"));
  exports.Set("abiVersion", Napi::Number::New(env, 1));
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
  exports.Set("init", Napi::Function::New(env, Init, "init"));
  exports.Set("allReduce", Napi::Function::New(env, AllReduce, "allReduce"));
  exports.Set("allGather", Napi::Function::New(env, AllGather, "allGather"));
  exports.Set("broadcast", Napi::Function::New(env, Broadcast, "broadcast"));
  exports.Set("barrier", Napi::Function::New(env, Barrier, "barrier"));
  exports.Set("finalize", Napi::Function::New(env, Finalize, "finalize"));
  exports.Set("finalizeSync", Napi::Function::New(env, FinalizeSync, "finalizeSync"));
  exports.Set("abort", Napi::Function::New(env, Abort, "abort"));
  exports.Set("allocate", Napi::Function::New(env, Allocate, "allocate"));
  exports.Set("isAllocated", Napi::Function::New(env, IsAllocated, "isAllocated"));
  exports.Set("state", Napi::Function::New(env, State, "state"));
  return exports;
}

}  // namespace krad_mpi_napi

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return krad_mpi_napi::InitModule(env, exports); }
NODE_API_MODULE(kradagrad_mpi, InitAddon)
