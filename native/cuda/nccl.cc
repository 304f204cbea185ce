// NCCL for the CUDA addon (see nccl.h): the dlopen of kradagrad_nccl.so, and collectives
// ordered on the backend's stream.
//
// Stream order: a collective is enqueued on the backend's one stream while the backend's
// lock is held (cuda_with_stream), so it comes after every op enqueued before it (e.g. the
// copy of a gradient into the buffer it reduces) and before every op enqueued after it.
// The wait for completion happens without the lock, on the calling (pool) thread, so the
// event loop and the other threads keep going while peers catch up.
#include "nccl.h"

#include <cuda_runtime.h>
#include <dlfcn.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "cuda_backend.h"
#include "nccl_lib.h"

namespace krad {
namespace nccl {
namespace {

struct Api {
  int (*api_version)();
  int (*version)(int*, char*, size_t);
  int (*unique_id)(unsigned char*, char*, size_t);
  int (*comm_init)(krad_nccl_comm**, const unsigned char*, int, int, int, char*, size_t);
  int (*run)(krad_nccl_comm*, const krad_nccl_op*, size_t, void*, char*, size_t);
  int (*check)(krad_nccl_comm*, char*, size_t);
  int (*comm_free)(krad_nccl_comm*, int, char*, size_t);
};

const char* kFix =
    "build it with the CUDA addon (`npm run build:cuda`, which pins the nvidia-nccl-cu13 wheel beside the CUDA 13 "
    "wheels, or finds NCCL through KRAD_NCCL_ROOT or Python's nvidia-nccl-cu13), or point KRADAGRAD_NCCL_LIB at a "
    "built kradagrad_nccl.so";

std::once_flag g_once;
Status g_status;
std::string g_path;
Api g_api{};

std::string addon_dir() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&addon_dir), &info) && info.dli_fname) {
    std::string p = info.dli_fname;
    size_t slash = p.rfind('/');
    if (slash != std::string::npos) return p.substr(0, slash);
  }
  return ".";
}

template <typename F>
bool sym(void* h, const char* name, F* out) {
  *out = reinterpret_cast<F>(dlsym(h, name));
  return *out != nullptr;
}

void do_load() {
  const char* env = std::getenv("KRADAGRAD_NCCL_LIB");
  g_path = env && *env ? std::string(env) : addon_dir() + "/kradagrad_nccl.so";
  const std::string where = (env && *env ? "KRADAGRAD_NCCL_LIB=" : "") + g_path;
  void* h = dlopen(g_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = dlerror();
    std::string why = e ? e : "dlopen failed";
    std::string hint = why.find("libnccl") != std::string::npos ? "libnccl.so.2 is not found (install NCCL, or put its lib folder on LD_LIBRARY_PATH); "
                                                                 : "";
    g_status = Status::Error(Code::NCCL_UNAVAILABLE, "NCCL is not available: " + where + " does not load (" + why + "); " +
                                                         hint + kFix);
    return;
  }
  Api a{};
  bool ok = sym(h, "krad_nccl_api_version", &a.api_version) && sym(h, "krad_nccl_version", &a.version) &&
            sym(h, "krad_nccl_unique_id", &a.unique_id) && sym(h, "krad_nccl_comm_init", &a.comm_init) &&
            sym(h, "krad_nccl_run", &a.run) && sym(h, "krad_nccl_check", &a.check) &&
            sym(h, "krad_nccl_comm_free", &a.comm_free);
  if (!ok || a.api_version() != KRAD_NCCL_API_VERSION) {
    g_status = Status::Error(Code::NCCL_UNAVAILABLE,
                             "NCCL is not available: " + where + " is not a kradagrad_nccl library of interface version " +
                                 std::to_string(KRAD_NCCL_API_VERSION) + " (stale build?); " + kFix);
    dlclose(h);
    return;
  }
  g_api = a;  // the handle stays open for the life of the process
  g_status = Status::Ok();
}

Status from_lib(int rc, const char* err, const std::string& what) {
  switch (rc) {
    case KRAD_NCCL_OK: return Status::Ok();
    case KRAD_NCCL_E_ARG: return Status::Error(Code::INVALID_ARGUMENT, what + ": " + err);
    case KRAD_NCCL_E_CUDA: return Status::Error(Code::CUDA_FAILED, what + ": " + err);
    case KRAD_NCCL_E_REMOTE:
      return Status::Error(Code::COMM_FAILED, what + ": " + err + " (a peer rank failed or the network between the ranks did)");
    default: return Status::Error(Code::COMM_FAILED, what + ": " + err);
  }
}

}  // namespace

Status load(std::string* path) {
  std::call_once(g_once, do_load);
  if (path) *path = g_path;
  return g_status;
}

Status version(int* out) {
  KRAD_RETURN_IF_ERROR(load(nullptr));
  char err[512] = {0};
  return from_lib(g_api.version(out, err, sizeof err), err, "ncclGetVersion");
}

