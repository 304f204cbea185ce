// NCCL device collectives, CUDA addon only (lib/distributed/nccl.ts uses them):
//   ncclStatus() -> { available, path, version?, reason? }   loads kradagrad_nccl.so (and libnccl)
//   ncclUniqueId() -> Uint8Array(128)                        rank 0's bootstrap token
//   ncclCommInit(token, size, rank, device) -> Promise<comm> ncclCommInitRank, off the main thread
//   ncclRun(comm, ops) -> Promise<void>                      one NCCL group on the backend's stream
//   ncclFree(comm, abort) -> Promise<void>
//   cudaSelectDevice(device), cudaDevice() -> number         the CUDA backend's device
// ops: [{ kind: 'allReduce' | 'broadcast' | 'allGather', recv: NativeTensor, send?: NativeTensor,
//         op?: 'sum' | 'mean' | 'max' | 'min', root?: number }]
// Everything that could overrun device memory is checked here (dtypes, element counts,
// backends); agreement between ranks is checked by the caller before (an MPI header exchange).
#include "nccl_binding.h"

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../cuda/cuda_backend.h"
#include "../cuda/nccl.h"
#include "args.h"
#include "errors.h"
#include "job.h"
#include "tensor_handle.h"

namespace krad_napi {
namespace {

// Marks the communicator externals, so that no other value is ever taken for one.
const napi_type_tag kCommTag = {0x6b7261646e63636cULL, 0x636f6d6d00000001ULL};

using CommPtr = std::shared_ptr<krad::nccl::Comm>;

Napi::Value WrapComm(Napi::Env env, CommPtr c) {
  auto* holder = new CommPtr(std::move(c));
  auto ext = Napi::External<CommPtr>::New(env, holder, [](Napi::Env, CommPtr* p) { delete p; });
  if (napi_type_tag_object(env, ext, &kCommTag) != napi_ok) throw_error(env, "INTERNAL", "could not tag the NCCL communicator");
  return ext;
}

CommPtr GetComm(Napi::Env env, const Napi::Value& v) {
  bool ok = false;
  if (v.IsExternal()) napi_check_object_type_tag(env, v, &kCommTag, &ok);
  if (!ok) throw_error(env, "INVALID_HANDLE", "Expected an NCCL communicator handle but received " + describe_value(v));
  return *v.As<Napi::External<CommPtr>>().Data();
}

int int_in(Napi::Env env, const Napi::Value& v, const char* what, int lo, int hi) {
  if (!v.IsNumber()) throw_error(env, "INVALID_ARGUMENT", std::string("Expected an integer for ") + what + " but received " + describe_value(v));
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= lo && d <= hi) || d != std::floor(d))
    throw_error(env, "INVALID_ARGUMENT", std::string("Expected an integer in [") + std::to_string(lo) + ", " + std::to_string(hi) +
                                             "] for " + what + " but received " + describe_value(v));
  return static_cast<int>(d);
}

krad::TensorPtr CudaTensor(Napi::Env env, const Napi::Value& v, const char* what) {
  krad::TensorPtr t = TensorHandle::Get(env, v, what);
  if (std::string(t->backend()->name()) != "cuda")
    throw_error(env, "BACKEND_MISMATCH", std::string("NCCL collectives take CUDA tensors, but ") + what + " lives on the " +
                                             t->backend()->name() + " backend");
  return t;
}

Napi::Value Status_(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  krad::Status s = krad::nccl::load(&path);
  Napi::Object o = Napi::Object::New(env);
  o.Set("path", path);
  o.Set("available", s.ok());
  if (s.ok()) {
    int v = 0;
    krad::Status sv = krad::nccl::version(&v);
    if (sv.ok()) o.Set("version", v);
  } else {
    o.Set("reason", s.message);
  }
  return o;
}

Napi::Value UniqueId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<uint8_t> id;
  check(env, krad::nccl::unique_id(&id));
  Napi::Uint8Array out = Napi::Uint8Array::New(env, id.size());
  std::copy(id.begin(), id.end(), out.Data());
  return out;
}

