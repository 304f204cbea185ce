// The communication thread and the collectives it runs (see engine.h for the why).
//
// Every collective starts with a small header exchange (MPI_Allgather of six int64 per
// rank: sequence number, kind, dtype, length, op or root, output length). Every rank then
// checks the same table the same way, so a mismatch (different collectives, lengths,
// dtypes, ops or roots on different ranks, or ranks out of step) becomes the same coded
// error on every rank instead of a hang or silent memory corruption, and the payload is
// skipped everywhere. It costs one extra small collective per call; allGather needs the
// per-rank lengths anyway.

// The MPI C++ bindings (deprecated, and a second library to link) stay out.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include "engine.h"

#include <mpi.h>
#if defined(__has_include)
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>
#endif
#endif
#include <pthread.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>

namespace krad_mpi {

size_t dtype_bytes(DType d) {
  switch (d) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::I32: return 4;
    case DType::U8: return 1;
  }
  return 0;
}

const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "float32";
    case DType::F64: return "float64";
    case DType::I32: return "int32";
    case DType::U8: return "uint8";
  }
  return "unknown";
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Barrier: return "barrier";
    case Kind::AllReduce: return "allReduce";
    case Kind::AllGather: return "allGather";
    case Kind::Broadcast: return "broadcast";
  }
  return "unknown";
}

const char* op_name(Op o) {
  switch (o) {
    case Op::None: return "none";
    case Op::Sum: return "sum";
    case Op::Mean: return "mean";
    case Op::Max: return "max";
    case Op::Min: return "min";
  }
  return "unknown";
}

Allocation::Allocation(size_t bytes, bool zero) : bytes_(bytes) {
  // aligned_alloc wants a multiple of the alignment; never zero, so every span has a
  // valid pointer even for empty arrays.
  size_t cap = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
  if (cap < bytes) return;  // overflow: leave invalid
  data_ = static_cast<char*>(std::aligned_alloc(64, cap));
  if (data_ && zero) std::memset(data_, 0, cap);
}

Allocation::~Allocation() { std::free(data_); }

