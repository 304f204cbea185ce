// The MPI communication engine: one process-wide thread that makes every MPI call.
//
// Why one thread: collectives block, and the JS thread must never block on them. A
// dedicated thread that calls MPI_Init_thread, every collective and MPI_Finalize is
// exactly MPI_THREAD_FUNNELED (only the thread that initialised MPI calls it), which
// every MPI provides and which keeps OpenMPI off the locked MPI_THREAD_MULTIPLE paths.
// All JS threads of the process (the main thread and worker_threads) funnel their
// requests into one FIFO queue, so the process-wide order of collectives is the order of
// submission.
//
// No napi.h here (as native/core has none): jobs come in as plain structs, and finished
// jobs leave through the Delivery interface, which the N-API layer (mpi_addon.cc)
// implements per JS environment.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace krad_mpi {

// Collective kinds, element types and reduction ops. The numeric values travel in the
// per-collective header that every rank exchanges, so they must agree across ranks
// (same binary on every rank in practice); do not renumber.
enum class Kind : int64_t { Barrier = 1, AllReduce = 2, AllGather = 3, Broadcast = 4 };
enum class DType : int64_t { F32 = 1, F64 = 2, I32 = 3, U8 = 4 };
enum class Op : int64_t { None = 0, Sum = 1, Mean = 2, Max = 3, Min = 4 };

size_t dtype_bytes(DType d);
const char* dtype_name(DType d);  // "float32", "float64", "int32", "uint8"
const char* kind_name(Kind k);    // "allReduce", ...
const char* op_name(Op o);        // "sum", ...

// An outcome with a stable KradagradError code (empty code = success).
struct Status {
  std::string code;
  std::string message;
  bool ok() const { return code.empty(); }
  static Status Ok() { return {}; }
  static Status Error(std::string c, std::string m) { return Status{std::move(c), std::move(m)}; }
};

// Host memory owned by the addon, 64-byte aligned. Shared between the JS ArrayBuffer that
// exposes it (when it is exposed) and the jobs that read or write it, so neither garbage
// collection, a detached ArrayBuffer nor a worker's teardown can free it while MPI uses it.
class Allocation {
 public:
  // zero: clear the memory (user-visible buffers); staging copies skip it.
  Allocation(size_t bytes, bool zero);
  ~Allocation();
  Allocation(const Allocation&) = delete;
  Allocation& operator=(const Allocation&) = delete;
  char* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  // False when the allocation failed (out of memory).
  bool valid() const { return data_ != nullptr; }

 private:
  char* data_ = nullptr;
  size_t bytes_ = 0;
};

// A span the comm thread reads or writes, kept alive by `owner`.
struct Span {
  std::shared_ptr<Allocation> owner;
  char* data = nullptr;
  size_t bytes = 0;
};

struct WorldInfo {
  int rank = 0, size = 1;
  int local_rank = 0, local_size = 1;  // within MPI_COMM_TYPE_SHARED (one node)
  std::string thread_level;            // provided: "single", "funneled", "serialized" or "multiple"
  bool thread_main = false;            // MPI_Is_thread_main on the comm thread
  std::string library;                 // first line of MPI_Get_library_version
  std::string processor;               // MPI_Get_processor_name
};

struct Job;

// Receives finished jobs, on the comm thread. Must not block on JS.
class Delivery {
 public:
  virtual ~Delivery() = default;
  virtual void deliver(std::unique_ptr<Job> job) = 0;
};

struct Job {
  enum class Type { Init, Collective, Finalize };
  Type type = Type::Collective;
  uint64_t id = 0;  // chosen by the submitter, to match the delivery
  Kind kind = Kind::Barrier;
  DType dtype = DType::F32;
  Op op = Op::None;
  int64_t root = 0;        // broadcast
  int64_t count = 0;       // elements this rank passes in
  int64_t out_count = -1;  // allGather: the caller's output length, or -1 (sized from the counts)
  Span in;                 // data this rank contributes (allReduce, allGather; broadcast: the buffer)
  Span out;                // where the result goes; allReduce in place: the same memory as `in`
  bool in_place = false;   // allReduce: in and out are one buffer (MPI_IN_PLACE)
  // Results.
  Status status;
  WorldInfo info;               // Init
  std::vector<int64_t> counts;  // allGather: elements per rank
  std::shared_ptr<Delivery> delivery;
};

// Queues a job and returns at once; the job comes back through job->delivery. Starts the
// comm thread (which initialises MPI) on first use. Refused with DISPOSED once a finalize
// has been queued (MPI cannot be initialised twice in a process).
Status submit(std::unique_ptr<Job> job);

// Runs finalize on the comm thread after everything already queued, and waits for it.
// For process exit, where no event loop is left to deliver a promise. A no-op when the
// engine never started or is already finalized.
Status finalize_sync();

// Ends the whole MPI job with `code` (MPI_Abort on MPI_COMM_WORLD). The comm thread makes
// the call when it is idle; when it is stuck inside a collective (the usual case when a
// peer died), the calling thread calls MPI_Abort itself after a short grace period. That
// is outside the FUNNELED contract, but the process is ending and OpenMPI's abort path
// only signals the runtime and exits. Returns only when MPI is not active (never
// initialised, or already finalized), so the caller exits on its own.
void abort_job(int code);

// Whether MPI is initialised by this engine and not finalized.
bool mpi_active();
// Whether a finalize has been queued or has run.
bool finalizing();

}  // namespace krad_mpi
