/**
 * Every native op against the plain float64 TypeScript reference of test/ref/linalg.ts,
 * on seeded random inputs, float32 and float64, shapes from 1x1, n x 1 and 1 x n to rank
 * 3-4 blocks, batches > 1 and batch-1 broadcast.
 *
 * Tolerances. Inputs are generated in float64 and rounded to the tensor's dtype; the
 * reference then runs in float64 on exactly the stored values, so the only difference is
 * the native op's own rounding. u is the unit roundoff of the dtype (2^-24 / 2^-53).
 * - Products (gemm, gram, mode product), k terms per output: the classical worst-case
 *   bound for ANY summation order or blocking, with or without FMA, is
 *   |fl(C) - C| <= gamma_k |A||B| ~ k u |A||B| elementwise (Higham, Accuracy and
 *   Stability, 3.5); alpha/beta add two more roundings: we allow 2 (k + 2) u times the
 *   elementwise scale |alpha| |op(A)| |op(B)| + |beta| |C| (the factor 2 covers the
 *   float64 reference's own rounding, which is of the same order in float64).
 * - Elementwise ops: a few roundings each, counted per op below; again x2 for the reference.
 * - Reductions (dot, Frobenius norm, trace) accumulate in double on every dtype:
 *   (count + 2) u_float64 relative to the sum of absolute terms.
 * - eigh: the scaled residual ratios of LAPACK's own test suite, which it requires to be
 *   below 30: ||A - V W V^T||_1 / (n ||A||_1 ulp), ||V^T V - I||_1 / (n ulp), and for the
 *   eigenvalues (Weyl: a backward error E moves each eigenvalue by at most ||E||_2)
 *   |w - w_ref| / (n ||A||_1 ulp). Eigenvectors are defined up to sign (and up to a basis
 *   of a repeated eigenvalue's space), so they are checked only through those residuals.
 * - matpow: a backward error ||E|| <= delta = 30 n ulp ||A||_1 moves f(A) by at most
 *   L delta in each eigen-direction, L = the largest slope of f(x) = max(x, floor)^p on the
 *   perturbed spectrum (or delta^p when f is only Holder continuous: p < 1, no floor, a zero
 *   eigenvalue); plus the final V diag(f) V^T product, n u max|f|. We allow sqrt(n) times
 *   the sum in the Frobenius norm, x2.
 */
import { KradagradError, Tensor, getBackend, ops } from '../lib';
import type { DType } from '../lib';
import { DTYPES, LAPACK_THRESH, Pool, U, ULP, boundOf, expectClose, stored } from './ref/check';
import * as R from './ref/linalg';

const backend = getBackend('cpu');
const pool = new Pool(backend);
afterEach(() => pool.disposeAll());

let seed = 1;
const nextRng = (): R.Rng => new R.Rng(0x9e3779b9 ^ (seed++ * 7919));