namespace {

constexpr int kHeader = 6;  // seq, kind, dtype, count, op-or-root, out_count
// Elements per MPI call: MPI counts are C ints. allReduce and broadcast are split into
// chunks of this size; allGather's displacements must fit an int, so its total is capped.
constexpr int64_t kChunk = int64_t(1) << 30;

struct State {
  std::mutex mu;
  std::condition_variable cv;  // work queued, abort requested, finalize done
  std::deque<std::unique_ptr<Job>> queue;
  bool started = false;  // comm thread launched
  bool closing = false;  // finalize queued: no new jobs
  bool closed = false;   // finalize ran; the thread has ended
  bool busy = false;     // comm thread inside a job
  bool mpi_up = false;   // MPI initialised here and not finalized
  bool abort_requested = false;
  int abort_code = 1;
  // Owned by the comm thread.
  MPI_Comm world = MPI_COMM_NULL;
  MPI_Comm local = MPI_COMM_NULL;
  WorldInfo info;
  Status init_status;
  std::string broken;  // set by an MPI error: later collectives fail fast instead of hanging
  int64_t seq = 0;
};

// Leaked on purpose: at exit() the comm thread may still be blocked in MPI, and static
// destructors must not tear down the mutex and queue under it.
State& st() {
  static State* s = new State();
  return *s;
}

[[noreturn]] void do_abort(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  _exit(code);  // MPI_Abort does not return; if it ever did, the process still ends
}

std::string mpi_error_text(int rc) {
  char buf[MPI_MAX_ERROR_STRING + 1] = {0};
  int len = 0;
  if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(rc);
  return std::string(buf, static_cast<size_t>(len));
}

// An MPI call failed: the communicator's state is now undefined (the MPI standard makes
// no promise after an error), so it is marked broken and later collectives fail at once.
Status mpi_failure(int rc, const std::string& what) {
  State& s = st();
  int cls = rc;
  MPI_Error_class(rc, &cls);
  std::string code = "COMM_FAILED";
#ifdef MPIX_ERR_PROC_FAILED
  if (cls == MPIX_ERR_PROC_FAILED) code = "RANK_FAILED";
#endif
  std::string m = what + " failed on rank " + std::to_string(s.info.rank) + ": " + mpi_error_text(rc);
  s.broken = m;
  return Status::Error(code, m);
}

void init_mpi() {
  State& s = st();
  int flag = 0;
  MPI_Initialized(&flag);
  if (flag) {
    s.init_status = Status::Error(
        "COMM_FAILED",
        "MPI was already initialised in this process by other code; kradagrad/distributed initialises MPI itself, on its "
        "communication thread, and cannot share it");
    return;
  }
  int provided = MPI_THREAD_SINGLE;
  int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  if (rc != MPI_SUCCESS) {
    s.init_status = Status::Error("COMM_FAILED", "MPI_Init_thread failed: " + mpi_error_text(rc));
    return;
  }
  {
    std::lock_guard<std::mutex> g(s.mu);
    s.mpi_up = true;
  }
  s.info.thread_level = provided == MPI_THREAD_MULTIPLE     ? "multiple"
                        : provided == MPI_THREAD_SERIALIZED ? "serialized"
                        : provided == MPI_THREAD_FUNNELED   ? "funneled"
                                                            : "single";
  if (provided < MPI_THREAD_FUNNELED) {
    s.init_status = Status::Error("COMM_FAILED",
                                  "MPI provides only MPI_THREAD_SINGLE; kradagrad/distributed makes its MPI calls on a "
                                  "thread of its own and needs MPI_THREAD_FUNNELED");
    return;
  }
  // A private duplicate of the world: our collectives never match another library's
  // messages, and errors on it come back as codes instead of aborting the process.
  rc = MPI_Comm_dup(MPI_COMM_WORLD, &s.world);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_set_errhandler(s.world, MPI_ERRORS_RETURN);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(s.world, &s.info.rank);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_size(s.world, &s.info.size);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_split_type(s.world, MPI_COMM_TYPE_SHARED, s.info.rank, MPI_INFO_NULL, &s.local);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(s.local, &s.info.local_rank);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_size(s.local, &s.info.local_size);
  if (rc != MPI_SUCCESS) {
    s.init_status = Status::Error("COMM_FAILED", "setting up the communicator failed: " + mpi_error_text(rc));
    return;
  }
  int main_thread = 0;
  MPI_Is_thread_main(&main_thread);
  s.info.thread_main = main_thread != 0;
  char lib[MPI_MAX_LIBRARY_VERSION_STRING + 1] = {0};
  int len = 0;
  if (MPI_Get_library_version(lib, &len) == MPI_SUCCESS) {
    std::string v(lib, strnlen(lib, static_cast<size_t>(len)));  // OpenMPI counts the terminating NUL
    s.info.library = v.substr(0, v.find_first_of("\r\n"));
    while (!s.info.library.empty() && (s.info.library.back() == ',' || s.info.library.back() == ' '))
      s.info.library.pop_back();
  }
  char host[MPI_MAX_PROCESSOR_NAME + 1] = {0};
  if (MPI_Get_processor_name(host, &len) == MPI_SUCCESS) s.info.processor.assign(host, static_cast<size_t>(len));
}

Status finalize_mpi() {
  State& s = st();
  bool up;
  {
    std::lock_guard<std::mutex> g(s.mu);
    up = s.mpi_up;
  }
  if (!up) return Status::Ok();
  if (s.local != MPI_COMM_NULL) MPI_Comm_free(&s.local);
  if (s.world != MPI_COMM_NULL) MPI_Comm_free(&s.world);
  int rc = MPI_Finalize();
  {
    std::lock_guard<std::mutex> g(s.mu);
    s.mpi_up = false;
  }
  if (rc != MPI_SUCCESS) return Status::Error("COMM_FAILED", "MPI_Finalize failed: " + mpi_error_text(rc));
  return Status::Ok();
}

MPI_Datatype mpi_type(DType d) {
  switch (d) {
    case DType::F32: return MPI_FLOAT;
    case DType::F64: return MPI_DOUBLE;
    case DType::I32: return MPI_INT32_T;
    case DType::U8: return MPI_UINT8_T;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(Op o) {
  switch (o) {
    case Op::Max: return MPI_MAX;
    case Op::Min: return MPI_MIN;
    default: return MPI_SUM;  // sum, and mean (sum, then divided by the size)
  }
}

bool known_kind(int64_t k) { return k >= 1 && k <= 4; }
bool known_dtype(int64_t d) { return d >= 1 && d <= 4; }
bool known_op(int64_t o) { return o >= 0 && o <= 4; }

// "allReduce(float32[10], sum)" from a header, for mismatch messages. Header values come
// from other ranks, so unknown numbers are printed, never used as indices.
std::string describe_call(const int64_t* h) {
  std::string kind = known_kind(h[1]) ? kind_name(static_cast<Kind>(h[1])) : "collective kind " + std::to_string(h[1]);
  if (h[1] == int64_t(Kind::Barrier)) return kind + "()";
  std::string dtype = known_dtype(h[2]) ? dtype_name(static_cast<DType>(h[2])) : "dtype " + std::to_string(h[2]);
  std::string s = kind + "(" + dtype + "[" + std::to_string(h[3]) + "]";
  if (h[1] == int64_t(Kind::AllReduce))
    s += std::string(", ") + (known_op(h[4]) ? op_name(static_cast<Op>(h[4])) : "op " + std::to_string(h[4]));
  if (h[1] == int64_t(Kind::Broadcast)) s += ", root " + std::to_string(h[4]);
  if (h[1] == int64_t(Kind::AllGather) && h[5] >= 0) s += ", into [" + std::to_string(h[5]) + "]";
  return s + ")";
}

// The same verdict on every rank: all of them evaluate the same gathered table.
Status verify(const std::vector<int64_t>& all, int size, Job& j) {
  const int64_t* h0 = &all[0];
  auto call = [&](int r) { return "rank " + std::to_string(r) + " called " + describe_call(&all[size_t(r) * kHeader]); };
  for (int r = 1; r < size; ++r) {
    const int64_t* h = &all[size_t(r) * kHeader];
    if (h[0] != h0[0])
      return Status::Error("COLLECTIVE_MISMATCH",
                           "ranks are out of step: rank 0 is at collective #" + std::to_string(h0[0]) + ", rank " +
                               std::to_string(r) + " at #" + std::to_string(h[0]) + " (" + call(0) + ", " + call(r) +
                               "); every rank must call the same collectives in the same order");
    if (h[1] != h0[1])
      return Status::Error("COLLECTIVE_MISMATCH", "ranks called different collectives: " + call(0) + ", " + call(r));
    if (h[2] != h0[2])
      return Status::Error("DTYPE_MISMATCH", "ranks passed different element types: " + call(0) + ", " + call(r));
    if (h[1] != int64_t(Kind::AllGather) && h[3] != h0[3])
      return Status::Error("SHAPE_MISMATCH", "ranks passed different lengths: " + call(0) + ", " + call(r));
    if (h[4] != h0[4])
      return Status::Error("COLLECTIVE_MISMATCH",
                           std::string("ranks passed different ") + (h0[1] == int64_t(Kind::Broadcast) ? "roots" : "ops") +
                               ": " + call(0) + ", " + call(r));
  }
  if (!known_kind(h0[1]) || !known_dtype(h0[2]) || (h0[1] == int64_t(Kind::AllReduce) && !known_op(h0[4])))
    return Status::Error("INTERNAL", "unknown collective header " + describe_call(h0) + " (mismatched addon builds?)");
  if (j.kind == Kind::Broadcast && (j.root < 0 || j.root >= size))
    return Status::Error("INVALID_ARGUMENT", "broadcast root " + std::to_string(j.root) +
                                                 " is not a rank of this communicator (size " + std::to_string(size) + ")");
  if (j.kind == Kind::AllReduce && j.op == Op::Mean && j.dtype != DType::F32 && j.dtype != DType::F64)
    return Status::Error("INVALID_ARGUMENT", std::string("allReduce 'mean' needs float32 or float64 data, not ") +
                                                 dtype_name(j.dtype));
  if (j.kind == Kind::AllGather) {
    int64_t total = 0;
    j.counts.assign(size_t(size), 0);
    for (int r = 0; r < size; ++r) {
      j.counts[size_t(r)] = all[size_t(r) * kHeader + 3];
      total += j.counts[size_t(r)];
    }
    if (total > INT_MAX)
      return Status::Error("UNSUPPORTED", "allGather of " + std::to_string(total) +
                                              " elements in all: at most 2^31-1 are supported (MPI counts are ints)");
    for (int r = 0; r < size; ++r) {
      int64_t out = all[size_t(r) * kHeader + 5];
      if (out >= 0 && out != total) {
        std::string counts;
        for (int q = 0; q < size; ++q) counts += (q ? ", " : "") + std::to_string(j.counts[size_t(q)]);
        return Status::Error("SHAPE_MISMATCH", "allGather: rank " + std::to_string(r) + "'s output holds " +
                                                   std::to_string(out) + " elements but the ranks contribute " +
                                                   std::to_string(total) + " in all (per rank: " + counts + ")");
      }
    }
  }
  return Status::Ok();
}

template <typename T>
void divide(char* data, int64_t n, int size) {
  T* p = reinterpret_cast<T*>(data);
  const T d = static_cast<T>(size);
  for (int64_t i = 0; i < n; ++i) p[i] /= d;
}

Status run_collective(Job& j) {
  State& s = st();
  if (!s.init_status.ok()) return s.init_status;
  if (!s.broken.empty())
    return Status::Error("COMM_FAILED", "the communicator is unusable after an earlier MPI error: " + s.broken);
  const int size = s.info.size;
  int64_t hdr[kHeader] = {s.seq++, int64_t(j.kind), int64_t(j.dtype), j.count,
                          j.kind == Kind::Broadcast ? j.root : int64_t(j.op), j.out_count};
  std::vector<int64_t> all(size_t(size) * kHeader);
  int rc = MPI_Allgather(hdr, kHeader, MPI_INT64_T, all.data(), kHeader, MPI_INT64_T, s.world);
  if (rc != MPI_SUCCESS) return mpi_failure(rc, std::string(kind_name(j.kind)) + " (header exchange)");
  Status v = verify(all, size, j);
  if (!v.ok()) return v;

  const MPI_Datatype type = mpi_type(j.dtype);
  const size_t eb = dtype_bytes(j.dtype);
  const std::string what = kind_name(j.kind);
  switch (j.kind) {
    case Kind::Barrier:
      rc = MPI_Barrier(s.world);
      if (rc != MPI_SUCCESS) return mpi_failure(rc, what);
      return Status::Ok();
    case Kind::AllReduce: {
      for (int64_t off = 0; off < j.count; off += kChunk) {
        int n = static_cast<int>(std::min(kChunk, j.count - off));
        const void* send = j.in_place ? MPI_IN_PLACE : static_cast<const void*>(j.in.data + size_t(off) * eb);
        rc = MPI_Allreduce(send, j.out.data + size_t(off) * eb, n, type, mpi_op(j.op), s.world);
        if (rc != MPI_SUCCESS) return mpi_failure(rc, what);
      }
      // Every rank holds the same sum, so dividing locally keeps the ranks identical.
      if (j.op == Op::Mean) {
        if (j.dtype == DType::F32) divide<float>(j.out.data, j.count, size);
        else divide<double>(j.out.data, j.count, size);
      }
      return Status::Ok();
    }
    case Kind::Broadcast:
      for (int64_t off = 0; off < j.count; off += kChunk) {
        int n = static_cast<int>(std::min(kChunk, j.count - off));
        rc = MPI_Bcast(j.out.data + size_t(off) * eb, n, type, static_cast<int>(j.root), s.world);
        if (rc != MPI_SUCCESS) return mpi_failure(rc, what);
      }
      return Status::Ok();
    case Kind::AllGather: {
      int64_t total = 0;
      std::vector<int> counts(static_cast<size_t>(size)), displs(static_cast<size_t>(size));
      for (int r = 0; r < size; ++r) {
        displs[size_t(r)] = static_cast<int>(total);
        counts[size_t(r)] = static_cast<int>(j.counts[size_t(r)]);
        total += j.counts[size_t(r)];
      }
      // Ranks without an output buffer allocate one now that the total is known. If any
      // rank needs to, every rank agrees first that all allocations succeeded (one more
      // tiny collective), so an out-of-memory rank fails everywhere instead of leaving the
      // others waiting in MPI_Allgatherv.
      bool any_alloc = false;
      for (int r = 0; r < size; ++r) any_alloc = any_alloc || all[size_t(r) * kHeader + 5] < 0;
      if (any_alloc) {
        int ok = 1;
        if (j.out.data == nullptr) {
          auto a = std::make_shared<Allocation>(size_t(total) * eb, false);
          if (a->valid()) j.out = Span{a, a->data(), size_t(total) * eb};
          else ok = 0;
        }
        int all_ok = 0;
        rc = MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, s.world);
        if (rc != MPI_SUCCESS) return mpi_failure(rc, what + " (allocation check)");
        if (!all_ok)
          return Status::Error("OUT_OF_MEMORY", "allGather: a rank could not allocate the " +
                                                    std::to_string(size_t(total) * eb) + "-byte result");
      }
      rc = MPI_Allgatherv(j.in.data, static_cast<int>(j.count), type, j.out.data, counts.data(), displs.data(), type,
                          s.world);
      if (rc != MPI_SUCCESS) return mpi_failure(rc, what);
      return Status::Ok();
    }
  }
  return Status::Error("INTERNAL", "unknown collective");
}

void run(Job& j) {
  State& s = st();
  switch (j.type) {
    case Job::Type::Init:
      j.status = s.init_status;
      if (j.status.ok()) j.info = s.info;
      break;
    case Job::Type::Finalize:
      j.status = finalize_mpi();
      break;
    case Job::Type::Collective:
      j.status = run_collective(j);
      break;
  }
}

void thread_main() {
  pthread_setname_np(pthread_self(), "krad-mpi");
  State& s = st();
  init_mpi();
  for (;;) {
    std::unique_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lk(s.mu);
      s.cv.wait(lk, [&] { return s.abort_requested || !s.queue.empty(); });
      if (s.abort_requested) {
        int code = s.abort_code;
        lk.unlock();
        do_abort(code);
      }
      job = std::move(s.queue.front());
      s.queue.pop_front();
      s.busy = true;
    }
    try {
      run(*job);
    } catch (const std::exception& e) {  // e.g. bad_alloc for a header table; never let it end the process
      job->status = Status::Error("INTERNAL", std::string("communication thread: ") + e.what());
    }
    const bool last = job->type == Job::Type::Finalize;
    {
      std::lock_guard<std::mutex> g(s.mu);
      s.busy = false;
      if (last) s.closed = true;
    }
    s.cv.notify_all();
    std::shared_ptr<Delivery> d = job->delivery;
    if (d) d->deliver(std::move(job));
    if (last) return;
  }
}

}  // namespace

