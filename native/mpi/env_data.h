// Per-environment state of the MPI addon (the main thread and each worker_thread that
// loads it get their own), and the link through which the comm thread hands finished
// jobs back to the environment that submitted them.
//
// Teardown safety: a worker can end (or the process exit) while its collectives run. The
// jobs own all the memory they touch (engine.h: Span), so they finish harmlessly; what
// must not happen is a completion into a dead environment. The link's `alive` flag, under
// its mutex, is cleared by an environment cleanup hook and by the thread-safe function's
// finalizer (whichever runs first), and the comm thread only calls the thread-safe
// function while holding that mutex with `alive` set. Jobs of a dead environment are
// then dropped on the comm thread.
#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "engine.h"

namespace krad_mpi_napi {

struct EnvLink;
void call_js(Napi::Env env, Napi::Function, EnvLink* link, krad_mpi::Job* job);
using Tsfn = Napi::TypedThreadSafeFunction<EnvLink, krad_mpi::Job, &call_js>;

// What to do with a finished job on the JS thread.
struct Pending {
  enum class Result { Info, Undefined, Array, NewArray };
  Result result = Result::Undefined;
  Napi::Promise::Deferred deferred;
  Napi::ObjectReference target;                    // Array: the typed array to resolve with
  bool copy_back = false;                          // Array: the job worked on a staging copy
  napi_typedarray_type type = napi_float32_array;  // NewArray: the type to create
  explicit Pending(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
};

struct EnvLink : krad_mpi::Delivery {
  std::mutex mu;
  bool alive = true;  // guarded by mu
  Tsfn tsfn;
  // JS thread only.
  std::unordered_map<uint64_t, Pending> pending;
  uint64_t next_id = 1;

  // Comm thread.
  void deliver(std::unique_ptr<krad_mpi::Job> job) override {
    std::lock_guard<std::mutex> g(mu);
    if (!alive) return;  // the environment is gone; the job frees its own buffers
    if (tsfn.NonBlockingCall(job.get()) == napi_ok) job.release();
  }
  void close() {
    std::lock_guard<std::mutex> g(mu);
    alive = false;
  }
};

struct EnvData {
  Napi::FunctionReference error_ctor;  // KradagradError, registered by the TS loader
  std::shared_ptr<EnvLink> link;
};

}  // namespace krad_mpi_napi
