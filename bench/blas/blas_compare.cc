// sgemm/dgemm and the symmetric eigensolvers at a few sizes, for choosing the BLAS/LAPACK
// the CPU addon links (issue 13). One source, built against each candidate by
// bench/blas/run.sh (Debian's OpenBLAS, scipy-openblas32 from PyPI, Intel's mkl-static
// from PyPI); each build is a separate program, run alternately, and the min is kept.
//
//   blas_compare THREADS CASE...     CASE = op:dtype:n:reps, op = gemm | syevd | syevd_ws |
//                                   syevr | syev
// prints one JSON line: {"lib":..,"threads":..,"results":[{op,dtype,n,times_ms:[..]}]}
//
// gemm: C = A B, n x n row-major. The solvers compute all eigenpairs ('V', lower triangle,
// column-major) of the same random symmetric matrix; each call starts from a fresh copy
// (memcpy timed with the call, as every caller that keeps A pays it). syevd goes through
// LAPACKE (which allocates the workspace per call), syevd_ws through the _work form with a
// workspace queried and allocated once. syevr computes all eigenpairs with the MRRR driver.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if defined(USE_MKL)
#include <mkl.h>
#define LIBNAME "mkl"
static void set_threads(int k) { mkl_set_num_threads(k); }
static std::string config() { char b[256]; mkl_get_version_string(b, sizeof b); return b; }
#else
#if defined(USE_SCIPY)
// The wheel's library prefixes every symbol with scipy_ and its headers do not: rename
// what this file calls before the headers declare it.
#define cblas_sgemm scipy_cblas_sgemm
#define cblas_dgemm scipy_cblas_dgemm
#define LAPACKE_ssyevd scipy_LAPACKE_ssyevd
#define LAPACKE_dsyevd scipy_LAPACKE_dsyevd
#define LAPACKE_ssyevd_work scipy_LAPACKE_ssyevd_work
#define LAPACKE_dsyevd_work scipy_LAPACKE_dsyevd_work
#define LAPACKE_ssyevr scipy_LAPACKE_ssyevr
#define LAPACKE_dsyevr scipy_LAPACKE_dsyevr
#define LAPACKE_ssyev scipy_LAPACKE_ssyev
#define LAPACKE_dsyev scipy_LAPACKE_dsyev
#define LIBNAME "scipy-openblas32"
#else
#define LIBNAME "openblas-debian"
#endif
#include <cblas.h>
#include <lapacke.h>
#if defined(USE_SCIPY)
extern "C" void scipy_openblas_set_num_threads(int);
extern "C" char* scipy_openblas_get_config(void);
static void set_threads(int k) { scipy_openblas_set_num_threads(k); }
static std::string config() { return scipy_openblas_get_config(); }
#else
static void set_threads(int k) { openblas_set_num_threads(k); }
static std::string config() { return openblas_get_config(); }
#endif
#endif

namespace {
double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
template <typename T>
std::vector<T> rnd(size_t n, unsigned seed) {
  std::vector<T> v(n);
  unsigned long long s = seed * 2654435761ull + 1;
  for (auto& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = static_cast<T>(static_cast<double>(s >> 11) / 9007199254740992.0 - 0.5);
  }
  return v;
}
template <typename T>
std::vector<T> sym(int n) {
  std::vector<T> a = rnd<T>(size_t(n) * n, 7);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < i; ++j) a[size_t(j) * n + i] = a[size_t(i) * n + j];
  return a;
}

template <typename T>
double gemm_once(int n, std::vector<T>& a, std::vector<T>& b, std::vector<T>& c) {
  const double t0 = now_ms();
  if constexpr (sizeof(T) == 4)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
  else
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, a.data(), n, b.data(), n, 0.0, c.data(), n);
  return now_ms() - t0;
}

