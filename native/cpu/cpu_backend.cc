#include "cpu_backend.h"

#include <cblas.h>
#include <lapacke.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>

#include "kernels.h"
#include "parallel.h"
#include "profile.h"

namespace krad {
namespace cpu {
std::atomic<bool> g_profiling{false};
ProfCounters g_prof;
void profile_reset() {
  for (int i = 0; i < static_cast<int>(Prof::COUNT_); ++i) {
    g_prof.ns[i].store(0, std::memory_order_relaxed);
    g_prof.calls[i].store(0, std::memory_order_relaxed);
  }
}
}  // namespace cpu

namespace {
using cpu::kChunk;
using cpu::parallel_for;
using cpu::Prof;
using cpu::ProfScope;

// ---- work split -----------------------------------------------------------------------
// Elements [b, e) of span `span`. Spans are cut into pieces of kChunk elements from their
// first element (reductions rely on it: a piece is one fixed chunk), and consecutive
// pieces are grouped into work items of at least kChunk elements, so many small tensors
// make few items.
struct Piece {
  size_t span;
  int64_t b, e;
};
struct Split {
  std::vector<Piece> pieces;
  std::vector<size_t> item;  // first piece of each item, then pieces.size()
};

template <typename CountOf>
Split split(size_t nspans, CountOf count) {
  Split s;
  int64_t acc = 0;
  for (size_t j = 0; j < nspans; ++j) {
    const int64_t n = count(j);
    for (int64_t b = 0; b < n; b += kChunk) {
      if (acc == 0) s.item.push_back(s.pieces.size());
      const int64_t e = std::min(n, b + kChunk);
      s.pieces.push_back({j, b, e});
      acc += e - b;
      if (acc >= kChunk) acc = 0;
    }
  }
  s.item.push_back(s.pieces.size());
  return s;
}

// Calls with less work than this many elements run on the calling thread: waking a
// worker costs tens of microseconds, and on a shared machine a worker that is descheduled
// while it holds a piece stalls the whole call (measured on the ResNet-32 shapes, whose
// stages are a few hundred thousand elements).
constexpr int64_t kParallelMin = 64 * kChunk;

// parallel_for over `items` when `work` (elements) is worth it, else a loop here.
template <typename F>
void maybe_parallel(int64_t work, int64_t items, F&& f) {
  if (work < kParallelMin) {
    for (int64_t i = 0; i < items; ++i) f(i);
    return;
  }
  parallel_for(items, f);
}

// Runs f(piece index) for every piece, items in parallel when there is enough work.
template <typename F>
void run(const Split& s, F&& f) {
  const int64_t items = static_cast<int64_t>(s.item.size()) - 1;
  int64_t total = 0;
  for (const Piece& p : s.pieces) total += p.e - p.b;
  if (total < kParallelMin) {
    for (size_t p = 0; p < s.pieces.size(); ++p) f(p);
    return;
  }
  parallel_for(items, [&](int64_t it) {
    for (size_t p = s.item[it]; p < s.item[it + 1]; ++p) f(p);
  });
}

// Outputs larger than the last-level cache go out with non-temporal stores: they would
// only evict what the next op reads, and a regular store first reads the line it writes.
bool stream_for(double bytes) {
  static const double l3 = [] {
    long v = -1;
#ifdef _SC_LEVEL3_CACHE_SIZE
    v = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
    return v > 0 ? static_cast<double>(v) : 32.0 * (1 << 20);
  }();
  return bytes > l3;
}

// ---- blocked square-matrix helpers ------------------------------------------------------
constexpr int64_t kBlk = 32;

// Row-major n x n: the strict upper triangle takes the lower's values (c[i][j] = c[j][i], j > i).
template <typename T>
void mirror_lower(T* c, int64_t n) {
  for (int64_t ib = 0; ib < n; ib += kBlk)
    for (int64_t jb = ib; jb < n; jb += kBlk) {
      const int64_t ie = std::min(n, ib + kBlk), je = std::min(n, jb + kBlk);
      for (int64_t i = ib; i < ie; ++i)
        for (int64_t j = std::max(jb, i + 1); j < je; ++j) c[i * n + j] = c[j * n + i];
    }
}

// In-place transpose of a row-major n x n matrix.
template <typename T>
void transpose_sq(T* v, int64_t n) {
  for (int64_t ib = 0; ib < n; ib += kBlk)
    for (int64_t jb = ib; jb < n; jb += kBlk) {
      const int64_t ie = std::min(n, ib + kBlk), je = std::min(n, jb + kBlk);
      for (int64_t i = ib; i < ie; ++i)
        for (int64_t j = std::max(jb, i + 1); j < je; ++j) std::swap(v[i * n + j], v[j * n + i]);
    }
}

// ---- products ---------------------------------------------------------------------------
template <typename T>
void gemm_one(CBLAS_TRANSPOSE tA, CBLAS_TRANSPOSE tB, int64_t m, int64_t n, int64_t k, double alpha, const T* a,
              int64_t lda, const T* b, int64_t ldb, double beta, T* c, int64_t ldc) {
  if constexpr (sizeof(T) == 4)
    cblas_sgemm(CblasRowMajor, tA, tB, (int)m, (int)n, (int)k, (float)alpha, a, (int)lda, b, (int)ldb, (float)beta, c,
                (int)ldc);
  else
    cblas_dgemm(CblasRowMajor, tA, tB, (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

// Batches of products too small for OpenBLAS's threads to pay (per-item work under this
// many flops) run item-parallel, each item single-threaded on one of our threads.
constexpr double kSmallGemmFlops = 2.0 * 256 * 256 * 256;
// ... and only when the whole batch is worth waking threads for.
constexpr double kBatchMinFlops = 2.0 * 128 * 128 * 128 * 8;

template <typename T>
void gemm_t(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const T* a, int64_t lda, int64_t sa,
            const T* b, int64_t ldb, int64_t sb, double beta, T* c, int64_t ldc, int64_t sc, int64_t batch) {
  const CBLAS_TRANSPOSE tA = ta ? CblasTrans : CblasNoTrans, tB = tb ? CblasTrans : CblasNoTrans;
  auto item = [&](int64_t i) { gemm_one<T>(tA, tB, m, n, k, alpha, a + i * sa, lda, b + i * sb, ldb, beta, c + i * sc, ldc); };
  if (batch >= 2 && cpu::threads() > 1 && 2.0 * m * n * k < kSmallGemmFlops && 2.0 * m * n * k * batch >= kBatchMinFlops) {
    cpu::SingleThreadedBlas one(false);  // gemm's results do not depend on the count
    if (one.active()) {
      parallel_for(batch, item);
      return;
    }
  }
  for (int64_t i = 0; i < batch; ++i) item(i);
}

// C = alpha op(A) op(A)^T per item: BLAS syrk fills the lower triangle, mirrored onto the upper.
template <typename T>
void syrk_t(bool trans, int64_t n, int64_t k, double alpha, const T* a, int64_t lda, int64_t sa, T* c,
            int64_t batch) {
  const CBLAS_TRANSPOSE t = trans ? CblasTrans : CblasNoTrans;
  auto item = [&](int64_t b) {
    T* cb = c + b * n * n;
    if constexpr (sizeof(T) == 4)
      cblas_ssyrk(CblasRowMajor, CblasLower, t, (int)n, (int)k, (float)alpha, a + b * sa, (int)lda, 0.0f, cb, (int)n);
    else
      cblas_dsyrk(CblasRowMajor, CblasLower, t, (int)n, (int)k, alpha, a + b * sa, (int)lda, 0.0, cb, (int)n);
    mirror_lower(cb, n);
  };
  if (batch >= 2 && cpu::threads() > 1 && 1.0 * n * n * k < kSmallGemmFlops && 1.0 * n * n * k * batch >= kBatchMinFlops) {
    cpu::SingleThreadedBlas one(false);  // syrk's results do not depend on the count
    if (one.active()) {
      parallel_for(batch, item);
      return;
    }
  }
  for (int64_t b = 0; b < batch; ++b) item(b);
}

template <typename T>
void transpose3_t(const T* src, T* dst, int64_t batch, int64_t p, int64_t q, int64_t r) {
  const int64_t item = p * q * r;
  // Rows of r elements; items x p rows per work unit.
  maybe_parallel(batch * item, batch, [&](int64_t b) {
    const T* s = src + b * item;
    T* d = dst + b * item;
    if (r == 1) {
      for (int64_t i = 0; i < p; ++i)
        for (int64_t j = 0; j < q; ++j) d[j * p + i] = s[i * q + j];
      return;
    }
    if (r < 16) {  // short rows: a loop beats a memcpy call per row
      for (int64_t i = 0; i < p; ++i)
        for (int64_t j = 0; j < q; ++j) {
          const T* a = s + (i * q + j) * r;
          T* c = d + (j * p + i) * r;
          for (int64_t k = 0; k < r; ++k) c[k] = a[k];
        }
      return;
    }
    for (int64_t i = 0; i < p; ++i)
      for (int64_t j = 0; j < q; ++j) std::memcpy(d + (j * p + i) * r, s + (i * q + j) * r, sizeof(T) * r);
  });
}

// Column-major LAPACK on a row-major symmetric matrix sees A^T = A. We mirror the
// row-major lower triangle (the one our eigh reads) onto the upper, then let LAPACK read
// its column-major lower triangle ('L'), the path torch.linalg.eigh and numpy take by
// default: on ill-conditioned float32 statistics the 'U' path loses the small
// eigenvalues to rounding that 'L' keeps (the golden shampoo_ill_conditioned_fp32 case:
// first-step error 3.8e-6 with 'U', 3e-8 with 'L'). Eigenvectors come back as columns in
// column-major, i.e. rows in row-major; a transpose puts them in columns.
template <typename T>
int syevd_one(T* v, T* w, int64_t n) {
  if (n == 1) {
    w[0] = v[0];
    v[0] = 1;
    return std::isfinite(w[0]) ? 0 : 1;
  }
  mirror_lower(v, n);
  lapack_int info;
  if constexpr (sizeof(T) == 4)
    info = LAPACKE_ssyevd(LAPACK_COL_MAJOR, 'V', 'L', (lapack_int)n, v, (lapack_int)n, w);
  else
    info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', (lapack_int)n, v, (lapack_int)n, w);
  transpose_sq(v, n);
  return info < 0 ? 1000 - info : static_cast<int>(info);  // < 0 would be our bug: report it as failed
}

template <typename T>
bool finite_block(const T* x, int64_t count) {
  return cpu::kernels_for<T>().finite(x, count);
}

template <typename T>
const cpu::KernelFns<T>& K() {
  return cpu::kernels_for<T>();
}

// Runs f(j) for j in [0, n), largest count first (each j is one sequential reduction, so
// the big ones start early and the threads finish together).
template <typename Count, typename F>
void by_size(size_t n, Count count, F&& f) {
  std::vector<size_t> order(n);
  for (size_t j = 0; j < n; ++j) order[j] = j;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return count(a) > count(b); });
  parallel_for(static_cast<int64_t>(n), [&](int64_t i) { f(order[i]); });
}

// Sum of x_i y_i per item, each in index order on one thread (kernels.h).
template <typename T>
void dot_t(const T* x, const T* y, int64_t batch, int64_t count, std::vector<double>* out) {
  out->assign(batch, 0.0);
  if (batch * count < kParallelMin) {
    for (int64_t b = 0; b < batch; ++b) (*out)[b] = K<T>().dot(x + b * count, y + b * count, count);
    return;
  }
  parallel_for(batch, [&](int64_t b) { (*out)[b] = K<T>().dot(x + b * count, y + b * count, count); });
}

// Host blocks, with large freed ones kept for reuse. A step allocates the same
// temporaries every time (matpow's scratch is 4 x batch x n^2: 192 MB for the MLP set's
// factors), and glibc returns blocks over 32 MB to the system on free, so every reuse
// would fault its pages in again, zeroed by the kernel: measured ~98,000 page faults and
// ~1 s of system time per root refresh step of the MLP set before this cache. Blocks of
// at least kMinCached bytes are kept on free, up to KRADAGRAD_CPU_CACHE_MB (default 512)
// in all, and handed out again for an allocation of exactly the same rounded size.
class BlockCache {
 public:
  BlockCache() {
    if (const char* e = std::getenv("KRADAGRAD_CPU_CACHE_MB")) {
      char* end = nullptr;
      const long v = std::strtol(e, &end, 10);
      if (end != e && *end == '\0' && v >= 0) limit_ = static_cast<size_t>(v) << 20;
    }
  }
  void* take(size_t bytes) {
    const size_t size = round(bytes);
    if (size >= kMinCached) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(size);
      if (it != free_.end()) {
        char* p = it->second;
        free_.erase(it);
        cached_ -= size;
        return p + kHeader;
      }
    }
    char* p = nullptr;
    if (size >= kHuge) {
      // 2 MB aligned and advised as huge pages (Linux THP in its default 'madvise' mode):
      // elementwise stages stream 5-7 arrays at once, and with 4 kB pages the TLB misses
      // cost a third of their time (Adam over 12.6M parameters, 1 thread: 11.6 -> 7.7 ms).
      void* q = nullptr;
      if (posix_memalign(&q, kHugePage, size + kHeader) != 0) return nullptr;
      p = static_cast<char*>(q);
#ifdef MADV_HUGEPAGE
      madvise(p, (size + kHeader) / kHugePage * kHugePage, MADV_HUGEPAGE);
#endif
    } else {
      p = static_cast<char*>(std::aligned_alloc(64, size + kHeader));
    }
    if (!p) return nullptr;
    std::memcpy(p, &size, sizeof size);
    return p + kHeader;
  }
  void give(void* ptr) {
    if (!ptr) return;
    char* p = static_cast<char*>(ptr) - kHeader;
    size_t size;
    std::memcpy(&size, p, sizeof size);
    if (size >= kMinCached) {
      std::lock_guard<std::mutex> lock(mu_);
      if (cached_ + size <= limit_) {
        free_.emplace(size, p);
        cached_ += size;
        return;
      }
    }
    std::free(p);
  }

 private:
  static constexpr size_t kHeader = 64;  // keeps the block 64-byte aligned; holds its size
  static constexpr size_t kMinCached = size_t(1) << 20;
  static constexpr size_t kHugePage = size_t(2) << 20;
  static constexpr size_t kHuge = size_t(4) << 20;  // blocks from here on get huge pages
  static size_t round(size_t bytes) { return std::max<size_t>(64, (bytes + 4095) / 4096 * 4096); }
  std::mutex mu_;
  std::multimap<size_t, char*> free_;
  size_t cached_ = 0;
  size_t limit_ = size_t(512) << 20;
};

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  std::string device() const override {
    const char* cfg = openblas_get_config();
    const int t = cpu::threads();
    return std::string("CPU (OpenBLAS ") + (cfg ? cfg : "?") + ", " + std::to_string(t) + " thread" +
           (t == 1 ? "" : "s") + ", " + cpu::kernels().name + " kernels)";
  }

