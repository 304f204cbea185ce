/**
 * Plain float64 TypeScript references for every native op (test/ops.test.ts compares the
 * addon against these), plus a seeded RNG. Everything works on flat row-major arrays:
 * a "batch of items" is `batch` items of `shape` stored back to back, exactly like the
 * native tensors. Nothing here calls native code; the algorithms are the textbook ones
 * (triple loops, cyclic Jacobi), written for clarity, not speed.
 */

export type Arr = ArrayLike<number>;

// ---- random numbers --------------------------------------------------------------------

import { Rng, fastFill, mulberry32 } from '../support/rand';

export { Rng, fastFill, mulberry32 };



// ---- helpers ----------------------------------------------------------------------------

export const prod = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);
/** Rounds every value to float32 (what storing into a float32 tensor does). */
export const f32 = (x: Arr): Float64Array => Float64Array.from(Float32Array.from(x as ArrayLike<number>));
export const absArr = (x: Arr): Float64Array => Float64Array.from(x as ArrayLike<number>, Math.abs);
export const maxAbs = (x: Arr): number => {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]));
  return m;
};
/** Frobenius norm of a whole array. */
export const norm = (x: Arr): number => {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s);
};
/** The matrix 1-norm (largest column sum of absolute values) of the n x n item at `off`. */
export function oneNorm(a: Arr, n: number, off = 0): number {
  let m = 0;
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += Math.abs(a[off + i * n + j]);
    m = Math.max(m, s);
  }
  return m;
}
/** Slice of item `b` of a batch with `item` elements per item (broadcast: batch-1 arrays give item 0). */
export function itemOf(x: Arr, b: number, item: number): Float64Array {
  const nb = x.length / item;
  const i = nb === 1 ? 0 : b;
  return Float64Array.from({ length: item }, (_, k) => x[i * item + k]);
}

// ---- products ---------------------------------------------------------------------------

/** op(X) element (i, j) of a row-major rows x cols matrix at `off`. */
function opAt(x: Arr, off: number, cols: number, trans: boolean, i: number, j: number): number {
  return trans ? x[off + j * cols + i] : x[off + i * cols + j];
}

export interface GemmRefArgs {
  a: Arr;
  aShape: [number, number];
  aBatch: number;
  b: Arr;
  bShape: [number, number];
  bBatch: number;
  /** Previous C (only read when beta != 0); batch = max(aBatch, bBatch). */
  c?: Arr;
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  beta?: number;
  /** When true, returns sum |alpha| |op(A)| |op(B)| + |beta| |C| instead (the error scale). */
  abs?: boolean;
}

/** C = alpha op(A) op(B) + beta C for every item; a batch of 1 broadcasts. */
export function gemmRef(o: GemmRefArgs): { c: Float64Array; m: number; n: number; k: number; batch: number } {
  const ta = !!o.transA;
  const tb = !!o.transB;
  const alpha = o.alpha ?? 1;
  const beta = o.beta ?? 0;
  const m = ta ? o.aShape[1] : o.aShape[0];
  const k = ta ? o.aShape[0] : o.aShape[1];
  const kb = tb ? o.bShape[1] : o.bShape[0];
  const n = tb ? o.bShape[0] : o.bShape[1];
  if (k !== kb) throw new Error(`gemmRef: inner dimensions ${k} and ${kb} differ`);
  const batch = Math.max(o.aBatch, o.bBatch);
  const c = new Float64Array(batch * m * n);
  const ai = o.aShape[0] * o.aShape[1];
  const bi = o.bShape[0] * o.bShape[1];
  const f = o.abs ? Math.abs : (x: number) => x;
  for (let t = 0; t < batch; t++) {
    const ao = o.aBatch === 1 ? 0 : t * ai;
    const bo = o.bBatch === 1 ? 0 : t * bi;
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let l = 0; l < k; l++) s += f(opAt(o.a, ao, o.aShape[1], ta, i, l)) * f(opAt(o.b, bo, o.bShape[1], tb, l, j));
        const prev = beta !== 0 && o.c ? f(beta) * f(o.c[t * m * n + i * n + j]) : 0;
        c[t * m * n + i * n + j] = f(alpha) * s + prev;
      }
  }
  return { c, m, n, k, batch };
}