template <typename T>
struct Solver {
  int n;
  std::vector<T> a, v, w, work, z;
  std::vector<lapack_int> iwork, isuppz;
  explicit Solver(int n_) : n(n_), a(sym<T>(n_)), v(size_t(n_) * n_), w(n_), z(size_t(n_) * n_), isuppz(2 * n_) {}
  int run(const std::string& op) {
    std::memcpy(v.data(), a.data(), sizeof(T) * a.size());
    lapack_int info = 0, m = 0;
    if (op == "syevd") {
      if constexpr (sizeof(T) == 4) info = LAPACKE_ssyevd(LAPACK_COL_MAJOR, 'V', 'L', n, v.data(), n, w.data());
      else info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', n, v.data(), n, w.data());
    } else if (op == "syevd_ws") {
      if (work.empty()) {
        T wq; lapack_int iq;
        if constexpr (sizeof(T) == 4) LAPACKE_ssyevd_work(LAPACK_COL_MAJOR, 'V', 'L', n, v.data(), n, w.data(), &wq, -1, &iq, -1);
        else LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'L', n, v.data(), n, w.data(), &wq, -1, &iq, -1);
        work.resize(size_t(wq) + 1);
        iwork.resize(size_t(iq) + 1);
      }
      if constexpr (sizeof(T) == 4) info = LAPACKE_ssyevd_work(LAPACK_COL_MAJOR, 'V', 'L', n, v.data(), n, w.data(), work.data(), (lapack_int)work.size(), iwork.data(), (lapack_int)iwork.size());
      else info = LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'L', n, v.data(), n, w.data(), work.data(), (lapack_int)work.size(), iwork.data(), (lapack_int)iwork.size());
    } else if (op == "syevr") {
      if constexpr (sizeof(T) == 4) info = LAPACKE_ssyevr(LAPACK_COL_MAJOR, 'V', 'A', 'L', n, v.data(), n, 0, 0, 0, 0, 0, &m, w.data(), z.data(), n, isuppz.data());
      else info = LAPACKE_dsyevr(LAPACK_COL_MAJOR, 'V', 'A', 'L', n, v.data(), n, 0, 0, 0, 0, 0, &m, w.data(), z.data(), n, isuppz.data());
    } else if (op == "syev") {
      if constexpr (sizeof(T) == 4) info = LAPACKE_ssyev(LAPACK_COL_MAJOR, 'V', 'L', n, v.data(), n, w.data());
      else info = LAPACKE_dsyev(LAPACK_COL_MAJOR, 'V', 'L', n, v.data(), n, w.data());
    }
    return static_cast<int>(info);
  }
};

template <typename T>
std::vector<double> run_case(const std::string& op, int n, int reps) {
  std::vector<double> t;
  if (op == "gemm") {
    auto a = rnd<T>(size_t(n) * n, 1), b = rnd<T>(size_t(n) * n, 2), c = rnd<T>(size_t(n) * n, 3);
    int inner = std::max(1, (int)(2e8 / (2.0 * n * n * n)));  // small n: time a loop, report per call
    gemm_once(n, a, b, c);
    for (int r = 0; r < reps; ++r) {
      double s = 0;
      for (int i = 0; i < inner; ++i) s += gemm_once(n, a, b, c);
      t.push_back(s / inner);
    }
    return t;
  }
  Solver<T> s(n);
  int inner = n <= 256 ? 20 : 1;
  if (s.run(op) != 0) { std::fprintf(stderr, "%s failed\n", op.c_str()); std::exit(1); }
  for (int r = 0; r < reps; ++r) {
    const double t0 = now_ms();
    for (int i = 0; i < inner; ++i) s.run(op);
    t.push_back((now_ms() - t0) / inner);
  }
  return t;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) { std::fprintf(stderr, "usage: blas_compare THREADS CASE...\n"); return 2; }
  const int threads = std::atoi(argv[1]);
  set_threads(threads);
  std::string cfg = config();
  for (auto& ch : cfg) if (ch == '"' || ch == '\\') ch = ' ';
  std::printf("{\"lib\":\"%s\",\"config\":\"%s\",\"threads\":%d,\"results\":[", LIBNAME, cfg.c_str(), threads);
  for (int i = 2; i < argc; ++i) {
    char op[32], dt[16]; int n, reps;
    if (std::sscanf(argv[i], "%31[^:]:%15[^:]:%d:%d", op, dt, &n, &reps) != 4) { std::fprintf(stderr, "bad case %s\n", argv[i]); return 2; }
    std::vector<double> t = std::string(dt) == "float32" ? run_case<float>(op, n, reps) : run_case<double>(op, n, reps);
    std::printf("%s{\"op\":\"%s\",\"dtype\":\"%s\",\"n\":%d,\"times_ms\":[", i > 2 ? "," : "", op, dt, n);
    for (size_t k = 0; k < t.size(); ++k) std::printf("%s%.4f", k ? "," : "", t[k]);
    std::printf("]}");
    std::fflush(stdout);
  }
  std::printf("]}\n");
  return 0;
}