const read = (t: Tensor): Float64Array => Float64Array.from(t.read());
const cases = <T>(dts: DType[], list: T[]): [DType, T][] => dts.flatMap((d) => list.map((c): [DType, T] => [d, c]));
const label = (o: object): string => JSON.stringify(o).replace(/"/g, '');

describe('gemm', () => {
  type G = { m: number; k: number; n: number; bA: number; bB: number; tA: boolean; tB: boolean; alpha: number; beta: number };
  const dims: [number, number, number][] = [
    [1, 1, 1],
    [7, 5, 1], // n x 1 output
    [1, 5, 7], // 1 x n output
    [6, 1, 4], // outer product, k = 1
    [9, 17, 13],
    [40, 33, 24],
  ];
  const batches: [number, number][] = [
    [1, 1],
    [3, 3],
    [1, 4], // A broadcast
    [2, 1], // B broadcast
  ];
  const list: G[] = [];
  dims.forEach(([m, k, n], i) => {
    for (const tA of [false, true])
      for (const tB of [false, true]) {
        const [bA, bB] = batches[(i + (tA ? 1 : 0) + (tB ? 2 : 0)) % batches.length];
        const withBeta = (i + (tA ? 1 : 0)) % 2 === 0;
        list.push({ m, k, n, bA, bB, tA, tB, alpha: withBeta ? 0.75 : 1, beta: withBeta ? -1.5 : 0 });
      }
  });

  test.each(cases(DTYPES, list).map(([d, g]) => [d, label(g), g] as const))('%s %s', (dt, _l, g) => {
    const rng = nextRng();
    const aShape: [number, number] = g.tA ? [g.k, g.m] : [g.m, g.k];
    const bShape: [number, number] = g.tB ? [g.n, g.k] : [g.k, g.n];
    const batch = Math.max(g.bA, g.bB);
    const a = stored(dt, rng.normals(g.bA * g.k * g.m));
    const b = stored(dt, rng.normals(g.bB * g.k * g.n));
    const c0 = stored(dt, rng.normals(batch * g.m * g.n));
    const A = pool.from(dt, a, aShape, g.bA);
    const B = pool.from(dt, b, bShape, g.bB);
    const C = pool.from(dt, c0, [g.m, g.n], batch);
    const out = ops.gemm(A, B, C, { transA: g.tA, transB: g.tB, alpha: g.alpha, beta: g.beta });
    expect(out).toBe(C);
    const args = { a, aShape, aBatch: g.bA, b, bShape, bBatch: g.bB, c: c0, transA: g.tA, transB: g.tB, alpha: g.alpha, beta: g.beta };
    const ref = R.gemmRef(args).c;
    const scale = R.gemmRef({ ...args, abs: true }).c;
    expectClose(read(C), ref, boundOf(scale, 2 * (g.k + 2), U[dt]), 'gemm');
  });

  test.each(DTYPES)('%s: allocates C when omitted, batch = max of the inputs', (dt) => {
    const rng = nextRng();
    const a = stored(dt, rng.normals(3 * 4 * 5));
    const b = stored(dt, rng.normals(5 * 2));
    const C = pool.keep(ops.gemm(pool.from(dt, a, [4, 5], 3), pool.from(dt, b, [5, 2], 1)));
    expect(C.shape).toEqual([4, 2]);
    expect(C.batch).toBe(3);
    expect(C.dtype).toBe(dt);
    const args = { a, aShape: [4, 5] as [number, number], aBatch: 3, b, bShape: [5, 2] as [number, number], bBatch: 1 };
    expectClose(read(C), R.gemmRef(args).c, boundOf(R.gemmRef({ ...args, abs: true }).c, 2 * 7, U[dt]), 'gemm');
  });
});

describe('gram (mode-i contraction)', () => {
  type Gc = { shape: number[]; batch: number; alpha: number; beta: number };
  const list: Gc[] = [
    { shape: [1], batch: 1, alpha: 1, beta: 0 }, // rank 1: H = g g^T
    { shape: [6], batch: 2, alpha: 1, beta: 0 },
    { shape: [1, 1], batch: 1, alpha: 1, beta: 0 },
    { shape: [7, 1], batch: 2, alpha: 0.5, beta: 2 },
    { shape: [1, 7], batch: 1, alpha: 1, beta: 0 },
    { shape: [9, 5], batch: 3, alpha: 0.25, beta: 0.9 },
    { shape: [3, 4, 5], batch: 2, alpha: 1, beta: 0 },
    { shape: [4, 1, 3], batch: 1, alpha: 1, beta: 0.5 },
    { shape: [2, 3, 4, 5], batch: 2, alpha: 2, beta: -1 },
    { shape: [3, 2, 1, 4], batch: 1, alpha: 1, beta: 0 },
  ];
  const flat = list.flatMap((c) => c.shape.map((_, mode) => ({ ...c, mode })));
  test.each(cases(DTYPES, flat).map(([d, g]) => [d, label(g), g] as const))('%s %s', (dt, _l, g) => {
    const rng = nextRng();
    const q = g.shape[g.mode];
    const gv = stored(dt, rng.normals(g.batch * R.prod(g.shape)));
    const h0 = stored(dt, rng.normals(g.batch * q * q));
    const G = pool.from(dt, gv, g.shape, g.batch);
    const H = pool.from(dt, h0, [q, q], g.batch);
    ops.gram(G, g.mode, H, g.alpha, g.beta);
    const ref = R.gramRef(gv, g.shape, g.batch, g.mode, g.alpha, g.beta, h0);
    const scale = R.gramRef(gv, g.shape, g.batch, g.mode, g.alpha, g.beta, h0, true);
    const k = R.prod(g.shape) / q;
    expectClose(read(H), ref, boundOf(scale, 2 * (k + 2), U[dt]), 'gram');
    // The reference itself agrees with the unfolding definition G_(i) G_(i)^T.
    if (g.batch === 1 && g.beta === 0) {
      const u = R.unfold(gv, g.shape, g.mode);
      const viaUnfold = R.gemmRef({ a: u, aShape: [q, k], aBatch: 1, b: u, bShape: [q, k], bBatch: 1, transB: true, alpha: g.alpha }).c;
      expectClose(ref, viaUnfold, 1e-12 * (1 + R.maxAbs(ref)), 'gram reference vs unfolding');
    }
  });

  test('allocates H when omitted', () => {
    const G = pool.from('float64', nextRng().normals(2 * 60), [3, 4, 5], 2);
    const H = pool.keep(ops.gram(G, 1));
    expect(H.shape).toEqual([4, 4]);
    expect(H.batch).toBe(2);
  });
});

describe('modeProduct', () => {
  type M = { shape: number[]; batch: number; nOut: number; mBatch1: boolean };
  const list: M[] = [
    { shape: [6], batch: 1, nOut: 4, mBatch1: false },
    { shape: [1, 1], batch: 1, nOut: 1, mBatch1: false },
    { shape: [7, 1], batch: 2, nOut: 3, mBatch1: false },
    { shape: [1, 7], batch: 3, nOut: 5, mBatch1: true },
    { shape: [5, 6], batch: 2, nOut: 6, mBatch1: false },
    { shape: [3, 4, 5], batch: 2, nOut: 2, mBatch1: true },
    { shape: [2, 3, 4, 3], batch: 2, nOut: 3, mBatch1: false },
    { shape: [4, 1, 2, 5], batch: 1, nOut: 3, mBatch1: false },
  ];
  const flat = list.flatMap((c) => c.shape.flatMap((_, mode) => [false, true].map((transM) => ({ ...c, mode, transM }))));
  test.each(cases(DTYPES, flat).map(([d, g]) => [d, label(g), g] as const))('%s %s', (dt, _l, g) => {
    const rng = nextRng();
    const q = g.shape[g.mode];
    const mShape: [number, number] = g.transM ? [q, g.nOut] : [g.nOut, q];
    const mBatch = g.mBatch1 ? 1 : g.batch;
    const gv = stored(dt, rng.normals(g.batch * R.prod(g.shape)));
    const mv = stored(dt, rng.normals(mBatch * q * g.nOut));
    const G = pool.from(dt, gv, g.shape, g.batch);
    const Mt = pool.from(dt, mv, mShape, mBatch);
    const out = pool.keep(ops.modeProduct(G, g.mode, Mt, undefined, g.transM));
    const ref = R.modeProductRef(gv, g.shape, g.batch, g.mode, mv, mShape, mBatch, g.transM);
    expect(out.shape).toEqual(ref.shape);
    expect(out.batch).toBe(g.batch);
    const scale = R.modeProductRef(gv, g.shape, g.batch, g.mode, mv, mShape, mBatch, g.transM, true).out;
    expectClose(read(out), ref.out, boundOf(scale, 2 * (q + 2), U[dt]), 'modeProduct');
    // Writing into a given output (with stale contents) gives the same result.
    const given = pool.from(dt, rng.normals(ref.out.length), ref.shape, g.batch);
    ops.modeProduct(G, g.mode, Mt, given, g.transM);
    expect(read(given)).toEqual(read(out));
  });
});

describe('eigh', () => {
  type E = { n: number; batch: number; kind: 'random' | 'lower-only' | 'repeated' | 'spread' };
  const list: E[] = [
    { n: 1, batch: 1, kind: 'random' },
    { n: 1, batch: 3, kind: 'random' },
    { n: 2, batch: 2, kind: 'random' },
    { n: 5, batch: 3, kind: 'lower-only' }, // garbage upper triangle: only the lower one is read
    { n: 8, batch: 2, kind: 'repeated' }, // eigenvalues {1,1,1,1,2,2,3,3}: vectors not unique
    { n: 16, batch: 2, kind: 'spread' }, // eigenvalues 1e-6 .. 1e2
    { n: 40, batch: 2, kind: 'random' },
    { n: 97, batch: 1, kind: 'lower-only' },
  ];
  function input(rng: R.Rng, e: E): Float64Array {
    const out = new Float64Array(e.batch * e.n * e.n);
    for (let b = 0; b < e.batch; b++) {
      let a: Float64Array;
      if (e.kind === 'repeated') {
        a = rng.symmetricWithEigenvalues([1, 1, 1, 1, 2, 2, 3, 3].slice(0, e.n));
      } else if (e.kind === 'spread') {
        a = rng.symmetricWithEigenvalues(Array.from({ length: e.n }, (_, i) => 10 ** (-6 + (8 * i) / (e.n - 1))));
      } else {
        a = R.symmetrizeRef(rng.normals(e.n * e.n), e.n, 1);
        if (e.kind === 'lower-only') for (let i = 0; i < e.n; i++) for (let j = i + 1; j < e.n; j++) a[i * e.n + j] = 1e3 * rng.normal();
      }
      out.set(a, b * e.n * e.n);
    }
    return out;
  }
  test.each(cases(DTYPES, list).map(([d, g]) => [d, label(g), g] as const))('%s %s', (dt, _l, e) => {
    const rng = nextRng();
    const n = e.n;
    const a = stored(dt, input(rng, e));
    const A = pool.from(dt, a, [n, n], e.batch);
    const { w, v, info } = ops.eigh(A);
    pool.keep(w);
    pool.keep(v);
    expect(Array.from(info)).toEqual(new Array(e.batch).fill(0));
    expect(w.shape).toEqual([n]);
    expect(v.shape).toEqual([n, n]);
    expect(read(A)).toEqual(a); // input untouched
    const wv = read(w);
    const vv = read(v);
    const ref = R.eighRef(a, n, e.batch);
    for (let b = 0; b < e.batch; b++) {
      const sym = R.lowerSym(a, n, b);
      const anorm = R.oneNorm(sym, n) || 1;
      for (let j = 1; j < n; j++) expect(wv[b * n + j]).toBeGreaterThanOrEqual(wv[b * n + j - 1]);
      // Eigenvalues vs the Jacobi reference (Weyl + backward stability).
      const wtol = LAPACK_THRESH * n * anorm * ULP[dt];
      expectClose(wv.subarray(b * n, (b + 1) * n), ref.w.subarray(b * n, (b + 1) * n), wtol, `eigenvalues of item ${b}`);
      // Residual and orthogonality ratios of LAPACK's test suite.
      const rec = R.reconstruct(vv, wv, n, b * n * n, b * n);
      const resid = R.oneNorm(rec.map((x, i) => x - sym[i]), n) / (n * anorm * ULP[dt]);
      const orth = R.oneNorm(R.orthoDefect(vv, n, b * n * n), n) / (n * ULP[dt]);
      expect(resid).toBeLessThan(LAPACK_THRESH);
      expect(orth).toBeLessThan(LAPACK_THRESH);
    }
  });

  test.each(DTYPES)('%s: with allowFailures, a non-finite item reports info != 0 and NaN eigenvalues; the others are solved', (dt) => {
    const a = [2, 0, 0, 3, NaN, 0, 0, 1];
    const { w, v, info } = ops.eigh(pool.from(dt, a, [2, 2], 2), { allowFailures: true });
    pool.keep(w);
    pool.keep(v);
    expect(Array.from(info).map((x) => x !== 0)).toEqual([false, true]);
    const wv = Array.from(read(w));
    expect(wv.slice(0, 2)).toEqual([2, 3]);
    expect(wv.slice(2).every(Number.isNaN)).toBe(true);
  });

  test.each(DTYPES)('%s: eigenvalues of a diagonal matrix come back sorted and exact', (dt) => {
    const d = [3, -1, 2, 0.5];
    const a = new Float64Array(16);
    d.forEach((x, i) => (a[i * 5] = x));
    const { w, v } = ops.eigh(pool.from(dt, a, [4, 4]));
    pool.keep(w);
    pool.keep(v);
    expect(Array.from(read(w))).toEqual([-1, 0.5, 2, 3]);
    // Eigenvectors are +-unit vectors.
    expect(Array.from(read(v), Math.abs).reduce((s, x) => s + x, 0)).toBeCloseTo(4, 5);
  });
});

describe('matpow', () => {
  type P = { n: number; batch: number; p: number; floor: number; ridge: number; kind: 'spd' | 'singular' };
  const list: P[] = [
    { n: 1, batch: 2, p: 0.25, floor: 0, ridge: 0, kind: 'spd' },
    { n: 2, batch: 1, p: -0.25, floor: 1e-3, ridge: 0, kind: 'spd' },
    { n: 6, batch: 3, p: 0.5, floor: 0, ridge: 0.1, kind: 'spd' },
    { n: 12, batch: 2, p: -1, floor: 1e-2, ridge: 0, kind: 'spd' },
    { n: 12, batch: 1, p: 2, floor: 0, ridge: 0, kind: 'spd' },
    { n: 16, batch: 2, p: 1 / 8, floor: 0, ridge: 1e-3, kind: 'spd' },
    { n: 10, batch: 2, p: -0.5, floor: 1e-2, ridge: 0, kind: 'singular' }, // clamped null space
    { n: 10, batch: 1, p: 0.5, floor: 0, ridge: 0, kind: 'singular' }, // Holder case
    { n: 33, batch: 1, p: 0.25, floor: 0, ridge: 0, kind: 'spd' },
  ];
  function input(rng: R.Rng, c: P): Float64Array {
    const out = new Float64Array(c.batch * c.n * c.n);
    for (let b = 0; b < c.batch; b++) {
      if (c.kind === 'spd') {
        out.set(rng.symmetricWithEigenvalues(rng.uniforms(c.n, 0.1, 10)), b * c.n * c.n);
      } else {
        const r = Math.max(1, Math.floor(c.n / 2)); // G G^T with G n x r: rank r
        const g = rng.normals(c.n * r);
        out.set(R.gemmRef({ a: g, aShape: [c.n, r], aBatch: 1, b: g, bShape: [c.n, r], bBatch: 1, transB: true }).c, b * c.n * c.n);
      }
    }
    return out;
  }
  function tolerance(dt: DType, a: Float64Array, c: P, b: number): number {
    const n = c.n;
    const s = R.lowerSym(a, n, b);
    for (let i = 0; i < n; i++) s[i * n + i] += c.ridge;
    const w = R.jacobiEigh(s, n).w;
    const delta = LAPACK_THRESH * n * ULP[dt] * R.oneNorm(s, n);
    const f = R.powFn(c.p, c.floor);
    const lo = Math.max(w[0] - delta, c.floor);
    const hi = w[n - 1] + delta;
    const slope = (x: number): number => Math.abs(c.p * Math.pow(x, c.p - 1));
    let perturb: number;
    if (lo <= 0 && c.p < 1) perturb = Math.pow(delta, c.p); // Holder continuity of x^p, 0 < p < 1
    else perturb = Math.max(slope(Math.max(lo, 1e-300)), slope(hi)) * delta; // monotone slope: ends of the interval
    const fmax = Math.max(...Array.from(w, f));
    return 2 * Math.sqrt(n) * (perturb + n * U[dt] * fmax) + 1e-300;
  }
  test.each(cases(DTYPES, list).map(([d, g]) => [d, label(g), g] as const))('%s %s', (dt, _l, c) => {
    const rng = nextRng();
    const n = c.n;
    const a = stored(dt, input(rng, c));
    const A = pool.from(dt, a, [n, n], c.batch);
    const { out, info } = ops.matpow(A, c.p, { floor: c.floor, ridge: c.ridge });
    pool.keep(out);
    expect(Array.from(info)).toEqual(new Array(c.batch).fill(0));
    const got = read(out);
    const ref = R.matpowRef(a, n, c.batch, c.p, c.floor, c.ridge);
    for (let b = 0; b < c.batch; b++) {
      const d = R.norm(got.subarray(b * n * n, (b + 1) * n * n).map((x, i) => x - ref[b * n * n + i]));
      const tol = tolerance(dt, a, c, b);
      if (!(d <= tol)) throw new Error(`matpow item ${b}: ||out - ref||_F = ${d}, tolerance ${tol}`);
    }
  });

  test.each(DTYPES)('%s: A^1 = A and A^0 = I', (dt) => {
    const rng = nextRng();
    const a = stored(dt, rng.symmetricWithEigenvalues([0.5, 1, 2, 4, 8]));
    const A = pool.from(dt, a, [5, 5]);
    const one = pool.keep(ops.matpow(A, 1).out);
    expectClose(read(one), a, 2 * 30 * 5 * ULP[dt] * 8, 'A^1');
    const zero = pool.keep(ops.matpow(A, 0).out);
    expectClose(read(zero), R.addIdentityRef(new Float64Array(25), 5, 1, 1), 2 * 30 * 5 * ULP[dt], 'A^0');
  });

  test.each(DTYPES)('%s: an item whose eigh fails keeps its previous output; the others are computed', (dt) => {
    const rng = nextRng();
    const n = 4;
    const good = rng.symmetricWithEigenvalues([1, 2, 3, 4]);
    const a = new Float64Array(3 * n * n);
    a.set(good, 0);
    a.set(good, 2 * n * n);
    a.fill(NaN, n * n, 2 * n * n);
    const A = pool.from(dt, a, [n, n], 3);
    const prev = Float64Array.from({ length: 3 * n * n }, (_, i) => i);
    const out = pool.from(dt, prev, [n, n], 3);
    const { info } = ops.matpow(A, 0.5, { out, allowFailures: true });
    expect(info[0]).toBe(0);
    expect(info[1]).not.toBe(0);
    expect(info[2]).toBe(0);
    const got = read(out);
    expect(Array.from(got.subarray(n * n, 2 * n * n))).toEqual(Array.from(prev.subarray(n * n, 2 * n * n)));
    const ref = R.matpowRef(stored(dt, good), n, 1, 0.5);
    expectClose(got.subarray(0, n * n), ref, 2 * 30 * n * ULP[dt] * 4, 'item 0');
    expectClose(got.subarray(2 * n * n), ref, 2 * 30 * n * ULP[dt] * 4, 'item 2');
    // Without allowFailures the same call throws NONFINITE and names the item.
    expect(() => ops.matpow(A, 0.5, { out })).toThrow(expect.objectContaining({ code: 'NONFINITE', details: { item: 1 } }));
  });
});

describe('elementwise ops', () => {
  const shapes: { shape: number[]; batch: number }[] = [
    { shape: [1], batch: 1 },
    { shape: [7, 1], batch: 2 },
    { shape: [1, 9], batch: 1 },
    { shape: [4, 3], batch: 3 },
    { shape: [2, 3, 4], batch: 2 },
    { shape: [2, 2, 3, 2], batch: 3 },
  ];
  const all = cases(DTYPES, shapes).map(([d, s]) => [d, label(s), s] as const);

  test.each(all)('%s axpby %s (scalar, number[] and Float64Array coefficients)', (dt, _l, s) => {
    const rng = nextRng();
    const len = s.batch * R.prod(s.shape);
    const x = stored(dt, rng.normals(len));
    const y = stored(dt, rng.normals(len));
    const coeffs: [number | number[] | Float64Array, number | number[] | Float64Array][] = [
      [0.3, -1.7],
      [Array.from(rng.normals(s.batch)), Array.from(rng.normals(s.batch))],
      [rng.normals(s.batch), 1],
      [0, 2], // alpha 0: y scaled only
      [1.25, 0], // beta 0: y overwritten, never read
    ];
    for (const [alpha, beta] of coeffs) {
      const X = pool.from(dt, x, s.shape, s.batch);
      const Y = pool.from(dt, y, s.shape, s.batch);
      expect(ops.axpby(X, Y, alpha, beta)).toBe(Y);
      const ref = R.axpbyRef(x, y, s.batch, alpha, beta);
      // float32: alpha and beta rounded (1 u each), two products, one sum: <= 4 u (|a x| + |b y|), x2.
      const scale = R.axpbyRef(R.absArr(x), R.absArr(y), s.batch, typeof alpha === 'number' ? Math.abs(alpha) : R.absArr(alpha), typeof beta === 'number' ? Math.abs(beta) : R.absArr(beta));
      expectClose(read(Y), ref, boundOf(scale, 8, U[dt]), `axpby(${label({ alpha, beta })})`);
      expect(read(X)).toEqual(x);
    }
  });

  test.each(all)('%s scale %s', (dt, _l, s) => {
    const rng = nextRng();
    const x = stored(dt, rng.normals(s.batch * R.prod(s.shape)));
    for (const alpha of [-0.37, Array.from(rng.normals(s.batch))]) {
      const X = pool.from(dt, x, s.shape, s.batch);
      ops.scale(X, alpha);
      const scale = R.absArr(R.scaleRef(x, s.batch, alpha));
      expectClose(read(X), R.scaleRef(x, s.batch, alpha), boundOf(scale, 2 * 2, U[dt]), 'scale'); // alpha rounding + product
    }
  });

  test.each(all)('%s dot and frobNorm %s', (dt, _l, s) => {
    const rng = nextRng();
    const len = s.batch * R.prod(s.shape);
    const x = stored(dt, rng.normals(len));
    const y = stored(dt, rng.normals(len));
    const X = pool.from(dt, x, s.shape, s.batch);
    const Y = pool.from(dt, y, s.shape, s.batch);
    const count = R.prod(s.shape);
    const absDot = R.dotRef(R.absArr(x), R.absArr(y), s.batch);
    expectClose(ops.dot(X, Y), R.dotRef(x, y, s.batch), boundOf(absDot, 2 * (count + 2), U.float64), 'dot');
    const nref = R.frobNormRef(x, s.batch);
    expectClose(ops.frobNorm(X), nref, boundOf(nref, 2 * (count + 2), U.float64), 'frobNorm');
  });

  test.each(all)('%s mulAcc and divSqrt %s', (dt, _l, s) => {
    const rng = nextRng();
    const len = s.batch * R.prod(s.shape);
    const x = stored(dt, rng.normals(len));
    const y = stored(dt, rng.normals(len));
    const acc = stored(dt, rng.uniforms(len, 0.01, 4));
    const ACC = pool.from(dt, acc, s.shape, s.batch);
    ops.mulAcc(pool.from(dt, x, s.shape, s.batch), pool.from(dt, y, s.shape, s.batch), ACC, 0.9, 0.1);
    const ref = R.mulAccRef(x, y, acc, 0.9, 0.1);
    // a, b rounded; a acc, b x y (2 products), one sum: <= 4 u (|a acc| + |b x y|), x2.
    const scale = R.mulAccRef(R.absArr(x), R.absArr(y), acc, 0.9, 0.1);
    expectClose(read(ACC), ref, boundOf(scale, 8, U[dt]), 'mulAcc');
    // Running squares: x == y.
    const SQ = pool.from(dt, acc, s.shape, s.batch);
    const X = pool.from(dt, x, s.shape, s.batch);
    ops.mulAcc(X, X, SQ, 1, 1);
    expectClose(read(SQ), R.mulAccRef(x, x, acc, 1, 1), boundOf(R.mulAccRef(x, x, acc, 1, 1), 8, U[dt]), 'mulAcc x*x');

    const OUT = pool.zeros(dt, s.shape, s.batch);
    ops.divSqrt(X, pool.from(dt, acc, s.shape, s.batch), OUT, 0.5, 1e-3);
    const dref = R.divSqrtRef(x, acc, 0.5, 1e-3);
    // scale/eps rounded, product, sqrt, sum, division: <= 6 u relative, x2.
    expectClose(read(OUT), dref, boundOf(R.absArr(dref), 12, U[dt]), 'divSqrt');
    // In place (out = x) gives the same.
    ops.divSqrt(X, pool.from(dt, acc, s.shape, s.batch), X, 0.5, 1e-3);
    expect(read(X)).toEqual(read(OUT));
  });

  test.each(all)('%s copy with and without cast, fill %s', (dt, _l, s) => {
    const rng = nextRng();
    const len = s.batch * R.prod(s.shape);
    const x = stored(dt, rng.normals(len, 3));
    const X = pool.from(dt, x, s.shape, s.batch);
    for (const to of DTYPES) {
      const D = pool.zeros(to, [len]); // same element count, other shape
      ops.copy(X, D);
      expect(D.dtype).toBe(to);
      expect(read(D)).toEqual(R.copyCastRef(x, to)); // exact: round to nearest into float32
    }
    ops.fill(X, -2.5);
    expect(read(X)).toEqual(new Float64Array(len).fill(-2.5));
  });

  test('copy float64 -> float32 rounds to nearest, including values that are not representable', () => {
    const x = [1 / 3, Math.PI, 1e-40, 3.4e38, 1 + 2 ** -30, -0.1];
    const D = pool.zeros('float32', [6]);
    ops.copy(pool.from('float64', x, [6]), D);
    expect(Array.from(read(D))).toEqual(x.map(Math.fround));
  });

  test.each(DTYPES)('%s allFinite', (dt) => {
    const item = 5;
    const x = new Float64Array(5 * item).map((_, i) => i - 7);
    x[item + 2] = NaN;
    x[2 * item] = Infinity;
    x[4 * item + 4] = -Infinity;
    const X = pool.from(dt, x, [item], 5);
    expect(ops.allFinite(X)).toEqual(R.allFiniteRef(x, 5));
    expect(ops.allFinite(X)).toEqual([true, false, false, true, false]);
    if (dt === 'float32') {
      // A finite float64 that overflows float32 becomes Inf when stored.
      expect(ops.allFinite(pool.from(dt, [1e39], [1]))).toEqual([false]);
    }
  });
});

describe('square-matrix ops', () => {
  const list: { n: number; batch: number }[] = [
    { n: 1, batch: 1 },
    { n: 1, batch: 3 },
    { n: 5, batch: 1 },
    { n: 8, batch: 4 },
    { n: 31, batch: 2 },
  ];
  const all = cases(DTYPES, list).map(([d, s]) => [d, label(s), s] as const);

  test.each(all)('%s trace, addIdentity, symmetrize %s', (dt, _l, s) => {
    const rng = nextRng();
    const { n, batch } = s;
    const a = stored(dt, rng.normals(batch * n * n));
    const A = pool.from(dt, a, [n, n], batch);
    const tref = R.traceRef(a, n, batch);
    expectClose(ops.trace(A), tref, boundOf(R.traceRef(R.absArr(a), n, batch), 2 * (n + 1), U.float64), 'trace');

    for (const alpha of [0.7, Array.from(rng.normals(batch)), rng.normals(batch)]) {
      const B = pool.from(dt, a, [n, n], batch);
      expect(ops.addIdentity(B, alpha)).toBe(B);
      const ref = R.addIdentityRef(a, n, batch, alpha);
      const scale = R.addIdentityRef(R.absArr(a), n, batch, typeof alpha === 'number' ? alpha : R.absArr(alpha));
      expectClose(read(B), ref, boundOf(scale, 2 * 2, U[dt]), 'addIdentity'); // alpha rounding + sum
    }

    const S = pool.from(dt, a, [n, n], batch);
    ops.symmetrize(S);
    const sref = R.symmetrizeRef(a, n, batch);
    const got = read(S);
    // (a + b) / 2: one rounding of the sum; halving is exact.
    expectClose(got, sref, boundOf(R.symmetrizeRef(R.absArr(a), n, batch), 2 * 2, U[dt]), 'symmetrize');
    for (let b = 0; b < batch; b++)
      for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) expect(got[b * n * n + i * n + j]).toBe(got[b * n * n + j * n + i]);
  });
});