/**
 * Mode-i unfolding of every item: G_(i) as a q x (p r) matrix (rows = index along `mode`,
 * columns = the remaining indices in row-major order), with p = prod(dims before i),
 * q = dims[i], r = prod(dims after i).
 */
export function unfold(g: Arr, shape: readonly number[], mode: number, item = 0): Float64Array {
  const p = prod(shape.slice(0, mode));
  const q = shape[mode];
  const r = prod(shape.slice(mode + 1));
  const off = item * p * q * r;
  const out = new Float64Array(q * p * r);
  for (let a = 0; a < p; a++)
    for (let j = 0; j < q; j++)
      for (let c = 0; c < r; c++) out[j * p * r + a * r + c] = g[off + (a * q + j) * r + c];
  return out;
}
/** Inverse of {@link unfold}: the tensor of `shape` whose mode-`mode` unfolding is `u`. */
export function fold(u: Arr, shape: readonly number[], mode: number): Float64Array {
  const p = prod(shape.slice(0, mode));
  const q = shape[mode];
  const r = prod(shape.slice(mode + 1));
  const out = new Float64Array(p * q * r);
  for (let a = 0; a < p; a++)
    for (let j = 0; j < q; j++)
      for (let c = 0; c < r; c++) out[(a * q + j) * r + c] = u[j * p * r + a * r + c];
  return out;
}

/**
 * H = alpha G_(mode) G_(mode)^T + beta H per item: contraction of G with itself over every
 * axis but `mode`, written directly as sum over the other indices (not via unfold).
 * With `abs`, returns the error scale |alpha| |G_(i)| |G_(i)|^T + |beta| |H|.
 */
export function gramRef(g: Arr, shape: readonly number[], batch: number, mode: number, alpha = 1, beta = 0, h?: Arr, abs = false): Float64Array {
  const q = shape[mode];
  const item = prod(shape);
  const out = new Float64Array(batch * q * q);
  const f = abs ? Math.abs : (x: number) => x;
  const strides = shape.map((_, i) => prod(shape.slice(i + 1)));
  const others = item / q;
  // Enumerate the multi-indices of the other axes once.
  const otherOffsets = new Int32Array(others);
  for (let o = 0; o < others; o++) {
    let rem = o;
    let off = 0;
    for (let ax = shape.length - 1; ax >= 0; ax--) {
      if (ax === mode) continue;
      off += (rem % shape[ax]) * strides[ax];
      rem = Math.floor(rem / shape[ax]);
    }
    otherOffsets[o] = off;
  }
  for (let b = 0; b < batch; b++)
    for (let i = 0; i < q; i++)
      for (let j = 0; j < q; j++) {
        let s = 0;
        for (let o = 0; o < others; o++) {
          const base = b * item + otherOffsets[o];
          s += f(g[base + i * strides[mode]]) * f(g[base + j * strides[mode]]);
        }
        const prev = beta !== 0 && h ? f(beta) * f(h[b * q * q + i * q + j]) : 0;
        out[b * q * q + i * q + j] = f(alpha) * s + prev;
      }
  return out;
}

/**
 * Mode product per item: out_(mode) = op(M) G_(mode), op(M) = M^T when transM. M: batch
 * mBatch (1 broadcasts) of mShape. Returns the output (G's shape with dim `mode` replaced).
 * With `abs`, returns |op(M)| |G_(mode)| folded the same way (the error scale).
 */
