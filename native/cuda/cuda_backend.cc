// The CUDA backend: one device (0, or the one chosen before creation: cuda_select_device,
// KRADAGRAD_CUDA_DEVICE), one stream, handles created once, memory from the
// device's stream-ordered pool (cudaMallocAsync / cudaFreeAsync on our stream), every
// primitive enqueued on that stream. Primitives whose results come back to the host
// (reductions, finiteness, solver info, download) synchronize the stream.
//
// Threading: the N-API layer may call in from a libuv worker (eighAsync / matpowAsync)
// while the main thread keeps going, so every entry point holds `mu_` and makes device 0
// current on the calling thread. What `mu_` protects: the main cuBLAS/cuSOLVER handles and
// the syevj parameters (not safe to use from two threads at once), the shared device
// buffers (scratch_, flags_, coef_, meta_, multi_: each is written and then read within
// one call, and growing one frees the old buffer), the pinned staging ring and result
// buffer, and the order of each call's enqueues on the one stream (a call's kernels and
// its read-back of a shared buffer must not interleave with another call's). The stream
// itself is thread-safe; work enqueued on it stays ordered whoever enqueued it.
// syevd releases `mu_` while it waits: for its solver lanes (own streams, handles and
// workspaces; see solve_syevd), for the host LAPACK solve of small matrices, and for its
// own read-backs (through a pinned buffer and an event of its own), so that another
// thread (the main thread during an asynchronous root refresh) can enqueue its work on the
// stream meanwhile. Everything syevd touches while unlocked is its own: the lanes, the
// eigh event and pinned buffer (all owned under `eigh_mu_`, which serializes syevd calls
// and is always taken before `mu_`, never while holding it), and this call's device
// allocations (work matrices, info and finiteness flags). Its input is copied into its
// work matrices before the lock is first released, so later writes to the input by other
// threads come after that copy in stream order; its outputs are complete for work
// enqueued after syevd returns (work that another thread enqueues on them while syevd is
// running is not ordered with the lanes' writes: a caller must not touch the outputs of
// an eigh in flight, as lib's asynchronous roots do not).
//
// Layout: buffers are row-major (core/backend.h). cuBLAS and cuSOLVER are column-major:
// a row-major m x n matrix with leading dimension ld is, to them, its n x m transpose.
#include "cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <string>
#include <vector>

#include "../cpu/cpu_backend.h"
#include "kernels.h"

#ifndef KRAD_CUDA_ARCHS
#define KRAD_CUDA_ARCHS "unknown"
#endif

namespace krad {
namespace {

namespace kk = cuda_kernels;

std::string err_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")";
}

Status cuda_status(cudaError_t e, const std::string& what) {
  // Clear a non-sticky error so that it is not reported again by the next launch check.
  (void)cudaGetLastError();
  const Code c = e == cudaErrorMemoryAllocation ? Code::CUDA_OOM : Code::CUDA_FAILED;
  return Status::Error(c, "CUDA " + what + " failed: " + err_text(e));
}
// Ok for cudaSuccess, else cuda_status.
Status cuda_check(cudaError_t e, const std::string& what) {
  return e == cudaSuccess ? Status::Ok() : cuda_status(e, what);
}

const char* cusolver_name(cusolverStatus_t s) {
  switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED: return "CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    case CUSOLVER_STATUS_INVALID_WORKSPACE: return "CUSOLVER_STATUS_INVALID_WORKSPACE";
    default: return "CUSOLVER_STATUS_UNKNOWN";
  }
}

#define KRAD_CUDA(expr, what)                                 \
  do {                                                        \
    cudaError_t _krad_e = (expr);                             \
    if (_krad_e != cudaSuccess) return cuda_status(_krad_e, (what)); \
  } while (0)

#define KRAD_CUBLAS(expr, what)                                                                         \
  do {                                                                                                  \
    cublasStatus_t _krad_b = (expr);                                                                    \
    if (_krad_b != CUBLAS_STATUS_SUCCESS)                                                               \
      return Status::Error(Code::CUBLAS_FAILED, std::string("cuBLAS ") + (what) + " failed: " +         \
                                                    cublasGetStatusName(_krad_b) + " (" +               \
                                                    cublasGetStatusString(_krad_b) + ")", (long long)_krad_b); \
  } while (0)

#define KRAD_CUSOLVER(expr, what)                                                                  \
  do {                                                                                             \
    cusolverStatus_t _krad_c = (expr);                                                             \
    if (_krad_c != CUSOLVER_STATUS_SUCCESS)                                                        \
      return Status::Error(Code::CUSOLVER_FAILED, std::string("cuSOLVER ") + (what) + " failed: " + \
                                                      cusolver_name(_krad_c), (long long)_krad_c); \
  } while (0)

// Which eigensolver a batch goes to. KRADAGRAD_CUDA_EIGH=syevd|syevj|auto (default auto).
// Measured on an H100 (bench/results/gpu-check-20261128T024114Z.md, ms per call, fp32/fp64):
//   256 x 16: loop 33/37, batched Jacobi 0.20/0.22;  256 x 128: 348/406 vs 6.0/40;
//   64 x 256: 129/132 vs 24/39;  4 x 512: 19/19 vs 28/44;  1 x 128: 1.5/1.7 vs 2.8/5.9;
//   1 x 1024: 12/11 vs 70/108.
// So: syevjBatched for batches of small and mid-size matrices, syevd (looped) for single
// matrices and anything above 256, except that few matrices of n <= 64 go to LAPACK on the
// host (kHostEighMaxN; verified on the H100 in bench/results/gpu-20261128T030358Z). The batch thresholds between are estimates from a
// single Jacobi call costing about two syevd calls at n = 128.
enum class EighMethod { SYEVD, SYEVJ };
// Matrices up to this size that would go to looped syevd are solved by LAPACK on the host.
constexpr int64_t kHostEighMaxN = 64;
// syrk (looped per item) instead of one strided-batched gemm for Gram products from this
// size up, for at most this many items.
constexpr int64_t kSyrkMinN = 256;
constexpr int64_t kSyrkMaxBatch = 64;
// Concurrent syevd (several matrices at once on auxiliary streams) from this size up, with
// this many lanes unless KRADAGRAD_CUDA_EIGH_STREAMS says otherwise (1 = one at a time, on
// the backend's own stream and handle; at most kMaxEighLanes, each a stream, a cuSOLVER
// handle and a host thread while it runs).
constexpr int64_t kConcurrentEighMinN = 128;
constexpr int kEighLanes = 4;
constexpr int kMaxEighLanes = 16;
// inverse_update in one launch (one block per item) up to this size; three or four
// launches (multi-block reductions) above it.
constexpr int64_t kSmallInverseUpdateN = 128;
struct EighChoice {
  EighMethod method;
  bool forced;  // by the environment variable: no silent fallback then
};
EighChoice choose_eigh(int64_t n, int64_t batch, int64_t syevj_max_n) {
  const char* e = std::getenv("KRADAGRAD_CUDA_EIGH");
  if (e && std::strcmp(e, "syevd") == 0) return {EighMethod::SYEVD, true};
  if (e && std::strcmp(e, "syevj") == 0) return {EighMethod::SYEVJ, true};
  const bool j = n <= syevj_max_n && ((n <= 32 && batch >= 2) || (n <= 256 && batch >= 4));
  return {j ? EighMethod::SYEVJ : EighMethod::SYEVD, false};
}

// KRADAGRAD_CUDA_FUSED_STAGES=1: the optimizers' fused final stages (update_many,
// adam_many, graft_many, axpby_out_many) run as one kernel per dtype (kernels.cu) instead of
// Backend's default chains of primitives. Off by default: the kernels were written and
// compiled without a GPU; the op cases check them against the chains bit for bit.
bool fused_stages() {
  const char* e = std::getenv("KRADAGRAD_CUDA_FUSED_STAGES");
  return e && *e && std::strcmp(e, "0") != 0;
}

// A growable device buffer, reused across calls. Reuse is safe because every user is
// ordered on the one stream; growth frees the old buffer stream-ordered too.
struct DevBuf {
  void* ptr = nullptr;
  size_t cap = 0;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {}
  Status init();
  int device_index() const { return device_; }
  Status with_stream(const std::function<Status(void*, int)>& f) {
    Guard g(this);
    return f(static_cast<void*>(stream_), device_);
  }

  const char* name() const override { return "cuda"; }
  std::string device() const override { return device_desc_; }