describe('boxes', () => {
  type Bx = { full: number[]; box: number[]; offsets: number[][]; first: number; batch: number };
  const list: Bx[] = [
    { full: [10], box: [3], offsets: [[0], [3], [7]], first: 0, batch: 3 },
    { full: [1, 1], box: [1, 1], offsets: [[0, 0]], first: 0, batch: 1 },
    { full: [7, 9], box: [3, 4], offsets: [[0, 0], [0, 4], [3, 5], [4, 0]], first: 1, batch: 6 },
    { full: [6, 1], box: [2, 1], offsets: [[0, 0], [4, 0]], first: 0, batch: 2 },
    { full: [4, 5, 6], box: [2, 3, 4], offsets: [[0, 0, 0], [2, 2, 2], [1, 1, 0]], first: 0, batch: 3 },
    { full: [3, 4, 2, 5], box: [2, 2, 1, 3], offsets: [[1, 2, 1, 2], [0, 0, 0, 0]], first: 2, batch: 4 },
  ];
  test.each(cases(DTYPES, list).map(([d, g]) => [d, label(g), g] as const))('%s %s', (dt, _l, c) => {
    const rng = nextRng();
    const full = stored(dt, rng.normals(R.prod(c.full)));
    const blocks0 = stored(dt, rng.normals(c.batch * R.prod(c.box)));
    const F = pool.from(dt, full, c.full);
    const Bk = pool.from(dt, blocks0, c.box, c.batch);
    ops.boxes(F, Bk, c.offsets, false, c.first);
    const gathered = R.boxesGatherRef(full, c.full, blocks0, c.box, c.offsets, c.first);
    expect(read(Bk)).toEqual(gathered); // copies are exact
    // Scatter modified blocks back into a fresh full tensor.
    const blocks1 = stored(dt, rng.normals(c.batch * R.prod(c.box)));
    const full0 = stored(dt, rng.normals(R.prod(c.full)));
    const F2 = pool.from(dt, full0, c.full);
    ops.boxes(F2, pool.from(dt, blocks1, c.box, c.batch), c.offsets, true, c.first);
    expect(read(F2)).toEqual(R.boxesScatterRef(full0, c.full, blocks1, c.box, c.offsets, c.first));
  });
});