  Status allocate(size_t bytes, void** ptr) override {
    ProfScope ps(Prof::ALLOC);
    void* p = blocks_.take(bytes);
    if (!p) return Status::Error(Code::OUT_OF_MEMORY, "host allocation of " + std::to_string(bytes) + " bytes failed");
    *ptr = p;
    return Status::Ok();
  }
  void release(void* ptr) override {
    ProfScope ps(Prof::ALLOC);
    blocks_.give(ptr);
  }
  Status upload(void* dst, const void* src, size_t bytes) override { return copy(dst, src, bytes); }
  Status download(void* dst, const void* src, size_t bytes) override { return copy(dst, src, bytes); }
  Status copy(void* dst, const void* src, size_t bytes) override {
    if (dst == src || !bytes) return Status::Ok();
    ProfScope ps(Prof::COPY);
    const char* s = static_cast<const char*>(src);
    char* d = static_cast<char*>(dst);
    if ((d < s + bytes && s < d + bytes) || bytes < kParallelMin * sizeof(float)) {  // overlapping or small
      std::memmove(dst, src, bytes);
      return Status::Ok();
    }
    const bool stream = stream_for(2.0 * bytes);
    const int64_t unit = kChunk * sizeof(float);
    const int64_t n = static_cast<int64_t>((bytes + unit - 1) / unit);
    parallel_for(n, [&](int64_t i) {
      const size_t b = static_cast<size_t>(i * unit), e = std::min(bytes, b + unit);
      if (stream && b % 16 == 0 && (e - b) % 4 == 0)
        K<float>().copy(reinterpret_cast<const float*>(s + b), reinterpret_cast<float*>(d + b), (e - b) / 4, true);
      else
        std::memcpy(d + b, s + b, e - b);
    });
    return Status::Ok();
  }
  Status fill(DType dt, void* dst, size_t count, double value) override {
    ProfScope ps(Prof::COPY);
    const int64_t n = static_cast<int64_t>(count);
    const int64_t pieces = (n + kChunk - 1) / kChunk;
    maybe_parallel(n, pieces, [&](int64_t i) {
      const int64_t b = i * kChunk, e = std::min(n, b + kChunk);
      if (dt == DType::F32)
        std::fill(static_cast<float*>(dst) + b, static_cast<float*>(dst) + e, static_cast<float>(value));
      else
        std::fill(static_cast<double*>(dst) + b, static_cast<double*>(dst) + e, value);
    });
    return Status::Ok();
  }
  Status cast(DType sdt, const void* src, DType ddt, void* dst, size_t count) override {
    if (sdt == ddt) return copy(dst, src, count * dtype_size(sdt));
    ProfScope ps(Prof::COPY);
    const int64_t n = static_cast<int64_t>(count);
    const int64_t pieces = (n + kChunk - 1) / kChunk;
    maybe_parallel(n, pieces, [&](int64_t i) {
      const int64_t b = i * kChunk, e = std::min(n, b + kChunk);
      if (sdt == DType::F32)
        cpu::kernels().cast_f32_f64(static_cast<const float*>(src) + b, static_cast<double*>(dst) + b, e - b);
      else
        cpu::kernels().cast_f64_f32(static_cast<const double*>(src) + b, static_cast<float*>(dst) + b, e - b);
    });
    return Status::Ok();
  }
  Status synchronize() override { return Status::Ok(); }