export function modeProductRef(
  g: Arr, shape: readonly number[], batch: number, mode: number,
  m: Arr, mShape: [number, number], mBatch: number, transM = false, abs = false,
): { out: Float64Array; shape: number[] } {
  const q = shape[mode];
  const nOut = transM ? mShape[1] : mShape[0];
  const nIn = transM ? mShape[0] : mShape[1];
  if (nIn !== q) throw new Error('modeProductRef: M does not fit');
  const outShape = shape.slice();
  outShape[mode] = nOut;
  const item = prod(shape);
  const oitem = prod(outShape);
  const out = new Float64Array(batch * oitem);
  const f = abs ? Math.abs : (x: number) => x;
  const mi = mShape[0] * mShape[1];
  for (let b = 0; b < batch; b++) {
    const u = unfold(g, shape, mode, b); // q x (p r)
    const cols = item / q;
    const mo = mBatch === 1 ? 0 : b * mi;
    const y = new Float64Array(nOut * cols);
    for (let i = 0; i < nOut; i++)
      for (let c = 0; c < cols; c++) {
        let s = 0;
        for (let l = 0; l < q; l++) s += f(opAt(m, mo, mShape[1], transM, i, l)) * f(u[l * cols + c]);
        y[i * cols + c] = s;
      }
    out.set(fold(y, outShape, mode), b * oitem);
  }
  return { out, shape: outShape };
}

// ---- symmetric eigenproblems ------------------------------------------------------------

/** The symmetric matrix whose both triangles are the lower triangle of item `item` of `a`. */
export function lowerSym(a: Arr, n: number, item = 0): Float64Array {
  const off = item * n * n;
  const s = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j <= i; j++) {
      s[i * n + j] = a[off + i * n + j];
      s[j * n + i] = a[off + i * n + j];
    }
  return s;
}

/**
 * Cyclic Jacobi eigendecomposition of one symmetric n x n matrix (both triangles used):
 * A = V diag(w) V^T, w ascending, eigenvectors in the columns of V (row-major).
 */
export function jacobiEigh(a0: Arr, n: number): { w: Float64Array; v: Float64Array } {
  const a = Float64Array.from(a0 as ArrayLike<number>);
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  let scale = 0;
  for (let i = 0; i < n * n; i++) scale += a[i] * a[i];
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += a[p * n + q] * a[p * n + q];
    if (off <= 1e-34 * scale || off === 0) break;
    for (let p = 0; p < n; p++)
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        if (apq === 0) continue;
        const theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        const t = (theta >= 0 ? 1 : -1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p];
          const akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k];
          const aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p];
          const vkq = v[k * n + q];
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => a[x * n + x] - a[y * n + y]);
  const w = Float64Array.from(order, (i) => a[i * n + i]);
  const vs = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) vs[i * n + j] = v[i * n + order[j]];
  return { w, v: vs };
}

/** Batched eigh reading the lower triangle of each item, like the native op. */
export function eighRef(a: Arr, n: number, batch: number): { w: Float64Array; v: Float64Array } {
  const w = new Float64Array(batch * n);
  const v = new Float64Array(batch * n * n);
  for (let b = 0; b < batch; b++) {
    const r = jacobiEigh(lowerSym(a, n, b), n);
    w.set(r.w, b * n);
    v.set(r.v, b * n * n);
  }
  return { w, v };
}

/** V diag(f(w)) V^T of one item. */
export function reconstruct(v: Arr, w: Arr, n: number, vOff = 0, wOff = 0, f: (x: number) => number = (x) => x): Float64Array {
  const fw = Float64Array.from({ length: n }, (_, j) => f(w[wOff + j]));
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += v[vOff + i * n + k] * fw[k] * v[vOff + j * n + k];
      out[i * n + j] = s;
    }
  return out;
}

/** V^T V - I of one item (its norm measures the loss of orthogonality). */
export function orthoDefect(v: Arr, n: number, off = 0): Float64Array {
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += v[off + k * n + i] * v[off + k * n + j];
      out[i * n + j] = s - (i === j ? 1 : 0);
    }
  return out;
}

