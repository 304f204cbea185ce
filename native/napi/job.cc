#include "job.h"

#include <condition_variable>
#include <mutex>

#include "addon_data.h"
#include "args.h"
#include "errors.h"

namespace krad_napi {

krad::Status Job::Run(JobCtx* ctx) const {
  ctx->slots.assign(nslots, {});
  for (const JobOp& op : ops) {
    if (ctx->aborted) break;
    KRAD_RETURN_IF_ERROR(op(*ctx));
  }
  return krad::Status::Ok();
}

bool Recording(Napi::Env env) { return addon_data(env)->recording != nullptr; }

void Dispatch(Napi::Env env, JobOp op) {
  AddonData* d = addon_data(env);
  if (d->recording) {
    d->recording->ops.push_back(std::move(op));
    return;
  }
  JobCtx ctx;
  check(env, op(ctx));
}

void ImmediateOnly(Napi::Env env, const char* op) {
  if (Recording(env))
    throw_error(env, "INTERNAL", std::string(op) + " returns its result to JavaScript and cannot be recorded into a job");
}

int NewSlot(Napi::Env env) {
  AddonData* d = addon_data(env);
  if (!d->recording) throw_error(env, "INTERNAL", "result slots exist only while a job is recorded");
  return d->recording->nslots++;
}

// ---- off-thread work that survives environment teardown -------------------------------
namespace {

struct Work {
  napi_async_work work = nullptr;
  napi_deferred deferred = nullptr;
  std::function<void()> exec;
  std::function<Napi::Value(Napi::Env)> done;
};

void ExecuteWork(napi_env, void* data) {
  // `exec` keeps its own errors (as Status) for `done`; nothing may escape a pool thread.
  try {
    static_cast<Work*>(data)->exec();
  } catch (...) {
  }
}

void CompleteWork(napi_env env, napi_status status, void* data) {
  std::unique_ptr<Work> w(static_cast<Work*>(data));
  napi_delete_async_work(env, w->work);
  if (status == napi_cancelled) return;
  // During teardown napi_resolve/reject_deferred fail (JS cannot run any more); their status
  // is ignored, and no node-addon-api call that could turn a failure into a fatal error runs
  // outside the try.
  napi_handle_scope scope = nullptr;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  try {
    Napi::Value v = w->done(Napi::Env(env));
    napi_resolve_deferred(env, w->deferred, v);
  } catch (const Napi::Error& e) {
    napi_reject_deferred(env, w->deferred, e.Value());
  } catch (...) {
  }
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value ignored;
    napi_get_and_clear_last_exception(env, &ignored);
  }
  napi_close_handle_scope(env, scope);
}

}  // namespace

