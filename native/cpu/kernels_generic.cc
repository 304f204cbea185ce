// The kernels for any CPU of the target (the baseline instruction set of the build).
#include <cstdint>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "kernels.h"

#define KRAD_KERNELS_NAME "generic"
#define KRAD_KERNELS_VEC 16
#define KRAD_KERNELS_FN kernels_generic
#include "kernels_impl.h"
