// OpenBLAS / LAPACKE called directly, with the same inputs as bench/ops.ts gives
// kradagrad's ops: the baseline their overhead is measured against. Built two ways by the
// bench, from this one file:
//
//  * a tiny N-API addon (-DDIRECT_ADDON, build/bench/direct.node) so the bench can
//    alternate one direct call and one kradagrad call in the same process: both see the
//    same OpenBLAS thread pool and the same load from neighbours. Each direct call is timed
//    here in C++, around the library call only, so the N-API crossing is not charged to it.
//      prepare(op, dtype, n, seed) -> id;  call(id) -> ms of one call;  release(id)
//      setThreads(k): openblas_set_num_threads(k) (the library, hence both sides);
//      setClock('wall' | 'cpu'): steady clock, or CLOCK_PROCESS_CPUTIME_ID (insensitive to
//      time spent descheduled by neighbours on a shared machine)
//  * a command-line program (build/bench/direct) for a separate-process cross-check:
//      direct CASE...    CASE = op:dtype:n:warmup:reps:seed, op = gemm | eigh
//    prints {"threads":..,"config":..,"results":[{op,dtype,n,times_ms:[..]}]}.
//
// gemm: C = A B, row-major n x n (cblas_[sd]gemm) into a preallocated C, as ops.gemm(A, B, C).
// eigh: copy A into the output buffer, then LAPACKE_[sd]syevd('V'): syevd overwrites its
// input, so the copy is part of any eigh that keeps A (kradagrad's keeps A).
// Inputs: the Park-Miller filler of test/ref/linalg.ts (fastFill); A symmetrized for eigh.
#include <cblas.h>
#include <lapacke.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

std::vector<double> fast_fill(size_t n, long long seed) {
  long long s = (std::llabs(seed) % 2147483646) + 1;
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) {
    s = (s * 16807) % 2147483647;
    out[i] = static_cast<double>(s) / 1073741823.5 - 1;
  }
  return out;
}

void symmetrize(std::vector<double>& a, int n) {
  for (int i = 0; i < n; ++i)
    for (int j = i + 1; j < n; ++j) {
      double s = (a[i * n + j] + a[j * n + i]) / 2;
      a[i * n + j] = s;
      a[j * n + i] = s;
    }
}

bool cpu_clock = false;  // time with the process CPU clock (all threads) instead of the wall clock

double now_ms() {
  if (cpu_clock) {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
  }
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// One benchmark case with its buffers; call() runs and times one library call.
class Case {
 public:
  Case(bool eigh, bool f32, int n, long long seed) : eigh_(eigh), f32_(f32), n_(n) {
    const size_t nn = size_t(n) * n;
    std::vector<double> a = fast_fill(nn, seed);
    if (eigh) symmetrize(a, n);
    std::vector<double> b = eigh ? std::vector<double>() : fast_fill(nn, seed + 1);
    if (f32) {
      fa_.assign(a.begin(), a.end());
      fb_.assign(b.begin(), b.end());
      fc_.resize(nn);
      fw_.resize(n);
    } else {
      da_ = a;
      db_ = b;
      dc_.resize(nn);
      dw_.resize(n);
    }
  }
  // Milliseconds of one call; < 0 when the solver failed.
  double call() {
    const int n = n_;
    double t0 = now_ms();
    lapack_int info = 0;
    if (!eigh_) {
      if (f32_)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, fa_.data(), n, fb_.data(), n, 0.0f,
                    fc_.data(), n);
      else
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, da_.data(), n, db_.data(), n, 0.0,
                    dc_.data(), n);
    } else if (f32_) {
      std::memcpy(fc_.data(), fa_.data(), sizeof(float) * fa_.size());
      info = LAPACKE_ssyevd(LAPACK_COL_MAJOR, 'V', 'U', n, fc_.data(), n, fw_.data());
    } else {
      std::memcpy(dc_.data(), da_.data(), sizeof(double) * da_.size());
      info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'U', n, dc_.data(), n, dw_.data());
    }
    double t1 = now_ms();
    return info == 0 ? t1 - t0 : -1;
  }

 private:
  bool eigh_, f32_;
  int n_;
  std::vector<float> fa_, fb_, fc_, fw_;
  std::vector<double> da_, db_, dc_, dw_;
};

}  // namespace

#ifdef DIRECT_ADDON
#include <node_api.h>

