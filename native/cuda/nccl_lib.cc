// kradagrad_nccl.so: NCCL behind the C interface of nccl_lib.h (see there for why).
#include "nccl_lib.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdio>
#include <cstring>
#include <new>
#include <string>

static_assert(KRAD_NCCL_ID_BYTES == NCCL_UNIQUE_ID_BYTES, "NCCL's unique id size changed");
static_assert(sizeof(ncclUniqueId) == KRAD_NCCL_ID_BYTES, "ncclUniqueId is not a plain byte array");

#define KRAD_NCCL_EXPORT extern "C" __attribute__((visibility("default")))

struct krad_nccl_comm {
  ncclComm_t comm = nullptr;
  int device = 0;
};

namespace {

int fail(int code, const std::string& msg, char* err, size_t errlen) {
  if (err && errlen) std::snprintf(err, errlen, "%s", msg.c_str());
  return code;
}

int nccl_fail(ncclResult_t r, const char* what, ncclComm_t comm, char* err, size_t errlen) {
  std::string m = std::string(what) + ": " + ncclGetErrorString(r);
  const char* last = ncclGetLastError(comm);
  if (last && *last) m += std::string(" (") + last + ")";
  return fail(r == ncclRemoteError ? KRAD_NCCL_E_REMOTE : KRAD_NCCL_E_NCCL, m, err, errlen);
}

int cuda_fail(cudaError_t e, const char* what, char* err, size_t errlen) {
  (void)cudaGetLastError();
  return fail(KRAD_NCCL_E_CUDA, std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")", err,
              errlen);
}

bool nccl_type(int dtype, ncclDataType_t* out) {
  switch (dtype) {
    case KRAD_NCCL_F32: *out = ncclFloat32; return true;
    case KRAD_NCCL_F64: *out = ncclFloat64; return true;
    case KRAD_NCCL_I32: *out = ncclInt32; return true;
    case KRAD_NCCL_U8: *out = ncclUint8; return true;
  }
  return false;
}

bool nccl_red(int red, ncclRedOp_t* out) {
  switch (red) {
    case KRAD_NCCL_SUM: *out = ncclSum; return true;
    case KRAD_NCCL_AVG: *out = ncclAvg; return true;
    case KRAD_NCCL_MAX: *out = ncclMax; return true;
    case KRAD_NCCL_MIN: *out = ncclMin; return true;
  }
  return false;
}

}  // namespace

KRAD_NCCL_EXPORT int krad_nccl_api_version(void) { return KRAD_NCCL_API_VERSION; }

KRAD_NCCL_EXPORT int krad_nccl_version(int* version, char* err, size_t errlen) {
  ncclResult_t r = ncclGetVersion(version);
  return r == ncclSuccess ? KRAD_NCCL_OK : nccl_fail(r, "ncclGetVersion", nullptr, err, errlen);
}

KRAD_NCCL_EXPORT int krad_nccl_unique_id(unsigned char* id, char* err, size_t errlen) {
  if (!id) return fail(KRAD_NCCL_E_ARG, "krad_nccl_unique_id: null output", err, errlen);
  ncclUniqueId u;
  ncclResult_t r = ncclGetUniqueId(&u);
  if (r != ncclSuccess) return nccl_fail(r, "ncclGetUniqueId", nullptr, err, errlen);
  std::memcpy(id, u.internal, KRAD_NCCL_ID_BYTES);
  return KRAD_NCCL_OK;
}

KRAD_NCCL_EXPORT int krad_nccl_comm_init(krad_nccl_comm** out, const unsigned char* id, int nranks, int rank,
                                         int device, char* err, size_t errlen) {
  if (!out || !id) return fail(KRAD_NCCL_E_ARG, "krad_nccl_comm_init: null argument", err, errlen);
  if (nranks < 1 || rank < 0 || rank >= nranks || device < 0)
    return fail(KRAD_NCCL_E_ARG,
                "krad_nccl_comm_init: rank " + std::to_string(rank) + " of " + std::to_string(nranks) + " on device " +
                    std::to_string(device) + " is not valid",
                err, errlen);
  cudaError_t e = cudaSetDevice(device);
  if (e != cudaSuccess) return cuda_fail(e, ("cudaSetDevice(" + std::to_string(device) + ")").c_str(), err, errlen);
  ncclUniqueId u;
  std::memcpy(u.internal, id, KRAD_NCCL_ID_BYTES);
  auto* c = new (std::nothrow) krad_nccl_comm();
  if (!c) return fail(KRAD_NCCL_E_ARG, "out of host memory", err, errlen);
  c->device = device;
  ncclResult_t r = ncclCommInitRank(&c->comm, nranks, u, rank);
  if (r != ncclSuccess) {
    int code = nccl_fail(r, "ncclCommInitRank", nullptr, err, errlen);
    delete c;
    return code;
  }
  *out = c;
  return KRAD_NCCL_OK;
}

