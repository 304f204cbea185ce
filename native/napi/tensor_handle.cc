#include "tensor_handle.h"

#include <atomic>
#include <cstring>
#include <memory>
#include <vector>

#include "addon_data.h"
#include "args.h"
#include "errors.h"
#include "job.h"

namespace krad_napi {

namespace {
// Marks objects that really are our handles (napi type tags, N-API 8): an object that only
// has NativeTensor's prototype, or one wrapped by another addon, lacks it.
const napi_type_tag kHandleTag = {0x6b72616461677261ULL, 0x642d74656e736f72ULL};
}  // namespace

Napi::Function TensorHandle::Init(Napi::Env env) {
  Napi::Function ctor = DefineClass(env, "NativeTensor", {});
  using PD = Napi::PropertyDescriptor;
  auto method = [&](const char* name, Napi::Value (*fn)(const Napi::CallbackInfo&)) {
    return PD::Value(name, Napi::Function::New(env, fn, name));
  };
  ctor.Get("prototype").As<Napi::Object>().DefineProperties({
      PD::Accessor<&TensorHandle::Dtype>("dtype"),
      PD::Accessor<&TensorHandle::Shape>("shape"),
      PD::Accessor<&TensorHandle::Batch>("batch"),
      PD::Accessor<&TensorHandle::BackendName>("backend"),
      PD::Accessor<&TensorHandle::Bytes>("bytes"),
      PD::Accessor<&TensorHandle::Disposed>("disposed"),
      method("dispose", &TensorHandle::Dispose),
      method("read", &TensorHandle::Read),
      method("write", &TensorHandle::Write),
      method("reshape", &TensorHandle::Reshape),
  });
  return ctor;
}

// Handles are only made by Wrap(): the constructor takes an External holding the tensor.
TensorHandle::TensorHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorHandle>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    throw_error(info.Env(), "INVALID_ARGUMENT", "NativeTensor cannot be constructed directly; use tensor()/fromArray()");
  auto* holder = info[0].As<Napi::External<krad::TensorPtr>>().Data();
  tensor_ = *holder;
  napi_type_tag_object(info.Env(), info.This(), &kHandleTag);
  // Only the handle that created the storage reports it (views share it).
  if (std::strcmp(tensor_->backend()->name(), "cpu") == 0 && tensor_->storage().use_count() == 1) {
    reported_ = static_cast<int64_t>(tensor_->bytes());
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), reported_);
  }
}

TensorHandle::~TensorHandle() {
  // Finalizers run during GC: no JS calls here. Memory stays reported until env teardown
  // only if dispose() was never called; V8 recomputes on the next adjustment.
  if (reported_) Napi::MemoryManagement::AdjustExternalMemory(Env(), -reported_);
}

void TensorHandle::Release(Napi::Env env) {
  if (!tensor_) return;
  tensor_.reset();
  staging_.reset();
  if (reported_) {
    Napi::MemoryManagement::AdjustExternalMemory(env, -reported_);
    reported_ = 0;
  }
}

Napi::Object TensorHandle::Wrap(Napi::Env env, krad::TensorPtr t) {
  krad::TensorPtr holder = std::move(t);
  Napi::External<krad::TensorPtr> ext = Napi::External<krad::TensorPtr>::New(env, &holder);
  return addon_data(env)->tensor_ctor.New({ext});
}

bool TensorHandle::Is(Napi::Env env, const Napi::Value& v) {
  return v.IsObject() && v.As<Napi::Object>().InstanceOf(addon_data(env)->tensor_ctor.Value());
}

TensorHandle* TensorHandle::Handle(Napi::Env env, const Napi::Value& v, const char* what) {
  // The type tag alone identifies our handles (only the constructor sets it); it is much
  // cheaper than InstanceOf, which walks the prototype chain on every argument.
  bool tagged = false;
  void* raw = nullptr;
  if (!v.IsObject() || napi_check_object_type_tag(env, v, &kHandleTag, &tagged) != napi_ok || !tagged) {
    if (!Is(env, v))
      throw_error(env, "INVALID_HANDLE", std::string("Expected a kradagrad tensor handle for ") + what +
                                             " but received " + describe_value(v));
    throw_error(env, "INVALID_HANDLE", std::string("Expected a kradagrad tensor handle for ") + what +
                                           " but received an object that is not one (forged or foreign)");
  }
  // Not Unwrap(): it throws a plain Error for an object that merely has our prototype.
  if (napi_unwrap(env, v, &raw) != napi_ok || !raw)
    throw_error(env, "INVALID_HANDLE", std::string("Expected a kradagrad tensor handle for ") + what +
                                           " but received an object that is not one (forged or foreign)");
  return static_cast<TensorHandle*>(raw);
}