  Status gemm(DType dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const void* a, int64_t lda,
              int64_t sa, const void* b, int64_t ldb, int64_t sb, double beta, void* c, int64_t ldc, int64_t sc,
              int64_t batch) override {
    ProfScope ps(Prof::GEMM);
    if (dt == DType::F32)
      gemm_t<float>(ta, tb, m, n, k, alpha, (const float*)a, lda, sa, (const float*)b, ldb, sb, beta, (float*)c, ldc,
                    sc, batch);
    else
      gemm_t<double>(ta, tb, m, n, k, alpha, (const double*)a, lda, sa, (const double*)b, ldb, sb, beta, (double*)c,
                     ldc, sc, batch);
    return Status::Ok();
  }

  Status transpose3(DType dt, const void* src, void* dst, int64_t batch, int64_t p, int64_t q, int64_t r) override {
    ProfScope ps(Prof::COPY);
    if (dt == DType::F32)
      transpose3_t((const float*)src, (float*)dst, batch, p, q, r);
    else
      transpose3_t((const double*)src, (double*)dst, batch, p, q, r);
    return Status::Ok();
  }

  Status syrk(DType dt, bool trans, int64_t n, int64_t k, double alpha, const void* a, int64_t lda, int64_t sa,
              double beta, void* c, int64_t batch) override {
    if (n <= 0 || batch <= 0) return Status::Ok();
    const size_t count = static_cast<size_t>(n * n * batch);
    // beta != 0: the symmetric product into a buffer, then C = S + beta C (BLAS syrk's own
    // beta would update one triangle of a C that may be unsymmetric). The buffer comes from
    // the block cache (Shampoo's S += H on the MLP set: 48 MB a call, which a fresh zeroed
    // vector spent ~70 ms a step faulting in and clearing).
    void* buf = nullptr;
    if (beta != 0.0) KRAD_RETURN_IF_ERROR(allocate(count * dtype_size(dt), &buf));
    struct Release {
      CpuBackend* b;
      void* p;
      ~Release() {
        if (p) b->release(p);
      }
    } release_buf{this, buf};
    void* out = beta != 0.0 ? buf : c;
    if (k == 0) {
      KRAD_RETURN_IF_ERROR(fill(dt, out, count, 0.0));
    } else {
      ProfScope ps(Prof::SYRK);
      if (dt == DType::F32)
        syrk_t(trans, n, k, alpha, (const float*)a, lda, sa, (float*)out, batch);
      else
        syrk_t(trans, n, k, alpha, (const double*)a, lda, sa, (double*)out, batch);
    }
    if (beta == 0.0) return Status::Ok();
    return axpby(dt, 1, (int64_t)count, nullptr, 1.0, out, nullptr, beta, c);
  }