  // ---- memory -------------------------------------------------------------------------
  Status allocate(size_t bytes, void** ptr) override {
    Guard g(this);
    return dev_alloc(std::max<size_t>(bytes, 1), ptr);
  }
  void release(void* ptr) override {
    if (!ptr) return;
    Guard g(this);
    dev_free(ptr);
  }
  Status upload(void* dst, const void* src, size_t bytes) override {
    Guard g(this);
    return h2d(dst, src, bytes);
  }
  Status download(void* dst, const void* src, size_t bytes) override {
    Guard g(this);
    if (!bytes) return Status::Ok();
    KRAD_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "download (device to host copy)");
    KRAD_CUDA(cudaStreamSynchronize(stream_), "download (synchronize)");
    return Status::Ok();
  }
  Status copy(void* dst, const void* src, size_t bytes) override {
    Guard g(this);
    if (dst == src || !bytes) return Status::Ok();
    KRAD_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_), "copy");
    return Status::Ok();
  }
  Status fill(DType dt, void* dst, size_t count, double value) override {
    Guard g(this);
    KRAD_CUDA(kk::fill(dt, dst, count, value, stream_), "fill kernel");
    return Status::Ok();
  }
  Status cast(DType sdt, const void* src, DType ddt, void* dst, size_t count) override {
    Guard g(this);
    KRAD_CUDA(kk::cast(sdt, src, ddt, dst, count, stream_), "cast kernel");
    return Status::Ok();
  }
  Status synchronize() override {
    Guard g(this);
    KRAD_CUDA(cudaStreamSynchronize(stream_), "synchronize");
    return Status::Ok();
  }

  // ---- products -----------------------------------------------------------------------
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands and
  // m/n, keep each operand's own transpose flag. Batches go in chunks of at most 65535.
  Status gemm(DType dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const void* a, int64_t lda,
              int64_t sa, const void* b, int64_t ldb, int64_t sb, double beta, void* c, int64_t ldc, int64_t sc,
              int64_t batch) override {
    Guard g(this);
    if (m <= 0 || n <= 0 || batch <= 0) return Status::Ok();
    const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const size_t es = dtype_size(dt);
    for (int64_t done = 0; done < batch; done += 65535) {
      const int cnt = (int)std::min<int64_t>(65535, batch - done);
      const char* pa = static_cast<const char*>(a) + done * sa * es;
      const char* pb = static_cast<const char*>(b) + done * sb * es;
      char* pc = static_cast<char*>(c) + done * sc * es;
      if (dt == DType::F32) {
        const float fa = (float)alpha, fb = (float)beta;
        KRAD_CUBLAS(cublasSgemmStridedBatched(blas_, opb, opa, (int)n, (int)m, (int)k, &fa, (const float*)pb, (int)ldb,
                                              sb, (const float*)pa, (int)lda, sa, &fb, (float*)pc, (int)ldc, sc, cnt),
                    "SgemmStridedBatched");
      } else {
        KRAD_CUBLAS(cublasDgemmStridedBatched(blas_, opb, opa, (int)n, (int)m, (int)k, &alpha, (const double*)pb,
                                              (int)ldb, sb, (const double*)pa, (int)lda, sa, &beta, (double*)pc,
                                              (int)ldc, sc, cnt),
                    "DgemmStridedBatched");
      }
    }
    return Status::Ok();
  }

  // Gram products of large items: cuBLAS syrk per item (half a gemm's flops) and a mirror
  // of its triangle; with beta != 0 into scratch, then C = S + beta C. Many small items
  // stay one strided-batched gemm (the default), which launches once and applies beta
  // itself. KRADAGRAD_CUDA_NO_SYRK=1 keeps the gemm everywhere (for comparisons).
  Status syrk(DType dt, bool trans, int64_t n, int64_t k, double alpha, const void* a, int64_t lda, int64_t sa,
              double beta, void* c, int64_t batch) override {
    if (n < kSyrkMinN || batch > kSyrkMaxBatch || k <= 0 || std::getenv("KRADAGRAD_CUDA_NO_SYRK"))
      return Backend::syrk(dt, trans, n, k, alpha, a, lda, sa, beta, c, batch);  // takes the lock itself
    Guard g(this);
    const size_t es = dtype_size(dt), count = (size_t)(n * n * batch);
    void* out = c;
    if (beta != 0.0) KRAD_RETURN_IF_ERROR(dev_alloc(count * es, &out));
    // Row-major C = op(A) op(A)^T is, column-major, X^T X (trans = false; X = A^T, the k x n
    // column-major view of the n x k row-major A, leading dimension lda) or Y Y^T (trans =
    // true; Y = A^T, the n x k view of the k x n row-major A). cuBLAS writes the upper
    // triangle, which is the row-major lower one; the kernel then mirrors it.
    const cublasOperation_t op = trans ? CUBLAS_OP_N : CUBLAS_OP_T;
    Status st = Status::Ok();
    for (int64_t b = 0; b < batch && st.ok(); ++b) {
      const char* pa = static_cast<const char*>(a) + b * sa * es;
      char* pc = static_cast<char*>(out) + b * n * n * es;
      cublasStatus_t cs;
      if (dt == DType::F32) {
        const float fa = (float)alpha, fz = 0.0f;
        cs = cublasSsyrk(blas_, CUBLAS_FILL_MODE_UPPER, op, (int)n, (int)k, &fa, (const float*)pa, (int)lda, &fz,
                         (float*)pc, (int)n);
      } else {
        const double z = 0.0;
        cs = cublasDsyrk(blas_, CUBLAS_FILL_MODE_UPPER, op, (int)n, (int)k, &alpha, (const double*)pa, (int)lda, &z,
                         (double*)pc, (int)n);
      }
      if (cs != CUBLAS_STATUS_SUCCESS)
        st = Status::Error(Code::CUBLAS_FAILED,
                           std::string("cuBLAS ") + (dt == DType::F32 ? "Ssyrk" : "Dsyrk") + " failed: " +
                               cublasGetStatusName(cs) + " (" + cublasGetStatusString(cs) + ")",
                           (long long)cs);
    }
    if (st.ok()) st = cuda_check(kk::mirror_lower(dt, out, n, batch, stream_), "mirror_lower kernel");
    if (st.ok() && beta != 0.0)
      st = cuda_check(kk::axpby(dt, 1, (int64_t)count, nullptr, 1.0, out, nullptr, beta, c, stream_), "axpby kernel");
    if (out != c) dev_free(out);  // stream-ordered: after the kernels that read it
    return st;
  }

  Status transpose3(DType dt, const void* src, void* dst, int64_t batch, int64_t p, int64_t q, int64_t r) override {
    Guard g(this);
    KRAD_CUDA(kk::transpose3(dt, src, dst, batch, p, q, r, stream_), "transpose3 kernel");
    return Status::Ok();
  }

  // ---- symmetric eigensolver ----------------------------------------------------------
  Status syevd(DType dt, const void* a, void* w, void* v, int64_t n, int64_t batch, std::vector<int>* info) override;

  Status eig_scale(DType dt, const void* v, const void* w, void* out, int64_t n, int64_t batch, double p,
                   double floor) override {
    Guard g(this);
    void* f = nullptr;
    KRAD_RETURN_IF_ERROR(dev_alloc(std::max<size_t>((size_t)(n * batch) * dtype_size(dt), 1), &f));
    cudaError_t e = kk::eig_scale(dt, v, w, out, f, n, batch, p, floor, stream_);
    dev_free(f);  // stream-ordered: freed after the kernels that read it
    KRAD_CUDA(e, "eig_scale kernel");
    return Status::Ok();
  }

  // ---- elementwise --------------------------------------------------------------------
  Status axpby(DType dt, int64_t batch, int64_t count, const double* alphas, double alpha, const void* x,
               const double* betas, double beta, void* y) override {
    Guard g(this);
    const double *da = nullptr, *db = nullptr;
    KRAD_RETURN_IF_ERROR(coefficients(alphas, betas, batch, &da, &db));
    KRAD_CUDA(kk::axpby(dt, batch, count, da, alpha, x, db, beta, y, stream_), "axpby kernel");
    return Status::Ok();
  }
  Status mul_acc(DType dt, size_t count, double a, double b, const void* x, const void* y, void* acc) override {
    Guard g(this);
    KRAD_CUDA(kk::mul_acc(dt, count, a, b, x, y, acc, stream_), "mul_acc kernel");
    return Status::Ok();
  }
  Status div_sqrt(DType dt, size_t count, const void* x, const void* acc, double scale, double eps,
                  void* out) override {
    Guard g(this);
    KRAD_CUDA(kk::div_sqrt(dt, count, x, acc, scale, eps, out, stream_), "div_sqrt kernel");
    return Status::Ok();
  }
  Status add_identity(DType dt, void* a, int64_t n, int64_t batch, const double* alphas, double alpha) override {
    Guard g(this);
    const double *da = nullptr, *unused = nullptr;
    KRAD_RETURN_IF_ERROR(coefficients(alphas, nullptr, batch, &da, &unused));
    KRAD_CUDA(kk::add_identity(dt, a, n, batch, da, alpha, stream_), "add_identity kernel");
    return Status::Ok();
  }
  Status symmetrize(DType dt, void* a, int64_t n, int64_t batch) override {
    Guard g(this);
    KRAD_CUDA(kk::symmetrize(dt, a, n, batch, stream_), "symmetrize kernel");
    return Status::Ok();
  }

  // ---- reductions ---------------------------------------------------------------------
  Status dot(DType dt, const void* x, const void* y, int64_t batch, int64_t count, std::vector<double>* out) override {
    Guard g(this);
    out->assign(batch, 0.0);
    if (batch <= 0) return Status::Ok();
    const size_t nparts = (size_t)batch * kk::dot_chunks(count);
    KRAD_RETURN_IF_ERROR(ensure(&scratch_, (nparts + batch) * sizeof(double)));
    double* parts = static_cast<double*>(scratch_.ptr);
    double* res = parts + nparts;
    KRAD_CUDA(kk::dot(dt, x, y, batch, count, parts, res, stream_), "dot kernel");
    return fetch(out->data(), res, batch * sizeof(double));
  }
  Status trace(DType dt, const void* a, int64_t n, int64_t batch, std::vector<double>* out) override {
    Guard g(this);
    out->assign(batch, 0.0);
    if (batch <= 0) return Status::Ok();
    KRAD_RETURN_IF_ERROR(ensure(&scratch_, batch * sizeof(double)));
    KRAD_CUDA(kk::trace(dt, a, n, batch, static_cast<double*>(scratch_.ptr), stream_), "trace kernel");
    return fetch(out->data(), scratch_.ptr, batch * sizeof(double));
  }
  Status all_finite(DType dt, const void* x, int64_t batch, int64_t count, std::vector<uint8_t>* out) override {
    Guard g(this);
    out->assign(batch, 1);
    if (batch <= 0) return Status::Ok();
    KRAD_RETURN_IF_ERROR(ensure(&flags_, (size_t)batch));
    KRAD_CUDA(kk::all_finite(dt, x, batch, count, static_cast<uint8_t*>(flags_.ptr), stream_), "all_finite kernel");
    return fetch(out->data(), flags_.ptr, (size_t)batch);
  }

  // ---- fused pieces: reductions feed the update on the device, no host round trip -------
  Status scale_by_norm_ratio(DType dt, void* d, const void* a, int64_t batch, int64_t count, double eps) override {
    Guard g(this);
    if (batch <= 0) return Status::Ok();
    const size_t nparts = (size_t)batch * kk::dot_chunks(count);
    KRAD_RETURN_IF_ERROR(ensure(&scratch_, (nparts + 3 * batch) * sizeof(double)));
    double* parts = static_cast<double*>(scratch_.ptr);
    double *na = parts + nparts, *nd = na + batch, *f = nd + batch;
    KRAD_CUDA(kk::dot(dt, a, a, batch, count, parts, na, stream_), "dot kernel");
    KRAD_CUDA(kk::dot(dt, d, d, batch, count, parts, nd, stream_), "dot kernel");  // parts reuse: stream-ordered
    KRAD_CUDA(kk::norm_ratio(na, nd, eps, f, batch, stream_), "norm_ratio kernel");
    KRAD_CUDA(kk::axpby(dt, batch, count, nullptr, 0.0, d, f, 0.0, d, stream_), "axpby kernel");
    return Status::Ok();
  }
  Status inverse_update(DType dt, void* l, const void* t, const void* m, int64_t n, int64_t batch,
                        Normalizer kind) override {
    Guard g(this);
    if (batch <= 0) return Status::Ok();
    const bool tr = kind == Normalizer::TRACE;
    if (n <= kSmallInverseUpdateN && !std::getenv("KRADAGRAD_CUDA_NO_FUSED_MULTI")) {
      KRAD_CUDA(kk::inverse_update_small(dt, l, t, m, n, batch, tr, stream_), "inverse_update kernel");
      return Status::Ok();
    }
    const size_t nparts = tr ? 0 : (size_t)batch * kk::dot_chunks(n * n);
    KRAD_RETURN_IF_ERROR(ensure(&scratch_, (nparts + 2 * batch) * sizeof(double)));
    double* parts = static_cast<double*>(scratch_.ptr);
    double *x = parts + nparts, *r = x + batch;
    if (tr)
      KRAD_CUDA(kk::trace(dt, m, n, batch, x, stream_), "trace kernel");
    else
      KRAD_CUDA(kk::dot(dt, m, m, batch, n * n, parts, x, stream_), "dot kernel");
    KRAD_CUDA(kk::inverse_coeffs(x, n, tr, r, batch, stream_), "inverse_coeffs kernel");
    KRAD_CUDA(kk::axpby(dt, batch, n * n, r, 0.0, t, nullptr, 1.0, l, stream_), "axpby kernel");
    return Status::Ok();
  }
  Status all_finite_many(const std::vector<DType>& dtypes, const std::vector<const void*>& ptrs,
                         const std::vector<int64_t>& counts, std::vector<uint8_t>* finite) override {
    Guard g(this);
    finite->assign(ptrs.size(), 1);
    if (ptrs.empty()) return Status::Ok();
    KRAD_RETURN_IF_ERROR(ensure(&flags_, ptrs.size()));
    uint8_t* f = static_cast<uint8_t*>(flags_.ptr);
    if (std::getenv("KRADAGRAD_CUDA_NO_FUSED_MULTI")) {
      for (size_t j = 0; j < ptrs.size(); ++j)
        KRAD_CUDA(kk::all_finite(dtypes[j], ptrs[j], 1, counts[j], f + j, stream_), "all_finite kernel");
      return fetch(finite->data(), f, ptrs.size());
    }
    // One launch per dtype over a span table whose z fields point at the flags.
    KRAD_CUDA(cudaMemsetAsync(f, 1, ptrs.size(), stream_), "finite flags reset");
    for (DType dt : {DType::F32, DType::F64}) {
      std::vector<kk::MultiSpan> table;
      int64_t max_count = 0;
      for (size_t j = 0; j < ptrs.size(); ++j)
        if (dtypes[j] == dt && counts[j] > 0) {
          table.push_back({ptrs[j], nullptr, f + j, counts[j]});
          max_count = std::max(max_count, counts[j]);
        }
      if (table.empty()) continue;
      const size_t bytes = table.size() * sizeof(kk::MultiSpan);
      KRAD_RETURN_IF_ERROR(upload_table(table.data(), bytes));
      KRAD_CUDA(kk::multi_all_finite(dt, static_cast<const kk::MultiSpan*>(multi_.ptr), (int64_t)table.size(),
                                     max_count, stream_),
                "multi-tensor all_finite kernel");
    }
    return fetch(finite->data(), f, ptrs.size());
  }

  // ---- block gather/scatter -----------------------------------------------------------
  // ---- multi-tensor forms: one launch per dtype over a span table in device memory ------
  Status multi_elementwise(Multi op, const std::vector<Span>& spans, double a, double b) override {
    if (std::getenv("KRADAGRAD_CUDA_NO_FUSED_MULTI")) return Backend::multi_elementwise(op, spans, a, b);
    Guard g(this);
    for (DType dt : {DType::F32, DType::F64}) {
      int64_t max_count = 0;
      std::vector<kk::MultiSpan> table;
      for (const Span& s : spans)
        if (s.dt == dt && s.count > 0) {
          table.push_back({s.x, s.y, s.z, s.count});
          max_count = std::max(max_count, s.count);
        }
      if (table.empty()) continue;
      const size_t bytes = table.size() * sizeof(kk::MultiSpan);
      KRAD_RETURN_IF_ERROR(upload_table(table.data(), bytes));
      KRAD_CUDA(kk::multi_elementwise(dt, static_cast<int>(op), static_cast<const kk::MultiSpan*>(multi_.ptr),
                                      (int64_t)table.size(), max_count, a, b, stream_),
                "multi-tensor elementwise kernel");
    }
    return Status::Ok();
  }
  Status multi_norm_ratio(const std::vector<Span>& spans, double eps) override {
    if (std::getenv("KRADAGRAD_CUDA_NO_FUSED_MULTI")) return Backend::multi_norm_ratio(spans, eps);
    Guard g(this);
    for (DType dt : {DType::F32, DType::F64}) {
      std::vector<kk::MultiSpan> table;
      std::vector<int64_t> off{0};
      int64_t max_chunks = 0, max_count = 0;
      for (const Span& s : spans)
        if (s.dt == dt) {
          const int64_t c = kk::dot_chunks(s.count);
          table.push_back({s.x, nullptr, s.z, s.count});
          off.push_back(off.back() + c);
          max_chunks = std::max(max_chunks, c);
          max_count = std::max(max_count, s.count);
        }
      if (table.empty()) continue;
      const int64_t n = (int64_t)table.size(), chunks = off.back();
      // One upload: the span table, then the chunk offsets (both 8-byte aligned).
      const size_t tb = table.size() * sizeof(kk::MultiSpan), ob = off.size() * sizeof(int64_t);
      std::vector<char> meta(tb + ob);
      std::memcpy(meta.data(), table.data(), tb);
      std::memcpy(meta.data() + tb, off.data(), ob);
      KRAD_RETURN_IF_ERROR(upload_table(meta.data(), meta.size()));
      KRAD_RETURN_IF_ERROR(ensure(&scratch_, (2 * chunks + n) * sizeof(double)));
      double* pa = static_cast<double*>(scratch_.ptr);
      double *pd = pa + chunks, *f = pd + chunks;
      const auto* dspans = static_cast<const kk::MultiSpan*>(multi_.ptr);
      const auto* doff = reinterpret_cast<const int64_t*>(static_cast<const char*>(multi_.ptr) + tb);
      KRAD_CUDA(kk::multi_norm_ratio(dt, dspans, doff, n, max_chunks, max_count, eps, pa, pd, f, stream_),
                "multi-tensor norm ratio kernels");
    }
    return Status::Ok();
  }

  // ---- the optimizers' fused final stages (KRADAGRAD_CUDA_FUSED_STAGES=1; else the
  // default chains of Backend). One launch per dtype over a span table; per-span finite
  // flags in flags_, reset to 1 first and read back once.
  Status update_many(const std::vector<UpdateSpan>& spans, const UpdateParams& p,
                     std::vector<uint8_t>* finite) override {
    if (!fused_stages()) return Backend::update_many(spans, p, finite);
    Guard g(this);
    finite->assign(spans.size(), 1);
    if (spans.empty()) return Status::Ok();
    KRAD_RETURN_IF_ERROR(ensure(&flags_, spans.size()));
    uint8_t* f = static_cast<uint8_t*>(flags_.ptr);
    KRAD_CUDA(cudaMemsetAsync(f, 1, spans.size(), stream_), "finite flags reset");
    const kk::UpdateParamsK kp{p.wd, p.mu, -p.lr, 1 - p.lr * p.wd, p.mu > 0, p.nesterov, p.l2, p.decoupled, p.ext};
    for (DType dt : {DType::F32, DType::F64}) {
      std::vector<kk::UpdateSpanK> table;
      int64_t max_count = 0;
      for (size_t j = 0; j < spans.size(); ++j) {
        const UpdateSpan& s = spans[j];
        if (s.dt != dt || s.count <= 0) continue;
        table.push_back({s.d, s.m, s.w, s.u, s.m_out, s.w_out, f + j, s.count});
        max_count = std::max(max_count, s.count);
      }
      if (table.empty()) continue;
      KRAD_RETURN_IF_ERROR(upload_table(table.data(), table.size() * sizeof(kk::UpdateSpanK)));
      KRAD_CUDA(kk::update_many(dt, static_cast<const kk::UpdateSpanK*>(multi_.ptr), (int64_t)table.size(), max_count,
                                kp, stream_),
                "update_many kernel");
    }
    return fetch(finite->data(), f, spans.size());
  }
  Status adam_many(const std::vector<AdamSpan>& spans, const AdamParams& p, std::vector<uint8_t>* finite) override {
    if (!fused_stages()) return Backend::adam_many(spans, p, finite);
    Guard g(this);
    finite->assign(spans.size(), 1);
    if (spans.empty()) return Status::Ok();
    KRAD_RETURN_IF_ERROR(ensure(&flags_, spans.size()));
    uint8_t* f = static_cast<uint8_t*>(flags_.ptr);
    KRAD_CUDA(cudaMemsetAsync(f, 1, spans.size(), stream_), "finite flags reset");
    const kk::AdamParamsK kp{p.wd, 1 - p.lr * p.wd, 1 - p.b1, p.b1, p.b2, 1 - p.b2, 1 / p.bc2, p.eps, -p.lr / p.bc1,
                             p.l2, p.decoupled};
    for (DType dt : {DType::F32, DType::F64}) {
      std::vector<kk::AdamSpanK> table;
      int64_t max_count = 0;
      for (size_t j = 0; j < spans.size(); ++j) {
        const AdamSpan& s = spans[j];
        if (s.dt != dt || s.count <= 0) continue;
        table.push_back({s.g, s.m, s.v, s.w, s.m_out, s.v_out, s.w_out, f + j, s.count});
        max_count = std::max(max_count, s.count);
      }
      if (table.empty()) continue;
      KRAD_RETURN_IF_ERROR(upload_table(table.data(), table.size() * sizeof(kk::AdamSpanK)));
      KRAD_CUDA(kk::adam_many(dt, static_cast<const kk::AdamSpanK*>(multi_.ptr), (int64_t)table.size(), max_count, kp,
                              stream_),
                "adam_many kernel");
    }
    return fetch(finite->data(), f, spans.size());
  }
  Status graft_many(Graft kind, const std::vector<GraftSpan>& spans, const GraftParams& p) override {
    if (!fused_stages()) return Backend::graft_many(kind, spans, p);
    Guard g(this);
    const kk::GraftParamsK kp{p.eps, 1 - p.b1, p.b1, p.b2, 1 - p.b2, 1 / p.bc2, 1 / p.bc1, kind == Graft::ADAM};
    for (DType dt : {DType::F32, DType::F64}) {
      std::vector<kk::GraftSpanK> table;
      int64_t max_count = 0;
      for (const GraftSpan& s : spans) {
        if (s.dt != dt || s.count <= 0) continue;
        table.push_back({s.g, s.acc, s.mom, s.acc_out, s.mom_out, s.dir, s.count});
        max_count = std::max(max_count, s.count);
      }
      if (table.empty()) continue;
      KRAD_RETURN_IF_ERROR(upload_table(table.data(), table.size() * sizeof(kk::GraftSpanK)));
      KRAD_CUDA(kk::graft_many(dt, static_cast<const kk::GraftSpanK*>(multi_.ptr), (int64_t)table.size(), max_count, kp,
                               stream_),
                "graft_many kernel");
    }
    return Status::Ok();
  }
  Status axpby_out_many(const std::vector<Axpby3>& spans, double a, double b) override {
    if (!fused_stages()) return Backend::axpby_out_many(spans, a, b);
    Guard g(this);
    for (DType dt : {DType::F32, DType::F64}) {
      std::vector<kk::MultiSpan> table;
      int64_t max_count = 0;
      for (const Axpby3& s : spans) {
        if (s.dt != dt || s.count <= 0) continue;
        table.push_back({s.x, s.y, s.z, s.count});
        max_count = std::max(max_count, s.count);
      }
      if (table.empty()) continue;
      KRAD_RETURN_IF_ERROR(upload_table(table.data(), table.size() * sizeof(kk::MultiSpan)));
      KRAD_CUDA(kk::axpby_out_many(dt, static_cast<const kk::MultiSpan*>(multi_.ptr), (int64_t)table.size(), max_count,
                                   a, b, stream_),
                "axpby_out_many kernel");
    }
    return Status::Ok();
  }

  Status boxes_many(DType dt, const std::vector<int64_t>& bd, const std::vector<BoxEntry>& entries,
                    bool scatter) override {
    if (std::getenv("KRADAGRAD_CUDA_NO_FUSED_MULTI")) return Backend::boxes_many(dt, bd, entries, scatter);
    Guard g(this);
    const int r = static_cast<int>(bd.size());
    if (r == 0) return Status::Error(Code::INTERNAL, "boxes_many: the CUDA backend needs rank >= 1");
    int64_t box_numel = 1;
    for (auto d : bd) box_numel *= d;
    const size_t es = dtype_size(dt);
    // meta: [box dims], then per box [source, destination item, source strides, offsets].
    std::vector<int64_t> meta(bd.begin(), bd.end());
    int64_t nbox = 0;
    std::vector<int64_t> stride(r);
    for (const BoxEntry& e : entries) {
      if (static_cast<int>(e.src_dims.size()) != r)
        return Status::Error(Code::INTERNAL, "boxes_many: source and box ranks differ");
      stride[r - 1] = 1;
      for (int i = r - 2; i >= 0; --i) stride[i] = stride[i + 1] * e.src_dims[i + 1];
      const int64_t nb = static_cast<int64_t>(e.offsets->size()) / r;
      for (int64_t j = 0; j < nb; ++j) {
        meta.push_back(static_cast<int64_t>(reinterpret_cast<intptr_t>(e.src)));
        meta.push_back(static_cast<int64_t>(reinterpret_cast<intptr_t>(static_cast<char*>(e.dst) + j * box_numel * es)));
        meta.insert(meta.end(), stride.begin(), stride.end());
        meta.insert(meta.end(), e.offsets->begin() + j * r, e.offsets->begin() + (j + 1) * r);
      }
      nbox += nb;
    }
    if (nbox == 0 || box_numel == 0) return Status::Ok();
    const size_t bytes = meta.size() * sizeof(int64_t);
    KRAD_RETURN_IF_ERROR(ensure(&meta_, bytes));
    KRAD_RETURN_IF_ERROR(h2d(meta_.ptr, meta.data(), bytes));
    KRAD_CUDA(kk::boxes_many(dt, static_cast<const int64_t*>(meta_.ptr), r, nbox, box_numel, scatter, stream_),
              "boxes_many kernel");
    return Status::Ok();
  }

  Status boxes(DType dt, void* src, const std::vector<int64_t>& sd, const std::vector<int64_t>& bd,
               const std::vector<int64_t>& offsets, void* dst, bool scatter) override {
    Guard g(this);
    const int r = static_cast<int>(sd.size());
    if (r == 0 || bd.size() != sd.size())
      return Status::Error(Code::INTERNAL, "boxes: the CUDA backend needs rank >= 1 and box dims of the same rank");
    int64_t box_numel = 1;
    for (auto d : bd) box_numel *= d;
    const int64_t nbox = static_cast<int64_t>(offsets.size()) / r;
    if (nbox == 0 || box_numel == 0) return Status::Ok();
    std::vector<int64_t> meta(2 * r + offsets.size());
    for (int i = 0; i < r; ++i) meta[i] = bd[i];
    meta[2 * r - 1] = 1;
    for (int i = r - 2; i >= 0; --i) meta[r + i] = meta[r + i + 1] * sd[i + 1];
    std::copy(offsets.begin(), offsets.end(), meta.begin() + 2 * r);
    const size_t bytes = meta.size() * sizeof(int64_t);
    KRAD_RETURN_IF_ERROR(ensure(&meta_, bytes));
    KRAD_RETURN_IF_ERROR(h2d(meta_.ptr, meta.data(), bytes));
    KRAD_CUDA(kk::boxes(dt, src, static_cast<const int64_t*>(meta_.ptr), r, nbox, box_numel, dst, scatter, stream_),
              "boxes kernel");
    return Status::Ok();
  }

 private:
  // Holds the backend lock and makes our device current on this thread.
  class Guard {
   public:
    explicit Guard(CudaBackend* b) : lock_(b->mu_) {
      int cur = -1;
      if (cudaGetDevice(&cur) != cudaSuccess || cur != b->device_) cudaSetDevice(b->device_);
      (void)cudaGetLastError();  // a stale non-sticky error must not surface in this call
    }
    // For Unlocked only (the device stays current on this thread meanwhile).
    void unlock() { lock_.unlock(); }
    void relock() { lock_.lock(); }

   private:
    std::unique_lock<std::mutex> lock_;
  };
  // Releases a held Guard for its scope and takes it back at the end (also on an early
  // return from inside the scope, before anything declared outside it is destroyed).
  class Unlocked {
   public:
    explicit Unlocked(Guard& g) : g_(g) { g_.unlock(); }
    ~Unlocked() { g_.relock(); }
    Unlocked(const Unlocked&) = delete;
    Unlocked& operator=(const Unlocked&) = delete;

   private:
    Guard& g_;
  };

  Status dev_alloc(size_t bytes, void** ptr) {
    cudaError_t e = pool_ ? cudaMallocAsync(ptr, bytes, stream_) : cudaMalloc(ptr, bytes);
    if (e == cudaSuccess) return Status::Ok();
    (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    (void)cudaGetLastError();
    if (e == cudaErrorMemoryAllocation)
      return Status::Error(Code::CUDA_OOM, "CUDA out of memory allocating " + std::to_string(bytes) + " bytes (" +
                                               std::to_string(free_b >> 20) + " MiB free of " +
                                               std::to_string(total_b >> 20) + " MiB)");
    return cuda_status(e, "allocation of " + std::to_string(bytes) + " bytes");
  }
  void dev_free(void* p) {
    if (!p) return;
    cudaError_t e = pool_ ? cudaFreeAsync(p, stream_) : cudaFree(p);
    if (e != cudaSuccess) (void)cudaGetLastError();  // at teardown the runtime may be gone: nothing to do
  }
  Status ensure(DevBuf* b, size_t bytes) {
    if (b->cap >= bytes && b->ptr) return Status::Ok();
    const size_t want = std::max<size_t>({bytes, 2 * b->cap, 256});
    void* p = nullptr;
    KRAD_RETURN_IF_ERROR(dev_alloc(want, &p));
    dev_free(b->ptr);
    b->ptr = p;
    b->cap = want;
    return Status::Ok();
  }

  // Host -> device, asynchronous on the stream. Small copies go through a ring of pinned
  // slots (truly asynchronous; a slot is reused only after its previous copy completed);
  // larger ones are pageable copies, which return once the source has been consumed.
  Status h2d(void* dst, const void* src, size_t bytes) {
    if (!bytes) return Status::Ok();
    if (bytes <= kSlotBytes && ring_host_) {
      const int slot = ring_next_;
      ring_next_ = (ring_next_ + 1) % kSlots;
      KRAD_CUDA(cudaEventSynchronize(ring_events_[slot]), "staging wait");
      char* h = static_cast<char*>(ring_host_) + slot * kSlotBytes;
      std::memcpy(h, src, bytes);
      KRAD_CUDA(cudaMemcpyAsync(dst, h, bytes, cudaMemcpyHostToDevice, stream_), "upload (host to device copy)");
      KRAD_CUDA(cudaEventRecord(ring_events_[slot], stream_), "staging record");
      return Status::Ok();
    }
    KRAD_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "upload (host to device copy)");
    return Status::Ok();
  }

  // Device -> host through the pinned result buffer; synchronizes.
  Status fetch(void* host_dst, const void* src, size_t bytes) {
    if (!bytes) return Status::Ok();
    if (res_cap_ < bytes) {
      if (res_host_) cudaFreeHost(res_host_);
      res_host_ = nullptr;
      res_cap_ = 0;
      const size_t want = std::max<size_t>(bytes, 4096);
      KRAD_CUDA(cudaMallocHost(&res_host_, want), "pinned host allocation");
      res_cap_ = want;
    }
    KRAD_CUDA(cudaMemcpyAsync(res_host_, src, bytes, cudaMemcpyDeviceToHost, stream_), "result copy to host");
    KRAD_CUDA(cudaStreamSynchronize(stream_), "synchronize");
    std::memcpy(host_dst, res_host_, bytes);
    return Status::Ok();
  }

  // A multi-tensor op's span table into the reusable device buffer multi_ (stream-ordered:
  // a later upload waits for the kernels that read the previous one).
  Status upload_table(const void* host, size_t bytes) {
    KRAD_RETURN_IF_ERROR(ensure(&multi_, bytes));
    return h2d(multi_.ptr, host, bytes);
  }

  // Per-item coefficient arrays live on the host: upload them next to each other.
  Status coefficients(const double* alphas, const double* betas, int64_t batch, const double** da,
                      const double** db) {
    *da = *db = nullptr;
    if (!alphas && !betas) return Status::Ok();
    const size_t one = (size_t)batch * sizeof(double);
    KRAD_RETURN_IF_ERROR(ensure(&coef_, 2 * one));
    double* base = static_cast<double*>(coef_.ptr);
    if (alphas) {
      KRAD_RETURN_IF_ERROR(h2d(base, alphas, one));
      *da = base;
    }
    if (betas) {
      KRAD_RETURN_IF_ERROR(h2d(base + batch, betas, one));
      *db = base + batch;
    }
    return Status::Ok();
  }

  Status solve_syevd(Guard& g, DType dt, char* work, void* w, int* dinfo, int64_t n,
                     const std::vector<int64_t>& items);
  Status ensure_lanes(int lanes);
  Status solve_syevj(DType dt, char* work, void* w, int* dinfo, int64_t n, int64_t batch);
  Status read_unlocked(Guard& g, const void* src, size_t bytes, const void** host);

  static constexpr int kSlots = 32;
  static constexpr size_t kSlotBytes = 64 * 1024;

  std::mutex mu_;
  // Serializes syevd calls; owns lanes_, fork_, eigh_done_ and eigh_host_ (taken before mu_).
  std::mutex eigh_mu_;
  int device_ = 0;
  bool pool_ = false;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  cusolverDnHandle_t solver_ = nullptr;
  syevjInfo_t syevj_ = nullptr;
  // Auxiliary solvers for concurrent syevd (solve_syevd): own stream, handle, end event.
  struct Lane {
    cudaStream_t stream = nullptr;
    cusolverDnHandle_t solver = nullptr;
    cudaEvent_t done = nullptr;
  };
  std::vector<Lane> lanes_;
  cudaEvent_t fork_ = nullptr;
  // syevd's read-backs: the copy's end, and the pinned buffer it lands in (read_unlocked).
  cudaEvent_t eigh_done_ = nullptr;
  void* eigh_host_ = nullptr;
  size_t eigh_host_cap_ = 0;
  std::string device_desc_;
  DevBuf scratch_, flags_, coef_, meta_, multi_;
  void* res_host_ = nullptr;
  size_t res_cap_ = 0;
  void* ring_host_ = nullptr;
  cudaEvent_t ring_events_[kSlots] = {};
  int ring_next_ = 0;
  // Largest n that syevjBatched accepted; lowered if this cuSOLVER refuses a size.
  int64_t syevj_max_n_ = INT64_MAX;
};