Napi::Value CommInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    throw_error(env, "INVALID_ARGUMENT", "ncclCommInit(token: Uint8Array, size, rank, device)");
  Napi::Uint8Array tok = info[0].As<Napi::Uint8Array>();
  if (tok.ElementLength() != krad::nccl::kIdBytes)
    throw_error(env, "INVALID_ARGUMENT", "the NCCL token must be " + std::to_string(krad::nccl::kIdBytes) + " bytes, not " +
                                             std::to_string(tok.ElementLength()));
  std::vector<uint8_t> id(tok.Data(), tok.Data() + tok.ElementLength());
  const int size = int_in(env, info[1], "size", 1, 1 << 20);
  const int rank = int_in(env, info[2], "rank", 0, size - 1);
  const int device = int_in(env, info[3], "device", 0, 1 << 16);
  struct R {
    krad::Status status;
    CommPtr comm;
  };
  auto r = std::make_shared<R>();
  return QueueWork(
      env, "kradagrad.nccl.init", [=]() { r->status = krad::nccl::comm_init(id, size, rank, device, &r->comm); },
      [r](Napi::Env e) -> Napi::Value {
        if (!r->status.ok()) throw status_error(e, r->status);
        return WrapComm(e, r->comm);
      });
}

Napi::Value Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ImmediateOnly(env, "ncclRun");
  CommPtr comm = GetComm(env, info.Length() > 0 ? info[0] : env.Undefined());
  if (info.Length() < 2 || !info[1].IsArray()) throw_error(env, "INVALID_ARGUMENT", "ncclRun(comm, ops: array)");
  Napi::Array arr = info[1].As<Napi::Array>();
  std::vector<krad::nccl::Op> ops;
  std::vector<krad::TensorPtr> keep;  // alive until the collectives are done
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value ev = arr.Get(i);
    if (!ev.IsObject()) throw_error(env, "INVALID_ARGUMENT", "ncclRun: op " + std::to_string(i) + " is not an object");
    Napi::Object e = ev.As<Napi::Object>();
    Napi::Value kv = e.Get("kind");
    const std::string kind = kv.IsString() ? kv.As<Napi::String>().Utf8Value() : "";
    krad::nccl::Op op;
    krad::TensorPtr recv = CudaTensor(env, e.Get("recv"), "recv");
    krad::TensorPtr send = e.Get("send").IsUndefined() ? nullptr : CudaTensor(env, e.Get("send"), "send");
    if (send && send->dtype() != recv->dtype())
      throw_error(env, "DTYPE_MISMATCH", "ncclRun: send is " + std::string(krad::dtype_name(send->dtype())) + " but recv is " +
                                             krad::dtype_name(recv->dtype()));
    op.type = recv->dtype() == krad::DType::F32 ? krad::nccl::Type::F32 : krad::nccl::Type::F64;
    op.recv = recv->data();
    const size_t rn = static_cast<size_t>(recv->numel());
    if (kind == "allReduce") {
      op.kind = krad::nccl::Kind::AllReduce;
      Napi::Value rv = e.Get("op");
      const std::string red = rv.IsString() ? rv.As<Napi::String>().Utf8Value() : "sum";
      if (red == "sum") op.red = krad::nccl::Red::Sum;
      else if (red == "mean") op.red = krad::nccl::Red::Avg;
      else if (red == "max") op.red = krad::nccl::Red::Max;
      else if (red == "min") op.red = krad::nccl::Red::Min;
      else throw_error(env, "INVALID_ARGUMENT", "ncclRun: unknown reduction " + describe_value(rv));
      if (send && static_cast<size_t>(send->numel()) != rn)
        throw_error(env, "SHAPE_MISMATCH", "ncclRun: allReduce of " + std::to_string(send->numel()) + " elements into " + std::to_string(rn));
      op.send = send ? send->data() : recv->data();
      op.count = rn;
    } else if (kind == "broadcast") {
      // recv[offset, offset + count) (default: all of recv); the root sends `send` (count
      // elements) or, without one, that range of its recv (in place).
      op.kind = krad::nccl::Kind::Broadcast;
      op.root = int_in(env, e.Get("root"), "root", 0, comm->size() - 1);
      const double off = e.Get("offset").IsUndefined() ? 0.0 : static_cast<double>(int_in(env, e.Get("offset"), "offset", 0, INT32_MAX));
      const size_t o = static_cast<size_t>(off);
      if (o > rn) throw_error(env, "SHAPE_MISMATCH", "ncclRun: broadcast offset " + std::to_string(o) + " beyond the " + std::to_string(rn) + " elements of recv");
      const size_t n = e.Get("count").IsUndefined() ? rn - o : static_cast<size_t>(int_in(env, e.Get("count"), "count", 0, INT32_MAX));
      if (o + n > rn)
        throw_error(env, "SHAPE_MISMATCH", "ncclRun: broadcast of " + std::to_string(n) + " elements at " + std::to_string(o) +
                                               " overruns the " + std::to_string(rn) + " elements of recv");
      if (send && static_cast<size_t>(send->numel()) != n)
        throw_error(env, "SHAPE_MISMATCH", "ncclRun: broadcast of " + std::to_string(send->numel()) + " elements into " + std::to_string(n));
      char* base = static_cast<char*>(recv->data()) + o * krad::dtype_size(recv->dtype());
      op.recv = base;
      op.send = send ? send->data() : base;
      op.count = n;
    } else if (kind == "allGather") {
      op.kind = krad::nccl::Kind::AllGather;
      if (!send) throw_error(env, "INVALID_ARGUMENT", "ncclRun: allGather needs send");
      const size_t sn = static_cast<size_t>(send->numel());
      if (sn * static_cast<size_t>(comm->size()) != rn)
        throw_error(env, "SHAPE_MISMATCH", "ncclRun: allGather of " + std::to_string(sn) + " elements per rank from " +
                                               std::to_string(comm->size()) + " ranks into " + std::to_string(rn));
      op.send = send->data();
      op.count = sn;
    } else {
      throw_error(env, "INVALID_ARGUMENT", "ncclRun: unknown collective " + describe_value(kv));
    }
    keep.push_back(recv);
    if (send) keep.push_back(send);
    ops.push_back(op);
  }
  auto status = std::make_shared<krad::Status>();
  return QueueWork(
      env, "kradagrad.nccl.run", [=]() { *status = comm->run(ops); },
      [status, keep](Napi::Env e) -> Napi::Value {
        if (!status->ok()) throw status_error(e, *status);
        return e.Undefined();
      });
}

