// The kernels for x86-64 CPUs with AVX-512 F/VL/BW/DQ (no FMA: the expressions are the
// scalar ones).
#include <cstdint>

#include "kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,prefer-vector-width=512")
#define KRAD_KERNELS_NAME "avx512"
#define KRAD_KERNELS_VEC 64
#define KRAD_KERNELS_FN kernels_avx512
#include "kernels_impl.h"
#pragma GCC pop_options
#else
namespace krad {
namespace cpu {
const KernelTable* kernels_avx512() { return nullptr; }
}  // namespace cpu
}  // namespace krad
#endif