describe('fused optimizer pieces', () => {
  const shapes: { shape: number[]; batch: number }[] = [
    { shape: [1], batch: 1 },
    { shape: [5, 1], batch: 3 },
    { shape: [4, 6], batch: 2 },
    { shape: [2, 3, 2, 2], batch: 2 },
  ];
  test.each(cases(DTYPES, shapes).map(([d, s]) => [d, label(s), s] as const))('%s scaleByNormRatio %s', (dt, _l, s) => {
    const rng = nextRng();
    const len = s.batch * R.prod(s.shape);
    const d = stored(dt, rng.normals(len));
    const a = stored(dt, rng.normals(len, 3));
    for (const eps of [0, 1e-3]) {
      const D = pool.from(dt, d, s.shape, s.batch);
      expect(ops.scaleByNormRatio(D, pool.from(dt, a, s.shape, s.batch), eps)).toBe(D);
      const ref = R.scaleByNormRatioRef(d, a, s.batch, eps);
      // Norms in double (relative (count + 2) u64 each), then factor rounding + product: 2 u.
      const rel = 2 * U[dt] + 2 * (R.prod(s.shape) + 2) * U.float64;
      expectClose(read(D), ref, boundOf(R.absArr(ref), 2 * rel / U[dt], U[dt]), 'scaleByNormRatio');
    }
  });
  test.each(cases(DTYPES, [{ n: 1, batch: 2 }, { n: 5, batch: 1 }, { n: 12, batch: 3 }]).map(([d, s]) => [d, label(s), s] as const))(
    '%s inverseUpdate %s',
    (dt, _l, s) => {
      const rng = nextRng();
      const { n, batch } = s;
      const l = stored(dt, rng.normals(batch * n * n));
      const t = stored(dt, rng.normals(batch * n * n));
      // M with a positive trace keeps 1 + tr M away from 0 (as for M = H L, H and L PSD).
      const m = stored(dt, R.addIdentityRef(rng.normals(batch * n * n, 0.1), n, batch, 1));
      for (const kind of ['trace', 'frobenius'] as const) {
        const L = pool.from(dt, l, [n, n], batch);
        expect(ops.inverseUpdate(L, pool.from(dt, t, [n, n], batch), pool.from(dt, m, [n, n], batch), kind)).toBe(L);
        const ref = R.inverseUpdateRef(l, t, m, n, batch, kind);
        // 1/s in double, rounded to the dtype (1 u), product (1 u), sum (1 u): 3 u (|L| + |T/s|), x2.
        const scale = Float64Array.from(l, (x, k) => Math.abs(x) + Math.abs(t[k] / ref.s[Math.floor(k / (n * n))]));
        expectClose(read(L), ref.l, boundOf(scale, 6, U[dt]), `inverseUpdate ${kind}`);
      }
    },
  );
  test('allFiniteMany over tensors of both dtypes and any shapes', () => {
    const xs = [
      pool.from('float32', [1, 2, 3], [3]),
      pool.from('float64', [1, NaN], [1, 2]),
      pool.from('float32', [Infinity, 0, 0, 0], [2, 2]),
      pool.from('float64', [0, 0, 0, 0, 0, 0], [3], 2),
      pool.from('float64', [0, 0, 0, 0, 0, -Infinity], [3], 2), // last item of a batch
    ];
    expect(ops.allFiniteMany(xs)).toEqual([true, false, false, true, false]);
    expect(ops.allFiniteMany(xs).length).toBe(xs.length);
    expect(ops.allFiniteMany([])).toEqual([]);
  });
});

describe('reference self-checks', () => {
  test('Jacobi reference reconstructs and is orthogonal', () => {
    const rng = nextRng();
    const n = 12;
    const a = R.symmetrizeRef(rng.normals(n * n), n, 1);
    const { w, v } = R.jacobiEigh(a, n);
    expect(R.maxAbs(R.reconstruct(v, w, n).map((x, i) => x - a[i]))).toBeLessThan(1e-12);
    expect(R.maxAbs(R.orthoDefect(v, n))).toBeLessThan(1e-13);
  });
  test('RNG is seeded and roughly standard normal', () => {
    expect(Array.from(new R.Rng(5).normals(4))).toEqual(Array.from(new R.Rng(5).normals(4)));
    const z = new R.Rng(11).normals(20000);
    const mean = z.reduce((s, x) => s + x, 0) / z.length;
    const varc = z.reduce((s, x) => s + (x - mean) ** 2, 0) / z.length;
    expect(Math.abs(mean)).toBeLessThan(0.03);
    expect(Math.abs(varc - 1)).toBeLessThan(0.05);
  });
  test('ops reject non-Tensor arguments with KradagradError', () => {
    expect(() => ops.scale({} as Tensor, 1)).toThrow(KradagradError);
  });
});
