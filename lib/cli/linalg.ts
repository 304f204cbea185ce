/**
 * Small float64 linear algebra for the benchmarks, in plain TypeScript: a seeded
 * Gaussian generator, Householder QR (for random orthogonal matrices) and Q diag(w) Q^T.
 * Matrices are row-major Float64Arrays of n x n.
 */

/**
 * Seeded pseudo-random numbers: xoshiro128** (state from splitmix32 of the seed), 53-bit
 * uniforms from two draws, standard normals by Box-Muller. Same seed, same sequence, on
 * every platform.
 */
export class Rng {
  private s = new Uint32Array(4);
  private spare: number | undefined;
  constructor(seed: number) {
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      // splitmix32
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
    if (this.s.every((v) => v === 0)) this.s[0] = 1;
  }
  /** Next 32-bit unsigned integer. */
  nextU32(): number {
    const s = this.s;
    const r = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return r;
  }
  /** Uniform in [0, 1) with 53 random bits. */
  uniform(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }
  /** Standard normal (Box-Muller, both values used). */
  normal(): number {
    if (this.spare !== undefined) {
      const v = this.spare;
      this.spare = undefined;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
  /** n standard normals. */
  normals(n: number): Float64Array {
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = this.normal();
    return out;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/**
 * Householder QR of a square n x n matrix (row-major, not modified): returns Q (orthogonal)
 * and R (upper triangular) with A = Q R. Columns of Q are signed so that diag(R) >= 0,
 * which makes Q of a Gaussian matrix Haar-distributed.
 */
export function householderQR(a: Float64Array, n: number): { q: Float64Array; r: Float64Array } {
  const r = Float64Array.from(a);
  const vs: Float64Array[] = [];
  for (let k = 0; k < n - 1; k++) {
    let norm = 0;
    for (let i = k; i < n; i++) norm += r[i * n + k] * r[i * n + k];
    norm = Math.sqrt(norm);
    const v = new Float64Array(n - k);
    if (norm === 0) {
      vs.push(v);
      continue;
    }
    const x0 = r[k * n + k];
    const alpha = x0 >= 0 ? -norm : norm;
    for (let i = k; i < n; i++) v[i - k] = r[i * n + k];
    v[0] -= alpha;
    let vn = 0;
    for (let i = 0; i < v.length; i++) vn += v[i] * v[i];
    vn = Math.sqrt(vn);
    if (vn === 0) {
      vs.push(new Float64Array(n - k));
      continue;
    }
    for (let i = 0; i < v.length; i++) v[i] /= vn;
    // R[k:, k:] -= 2 v (v^T R[k:, k:])
    applyReflector(r, n, k, v);
    vs.push(v);
  }
  // Q = H_0 H_1 ... H_{n-2}: apply to I from the last reflector to the first.
  const q = new Float64Array(n * n);
  for (let i = 0; i < n; i++) q[i * n + i] = 1;
  for (let k = vs.length - 1; k >= 0; k--) applyReflector(q, n, k, vs[k]);
  // Sign fix: diag(R) >= 0.
  for (let k = 0; k < n; k++) {
    if (r[k * n + k] < 0) {
      for (let i = 0; i < n; i++) q[i * n + k] = -q[i * n + k];
      for (let j = 0; j < n; j++) r[k * n + j] = -r[k * n + j];
    }
  }
  for (let i = 1; i < n; i++) for (let j = 0; j < i; j++) r[i * n + j] = 0;
  return { q, r };
}

/** M[k:, :] -= 2 v (v^T M[k:, :]) for a unit vector v of length n - k. */
function applyReflector(m: Float64Array, n: number, k: number, v: Float64Array): void {
  const w = new Float64Array(n);
  for (let i = k; i < n; i++) {
    const vi = v[i - k];
    if (vi === 0) continue;
    const row = i * n;
    for (let j = 0; j < n; j++) w[j] += vi * m[row + j];
  }
  for (let i = k; i < n; i++) {
    const c = 2 * v[i - k];
    if (c === 0) continue;
    const row = i * n;
    for (let j = 0; j < n; j++) m[row + j] -= c * w[j];
  }
}

/** Q diag(w) Q^T (symmetric by construction: both triangles computed from the same sums). */
export function qdqt(q: Float64Array, w: ArrayLike<number>, n: number): Float64Array {
  const out = new Float64Array(n * n);
  const qw = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    for (let k = 0; k < n; k++) qw[k] = q[ri + k] * w[k];
    for (let j = i; j < n; j++) {
      const rj = j * n;
      let s = 0;
      for (let k = 0; k < n; k++) s += qw[k] * q[rj + k];
      out[ri + j] = s;
      out[j * n + i] = s;
    }
  }
  return out;
}

/** C = A B for row-major n x n matrices (float64). */
export function matmul(a: Float64Array, b: Float64Array, n: number): Float64Array {
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < n; k++) {
      const aik = a[i * n + k];
      if (aik === 0) continue;
      const rb = k * n;
      const rc = i * n;
      for (let j = 0; j < n; j++) c[rc + j] += aik * b[rb + j];
    }
  }
  return c;
}

/** max |Q^T Q - I| (orthogonality check). */
export function orthogonalityError(q: Float64Array, n: number): number {
  let e = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += q[k * n + i] * q[k * n + j];
      e = Math.max(e, Math.abs(s - (i === j ? 1 : 0)));
    }
  }
  return e;
}

/**
 * The paper's spectrum (Section 5.1): w_j = 10^(-(s_j)^2) with s_j evenly spaced from 0
 * to sqrt(log10 cond), j = 0..n-1, scaled so that the largest is `maxEig`. The condition
 * number max/min is exactly `cond`.
 */
export function paperSpectrum(n: number, cond: number, maxEig = 10): Float64Array {
  const smax = Math.sqrt(Math.log10(cond));
  const w = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    const s = n === 1 ? 0 : (smax * j) / (n - 1);
    w[j] = 10 ** -(s * s);
  }
  const top = Math.max(...w);
  for (let j = 0; j < n; j++) w[j] *= maxEig / top;
  return w;
}