Status unique_id(std::vector<uint8_t>* out) {
  KRAD_RETURN_IF_ERROR(load(nullptr));
  out->assign(kIdBytes, 0);
  char err[512] = {0};
  return from_lib(g_api.unique_id(out->data(), err, sizeof err), err, "ncclGetUniqueId");
}

Status comm_init(const std::vector<uint8_t>& id, int size, int rank, int device, std::shared_ptr<Comm>* out) {
  KRAD_RETURN_IF_ERROR(load(nullptr));
  if (id.size() != kIdBytes)
    return Status::Error(Code::INVALID_ARGUMENT, "the NCCL token must be " + std::to_string(kIdBytes) + " bytes");
  // The backend first: it must exist on `device` (its stream is where the collectives go).
  KRAD_RETURN_IF_ERROR(cuda_select_device(device));
  Backend* b = nullptr;
  KRAD_RETURN_IF_ERROR(cuda_backend(&b));
  if (cuda_device() != device)
    return Status::Error(Code::INVALID_ARGUMENT, "the CUDA backend runs on device " + std::to_string(cuda_device()) +
                                                     ", not on device " + std::to_string(device));
  krad_nccl_comm* c = nullptr;
  char err[1024] = {0};
  KRAD_RETURN_IF_ERROR(
      from_lib(g_api.comm_init(&c, id.data(), size, rank, device, err, sizeof err), err, "ncclCommInitRank"));
  *out = std::make_shared<Comm>(c, rank, size, device);
  return Status::Ok();
}

Comm::~Comm() { free(false); }

bool Comm::freed() {
  std::lock_guard<std::mutex> l(mu_);
  return c_ == nullptr;
}

Status Comm::free(bool abort) {
  std::lock_guard<std::mutex> l(mu_);
  if (!c_) return Status::Ok();
  char err[512] = {0};
  int rc = g_api.comm_free(c_, abort ? 1 : 0, err, sizeof err);
  c_ = nullptr;
  return from_lib(rc, err, abort ? "ncclCommAbort" : "ncclCommDestroy");
}

Status Comm::run(const std::vector<Op>& ops) {
  std::lock_guard<std::mutex> l(mu_);
  if (!broken_.empty())
    return Status::Error(Code::COMM_FAILED, "the NCCL communicator is unusable after an earlier failure: " + broken_);
  if (!c_) return Status::Error(Code::COMM_FAILED, "the NCCL communicator has been freed");
  if (ops.empty()) return Status::Ok();
  std::vector<krad_nccl_op> raw(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    const Op& o = ops[i];
    raw[i] = krad_nccl_op{static_cast<int>(o.kind), static_cast<int>(o.type), static_cast<int>(o.red), o.root, o.send,
                          o.recv, o.count};
  }
  cudaEvent_t done = nullptr;
  char err[1024] = {0};
  Status s = cuda_with_stream([&](void* stream, int dev) -> Status {
    if (dev != device_)
      return Status::Error(Code::INVALID_ARGUMENT, "the CUDA backend runs on device " + std::to_string(dev) +
                                                       " but the NCCL communicator on device " + std::to_string(device_));
    KRAD_RETURN_IF_ERROR(from_lib(g_api.run(c_, raw.data(), raw.size(), stream, err, sizeof err), err, "NCCL"));
    cudaError_t e = cudaEventCreateWithFlags(&done, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventRecord(done, static_cast<cudaStream_t>(stream));
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      return Status::Error(Code::CUDA_FAILED, std::string("NCCL completion event: ") + cudaGetErrorString(e));
    }
    return Status::Ok();
  });
  if (s.ok()) {
    // Poll rather than block in cudaEventSynchronize: a peer that failed is reported by the
    // communicator's asynchronous error, which a blocked wait would never look at.
    cudaSetDevice(device_);
    auto pause = std::chrono::microseconds(5);
    for (;;) {
      cudaError_t e = cudaEventQuery(done);
      if (e == cudaSuccess) break;
      if (e != cudaErrorNotReady) {
        (void)cudaGetLastError();
        s = Status::Error(Code::CUDA_FAILED, std::string("waiting for NCCL: ") + cudaGetErrorString(e));
        break;
      }
      s = from_lib(g_api.check(c_, err, sizeof err), err, "NCCL");
      if (!s.ok()) break;
      std::this_thread::sleep_for(pause);
      if (pause < std::chrono::microseconds(1000)) pause *= 2;
    }
  }
  if (done) cudaEventDestroy(done);
  if (!s.ok() && (s.code == Code::COMM_FAILED || s.code == Code::CUDA_FAILED)) {
    // The communicator's state is undefined after a failure: abort it (releasing kernels
    // stuck waiting for peers) and refuse later calls.
    broken_ = s.message;
    char e2[256] = {0};
    g_api.comm_free(c_, 1, e2, sizeof e2);
    c_ = nullptr;
  }
  return s;
}

}  // namespace nccl
}  // namespace krad