Status CudaBackend::init() {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  int rt = 0;
  cudaRuntimeGetVersion(&rt);
  const std::string rt_str = std::to_string(rt / 1000) + "." + std::to_string((rt % 1000) / 10);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    std::string why = e == cudaErrorInsufficientDriver
                          ? "the NVIDIA driver is missing or older than this addon's CUDA runtime " + rt_str
                          : e == cudaErrorNoDevice ? "no CUDA-capable device is present"
                                                   : "the CUDA driver could not be initialised";
    return Status::Error(Code::CUDA_FAILED, why + " (cudaGetDeviceCount: " + err_text(e) + ")");
  }
  if (count <= 0) return Status::Error(Code::CUDA_FAILED, "no CUDA device found (cudaGetDeviceCount returned 0)");
  if (device_ >= count)
    return Status::Error(Code::CUDA_FAILED, "CUDA device " + std::to_string(device_) + " was chosen but only " +
                                                std::to_string(count) + " device(s) are visible (CUDA_VISIBLE_DEVICES, " +
                                                "KRADAGRAD_CUDA_DEVICE, or one rank per GPU with more ranks than GPUs?)");
  KRAD_CUDA(cudaSetDevice(device_), "cudaSetDevice(" + std::to_string(device_) + ")");
  cudaDeviceProp prop;
  KRAD_CUDA(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
  e = kk::probe();
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return Status::Error(Code::CUDA_FAILED, std::string("this addon has no kernels for ") + prop.name + " (sm_" +
                                                std::to_string(prop.major) + std::to_string(prop.minor) +
                                                "); it was built for CUDA architectures " + KRAD_CUDA_ARCHS + ": " +
                                                err_text(e));
  }
  int drv = 0;
  cudaDriverGetVersion(&drv);
  device_desc_ = std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) +
                 ", CUDA runtime " + rt_str + ", driver " + std::to_string(drv / 1000) + "." +
                 std::to_string((drv % 1000) / 10) + ", " +
                 std::to_string((prop.totalGlobalMem + (1 << 29)) >> 30) + " GiB)";

  KRAD_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream creation");
  int pools = 0;
  cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device_);
  if (pools) {
    // Keep freed memory in the pool instead of returning it to the driver at each sync.
    cudaMemPool_t pool;
    if (cudaDeviceGetDefaultMemPool(&pool, device_) == cudaSuccess) {
      uint64_t threshold = UINT64_MAX;
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
      pool_ = true;
    }
  }
  (void)cudaGetLastError();

  KRAD_CUBLAS(cublasCreate(&blas_), "handle creation");
  KRAD_CUBLAS(cublasSetStream(blas_, stream_), "cublasSetStream");
  const char* tf32 = std::getenv("KRADAGRAD_CUDA_TF32");
  KRAD_CUBLAS(cublasSetMathMode(blas_, tf32 && std::strcmp(tf32, "1") == 0 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                            : CUBLAS_DEFAULT_MATH),
              "cublasSetMathMode");
  KRAD_CUSOLVER(cusolverDnCreate(&solver_), "handle creation");
  KRAD_CUSOLVER(cusolverDnSetStream(solver_, stream_), "cusolverDnSetStream");
  KRAD_CUSOLVER(cusolverDnCreateSyevjInfo(&syevj_), "syevj parameter creation");
  KRAD_CUSOLVER(cusolverDnXsyevjSetSortEig(syevj_, 1), "syevj sort setting");

  // Pinned staging ring for small uploads (coefficients, box offsets). Without it,
  // uploads still work as pageable copies.
  if (cudaMallocHost(&ring_host_, kSlots * kSlotBytes) == cudaSuccess) {
    for (int i = 0; i < kSlots; ++i)
      if (cudaEventCreateWithFlags(&ring_events_[i], cudaEventDisableTiming) != cudaSuccess) {
        for (int j = 0; j < i; ++j) cudaEventDestroy(ring_events_[j]);
        cudaFreeHost(ring_host_);
        ring_host_ = nullptr;
        break;
      }
  } else {
    ring_host_ = nullptr;
  }
  (void)cudaGetLastError();
  return Status::Ok();
}