  // Several matrices are solved at once, one per thread with single-threaded LAPACK:
  // syevd scales poorly with threads (n = 1024 float32 on 2 cores: 1.4x) and items are
  // independent. A batch of one, or a tiny one (batch n^3 < 1e6), runs with threads() threads. An item's result depends on
  // which of the two it took (see parallel.h), never on timing or on which thread ran it.
  Status syevd(DType dt, const void* a, void* w, void* v, int64_t n, int64_t batch, std::vector<int>* info) override {
    ProfScope ps(Prof::EIGH);
    info->assign(batch, 0);
    const size_t es = dtype_size(dt), nn = static_cast<size_t>(n * n);
    KRAD_RETURN_IF_ERROR(copy(v, a, nn * batch * es));
    auto item = [&](int64_t b) {
      // A skipped (non-finite) item gets NaN eigenvalues: callers such as matpow still read
      // w of failed items, which must not be uninitialised memory.
      if (dt == DType::F32) {
        float* vb = (float*)v + b * nn;
        float* wb = (float*)w + b * n;
        if (finite_block(vb, nn)) {
          (*info)[b] = syevd_one(vb, wb, n);
        } else {
          (*info)[b] = 1;
          std::fill_n(wb, n, NAN);
        }
      } else {
        double* vb = (double*)v + b * nn;
        double* wb = (double*)w + b * n;
        if (finite_block(vb, nn)) {
          (*info)[b] = syevd_one(vb, wb, n);
        } else {
          (*info)[b] = 1;
          std::fill_n(wb, n, NAN);
        }
      }
    };
    if (batch >= 2 && cpu::threads() > 1 && 1.0 * n * n * n * batch >= 1e6) {  // not for tiny batches
      cpu::SingleThreadedBlas one;
      parallel_for(batch, item);
    } else {
      cpu::ThreadedLapack lapack;
      for (int64_t b = 0; b < batch; ++b) item(b);
    }
    return Status::Ok();
  }

