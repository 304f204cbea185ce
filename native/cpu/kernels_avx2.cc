// The kernels for x86-64 CPUs with AVX2 (no FMA: the expressions are the scalar ones).
#include <cstdint>

#include "kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx2")
#define KRAD_KERNELS_NAME "avx2"
#define KRAD_KERNELS_VEC 32
#define KRAD_KERNELS_FN kernels_avx2
#include "kernels_impl.h"
#pragma GCC pop_options
#else
namespace krad {
namespace cpu {
const KernelTable* kernels_avx2() { return nullptr; }
}  // namespace cpu
}  // namespace krad
#endif