KRAD_NCCL_EXPORT int krad_nccl_run(krad_nccl_comm* c, const krad_nccl_op* ops, size_t n, void* stream, char* err,
                                   size_t errlen) {
  if (!c || !c->comm) return fail(KRAD_NCCL_E_ARG, "krad_nccl_run: no communicator", err, errlen);
  if (n == 0) return KRAD_NCCL_OK;
  if (!ops) return fail(KRAD_NCCL_E_ARG, "krad_nccl_run: null ops", err, errlen);
  // Everything is checked before the group opens: a group left half-enqueued would hang peers.
  for (size_t i = 0; i < n; ++i) {
    ncclDataType_t t = ncclFloat32;
    ncclRedOp_t red = ncclSum;
    const krad_nccl_op& o = ops[i];
    if (!nccl_type(o.dtype, &t)) return fail(KRAD_NCCL_E_ARG, "krad_nccl_run: unknown dtype", err, errlen);
    if (o.kind == KRAD_NCCL_ALL_REDUCE && !nccl_red(o.red, &red))
      return fail(KRAD_NCCL_E_ARG, "krad_nccl_run: unknown reduction", err, errlen);
    if (o.kind != KRAD_NCCL_ALL_REDUCE && o.kind != KRAD_NCCL_BROADCAST && o.kind != KRAD_NCCL_ALL_GATHER)
      return fail(KRAD_NCCL_E_ARG, "krad_nccl_run: unknown collective", err, errlen);
    if (o.count && (!o.recv || (!o.send && o.kind != KRAD_NCCL_BROADCAST)))
      return fail(KRAD_NCCL_E_ARG, "krad_nccl_run: null buffer", err, errlen);
  }
  cudaError_t e = cudaSetDevice(c->device);
  if (e != cudaSuccess) return cuda_fail(e, "cudaSetDevice", err, errlen);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  ncclResult_t r = ncclGroupStart();
  if (r != ncclSuccess) return nccl_fail(r, "ncclGroupStart", c->comm, err, errlen);
  const char* what = "ncclGroupEnd";
  for (size_t i = 0; i < n && r == ncclSuccess; ++i) {
    const krad_nccl_op& o = ops[i];
    ncclDataType_t t = ncclFloat32;
    nccl_type(o.dtype, &t);
    switch (o.kind) {
      case KRAD_NCCL_ALL_REDUCE: {
        ncclRedOp_t red = ncclSum;
        nccl_red(o.red, &red);
        r = ncclAllReduce(o.send, o.recv, o.count, t, red, c->comm, s);
        what = "ncclAllReduce";
        break;
      }
      case KRAD_NCCL_BROADCAST:
        r = ncclBroadcast(o.send ? o.send : o.recv, o.recv, o.count, t, o.root, c->comm, s);
        what = "ncclBroadcast";
        break;
      case KRAD_NCCL_ALL_GATHER:
        r = ncclAllGather(o.send, o.recv, o.count, t, c->comm, s);
        what = "ncclAllGather";
        break;
    }
  }
  // The group is always closed, also after a failed enqueue (NCCL requires the pairing).
  ncclResult_t r_end = ncclGroupEnd();
  if (r != ncclSuccess) return nccl_fail(r, what, c->comm, err, errlen);
  if (r_end != ncclSuccess) return nccl_fail(r_end, "ncclGroupEnd", c->comm, err, errlen);
  return KRAD_NCCL_OK;
}

KRAD_NCCL_EXPORT int krad_nccl_check(krad_nccl_comm* c, char* err, size_t errlen) {
  if (!c || !c->comm) return fail(KRAD_NCCL_E_ARG, "krad_nccl_check: no communicator", err, errlen);
  ncclResult_t async = ncclSuccess;
  ncclResult_t r = ncclCommGetAsyncError(c->comm, &async);
  if (r != ncclSuccess) return nccl_fail(r, "ncclCommGetAsyncError", c->comm, err, errlen);
  if (async != ncclSuccess && async != ncclInProgress) {
    nccl_fail(async, "NCCL communicator failed", c->comm, err, errlen);
    return KRAD_NCCL_E_REMOTE;
  }
  return KRAD_NCCL_OK;
}

KRAD_NCCL_EXPORT int krad_nccl_comm_free(krad_nccl_comm* c, int abort, char* err, size_t errlen) {
  if (!c) return KRAD_NCCL_OK;
  int code = KRAD_NCCL_OK;
  if (c->comm) {
    cudaSetDevice(c->device);
    ncclResult_t r = abort ? ncclCommAbort(c->comm) : ncclCommDestroy(c->comm);
    if (r != ncclSuccess) code = nccl_fail(r, abort ? "ncclCommAbort" : "ncclCommDestroy", nullptr, err, errlen);
  }
  delete c;
  return code;
}