  Status eig_scale(DType dt, const void* v, const void* w, void* out, int64_t n, int64_t batch, double p,
                   double floor) override {
    ProfScope ps(Prof::ELEMENTWISE);
    if (dt == DType::F32)
      eig_scale_t((const float*)v, (const float*)w, (float*)out, n, batch, p, floor);
    else
      eig_scale_t((const double*)v, (const double*)w, (double*)out, n, batch, p, floor);
    return Status::Ok();
  }

  Status axpby(DType dt, int64_t batch, int64_t count, const double* alphas, double alpha, const void* x,
               const double* betas, double beta, void* y) override {
    ProfScope ps(Prof::ELEMENTWISE);
    if (dt == DType::F32)
      axpby_t(batch, count, alphas, alpha, (const float*)x, betas, beta, (float*)y);
    else
      axpby_t(batch, count, alphas, alpha, (const double*)x, betas, beta, (double*)y);
    return Status::Ok();
  }

  Status mul_acc(DType dt, size_t count, double a, double b, const void* x, const void* y, void* acc) override {
    ProfScope ps(Prof::ELEMENTWISE);
    return multi_elementwise_impl(Multi::MUL_ACC, {{dt, x, y, acc, static_cast<int64_t>(count)}}, a, b);
  }

  Status div_sqrt(DType dt, size_t count, const void* x, const void* acc, double scale, double eps,
                  void* out) override {
    ProfScope ps(Prof::ELEMENTWISE);
    return multi_elementwise_impl(Multi::DIV_SQRT, {{dt, x, acc, out, static_cast<int64_t>(count)}}, scale, eps);
  }

  Status add_identity(DType dt, void* a, int64_t n, int64_t batch, const double* alphas, double alpha) override {
    ProfScope ps(Prof::ELEMENTWISE);
    for (int64_t b = 0; b < batch; ++b) {
      const double al = alphas ? alphas[b] : alpha;
      for (int64_t i = 0; i < n; ++i) {
        if (dt == DType::F32)
          ((float*)a)[b * n * n + i * n + i] += (float)al;
        else
          ((double*)a)[b * n * n + i * n + i] += al;
      }
    }
    return Status::Ok();
  }

  Status symmetrize(DType dt, void* a, int64_t n, int64_t batch) override {
    ProfScope ps(Prof::ELEMENTWISE);
    if (dt == DType::F32)
      symmetrize_t((float*)a, n, batch);
    else
      symmetrize_t((double*)a, n, batch);
    return Status::Ok();
  }

  Status dot(DType dt, const void* x, const void* y, int64_t batch, int64_t count, std::vector<double>* out) override {
    ProfScope ps(Prof::REDUCTION);
    if (dt == DType::F32)
      dot_t((const float*)x, (const float*)y, batch, count, out);
    else
      dot_t((const double*)x, (const double*)y, batch, count, out);
    return Status::Ok();
  }

  Status trace(DType dt, const void* a, int64_t n, int64_t batch, std::vector<double>* out) override {
    ProfScope ps(Prof::REDUCTION);
    out->assign(batch, 0.0);
    for (int64_t b = 0; b < batch; ++b) {
      double s = 0;
      for (int64_t i = 0; i < n; ++i)
        s += dt == DType::F32 ? (double)((const float*)a)[b * n * n + i * (n + 1)]
                              : ((const double*)a)[b * n * n + i * (n + 1)];
      (*out)[b] = s;
    }
    return Status::Ok();
  }

  Status all_finite(DType dt, const void* x, int64_t batch, int64_t count, std::vector<uint8_t>* out) override {
    ProfScope ps(Prof::REDUCTION);
    std::vector<DType> dts(batch, dt);
    std::vector<const void*> ptrs(batch);
    std::vector<int64_t> counts(batch, count);
    for (int64_t b = 0; b < batch; ++b) ptrs[b] = static_cast<const char*>(x) + b * count * dtype_size(dt);
    return finite_many(dts, ptrs, counts, out);
  }

  Status all_finite_many(const std::vector<DType>& dtypes, const std::vector<const void*>& ptrs,
                         const std::vector<int64_t>& counts, std::vector<uint8_t>* finite) override {
    ProfScope ps(Prof::REDUCTION);
    return finite_many(dtypes, ptrs, counts, finite);
  }

  Status scale_by_norm_ratio(DType dt, void* d, const void* a, int64_t batch, int64_t count, double eps) override {
    ProfScope ps(Prof::ELEMENTWISE);
    std::vector<Span> spans(batch);
    const size_t item = static_cast<size_t>(count) * dtype_size(dt);
    for (int64_t b = 0; b < batch; ++b)
      spans[b] = {dt, static_cast<const char*>(a) + b * item, nullptr, static_cast<char*>(d) + b * item, count};
    return norm_ratio_impl(spans, eps);
  }