// How many matrices syevd solves at once (KRADAGRAD_CUDA_EIGH_STREAMS, 1..kMaxEighLanes,
// default kEighLanes; anything else is ignored). Capped at the batch, so 12 lanes on the
// MLP's 12 factors of 1024 solve them all at once.
int eigh_lanes() {
  const char* e = std::getenv("KRADAGRAD_CUDA_EIGH_STREAMS");
  if (!e || !*e) return kEighLanes;
  char* end = nullptr;
  const long v = std::strtol(e, &end, 10);
  return (end && *end == '\0' && v >= 1 && v <= kMaxEighLanes) ? (int)v : kEighLanes;
}

// The Jacobi solver's sweep limit: cuSOLVER's default (100) unless
// KRADAGRAD_CUDA_SYEVJ_MAX_SWEEPS (1..1000) says otherwise. A tiny limit leaves items
// unconverged: that is how bench/gpu-ops.ts reaches the syevd retry below.
int syevj_max_sweeps() {
  const char* e = std::getenv("KRADAGRAD_CUDA_SYEVJ_MAX_SWEEPS");
  if (!e || !*e) return 100;
  char* end = nullptr;
  const long v = std::strtol(e, &end, 10);
  return (end && *end == '\0' && v >= 1 && v <= 1000) ? (int)v : 100;
}

