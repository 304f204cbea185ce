// Jobs: an ordered list of recorded ops, run later as one unit, on the main thread
// (`run()`) or on the libuv pool (`runAsync()`), like work queued on a CUDA stream. The
// optimizers record a whole step (staging, statistics, roots, preconditioning, the final
// update) and read the few host decisions once at the end: guards (non-finite gradients or
// parameters, roots failing too often) abort the job, so the ops after them never run, and
// per-item results (solver info, failure counts) land in numbered slots.
//
// While a job is recorded (`beginJob()` .. `endJob()`, one per environment, synchronous
// JS in between) every mutating op binding records instead of running; ops whose results
// go straight back to JS (read, dot, eigh, ...) refuse with INTERNAL. Recorded ops hold
// their tensors (shared pointers), so disposing a handle meanwhile is safe.
#pragma once
#include <napi.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../core/status.h"

namespace krad_napi {

// What a job's guards decided and what its ops reported; JS reads it when the job ends.
struct JobCtx {
  bool aborted = false;
  std::string code;    // the guard's error code, e.g. NONFINITE, NONFINITE_FACTOR
  int64_t index = -1;  // the entry / item the guard names
  int64_t tag = -1;    // the tag the recording code gave the guard
  std::vector<std::vector<int32_t>> slots;
  void Abort(const std::string& c, int64_t idx, int64_t t) {
    if (aborted) return;
    aborted = true;
    code = c;
    index = idx;
    tag = t;
  }
};
using JobOp = std::function<krad::Status(JobCtx&)>;

struct Job {
  std::vector<JobOp> ops;
  int nslots = 0;
  // Runs the ops in order; stops at the first error (returned) and skips the rest once a
  // guard aborted the job.
  krad::Status Run(JobCtx* ctx) const;
};

bool Recording(Napi::Env env);
// Records `op` while a job is recorded; otherwise runs it now and throws its error.
void Dispatch(Napi::Env env, JobOp op);
// For ops whose results go straight back to JS: an INTERNAL error while recording.
void ImmediateOnly(Napi::Env env, const char* op);
// A new result slot of the job being recorded.
int NewSlot(Napi::Env env);

// Runs `work` on the libuv pool, then settles the returned promise on the main thread with
// `done(env)`: its value resolves, a Napi::Error it throws rejects. When the environment is
// being torn down meanwhile (a worker thread that exits or is terminated), nothing touches
// JS: every failure of the settling calls is swallowed instead of aborting the process.
Napi::Promise QueueWork(Napi::Env env, const char* name, std::function<void()> work,
                        std::function<Napi::Value(Napi::Env)> done);

void InitJobs(Napi::Env env, Napi::Object exports);

}  // namespace krad_napi