  Status multi_norm_ratio(const std::vector<Span>& spans, double eps) override {
    ProfScope ps(Prof::ELEMENTWISE);
    return norm_ratio_impl(spans, eps);
  }

  Status multi_elementwise(Multi op, const std::vector<Span>& spans, double a, double b) override {
    ProfScope ps(op == Multi::COPY ? Prof::COPY : Prof::ELEMENTWISE);
    return multi_elementwise_impl(op, spans, a, b);
  }

  Status axpby_out_many(const std::vector<Axpby3>& spans, double a, double b) override {
    ProfScope ps(Prof::ELEMENTWISE);
    Split s = split(spans.size(), [&](size_t j) { return spans[j].count; });
    const bool stream = stream_for(3.0 * bytes_of(spans));
    run(s, [&](size_t p) {
      const Piece& q = s.pieces[p];
      const Axpby3& x = spans[q.span];
      if (x.dt == DType::F32)
        K<float>().axpby3((const float*)x.x + q.b, (const float*)x.y + q.b, (float*)x.z + q.b, q.e - q.b, (float)a,
                          (float)b, stream);
      else
        K<double>().axpby3((const double*)x.x + q.b, (const double*)x.y + q.b, (double*)x.z + q.b, q.e - q.b, a, b,
                           stream);
    });
    return Status::Ok();
  }

  Status update_many(const std::vector<UpdateSpan>& spans, const UpdateParams& p,
                     std::vector<uint8_t>* finite) override {
    ProfScope ps(Prof::ELEMENTWISE);
    Split s = split(spans.size(), [&](size_t j) { return spans[j].count; });
    std::vector<uint8_t> ok(s.pieces.size(), 1);
    const bool stream = stream_for((p.mu > 0 ? 5.0 : 3.0) * bytes_of(spans));
    run(s, [&](size_t i) {
      const Piece& q = s.pieces[i];
      const UpdateSpan& x = spans[q.span];
      ok[i] = x.dt == DType::F32 ? K<float>().update(x, q.b, q.e, p, stream) : K<double>().update(x, q.b, q.e, p, stream);
    });
    finite->assign(spans.size(), 1);
    for (size_t i = 0; i < ok.size(); ++i)
      if (!ok[i]) (*finite)[s.pieces[i].span] = 0;
    return Status::Ok();
  }

  Status adam_many(const std::vector<AdamSpan>& spans, const AdamParams& p, std::vector<uint8_t>* finite) override {
    ProfScope ps(Prof::ELEMENTWISE);
    Split s = split(spans.size(), [&](size_t j) { return spans[j].count; });
    std::vector<uint8_t> ok(s.pieces.size(), 1);
    const bool stream = stream_for(7.0 * bytes_of(spans));
    run(s, [&](size_t i) {
      const Piece& q = s.pieces[i];
      const AdamSpan& x = spans[q.span];
      ok[i] = x.dt == DType::F32 ? K<float>().adam(x, q.b, q.e, p, stream) : K<double>().adam(x, q.b, q.e, p, stream);
    });
    finite->assign(spans.size(), 1);
    for (size_t i = 0; i < ok.size(); ++i)
      if (!ok[i]) (*finite)[s.pieces[i].span] = 0;
    return Status::Ok();
  }

  Status graft_many(Graft kind, const std::vector<GraftSpan>& spans, const GraftParams& p) override {
    ProfScope ps(Prof::ELEMENTWISE);
    Split s = split(spans.size(), [&](size_t j) { return spans[j].count; });
    const bool stream = stream_for((kind == Graft::ADAM ? 6.0 : 4.0) * bytes_of(spans));
    run(s, [&](size_t i) {
      const Piece& q = s.pieces[i];
      const GraftSpan& x = spans[q.span];
      if (x.dt == DType::F32)
        K<float>().graft(kind, x, q.b, q.e, p, stream);
      else
        K<double>().graft(kind, x, q.b, q.e, p, stream);
    });
    return Status::Ok();
  }

  Status boxes(DType dt, void* src, const std::vector<int64_t>& sd, const std::vector<int64_t>& bd,
               const std::vector<int64_t>& offsets, void* dst, bool scatter) override {
    ProfScope ps(Prof::COPY);
    BoxEntry e{src, sd, &offsets, dst};
    return boxes_impl(dt, bd, {e}, scatter);
  }

  Status boxes_many(DType dt, const std::vector<int64_t>& box_dims, const std::vector<BoxEntry>& entries,
                    bool scatter) override {
    ProfScope ps(Prof::COPY);
    return boxes_impl(dt, box_dims, entries, scatter);
  }

 private:
  BlockCache blocks_;

  template <typename S>
  static double bytes_of(const std::vector<S>& spans) {
    double b = 0;
    for (const S& s : spans) b += static_cast<double>(s.count) * dtype_size(s.dt);
    return b;
  }

  Status finite_many(const std::vector<DType>& dtypes, const std::vector<const void*>& ptrs,
                     const std::vector<int64_t>& counts, std::vector<uint8_t>* finite) {
    Split s = split(ptrs.size(), [&](size_t j) { return counts[j]; });
    std::vector<uint8_t> ok(s.pieces.size(), 1);
    run(s, [&](size_t i) {
      const Piece& q = s.pieces[i];
      ok[i] = dtypes[q.span] == DType::F32 ? K<float>().finite(static_cast<const float*>(ptrs[q.span]) + q.b, q.e - q.b)
                                           : K<double>().finite(static_cast<const double*>(ptrs[q.span]) + q.b, q.e - q.b);
    });
    finite->assign(ptrs.size(), 1);
    for (size_t i = 0; i < ok.size(); ++i)
      if (!ok[i]) (*finite)[s.pieces[i].span] = 0;
    return Status::Ok();
  }