/** The scalar function matpow applies to each eigenvalue. */
export const powFn = (p: number, floor: number) => (x: number): number => Math.pow(Math.max(x, floor), p);

/**
 * A^p = V diag(max(w, floor)^p) V^T with (w, V) = eigh(A + ridge I), the lower triangle
 * of each item read, like the native matpow.
 */
export function matpowRef(a: Arr, n: number, batch: number, p: number, floor = 0, ridge = 0): Float64Array {
  const out = new Float64Array(batch * n * n);
  for (let b = 0; b < batch; b++) {
    const s = lowerSym(a, n, b);
    for (let i = 0; i < n; i++) s[i * n + i] += ridge;
    const { w, v } = jacobiEigh(s, n);
    out.set(reconstruct(v, w, n, 0, 0, powFn(p, floor)), b * n * n);
  }
  return out;
}

// ---- elementwise and reductions ---------------------------------------------------------

const coeffAt = (c: number | Arr, b: number): number => (typeof c === 'number' ? c : c[b]);

/** y = alpha_b x + beta_b y (alpha/beta a number or one per item). */
export function axpbyRef(x: Arr, y: Arr, batch: number, alpha: number | Arr, beta: number | Arr): Float64Array {
  const item = x.length / batch;
  const out = new Float64Array(x.length);
  for (let b = 0; b < batch; b++)
    for (let i = 0; i < item; i++) {
      const k = b * item + i;
      out[k] = coeffAt(alpha, b) * x[k] + coeffAt(beta, b) * y[k];
    }
  return out;
}
/** x = alpha_b x. */
export function scaleRef(x: Arr, batch: number, alpha: number | Arr): Float64Array {
  const item = x.length / batch;
  return Float64Array.from({ length: x.length }, (_, k) => coeffAt(alpha, Math.floor(k / item)) * x[k]);
}
/** Per-item dot products. */
export function dotRef(x: Arr, y: Arr, batch: number): Float64Array {
  const item = x.length / batch;
  const out = new Float64Array(batch);
  for (let b = 0; b < batch; b++) {
    let s = 0;
    for (let i = 0; i < item; i++) s += x[b * item + i] * y[b * item + i];
    out[b] = s;
  }
  return out;
}
/** Per-item Frobenius norms. */
export const frobNormRef = (x: Arr, batch: number): Float64Array => dotRef(x, x, batch).map(Math.sqrt);
/** Per-item traces of n x n items. */
export function traceRef(a: Arr, n: number, batch: number): Float64Array {
  return Float64Array.from({ length: batch }, (_, b) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += a[b * n * n + i * n + i];
    return s;
  });
}
/** A_b += alpha_b I. */
export function addIdentityRef(a: Arr, n: number, batch: number, alpha: number | Arr): Float64Array {
  const out = Float64Array.from(a as ArrayLike<number>);
  for (let b = 0; b < batch; b++) for (let i = 0; i < n; i++) out[b * n * n + i * n + i] += coeffAt(alpha, b);
  return out;
}
/** A = (A + A^T) / 2. */
export function symmetrizeRef(a: Arr, n: number, batch: number): Float64Array {
  const out = new Float64Array(a.length);
  for (let b = 0; b < batch; b++)
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) out[b * n * n + i * n + j] = (a[b * n * n + i * n + j] + a[b * n * n + j * n + i]) / 2;
  return out;
}
/** acc = a acc + b x y (elementwise). */
export function mulAccRef(x: Arr, y: Arr, acc: Arr, a: number, b: number): Float64Array {
  return Float64Array.from({ length: acc.length }, (_, i) => a * acc[i] + b * x[i] * y[i]);
}
/** out = x / (sqrt(acc scale) + eps) (elementwise). */
export function divSqrtRef(x: Arr, acc: Arr, scale: number, eps: number): Float64Array {
  return Float64Array.from({ length: x.length }, (_, i) => x[i] / (Math.sqrt(acc[i] * scale) + eps));
}
/** Per-item: true when the item has no NaN/Inf. */
export function allFiniteRef(x: Arr, batch: number): boolean[] {
  const item = x.length / batch;
  return Array.from({ length: batch }, (_, b) => {
    for (let i = 0; i < item; i++) if (!Number.isFinite(x[b * item + i])) return false;
    return true;
  });
}
/** Copy with a cast: to float32 rounds each value to nearest (Math.fround), to float64 is exact. */
export function copyCastRef(src: Arr, to: 'float32' | 'float64'): Float64Array {
  return Float64Array.from(src as ArrayLike<number>, to === 'float32' ? Math.fround : (v: number) => v);
}

