/**
 * Seeded random numbers shared by the benchmarks and the tests (test/ref re-exports them):
 * mulberry32 for uniform samples, Rng for uniform and normal ones, and a Park-Miller
 * filler for large inputs.
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

/** Seeded uniform and standard normal (Box-Muller) samples. */
export class Rng {
  private readonly u: () => number;
  private spare: number | undefined;
  constructor(seed: number) {
    this.u = mulberry32(seed);
  }
  uniform(lo = 0, hi = 1): number {
    return lo + (hi - lo) * this.u();
  }
  normal(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    let u1 = this.u();
    while (u1 <= 0) u1 = this.u();
    const u2 = this.u();
    const r = Math.sqrt(-2 * Math.log(u1));
    this.spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  }
  /** `n` standard normals, as float64 values (round with Float32Array.from for float32). */
  normals(n: number, scale = 1): Float64Array {
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = scale * this.normal();
    return out;
  }
  uniforms(n: number, lo = 0, hi = 1): Float64Array {
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = this.uniform(lo, hi);
    return out;
  }
  /** A random orthogonal n x n matrix (Gram-Schmidt of a Gaussian matrix). */
  orthogonal(n: number): Float64Array {
    const q = this.normals(n * n);
    for (let j = 0; j < n; j++) {
      for (let pass = 0; pass < 2; pass++)
        for (let k = 0; k < j; k++) {
          let d = 0;
          for (let i = 0; i < n; i++) d += q[i * n + j] * q[i * n + k];
          for (let i = 0; i < n; i++) q[i * n + j] -= d * q[i * n + k];
        }
      let s = 0;
      for (let i = 0; i < n; i++) s += q[i * n + j] * q[i * n + j];
      s = Math.sqrt(s);
      for (let i = 0; i < n; i++) q[i * n + j] /= s;
    }
    return q;
  }
  /** Symmetric n x n Q diag(w) Q^T with the given eigenvalues (Q random orthogonal). */
  symmetricWithEigenvalues(w: ArrayLike<number>): Float64Array {
    const n = w.length;
    const q = this.orthogonal(n);
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++)
      for (let j = 0; j <= i; j++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += q[i * n + k] * w[k] * q[j * n + k];
        a[i * n + j] = s;
        a[j * n + i] = s;
      }
    return a;
  }
}