// The per-matrix syevd over `items`; each writes its own device info entry. From
// kConcurrentEighMinN up, several matrices are spread over auxiliary solvers, each with its
// own stream and host thread (a syevd of a 1024x1024 matrix is latency-bound and leaves
// most of the device idle), forked from and joined back into the backend's stream. Called
// with `g` held (and eigh_mu_); the lanes run with `g` released (see the file comment).
Status CudaBackend::solve_syevd(Guard& g, DType dt, char* work, void* w, int* dinfo, int64_t n,
                                const std::vector<int64_t>& items) {
  if (items.empty()) return Status::Ok();
  const size_t es = dtype_size(dt), nn = (size_t)(n * n);
  int lwork = 0;
  if (dt == DType::F32)
    KRAD_CUSOLVER(cusolverDnSsyevd_bufferSize(solver_, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, (int)n,
                                              (const float*)work, (int)n, (const float*)w, &lwork),
                  "Ssyevd_bufferSize");
  else
    KRAD_CUSOLVER(cusolverDnDsyevd_bufferSize(solver_, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, (int)n,
                                              (const double*)work, (int)n, (const double*)w, &lwork),
                  "Dsyevd_bufferSize");
  const size_t ws_bytes = std::max<size_t>((size_t)lwork * es, 1);
  // One matrix on one solver; any failure becomes a coded status naming the item.
  auto solve_one = [&](cusolverDnHandle_t h, void* ws, int64_t b) -> Status {
    cusolverStatus_t cs;
    if (dt == DType::F32)
      cs = cusolverDnSsyevd(h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, (int)n, (float*)(work + b * nn * es),
                            (int)n, (float*)w + b * n, (float*)ws, lwork, dinfo + b);
    else
      cs = cusolverDnDsyevd(h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, (int)n, (double*)(work + b * nn * es),
                            (int)n, (double*)w + b * n, (double*)ws, lwork, dinfo + b);
    if (cs == CUSOLVER_STATUS_SUCCESS) return Status::Ok();
    return Status::Error(Code::CUSOLVER_FAILED,
                         std::string("cuSOLVER ") + (dt == DType::F32 ? "Ssyevd" : "Dsyevd") + " failed on item " +
                             std::to_string(b) + " (n = " + std::to_string(n) + "): " + cusolver_name(cs),
                         (long long)cs);
  };

  const int lanes = n >= kConcurrentEighMinN ? (int)std::min<int64_t>(eigh_lanes(), (int64_t)items.size()) : 1;
  if (lanes == 1) {
    // The main handle on the backend stream: stays under the lock (the handle is shared).
    void* ws = nullptr;
    KRAD_RETURN_IF_ERROR(dev_alloc(ws_bytes, &ws));
    Status st = Status::Ok();
    for (int64_t b : items) {
      st = solve_one(solver_, ws, b);
      if (!st.ok()) break;
    }
    dev_free(ws);
    return st;
  }

  // Under the lock: lanes, workspaces (stream-ordered allocations on the backend stream,
  // usable by the lanes after the fork) and the fork point, after the work matrices are ready.
  KRAD_RETURN_IF_ERROR(ensure_lanes(lanes));
  std::vector<void*> ws(lanes, nullptr);
  Status st = Status::Ok();
  for (int l = 0; l < lanes && st.ok(); ++l) st = dev_alloc(ws_bytes, &ws[l]);
  if (st.ok()) st = cuda_check(cudaEventRecord(fork_, stream_), "eigh fork (event record)");
  if (!st.ok()) {
    for (void* p : ws)
      if (p) dev_free(p);
    return st;
  }
  std::vector<Status> lane_st(lanes, Status::Ok());
  std::vector<uint8_t> joined(lanes, 0);
  // A lane touches only its own stream, handle and workspace, this call's work matrices,
  // w and dinfo (distinct items per lane), and fork_ (recorded above; owned under eigh_mu_).
  auto lane_work = [&](int l) {
    Lane& x = lanes_[l];
    cudaSetDevice(device_);
    Status s = cuda_check(cudaStreamWaitEvent(x.stream, fork_, 0), "eigh fork (stream wait)");
    for (size_t i = l; s.ok() && i < items.size(); i += lanes) s = solve_one(x.solver, ws[l], items[i]);
    // Always mark the lane's end, also after an error, so the join below covers the work queued.
    const cudaError_t e = cudaEventRecord(x.done, x.stream);
    joined[l] = e == cudaSuccess;
    lane_st[l] = s;
  };
  {
    // Without the lock while the lanes run (syevd blocks its host thread until its matrix
    // is solved): other threads may enqueue their work on the backend stream meanwhile.
    Unlocked u(g);
    std::vector<std::thread> threads;
    threads.reserve(lanes);
    int started = 0;
    try {
      for (; started < lanes; ++started) threads.emplace_back(lane_work, started);
    } catch (const std::exception&) {
      // No more threads: the lanes not started are driven from this thread instead.
    }
    for (int l = started; l < lanes; ++l) lane_work(l);
    for (auto& t : threads) t.join();
    // A lane whose end could not be recorded is waited for here, on the host.
    for (int l = 0; l < lanes; ++l) {
      if (joined[l]) continue;
      const cudaError_t e = cudaStreamSynchronize(lanes_[l].stream);
      if (e != cudaSuccess && st.ok()) st = cuda_status(e, "eigh join (lane synchronize)");
    }
  }
  // Join: the backend's stream waits for every lane before anything enqueued after this
  // point (the workspaces' stream-ordered release, the eigenvector transpose) runs on it.
  for (int l = 0; l < lanes; ++l) {
    if (joined[l]) {
      const cudaError_t e = cudaStreamWaitEvent(stream_, lanes_[l].done, 0);
      if (e != cudaSuccess) {
        if (st.ok()) st = cuda_status(e, "eigh join");
        (void)cudaStreamSynchronize(lanes_[l].stream);  // no device-side join: wait on the host
      }
    }
    if (!lane_st[l].ok() && st.ok()) st = lane_st[l];
  }
  for (void* p : ws) dev_free(p);
  return st;
}