namespace {
std::map<int, std::unique_ptr<Case>> cases;
int next_id = 1;

napi_value fail(napi_env env, const char* msg) {
  napi_throw_error(env, nullptr, msg);
  return nullptr;
}
std::string str_arg(napi_env env, napi_value v) {
  char buf[32] = {0};
  size_t len = 0;
  napi_get_value_string_utf8(env, v, buf, sizeof buf, &len);
  return buf;
}

napi_value Prepare(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc != 4) return fail(env, "prepare(op, dtype, n, seed)");
  std::string op = str_arg(env, argv[0]), dt = str_arg(env, argv[1]);
  int32_t n = 0;
  int64_t seed = 0;
  napi_get_value_int32(env, argv[2], &n);
  napi_get_value_int64(env, argv[3], &seed);
  if ((op != "gemm" && op != "eigh") || (dt != "float32" && dt != "float64") || n < 1)
    return fail(env, "prepare: op gemm|eigh, dtype float32|float64, n >= 1");
  int id = next_id++;
  cases[id] = std::make_unique<Case>(op == "eigh", dt == "float32", n, seed);
  napi_value out;
  napi_create_int32(env, id, &out);
  return out;
}
Case* case_arg(napi_env env, napi_callback_info info, int* id) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  *id = 0;
  if (argc == 1) napi_get_value_int32(env, argv[0], id);
  auto it = cases.find(*id);
  return it == cases.end() ? nullptr : it->second.get();
}
napi_value Call(napi_env env, napi_callback_info info) {
  int id;
  Case* c = case_arg(env, info, &id);
  if (!c) return fail(env, "call: unknown case");
  double ms = c->call();
  if (ms < 0) return fail(env, "call: syevd failed");
  napi_value out;
  napi_create_double(env, ms, &out);
  return out;
}
napi_value Release(napi_env env, napi_callback_info info) {
  int id;
  if (case_arg(env, info, &id)) cases.erase(id);
  return nullptr;
}
napi_value Config(napi_env env, napi_callback_info) {
  std::string s = std::string(openblas_get_config()) + ", " + std::to_string(openblas_get_num_threads()) + " threads";
  napi_value out;
  napi_create_string_utf8(env, s.c_str(), s.size(), &out);
  return out;
}

napi_value SetThreads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  int32_t k = 0;
  if (argc == 1) napi_get_value_int32(env, argv[0], &k);
  if (k < 1) return fail(env, "setThreads(k >= 1)");
  openblas_set_num_threads(k);
  return nullptr;
}
napi_value SetClock(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  std::string c = argc == 1 ? str_arg(env, argv[0]) : "";
  if (c != "wall" && c != "cpu") return fail(env, "setClock('wall' | 'cpu')");
  cpu_clock = c == "cpu";
  return nullptr;
}

napi_value Init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"prepare", nullptr, Prepare, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"call", nullptr, Call, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"release", nullptr, Release, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"config", nullptr, Config, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setThreads", nullptr, SetThreads, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setClock", nullptr, SetClock, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)

#else

int main(int argc, char** argv) {
  std::string out = "{\"threads\":" + std::to_string(openblas_get_num_threads()) + ",\"config\":\"" +
                    openblas_get_config() + "\",\"results\":[";
  for (int i = 1; i < argc; ++i) {
    char op[16], dt[16];
    int n, warmup, reps;
    long long seed;
    if (std::sscanf(argv[i], "%15[^:]:%15[^:]:%d:%d:%d:%lld", op, dt, &n, &warmup, &reps, &seed) != 6 ||
        (std::strcmp(op, "gemm") != 0 && std::strcmp(op, "eigh") != 0)) {
      std::fprintf(stderr, "bad case '%s' (want op:dtype:n:warmup:reps:seed, op gemm|eigh)\n", argv[i]);
      return 2;
    }
    Case c(std::strcmp(op, "eigh") == 0, std::strcmp(dt, "float32") == 0, n, seed);
    std::vector<double> t;
    for (int r = 0; r < warmup + reps; ++r) {
      double ms = c.call();
      if (ms < 0) {
        std::fprintf(stderr, "syevd failed\n");
        return 1;
      }
      if (r >= warmup) t.push_back(ms);
    }
    out += std::string(i > 1 ? "," : "") + "{\"op\":\"" + op + "\",\"dtype\":\"" + dt + "\",\"n\":" +
           std::to_string(n) + ",\"times_ms\":[";
    for (size_t k = 0; k < t.size(); ++k) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%s%.6f", k ? "," : "", t[k]);
      out += buf;
    }
    out += "]}";
  }
  out += "]}";
  std::puts(out.c_str());
  return 0;
}

#endif