  // z *= ||x|| / (||z|| + eps) per span: both sums of squares in one pass (each in index
  // order on one thread), then z = f z as axpby(0, f) does it.
  Status norm_ratio_impl(const std::vector<Span>& spans, double eps) {
    std::vector<double> na(spans.size(), 0.0), nd(spans.size(), 0.0);
    int64_t total = 0;
    for (const Span& x : spans) total += x.count;
    auto sums = [&](size_t j) {
      const Span& x = spans[j];
      if (x.dt == DType::F32)
        K<float>().sumsq2((const float*)x.x, (const float*)x.z, x.count, &na[j], &nd[j]);
      else
        K<double>().sumsq2((const double*)x.x, (const double*)x.z, x.count, &na[j], &nd[j]);
    };
    if (total < kParallelMin)
      for (size_t j = 0; j < spans.size(); ++j) sums(j);
    else
      by_size(spans.size(), [&](size_t j) { return spans[j].count; }, sums);
    std::vector<double> f(spans.size());
    for (size_t j = 0; j < spans.size(); ++j) f[j] = std::sqrt(na[j]) / (std::sqrt(nd[j]) + eps);
    Split s = split(spans.size(), [&](size_t j) { return spans[j].count; });
    run(s, [&](size_t i) {
      const Piece& q = s.pieces[i];
      const Span& x = spans[q.span];
      if (x.dt == DType::F32)
        K<float>().axpby(nullptr, (float*)x.z + q.b, q.e - q.b, 0.0f, static_cast<float>(f[q.span]));
      else
        K<double>().axpby(nullptr, (double*)x.z + q.b, q.e - q.b, 0.0, f[q.span]);
    });
    return Status::Ok();
  }

  Status multi_elementwise_impl(Multi op, const std::vector<Span>& spans, double a, double b) {
    Split s = split(spans.size(), [&](size_t j) { return spans[j].count; });
    const double bytes = bytes_of(spans);
    const bool stream = (op == Multi::DIV_SQRT || op == Multi::COPY) && stream_for(3.0 * bytes);
    run(s, [&](size_t i) {
      const Piece& q = s.pieces[i];
      const Span& x = spans[q.span];
      const int64_t n = q.e - q.b;
      if (x.dt == DType::F32) {
        const float* xs = (const float*)x.x + q.b;
        const float* ys = (const float*)x.y + q.b;
        float* zs = (float*)x.z + q.b;
        switch (op) {
          case Multi::AXPBY: K<float>().axpby(xs, zs, n, (float)a, (float)b); break;
          case Multi::MUL_ACC: K<float>().mul_acc(xs, ys, zs, n, (float)a, (float)b); break;
          case Multi::DIV_SQRT: K<float>().div_sqrt(xs, ys, zs, n, (float)a, (float)b, stream); break;
          case Multi::COPY:
            if (zs != xs) K<float>().copy(xs, zs, n, stream);
            break;
        }
      } else {
        const double* xs = (const double*)x.x + q.b;
        const double* ys = (const double*)x.y + q.b;
        double* zs = (double*)x.z + q.b;
        switch (op) {
          case Multi::AXPBY: K<double>().axpby(xs, zs, n, a, b); break;
          case Multi::MUL_ACC: K<double>().mul_acc(xs, ys, zs, n, a, b); break;
          case Multi::DIV_SQRT: K<double>().div_sqrt(xs, ys, zs, n, a, b, stream); break;
          case Multi::COPY:
            if (zs != xs) K<double>().copy(xs, zs, n, stream);
            break;
        }
      }
    });
    return Status::Ok();
  }

