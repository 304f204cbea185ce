// Memory bandwidth as our kernels see it (for `kradagrad bench step`'s floors): STREAM-like
// copy and triad over arrays larger than the caches, on threads() threads, with regular
// and non-temporal stores. Bytes are counted as STREAM does (copy 2, triad 3 arrays per
// pass; no write-allocate reads).
#pragma once
#include <cstdint>

#include "../core/status.h"

namespace krad {
namespace cpu {

struct Bandwidth {
  double copy_gbs = 0, copy_stream_gbs = 0, triad_gbs = 0, triad_stream_gbs = 0, read_gbs = 0;
  int64_t bytes_per_array = 0;
  int reps = 0;
  int threads = 0;
};

// Best of `reps` passes of each kernel over float32 arrays of `elements` elements.
Status measure_bandwidth(int64_t elements, int reps, Bandwidth* out);

}  // namespace cpu
}  // namespace krad
