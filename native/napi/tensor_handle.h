// JS handle to a backend-owned krad::Tensor. dispose() frees it early (idempotent); the
// garbage collector frees it otherwise. Native memory of CPU tensors is reported to V8.
#pragma once
#include <napi.h>

#include "../core/tensor.h"

namespace krad_napi {

class TensorHandle : public Napi::ObjectWrap<TensorHandle> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::Object Wrap(Napi::Env env, krad::TensorPtr t);
  // The tensor behind a JS value; throws INVALID_HANDLE / DISPOSED with `what` named.
  static krad::TensorPtr Get(Napi::Env env, const Napi::Value& v, const char* what);
  static bool Is(Napi::Env env, const Napi::Value& v);

  explicit TensorHandle(const Napi::CallbackInfo& info);
  ~TensorHandle() override;

 private:
  // The prototype's members are plain functions, not ObjectWrap instance members: those
  // unwrap `this` before any code of ours runs and throw an uncoded Error (or V8's "Illegal
  // invocation") for a receiver that is not a handle, e.g. NativeTensor.prototype.read.call({}).
  // These resolve `this` through Handle() and throw INVALID_HANDLE instead.
  static TensorHandle* Handle(Napi::Env env, const Napi::Value& v, const char* what);
  static Napi::Value Dtype(const Napi::CallbackInfo& info);
  static Napi::Value Shape(const Napi::CallbackInfo& info);
  static Napi::Value Batch(const Napi::CallbackInfo& info);
  static Napi::Value BackendName(const Napi::CallbackInfo& info);
  static Napi::Value Bytes(const Napi::CallbackInfo& info);
  static Napi::Value Disposed(const Napi::CallbackInfo& info);
  static Napi::Value Dispose(const Napi::CallbackInfo& info);
  static Napi::Value Read(const Napi::CallbackInfo& info);     // read([into]) -> typed array
  static Napi::Value Write(const Napi::CallbackInfo& info);    // write(typedArray)
  static Napi::Value Reshape(const Napi::CallbackInfo& info);  // reshape(batch, shape) -> view

  void Release(Napi::Env env);
  // write() while recording: a host buffer the job uploads from, reused by later writes
  // once the jobs that read it are gone (a fresh allocation per write costs page faults
  // on the main thread: 2.5 ms per 4 MiB against 0.5 for the copy alone).
  std::shared_ptr<std::vector<char>> StagingBuffer(size_t bytes);
  krad::TensorPtr tensor_;
  std::shared_ptr<std::vector<char>> staging_;
  int64_t reported_ = 0;  // bytes reported to V8
};

}  // namespace krad_napi