krad::TensorPtr TensorHandle::Get(Napi::Env env, const Napi::Value& v, const char* what) {
  TensorHandle* h = Handle(env, v, what);
  if (!h->tensor_) throw_error(env, "DISPOSED", std::string(what) + ": the tensor has been disposed");
  return h->tensor_;
}

Napi::Value TensorHandle::Dtype(const Napi::CallbackInfo& info) {
  auto t = Get(info.Env(), info.This(), "tensor");
  return Napi::String::New(info.Env(), krad::dtype_name(t->dtype()));
}
Napi::Value TensorHandle::Shape(const Napi::CallbackInfo& info) {
  auto t = Get(info.Env(), info.This(), "tensor");
  Napi::Array a = Napi::Array::New(info.Env(), t->shape().size());
  for (size_t i = 0; i < t->shape().size(); ++i) a.Set(i, Napi::Number::New(info.Env(), (double)t->shape()[i]));
  return a;
}
Napi::Value TensorHandle::Batch(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), (double)Get(info.Env(), info.This(), "tensor")->batch());
}
Napi::Value TensorHandle::BackendName(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), Get(info.Env(), info.This(), "tensor")->backend()->name());
}
Napi::Value TensorHandle::Bytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), (double)Get(info.Env(), info.This(), "tensor")->bytes());
}
Napi::Value TensorHandle::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !Handle(info.Env(), info.This(), "tensor")->tensor_);
}
Napi::Value TensorHandle::Dispose(const Napi::CallbackInfo& info) {
  Handle(info.Env(), info.This(), "tensor")->Release(info.Env());
  return info.Env().Undefined();
}

Napi::Value TensorHandle::Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ImmediateOnly(env, "read");
  auto t = Get(env, info.This(), "tensor");
  const size_t n = static_cast<size_t>(t->numel());
  Napi::TypedArray out;
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    out = typed_array_arg(env, info[0], "read(into)");
    if (dtype_of(out) != t->dtype())
      throw_error(env, "DTYPE_MISMATCH", std::string("read: expected a ") + array_name(t->dtype()) +
                                             " to read a " + krad::dtype_name(t->dtype()) + " tensor into");
    if (out.ElementLength() != n)
      throw_error(env, "SHAPE_MISMATCH", "read: expected an array of " + std::to_string(n) + " elements but got " +
                                             std::to_string(out.ElementLength()));
  } else if (t->dtype() == krad::DType::F32) {
    out = Napi::Float32Array::New(env, n);
  } else {
    out = Napi::Float64Array::New(env, n);
  }
  check(env, t->backend()->download(typed_data(out), t->data(), t->bytes()));
  return out;
}

std::shared_ptr<std::vector<char>> TensorHandle::StagingBuffer(size_t bytes) {
  // use_count() == 1: no queued or running job holds it (only this handle hands it out,
  // and a job drops its copy with its closure after the upload ran); the fence orders
  // that job's reads before our writes.
  if (staging_ && staging_.use_count() == 1 && staging_->size() == bytes) {
    std::atomic_thread_fence(std::memory_order_acquire);
    return staging_;
  }
  staging_ = std::make_shared<std::vector<char>>(bytes);
  return staging_;
}

Napi::Value TensorHandle::Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto t = Get(env, info.This(), "tensor");
  Napi::TypedArray src = typed_array_arg(env, info.Length() ? info[0] : env.Undefined(), "write(data)");
  if (dtype_of(src) != t->dtype())
    throw_error(env, "DTYPE_MISMATCH", std::string("write: expected a ") + array_name(t->dtype()) + " for a " +
                                           krad::dtype_name(t->dtype()) + " tensor but received a " +
                                           array_name(dtype_of(src)));
  if (src.ElementLength() != static_cast<size_t>(t->numel()))
    throw_error(env, "SHAPE_MISMATCH", "write: expected " + std::to_string(t->numel()) + " elements for " +
                                           t->describe() + " but got " + std::to_string(src.ElementLength()));
  if (Recording(env)) {
    // The data is copied now: the job runs later, and the caller may reuse its array.
    auto copy = Handle(env, info.This(), "tensor")->StagingBuffer(t->bytes());
    std::memcpy(copy->data(), typed_data(src), t->bytes());
    Dispatch(env, [t, copy](JobCtx&) { return t->backend()->upload(t->data(), copy->data(), t->bytes()); });
    return env.Undefined();
  }
  check(env, t->backend()->upload(t->data(), typed_data(src), t->bytes()));
  return env.Undefined();
}

Napi::Value TensorHandle::Reshape(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto t = Get(env, info.This(), "tensor");
  int64_t batch = int_arg(env, info, 0, "batch");
  std::vector<int64_t> shape = shape_arg(env, info.Length() > 1 ? info[1] : env.Undefined(), "shape");
  krad::TensorPtr v;
  check(env, krad::reshape(t, batch, shape, &v));
  return Wrap(env, v);
}

}  // namespace krad_napi
