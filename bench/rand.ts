/**
 * Seeded random numbers shared by the benchmarks and the tests (test/ref re-exports them):
 * mulberry32 for uniform samples, and a Park-Miller filler for large inputs.
 */

/** mulberry32: a small, fast 32-bit generator; uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Cheap filler for large inputs where statistical quality does not matter (values in
 * [-1, 1)): a Park-Miller LCG in exact double arithmetic, no Math.* calls, which are slow
 * in Jest's vm realm (2M Box-Muller samples take seconds there). bench/direct/direct.cc
 * implements the same sequence.
 */
export function fastFill(n: number, seed: number): Float64Array {
  let s = (Math.abs(Math.floor(seed)) % 2147483646) + 1;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    s = (s * 16807) % 2147483647;
    out[i] = s / 1073741823.5 - 1;
  }
  return out;
}
