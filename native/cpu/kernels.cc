#include "kernels.h"

#include <cstdlib>
#include <cstring>

namespace krad {
namespace cpu {
namespace {

const KernelTable* choose() {
  const KernelTable* best = kernels_generic();
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  const char* force = std::getenv("KRADAGRAD_CPU_KERNELS");
  const int cap = !force ? 2 : std::strcmp(force, "generic") == 0 ? 0 : std::strcmp(force, "avx2") == 0 ? 1 : 2;
  __builtin_cpu_init();
  if (cap >= 1 && kernels_avx2() && __builtin_cpu_supports("avx2")) best = kernels_avx2();
  if (cap >= 2 && kernels_avx512() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
    best = kernels_avx512();
#endif
  return best;
}

}  // namespace

const KernelTable& kernels() {
  static const KernelTable* t = choose();
  return *t;
}

}  // namespace cpu
}  // namespace krad