// ---- boxes -------------------------------------------------------------------------------

/** Visits (flat index in full, flat index in box) of one box at `offset`. */
function forBox(fullShape: readonly number[], boxShape: readonly number[], offset: readonly number[], fn: (fi: number, bi: number) => void): void {
  const r = fullShape.length;
  const n = prod(boxShape);
  const idx = new Array(r).fill(0);
  for (let bi = 0; bi < n; bi++) {
    let rem = bi;
    for (let d = r - 1; d >= 0; d--) {
      idx[d] = rem % boxShape[d];
      rem = Math.floor(rem / boxShape[d]);
    }
    let fi = 0;
    for (let d = 0; d < r; d++) fi = fi * fullShape[d] + offset[d] + idx[d];
    fn(fi, bi);
  }
}
/** Gathers the boxes of `full` at `offsets` into items first.. of a copy of `blocks`. */
export function boxesGatherRef(full: Arr, fullShape: readonly number[], blocks: Arr, boxShape: readonly number[], offsets: number[][], first = 0): Float64Array {
  const out = Float64Array.from(blocks as ArrayLike<number>);
  const item = prod(boxShape);
  offsets.forEach((off, j) => forBox(fullShape, boxShape, off, (fi, bi) => (out[(first + j) * item + bi] = full[fi])));
  return out;
}
/** Scatters items first.. of `blocks` back into a copy of `full` at `offsets`. */
export function boxesScatterRef(full: Arr, fullShape: readonly number[], blocks: Arr, boxShape: readonly number[], offsets: number[][], first = 0): Float64Array {
  const out = Float64Array.from(full as ArrayLike<number>);
  const item = prod(boxShape);
  offsets.forEach((off, j) => forBox(fullShape, boxShape, off, (fi, bi) => (out[fi] = blocks[(first + j) * item + bi])));
  return out;
}

// ---- fused optimizer pieces -----------------------------------------------------------------

/** Norm grafting per item: d_b *= ||a_b||_F / (||d_b||_F + eps). */
export function scaleByNormRatioRef(d: Arr, a: Arr, batch: number, eps: number): Float64Array {
  const na = frobNormRef(a, batch);
  const nd = frobNormRef(d, batch);
  const item = d.length / batch;
  return Float64Array.from({ length: d.length }, (_, k) => {
    const b = Math.floor(k / item);
    return (d[k] * na[b]) / (nd[b] + eps);
  });
}
/**
 * KrADagrad's inverse update per item: L_b - T_b / s_b with s_b = n (1 + tr M_b) ('trace')
 * or 1 + ||M_b||_F ('frobenius'). Returns the new L and the per-item s.
 */
export function inverseUpdateRef(l: Arr, t: Arr, m: Arr, n: number, batch: number, kind: 'trace' | 'frobenius'): { l: Float64Array; s: Float64Array } {
  const s = kind === 'trace' ? traceRef(m, n, batch).map((x) => n * (1 + x)) : frobNormRef(m, batch).map((x) => 1 + x);
  const out = Float64Array.from({ length: l.length }, (_, k) => l[k] - t[k] / s[Math.floor(k / (n * n))]);
  return { l: out, s };
}
