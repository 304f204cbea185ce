// The C interface of kradagrad_nccl.so: the one piece of kradagrad that links NCCL.
//
// Why a library of its own: the CUDA addon loads it with dlopen only when a program asks
// for NCCL (Communicator.initNccl), so single-process CUDA users, the CPU addon and
// MPI-only users never load libnccl (about 200 MB). A plain C interface (no NCCL, CUDA or
// C++ types) keeps the addon free of nccl.h and lets it check the library's interface
// version before using it. Built from CMakeLists.txt next to kradagrad_cuda.node, linked
// with -Wl,--no-undefined against libnccl and the CUDA runtime.
//
// Every function returns 0 on success, or one of KRAD_NCCL_E_* with a NUL-terminated
// message in `err` (at most errlen bytes). Thread-safety: the functions on one
// communicator must not run concurrently (the addon serializes them).
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// Bumped whenever a signature or struct below changes; the addon refuses another.
#define KRAD_NCCL_API_VERSION 1
#define KRAD_NCCL_ID_BYTES 128  // NCCL_UNIQUE_ID_BYTES

enum { KRAD_NCCL_OK = 0, KRAD_NCCL_E_NCCL = 1, KRAD_NCCL_E_CUDA = 2, KRAD_NCCL_E_ARG = 3, KRAD_NCCL_E_REMOTE = 4 };
enum { KRAD_NCCL_F32 = 0, KRAD_NCCL_F64 = 1, KRAD_NCCL_I32 = 2, KRAD_NCCL_U8 = 3 };
enum { KRAD_NCCL_SUM = 0, KRAD_NCCL_AVG = 1, KRAD_NCCL_MAX = 2, KRAD_NCCL_MIN = 3 };
enum { KRAD_NCCL_ALL_REDUCE = 0, KRAD_NCCL_BROADCAST = 1, KRAD_NCCL_ALL_GATHER = 2 };

// One collective of a group. allReduce: recv[i] = red over ranks of send[i], i < count
// (send == recv: in place). broadcast: recv = root's send (count elements; send is read
// on the root only, and may equal recv). allGather: recv[r * count + i] = send of rank r.
typedef struct krad_nccl_op {
  int kind;
  int dtype;
  int red;   // allReduce
  int root;  // broadcast
  const void* send;
  void* recv;
  size_t count;
} krad_nccl_op;

typedef struct krad_nccl_comm krad_nccl_comm;

int krad_nccl_api_version(void);
// NCCL's version code of the library loaded at run time (e.g. 22707 for 2.27.7).
int krad_nccl_version(int* version, char* err, size_t errlen);
// ncclGetUniqueId: the bootstrap token rank 0 sends to every rank (KRAD_NCCL_ID_BYTES).
int krad_nccl_unique_id(unsigned char* id, char* err, size_t errlen);
// ncclCommInitRank on `device` (made current on the calling thread). Blocks until every
// rank of the token has joined.
int krad_nccl_comm_init(krad_nccl_comm** out, const unsigned char* id, int nranks, int rank, int device, char* err,
                        size_t errlen);
// Enqueues ops[0..n) on `stream` (a cudaStream_t of `device`) as one NCCL group (one
// launch). Returns once enqueued; completion is stream-ordered.
int krad_nccl_run(krad_nccl_comm* comm, const krad_nccl_op* ops, size_t n, void* stream, char* err, size_t errlen);
// ncclCommGetAsyncError: KRAD_NCCL_E_REMOTE with the reason when the communicator failed
// asynchronously (a peer gone, a network error), else 0.
int krad_nccl_check(krad_nccl_comm* comm, char* err, size_t errlen);
// ncclCommAbort (abort = 1: pending work is dropped; after a failure) or ncclCommDestroy,
// then frees `comm`.
int krad_nccl_comm_free(krad_nccl_comm* comm, int abort, char* err, size_t errlen);

#ifdef __cplusplus
}
#endif