  // Box gather/scatter. A box's trailing dims that span the whole source extent (offset 0)
  // are contiguous in both layouts, so they merge with the first dim that does not into
  // one run: a whole-tensor block is one memcpy, a [1024, 1024] block of a [4096, 1024]
  // matrix too. Runs are then walked with an odometer over the leading dims (no division
  // per run); every (entry, box, range of runs) is a work unit.
  Status boxes_impl(DType dt, const std::vector<int64_t>& bd, const std::vector<BoxEntry>& entries, bool scatter) {
    const int r = static_cast<int>(bd.size());
    const size_t es = dtype_size(dt);
    int64_t box_numel = 1;
    for (auto d : bd) box_numel *= d;
    if (box_numel == 0) return Status::Ok();
    constexpr int kMaxRank = 16;
    if (r > kMaxRank) return Status::Error(Code::INVALID_ARGUMENT, "boxes: rank above 16");
    struct Unit {
      size_t entry;
      int64_t box;
      int64_t q0, q1;  // runs [q0, q1) of the box
    };
    struct Layout {
      int lead;        // leading dims walked by the odometer (dims [0, lead))
      int64_t run;     // contiguous elements per run
      int64_t runs;    // runs per box
    };
    std::vector<Layout> layouts(entries.size());
    std::vector<Unit> units;
    for (size_t e = 0; e < entries.size(); ++e) {
      const std::vector<int64_t>& sd = entries[e].src_dims;
      const std::vector<int64_t>& offsets = *entries[e].offsets;
      const int64_t nbox = r ? static_cast<int64_t>(offsets.size()) / r : 1;
      // Trailing dims that every box of this entry spans fully.
      int full = 0;
      for (int i = r - 1; i > 0; --i) {
        bool whole = bd[i] == sd[i];
        for (int64_t j = 0; whole && j < nbox; ++j) whole = offsets[j * r + i] == 0;
        if (!whole) break;
        ++full;
      }
      Layout L;
      L.lead = r ? r - 1 - full : 0;
      L.run = 1;
      for (int i = L.lead; i < r; ++i) L.run *= bd[i];
      L.runs = box_numel / L.run;
      layouts[e] = L;
      const int64_t per_unit = std::max<int64_t>(1, kChunk / std::max<int64_t>(1, L.run));
      for (int64_t j = 0; j < nbox; ++j)
        for (int64_t q = 0; q < L.runs; q += per_unit) units.push_back({e, j, q, std::min(L.runs, q + per_unit)});
    }
    auto unit = [&](int64_t ui) {
      const Unit& u = units[ui];
      const BoxEntry& en = entries[u.entry];
      const Layout& L = layouts[u.entry];
      const std::vector<int64_t>& sd = en.src_dims;
      const int64_t* off = r ? en.offsets->data() + u.box * r : nullptr;
      int64_t stride[kMaxRank], idx[kMaxRank];
      if (r) stride[r - 1] = 1;
      for (int i = r - 2; i >= 0; --i) stride[i] = stride[i + 1] * sd[i + 1];
      // Source offset of the box's first element, and of run q0 (odometer start).
      int64_t base = 0;
      for (int i = 0; i < r; ++i) base += off[i] * stride[i];
      int64_t rem = u.q0;
      for (int i = L.lead - 1; i >= 0; --i) {
        idx[i] = rem % bd[i];
        rem /= bd[i];
      }
      int64_t pos = base;
      for (int i = 0; i < L.lead; ++i) pos += idx[i] * stride[i];
      char* blk = static_cast<char*>(en.dst) + (u.box * box_numel + u.q0 * L.run) * es;
      char* src = static_cast<char*>(en.src);
      const size_t bytes = static_cast<size_t>(L.run) * es;
      for (int64_t q = u.q0; q < u.q1; ++q, blk += bytes) {
        char* full = src + pos * es;
        if (scatter)
          std::memcpy(full, blk, bytes);
        else
          std::memcpy(blk, full, bytes);
        for (int i = L.lead - 1; i >= 0; --i) {  // next run
          pos += stride[i];
          if (++idx[i] < bd[i]) break;
          pos -= bd[i] * stride[i];
          idx[i] = 0;
        }
      }
    };
    if (box_numel * static_cast<int64_t>(units.size()) < kParallelMin)
      for (int64_t ui = 0; ui < static_cast<int64_t>(units.size()); ++ui) unit(ui);
    else
      parallel_for(static_cast<int64_t>(units.size()), unit);
    return Status::Ok();
  }

  template <typename T>
  static void eig_scale_t(const T* v, const T* w, T* out, int64_t n, int64_t batch, double p, double floor) {
    std::vector<T> f(static_cast<size_t>(n * batch));
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t j = 0; j < n; ++j) f[b * n + j] = static_cast<T>(std::pow(std::max<double>(w[b * n + j], floor), p));
    // Rows of all items as work units.
    const int64_t rows_per = std::max<int64_t>(1, kChunk / std::max<int64_t>(1, n));
    const int64_t units = (n * batch + rows_per - 1) / rows_per;
    maybe_parallel(n * n * batch, units, [&](int64_t u) {
      const int64_t r0 = u * rows_per, r1 = std::min(n * batch, r0 + rows_per);
      for (int64_t rr = r0; rr < r1; ++rr) {
        const int64_t b = rr / n;
        const T* fb = f.data() + b * n;
        const T* vr = v + rr * n;
        T* orow = out + rr * n;
        for (int64_t j = 0; j < n; ++j) orow[j] = vr[j] * fb[j];
      }
    });
  }
  template <typename T>
  static void axpby_t(int64_t batch, int64_t count, const double* alphas, double alpha, const T* x,
                      const double* betas, double beta, T* y) {
    Split s = split(static_cast<size_t>(batch), [&](size_t) { return count; });
    run(s, [&](size_t i) {
      const Piece& q = s.pieces[i];
      const int64_t b = static_cast<int64_t>(q.span);
      const T a = static_cast<T>(alphas ? alphas[b] : alpha), be = static_cast<T>(betas ? betas[b] : beta);
      // a == 0 never reads x (which may then be null); be == 0 never reads y (which may be
      // uninitialised).
      K<T>().axpby(a == T(0) ? nullptr : x + b * count + q.b, y + b * count + q.b, q.e - q.b, a, be);
    });
  }
  template <typename T>
  static void symmetrize_t(T* a, int64_t n, int64_t batch) {
    maybe_parallel(batch * n * n, batch, [&](int64_t b) {
      T* m = a + b * n * n;
      for (int64_t ib = 0; ib < n; ib += kBlk)
        for (int64_t jb = ib; jb < n; jb += kBlk) {
          const int64_t ie = std::min(n, ib + kBlk), je = std::min(n, jb + kBlk);
          for (int64_t i = ib; i < ie; ++i)
            for (int64_t j = std::max(jb, i + 1); j < je; ++j) {
              T s = (m[i * n + j] + m[j * n + i]) / T(2);
              m[i * n + j] = s;
              m[j * n + i] = s;
            }
        }
    });
  }
};

}  // namespace

Backend* cpu_backend() {
  static CpuBackend instance;
  return &instance;
}

}  // namespace krad