// Auxiliary solvers for concurrent syevd, created on first use and kept. A lane whose
// creation fails half-way releases what it had (stream, event, handle).
Status CudaBackend::ensure_lanes(int lanes) {
  if (!fork_) KRAD_CUDA(cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming), "event creation");
  while ((int)lanes_.size() < lanes) {
    Lane x;
    Status st = cuda_check(cudaStreamCreateWithFlags(&x.stream, cudaStreamNonBlocking), "lane stream creation");
    if (st.ok()) st = cuda_check(cudaEventCreateWithFlags(&x.done, cudaEventDisableTiming), "lane event creation");
    if (st.ok()) {
      const cusolverStatus_t cs = cusolverDnCreate(&x.solver);
      if (cs != CUSOLVER_STATUS_SUCCESS) {
        x.solver = nullptr;
        st = Status::Error(Code::CUSOLVER_FAILED, std::string("cuSOLVER lane handle creation failed: ") +
                                                      cusolver_name(cs), (long long)cs);
      }
    }
    if (st.ok()) {
      const cusolverStatus_t cs = cusolverDnSetStream(x.solver, x.stream);
      if (cs != CUSOLVER_STATUS_SUCCESS)
        st = Status::Error(Code::CUSOLVER_FAILED, std::string("cuSOLVER lane cusolverDnSetStream failed: ") +
                                                      cusolver_name(cs), (long long)cs);
    }
    if (!st.ok()) {
      if (x.solver) cusolverDnDestroy(x.solver);
      if (x.done) cudaEventDestroy(x.done);
      if (x.stream) cudaStreamDestroy(x.stream);
      (void)cudaGetLastError();
      return st;
    }
    lanes_.push_back(x);
  }
  return Status::Ok();
}