Napi::Value Free(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CommPtr comm = GetComm(env, info.Length() > 0 ? info[0] : env.Undefined());
  const bool abort = bool_or(env, info, 1, "abort", false);
  auto status = std::make_shared<krad::Status>();
  return QueueWork(
      env, "kradagrad.nccl.free", [=]() { *status = comm->free(abort); },
      [status](Napi::Env e) -> Napi::Value {
        if (!status->ok()) throw status_error(e, *status);
        return e.Undefined();
      });
}

Napi::Value SelectDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check(env, krad::cuda_select_device(int_in(env, info.Length() ? info[0] : env.Undefined(), "device", 0, 1 << 16)));
  return env.Undefined();
}

Napi::Value Device(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), krad::cuda_device()); }

}  // namespace

void InitNccl(Napi::Env env, Napi::Object exports) {
  exports.Set("ncclStatus", Napi::Function::New(env, Status_, "ncclStatus"));
  exports.Set("ncclUniqueId", Napi::Function::New(env, UniqueId, "ncclUniqueId"));
  exports.Set("ncclCommInit", Napi::Function::New(env, CommInit, "ncclCommInit"));
  exports.Set("ncclRun", Napi::Function::New(env, Run, "ncclRun"));
  exports.Set("ncclFree", Napi::Function::New(env, Free, "ncclFree"));
  exports.Set("cudaSelectDevice", Napi::Function::New(env, SelectDevice, "cudaSelectDevice"));
  exports.Set("cudaDevice", Napi::Function::New(env, Device, "cudaDevice"));
}

}  // namespace krad_napi
