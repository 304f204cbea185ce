// NCCL for the CUDA addon: loads kradagrad_nccl.so (nccl_lib.h) on demand and runs its
// collectives on the CUDA backend's stream. No CUDA or NCCL headers here (the N-API layer
// includes this file); only nccl.cc knows CUDA, and only kradagrad_nccl.so knows NCCL.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../core/status.h"

struct krad_nccl_comm;

namespace krad {
namespace nccl {

// Loads the library once (later calls return the first outcome): KRADAGRAD_NCCL_LIB when
// set, else kradagrad_nccl.so beside this addon. NCCL_UNAVAILABLE with the reason and the
// fix when it is missing, does not load (libnccl.so.2 or the CUDA runtime not found) or
// speaks another interface version. `path` receives where it was looked for.
Status load(std::string* path);
// NCCL's version code of the loaded libnccl (e.g. 22707).
Status version(int* out);
// ncclGetUniqueId (rank 0's bootstrap token, kIdBytes).
constexpr size_t kIdBytes = 128;
Status unique_id(std::vector<uint8_t>* out);

enum class Kind : int { AllReduce = 0, Broadcast = 1, AllGather = 2 };
enum class Type : int { F32 = 0, F64 = 1, I32 = 2, U8 = 3 };
enum class Red : int { Sum = 0, Avg = 1, Max = 2, Min = 3 };

struct Op {
  Kind kind = Kind::AllReduce;
  Type type = Type::F32;
  Red red = Red::Sum;
  int root = 0;
  const void* send = nullptr;  // device pointers of the CUDA backend
  void* recv = nullptr;
  size_t count = 0;
};

// One NCCL communicator (one rank, one device). Calls on it are serialized.
class Comm {
 public:
  Comm(krad_nccl_comm* c, int rank, int size, int device) : c_(c), rank_(rank), size_(size), device_(device) {}
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;
  int rank() const { return rank_; }
  int size() const { return size_; }
  int device() const { return device_; }

  // Enqueues `ops` as one NCCL group on the CUDA backend's stream (under its lock, so in
  // stream order with every backend primitive), then waits off the lock for them to finish,
  // polling the communicator's asynchronous error meanwhile. Blocks the calling thread: call
  // it from a pool thread. After a failure the communicator is aborted and every later call
  // fails with COMM_FAILED.
  Status run(const std::vector<Op>& ops);
  // Destroys the communicator (abort: ncclCommAbort, dropping pending work). Idempotent.
  Status free(bool abort);
  bool freed();

 private:
  std::mutex mu_;
  krad_nccl_comm* c_;
  std::string broken_;
  int rank_, size_, device_;
};

// ncclCommInitRank for `rank` of `size` on `device`, from rank 0's token. Blocks until every
// rank has joined (call it from a pool thread). The CUDA backend must already run on `device`.
Status comm_init(const std::vector<uint8_t>& id, int size, int rank, int device, std::shared_ptr<Comm>* out);

}  // namespace nccl
}  // namespace krad