// Batched Jacobi over all items, in chunks that keep the int workspace size in range.
Status CudaBackend::solve_syevj(DType dt, char* work, void* w, int* dinfo, int64_t n, int64_t batch) {
  const size_t es = dtype_size(dt), nn = (size_t)(n * n);
  KRAD_CUSOLVER(cusolverDnXsyevjSetMaxSweeps(syevj_, syevj_max_sweeps()), "syevj sweep limit setting");
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(batch, (int64_t(1) << 26) / (int64_t)nn));
  for (int64_t done = 0; done < batch; done += chunk) {
    const int cnt = (int)std::min<int64_t>(chunk, batch - done);
    char* A = work + done * nn * es;
    int lwork = 0;
    if (dt == DType::F32)
      KRAD_CUSOLVER(cusolverDnSsyevjBatched_bufferSize(solver_, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER,
                                                       (int)n, (const float*)A, (int)n, (const float*)w + done * n,
                                                       &lwork, syevj_, cnt),
                    "SsyevjBatched_bufferSize");
    else
      KRAD_CUSOLVER(cusolverDnDsyevjBatched_bufferSize(solver_, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER,
                                                       (int)n, (const double*)A, (int)n, (const double*)w + done * n,
                                                       &lwork, syevj_, cnt),
                    "DsyevjBatched_bufferSize");
    void* ws = nullptr;
    KRAD_RETURN_IF_ERROR(dev_alloc(std::max<size_t>((size_t)lwork * es, 1), &ws));
    cusolverStatus_t cs;
    if (dt == DType::F32)
      cs = cusolverDnSsyevjBatched(solver_, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, (int)n, (float*)A,
                                   (int)n, (float*)w + done * n, (float*)ws, lwork, dinfo + done, syevj_, cnt);
    else
      cs = cusolverDnDsyevjBatched(solver_, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, (int)n, (double*)A,
                                   (int)n, (double*)w + done * n, (double*)ws, lwork, dinfo + done, syevj_, cnt);
    dev_free(ws);
    KRAD_CUSOLVER(cs, dt == DType::F32 ? "SsyevjBatched" : "DsyevjBatched");
  }
  return Status::Ok();
}

// Device -> host for syevd without holding the lock while the device works: the copy into
// the eigh pinned buffer and an event are enqueued under `g`, the wait on that event runs
// with `g` released (work other threads enqueue meanwhile is not waited for). *host stays
// valid until the next read_unlocked (eigh_mu_ held).
Status CudaBackend::read_unlocked(Guard& g, const void* src, size_t bytes, const void** host) {
  if (!eigh_done_) KRAD_CUDA(cudaEventCreateWithFlags(&eigh_done_, cudaEventDisableTiming), "event creation");
  if (eigh_host_cap_ < bytes) {
    if (eigh_host_) cudaFreeHost(eigh_host_);  // its last copy was waited for
    eigh_host_ = nullptr;
    eigh_host_cap_ = 0;
    const size_t want = std::max<size_t>(bytes, 4096);
    KRAD_CUDA(cudaMallocHost(&eigh_host_, want), "pinned host allocation");
    eigh_host_cap_ = want;
  }
  *host = eigh_host_;
  if (!bytes) return Status::Ok();
  KRAD_CUDA(cudaMemcpyAsync(eigh_host_, src, bytes, cudaMemcpyDeviceToHost, stream_), "eigh result copy to host");
  KRAD_CUDA(cudaEventRecord(eigh_done_, stream_), "eigh result copy (event record)");
  cudaError_t e;
  {
    Unlocked u(g);
    e = cudaEventSynchronize(eigh_done_);
  }
  KRAD_CUDA(e, "eigh result copy (wait)");
  return Status::Ok();
}