Napi::Promise QueueWork(Napi::Env env, const char* name, std::function<void()> work,
                        std::function<Napi::Value(Napi::Env)> done) {
  auto w = std::make_unique<Work>();
  w->exec = std::move(work);
  w->done = std::move(done);
  napi_value promise, resource_name;
  if (napi_create_promise(env, &w->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
      napi_create_async_work(env, nullptr, resource_name, ExecuteWork, CompleteWork, w.get(), &w->work) != napi_ok)
    throw_error(env, "INTERNAL", std::string("could not create the async work ") + name);
  if (napi_queue_async_work(env, w->work) != napi_ok) {
    napi_delete_async_work(env, w->work);
    throw_error(env, "INTERNAL", std::string("could not queue the async work ") + name);
  }
  w.release();  // owned by CompleteWork now
  return Napi::Promise(env, promise);
}

// ---- the JS side: beginJob / endJob / discardJob and the Job handle ---------------------
namespace {

struct RunState {
  JobCtx ctx;
  krad::Status status;
  // Set by the pool thread when the ops have run (before the promise settles on the main
  // thread), for wait().
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
};

Napi::Value ResultObject(Napi::Env env, const RunState& r) {
  if (!r.status.ok()) throw status_error(env, r.status);
  Napi::Object o = Napi::Object::New(env);
  o.Set("aborted", r.ctx.aborted);
  o.Set("code", r.ctx.aborted ? Napi::Value(Napi::String::New(env, r.ctx.code)) : env.Undefined());
  o.Set("index", Napi::Number::New(env, static_cast<double>(r.ctx.index)));
  o.Set("tag", Napi::Number::New(env, static_cast<double>(r.ctx.tag)));
  Napi::Array slots = Napi::Array::New(env, r.ctx.slots.size());
  for (size_t i = 0; i < r.ctx.slots.size(); ++i) {
    const auto& s = r.ctx.slots[i];
    Napi::Int32Array a = Napi::Int32Array::New(env, s.size());
    for (size_t k = 0; k < s.size(); ++k) a[k] = s[k];
    slots.Set(i, a);
  }
  o.Set("slots", slots);
  return o;
}

// Marks real job handles (see tensor_handle.cc): the members below are plain functions that
// check `this` themselves, so a forged receiver is INVALID_HANDLE, not an uncoded error.
const napi_type_tag kJobTag = {0x6b72616461677261ULL, 0x642d6a6f622d2d2dULL};

class JobHandle : public Napi::ObjectWrap<JobHandle> {
 public:
  static Napi::Function Init(Napi::Env env) {
    Napi::Function ctor = DefineClass(env, "NativeJob", {});
    using PD = Napi::PropertyDescriptor;
    ctor.Get("prototype").As<Napi::Object>().DefineProperties({
        PD::Value("run", Napi::Function::New(env, &JobHandle::RunSync, "run")),
        PD::Value("runAsync", Napi::Function::New(env, &JobHandle::RunAsync, "runAsync")),
        PD::Value("wait", Napi::Function::New(env, &JobHandle::Wait, "wait")),
        PD::Accessor<&JobHandle::Size>("size"),
    });
    return ctor;
  }
  explicit JobHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JobHandle>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw_error(info.Env(), "INVALID_ARGUMENT", "NativeJob cannot be constructed directly; use endJob()");
    job_ = *info[0].As<Napi::External<std::shared_ptr<Job>>>().Data();
    napi_type_tag_object(info.Env(), info.This(), &kJobTag);
  }

 private:
  static JobHandle* Self(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Value v = info.This();
    bool tagged = false;
    void* raw = nullptr;
    if (!v.IsObject() || napi_check_object_type_tag(env, v, &kJobTag, &tagged) != napi_ok || !tagged ||
        napi_unwrap(env, v, &raw) != napi_ok || !raw)
      throw_error(env, "INVALID_HANDLE", "Expected a kradagrad job handle (from endJob()) but received " + describe_value(v));
    return static_cast<JobHandle*>(raw);
  }
  std::shared_ptr<Job> Take(Napi::Env env) {
    if (!job_) throw_error(env, "INVALID_ARGUMENT", "this job has already run");
    return std::move(job_);
  }
  static Napi::Value RunSync(const Napi::CallbackInfo& info) {
    auto job = Self(info)->Take(info.Env());
    RunState r;
    r.status = job->Run(&r.ctx);
    return ResultObject(info.Env(), r);
  }
  static Napi::Value RunAsync(const Napi::CallbackInfo& info) {
    JobHandle* self = Self(info);
    auto job = self->Take(info.Env());
    auto r = std::make_shared<RunState>();
    self->async_ = r;
    return QueueWork(
        info.Env(), "kradagrad.job",
        [job, r]() mutable {
          krad::Status st = job->Run(&r->ctx);
          // The ops' closures (staging copies, the last references to scratch tensors) are
          // released here, on the pool thread: not on the main thread, and before the next
          // step is recorded (which then reuses its staging buffers).
          job.reset();
          std::lock_guard<std::mutex> lock(r->mu);
          r->status = st;
          r->done = true;
          r->cv.notify_all();
        },
        [r](Napi::Env env) { return ResultObject(env, *r); });
  }
  // wait(): blocks the calling thread until a job started with runAsync() has run, and
  // returns its result (its promise settles later as usual). For synchronous callers that
  // must have a background job's results now.
  static Napi::Value Wait(const Napi::CallbackInfo& info) {
    std::shared_ptr<RunState> a = Self(info)->async_;
    if (!a) throw_error(info.Env(), "INVALID_ARGUMENT", "wait(): this job was not started with runAsync()");
    std::unique_lock<std::mutex> lock(a->mu);
    a->cv.wait(lock, [&a] { return a->done; });
    return ResultObject(info.Env(), *a);
  }
  static Napi::Value Size(const Napi::CallbackInfo& info) {
    JobHandle* self = Self(info);
    return Napi::Number::New(info.Env(), self->job_ ? static_cast<double>(self->job_->ops.size()) : 0.0);
  }
  std::shared_ptr<Job> job_;
  std::shared_ptr<RunState> async_;
};

Napi::Value BeginJob(const Napi::CallbackInfo& info) {
  AddonData* d = addon_data(info.Env());
  if (d->recording) throw_error(info.Env(), "INTERNAL", "a job is already being recorded");
  d->recording = std::make_shared<Job>();
  return info.Env().Undefined();
}

Napi::Value EndJob(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonData* d = addon_data(env);
  if (!d->recording) throw_error(env, "INTERNAL", "no job is being recorded");
  std::shared_ptr<Job> job = std::move(d->recording);
  d->recording = nullptr;
  Napi::External<std::shared_ptr<Job>> ext = Napi::External<std::shared_ptr<Job>>::New(env, &job);
  return d->job_ctor.New({ext});
}

Napi::Value DiscardJob(const Napi::CallbackInfo& info) {
  addon_data(info.Env())->recording = nullptr;
  return info.Env().Undefined();
}

}  // namespace

void InitJobs(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = JobHandle::Init(env);
  addon_data(env)->job_ctor = Napi::Persistent(ctor);
  exports.Set("beginJob", Napi::Function::New(env, BeginJob, "beginJob"));
  exports.Set("endJob", Napi::Function::New(env, EndJob, "endJob"));
  exports.Set("discardJob", Napi::Function::New(env, DiscardJob, "discardJob"));
}

}  // namespace krad_napi