Status submit(std::unique_ptr<Job> job) {
  State& s = st();
  {
    std::lock_guard<std::mutex> g(s.mu);
    if (s.closing)
      return Status::Error("DISPOSED",
                           "MPI has been finalized in this process (finalize() was called); it cannot be used or "
                           "initialised again");
    if (!s.started) {
      try {
        std::thread(thread_main).detach();
      } catch (const std::system_error& e) {
        return Status::Error("COMM_FAILED", std::string("could not start the communication thread: ") + e.what());
      }
      s.started = true;
    }
    if (job->type == Job::Type::Finalize) s.closing = true;
    s.queue.push_back(std::move(job));
  }
  s.cv.notify_all();
  return Status::Ok();
}

Status finalize_sync() {
  State& s = st();
  struct Waiter : Delivery {
    std::promise<Status> done;
    void deliver(std::unique_ptr<Job> j) override { done.set_value(j->status); }
  };
  auto waiter = std::make_shared<Waiter>();
  std::future<Status> result = waiter->done.get_future();
  {
    std::unique_lock<std::mutex> lk(s.mu);
    if (!s.started) return Status::Ok();
    if (s.closing) {  // an async finalize is on its way: wait for it
      s.cv.wait(lk, [&] { return s.closed; });
      return Status::Ok();
    }
  }
  auto job = std::make_unique<Job>();
  job->type = Job::Type::Finalize;
  job->delivery = waiter;
  Status q = submit(std::move(job));
  if (!q.ok()) return q;
  return result.get();
}

void abort_job(int code) {
  State& s = st();
  {
    std::lock_guard<std::mutex> g(s.mu);
    if (!s.mpi_up) return;
    if (!s.closed) {
      s.abort_requested = true;
      s.abort_code = code;
    }
  }
  s.cv.notify_all();
  // The comm thread aborts (and this process ends) as soon as it is between jobs. If it
  // is still inside a collective after a second, a peer is probably gone: abort from here.
  for (int i = 0; i < 40; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  do_abort(code);
}

bool mpi_active() {
  State& s = st();
  std::lock_guard<std::mutex> g(s.mu);
  return s.mpi_up;
}

bool finalizing() {
  State& s = st();
  std::lock_guard<std::mutex> g(s.mu);
  return s.closing;
}

}  // namespace krad_mpi