// work = copy of A with its row-major lower triangle mirrored onto the upper, read by the
// solver as its column-major lower triangle (the path the CPU backend, torch and numpy
// take: see syevd_one in cpu_backend.cc); items with
// NaN/Inf are swapped for the identity so the solver never sees them, and reported as
// info = 1 like the CPU backend. The solver leaves the eigenvectors in work's columns
// (column-major), i.e. in its rows read row-major: a transpose puts them in V's columns.
// Items the batched Jacobi solver did not converge on are redone with syevd, on the same
// (mirrored) input.
// Locking: eigh_mu_ for the whole call (one syevd at a time), mu_ except while waiting
// (solver lanes, the host LAPACK solve, read-backs): see the file comment.
Status CudaBackend::syevd(DType dt, const void* a, void* w, void* v, int64_t n, int64_t batch,
                          std::vector<int>* info) {
  std::lock_guard<std::mutex> serial(eigh_mu_);  // before the backend lock (lock order)
  Guard g(this);
  info->assign(batch, 0);
  if (batch <= 0 || n <= 0) return Status::Ok();
  const size_t es = dtype_size(dt), nn = (size_t)(n * n), bytes = nn * batch * es;
  const EighChoice first = choose_eigh(n, batch, syevj_max_n_);
  if (!first.forced && first.method == EighMethod::SYEVD && n <= kHostEighMaxN) {
    // Few small matrices: LAPACK on the host. A GPU syevd of a 128x128 matrix costs
    // ~1.4 ms on an H100 (latency-bound), a 16x16 one nearly as much, while the CPU
    // solves a 64x64 in well under that; it also rounds exactly like the CPU backend.
    const void* ha = nullptr;
    KRAD_RETURN_IF_ERROR(read_unlocked(g, a, bytes, &ha));
    std::vector<char> hw((size_t)n * batch * es), hv(bytes);
    Status st;
    {
      Unlocked u(g);  // the host solve reads eigh_host_ (eigh_mu_) and writes locals only
      st = cpu_backend()->syevd(dt, ha, hw.data(), hv.data(), n, batch, info);
    }
    KRAD_RETURN_IF_ERROR(st);
    KRAD_RETURN_IF_ERROR(h2d(w, hw.data(), hw.size()));
    KRAD_RETURN_IF_ERROR(h2d(v, hv.data(), hv.size()));
    KRAD_CUDA(cudaStreamSynchronize(stream_), "host eigh upload (synchronize)");
    return Status::Ok();
  }
  // This call's device memory, one stream-ordered allocation: the work matrices, then the
  // solver info (batch ints) and finiteness flags (batch bytes), read back together. Not
  // the shared flags_ buffer: other calls run while this one waits unlocked.
  const size_t info_bytes = (size_t)batch * sizeof(int), tail_bytes = info_bytes + (size_t)batch;
  void* work = nullptr;
  KRAD_RETURN_IF_ERROR(dev_alloc(bytes + tail_bytes, &work));
  struct Free {
    CudaBackend* b;
    void* p;
    ~Free() { b->dev_free(p); }  // stream-ordered; runs with the lock held (Guard outlives it)
  } free_work{this, work};
  char* wk = static_cast<char*>(work);
  int* dinfo = reinterpret_cast<int*>(wk + bytes);  // bytes is a multiple of 4
  uint8_t* dflags = reinterpret_cast<uint8_t*>(wk + bytes + info_bytes);
  // work = A with non-finite items replaced by the identity; info = 0.
  auto prepare = [&]() -> Status {
    KRAD_CUDA(cudaMemcpyAsync(work, a, bytes, cudaMemcpyDeviceToDevice, stream_), "eigh input copy");
    KRAD_CUDA(kk::eigh_input(dt, work, n, batch, dflags, stream_), "eigh_input kernel");
    KRAD_CUDA(cudaMemsetAsync(dinfo, 0, info_bytes, stream_), "info reset");
    return Status::Ok();
  };
  KRAD_CUDA(kk::all_finite(dt, a, batch, (int64_t)nn, dflags, stream_), "all_finite kernel");
  KRAD_RETURN_IF_ERROR(prepare());

  std::vector<int> hinfo(batch, 0);
  std::vector<uint8_t> finite(batch, 1);
  // info and flags back to the host (waiting unlocked).
  auto read_back = [&]() -> Status {
    const void* h = nullptr;
    KRAD_RETURN_IF_ERROR(read_unlocked(g, dinfo, tail_bytes, &h));
    std::memcpy(hinfo.data(), h, info_bytes);
    std::memcpy(finite.data(), static_cast<const char*>(h) + info_bytes, (size_t)batch);
    return Status::Ok();
  };
  const EighChoice choice = choose_eigh(n, batch, syevj_max_n_);
  bool loop = choice.method == EighMethod::SYEVD;
  if (!loop) {
    Status sj = solve_syevj(dt, wk, w, dinfo, n, batch);
    if (!sj.ok() && !choice.forced && sj.code == Code::CUSOLVER_FAILED) {
      // This cuSOLVER refuses syevjBatched at this size: remember it, loop syevd instead.
      syevj_max_n_ = std::min<int64_t>(syevj_max_n_, n - 1);
      KRAD_RETURN_IF_ERROR(prepare());
      loop = true;
    } else {
      KRAD_RETURN_IF_ERROR(sj);
      KRAD_RETURN_IF_ERROR(read_back());
      std::vector<int64_t> redo;  // Jacobi did not converge: syevd gets a second go
      for (int64_t b = 0; b < batch; ++b)
        if (finite[b] && hinfo[b] != 0) redo.push_back(b);
      // Each from the input again, mirrored like the first time (the solver reads the
      // upper triangle of the row-major item, which need not equal the lower one in A).
      for (int64_t b : redo) {
        char* item = wk + b * nn * es;
        KRAD_CUDA(cudaMemcpyAsync(item, static_cast<const char*>(a) + b * nn * es, nn * es, cudaMemcpyDeviceToDevice,
                                  stream_),
                  "eigh retry copy");
        KRAD_CUDA(kk::mirror_lower(dt, item, n, 1, stream_), "eigh retry mirror kernel");
      }
      KRAD_RETURN_IF_ERROR(solve_syevd(g, dt, wk, w, dinfo, n, redo));
    }
  }
  if (loop) {
    std::vector<int64_t> all(batch);
    for (int64_t b = 0; b < batch; ++b) all[b] = b;
    KRAD_RETURN_IF_ERROR(solve_syevd(g, dt, wk, w, dinfo, n, all));
  }
  KRAD_CUDA(kk::transpose3(dt, work, v, batch, n, n, 1, stream_), "eigenvector transpose kernel");
  KRAD_RETURN_IF_ERROR(read_back());
  for (int64_t b = 0; b < batch; ++b) {
    const int x = hinfo[b];
    (*info)[b] = !finite[b] ? 1 : x < 0 ? 1000 - x : x;  // < 0 would be our bug: report it as failed
    if (!finite[b]) {
      // As on the CPU: NaN eigenvalues (callers such as matpow read w of failed items) and
      // V holding the input item.
      KRAD_CUDA(kk::fill(dt, static_cast<char*>(w) + b * n * es, (size_t)n, NAN, stream_), "fill kernel");
      KRAD_CUDA(cudaMemcpyAsync(static_cast<char*>(v) + b * nn * es, static_cast<const char*>(a) + b * nn * es,
                                nn * es, cudaMemcpyDeviceToDevice, stream_),
                "eigh copy");
    }
  }
  return Status::Ok();
}

}  // namespace

namespace {
std::mutex g_select_mu;
int g_selected = -1;       // cuda_select_device's choice, before creation
CudaBackend* g_instance = nullptr;
bool g_created = false;    // creation attempted (its outcome is final)

// KRADAGRAD_CUDA_DEVICE, else 0 (a malformed value falls back to 0: the loader reports it).
int default_device() {
  const char* e = std::getenv("KRADAGRAD_CUDA_DEVICE");
  if (!e || !*e) return 0;
  char* end = nullptr;
  long v = std::strtol(e, &end, 10);
  return (end && *end == 0 && v >= 0 && v < 1 << 20) ? static_cast<int>(v) : 0;
}
}  // namespace

Status cuda_backend(Backend** out) {
  static std::once_flag once;
  static Status status;
  std::call_once(once, [] {
    int device;
    {
      std::lock_guard<std::mutex> l(g_select_mu);
      device = g_selected >= 0 ? g_selected : default_device();
      g_selected = device;
      g_created = true;
    }
    // Never destroyed: tearing down handles after the CUDA runtime has unloaded at exit
    // can crash; the driver reclaims everything when the process ends.
    auto* b = new CudaBackend(device);
    status = b->init();
    if (status.ok())
      g_instance = b;
    else
      delete b;  // no usable device: nothing of the runtime is held yet (valgrind: definite leak)
  });
  *out = g_instance;
  return status;
}

Status cuda_select_device(int device) {
  if (device < 0) return Status::Error(Code::INVALID_ARGUMENT, "CUDA device index " + std::to_string(device) + " is negative");
  std::lock_guard<std::mutex> l(g_select_mu);
  if (!g_created) {
    g_selected = device;
    return Status::Ok();
  }
  if (g_selected == device) return Status::Ok();
  return Status::Error(Code::INVALID_ARGUMENT,
                       "the CUDA backend of this process already uses device " + std::to_string(g_selected) +
                           " (it is created on first use) and cannot move to device " + std::to_string(device) +
                           ": choose the device before any CUDA use (initNccl first), or set KRADAGRAD_CUDA_DEVICE " +
                           "or CUDA_VISIBLE_DEVICES per rank");
}

int cuda_device() {
  std::lock_guard<std::mutex> l(g_select_mu);
  return g_selected >= 0 ? g_selected : default_device();
}

Status cuda_with_stream(const std::function<Status(void* stream, int device)>& f) {
  Backend* b = nullptr;
  Status s = cuda_backend(&b);
  if (!s.ok()) return s;
  return static_cast<CudaBackend*>(b)->with_stream(f);
}

}  // namespace krad
