/**
 * Every backend op on a device backend (default: cuda) against the CPU backend, on seeded
 * random inputs, float32 and float64, with shapes that reach the kernels' edge paths
 * (1x1, sizes that are not multiples of a tile, batches past the 65535 grid and GEMM
 * limits, many reduction chunks), plus non-finite inputs, the async (worker thread)
 * entry points, determinism and error mapping.
 *
 * Used twice: by test/cuda.test.ts (jest, where a GPU is present) and through
 * bench/gpu-ops.ts, a plain node script for the GPU machine (no npm there):
 * `node dist/bench/gpu-ops.js` (see scripts/gpu-check.sh), which prints a table and
 * writes JSON with the device names.
 *
 * Tolerances: both backends are compared against each other, so each bound is twice the
 * bound either one meets against exact arithmetic.
 * - Products with k terms: gamma_k |A||B| ~ k u |A||B| elementwise for any summation order
 *   or blocking, with or without FMA (Higham 3.5), +2 roundings for alpha/beta. |A||B| is
 *   computed by the reference backend on |A|, |B|.
 * - Elementwise ops: the few roundings of each formula; both backends round the same
 *   operations, so these usually agree bit for bit (reported as "exact").
 * - Reductions accumulate in double: (count + 2) u64 times the sum of |terms|.
 * - eigh: LAPACK's own test ratios (< 30): ||A - V W V^T||_1 / (n ||A||_1 ulp),
 *   ||V^T V - I||_1 / (n ulp), and eigenvalues within 30 n ulp ||A||_1 of the reference's
 *   (Weyl). Eigenvectors are unique only up to sign, so they are checked through residuals.
 * - matpow: a backward error delta = 30 n ulp ||A||_1 moves f(A) by at most Lip(f) delta;
 *   plus the final product, n u max f. Frobenius norm, sqrt(n) times the sum.
 *
 * Since the last GPU run (fused stages, roots, jobs, whole steps):
 * - Fused stages (updateMany, adamMany, graftMany, axpbyOutMany): the running error bound
 *   of each element formula, gamma_K times the formula evaluated on absolute values
 *   (Higham 3.1-3.3), K = 12 roundings on the longest chain with the coefficient casts,
 *   x2; where a quotient by sqrt(acc) + eps follows (Adam, grafting), the numerator's and
 *   the denominator's bounds are carried through it (sqrt is 1/2-Hoelder, so its error is
 *   at most min(dx / (2 sqrt x), sqrt dx)). On one backend each stage must equal, bit for
 *   bit, the chain of single ops it replaces (the Backend contract in native/core/backend.h),
 *   with aliased outputs too, and in both CUDA modes (KRADAGRAD_CUDA_FUSED_STAGES).
 * - root: the eigh path is matpow, same bound. Newton adds its stopping rule: ||M - I||_F
 *   <= tol sqrt(n) with M = X^r A moves the root by at most ||A^p||_2 tol sqrt(n) / r
 *   (positive roots A X^(r-1): (r - 1) / r), x1.1 for second order, on top of the eigh
 *   path's rounding allowance (the CPU's own error against the float64 root is below 1% of
 *   the whole bound in every case here). Failed items (NaN) must keep the previous root bit
 *   for bit on both backends, and info must say they failed.
 * - Jobs: no tolerance. A job's run(), runAsync() and the same ops issued one by one give
 *   the same bits on the device; the discrete results (aborts, codes, indices, tags, solver
 *   info and failure-count slots) must equal the CPU's.
 * - Whole optimizer steps: forward errors against a float64 run of the same optimizer on
 *   the CPU (same float32-representable inputs): at every step, ||W_dev - W_64||_F <=
 *   4 ||W_cpu - W_64||_F + 2 u ||W_64||_F. Both backends run the same algorithm with kernels
 *   whose error bounds have the same form (gamma_k products, a backward-stable eigensolver
 *   accepted at the same 30 n ulp), with other constants (blocking, FMA in cuBLAS, Jacobi vs
 *   divide and conquer); the factor 4 for those constants is a judgement, not a theorem: a
 *   failure says the device is clearly less accurate than the CPU on that problem. The
 *   problems are well conditioned (epsilon well above float32's rounding of the largest
 *   factor eigenvalue), so the errors are rounding, not an ill-conditioned factor lost in
 *   two different ways. Fault injection on the CPU (perturbing what the device computes)
 *   shows the check catching a relative change of 1e-4 in the root exponent (1e-5 for all
 *   but KradagradStar) and of 1e-5 in Adam's learning rate.
 *   step() and stepAsync() on the device: bit for bit, states included.
 */
import { Adam, Backend, Kradagrad, KradagradError, KradagradStar, Sgd, Shampoo, Tensor, getBackend, ops } from '../../lib';
import type { DType, NamedParams, Optimizer } from '../../lib';
import { record } from '../../lib/exec';
import type { NativeRootSpec } from '../../lib/native';
import { Rng } from './rand';

export const U: Record<DType, number> = { float32: 2 ** -24, float64: 2 ** -53 };
export const ULP: Record<DType, number> = { float32: 2 ** -23, float64: 2 ** -52 };
export const DTYPES: DType[] = ['float32', 'float64'];

// ---- random inputs (Rng from ./rand, seeded by a hash of the case name) ---------------------

export function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}
export const typed = (dt: DType, d: ArrayLike<number>): Float32Array | Float64Array =>
  dt === 'float32' ? Float32Array.from(d) : Float64Array.from(d);
/** The values as a tensor of `dt` stores them. */
const stored = (dt: DType, d: ArrayLike<number>): Float64Array => Float64Array.from(typed(dt, d));
const absArr = (d: ArrayLike<number>): Float64Array => Float64Array.from(d, Math.abs);
const prod = (s: number[]): number => s.reduce((a, b) => a * b, 1);
const label = (o: object): string => JSON.stringify(o).replace(/"/g, '');

// ---- comparison --------------------------------------------------------------------------

export interface CaseResult {
  name: string;
  ok: boolean;
  /** Largest |difference| / tolerance over every check of the case (<= 1 passes). */
  worst: number;
  /** Every compared value agreed bit for bit. */
  exact: boolean;
  detail: string;
  ms: number;
}

export interface OpCase {
  name: string;
  /** Cases that only make sense on a real device (e.g. out-of-memory mapping). */
  deviceOnly?: boolean;
  run(ref: Backend, dev: Backend, chk: Check): void | Promise<void>;
}

export class Check {
  worst = 0;
  exact = true;
  readonly failures: string[] = [];
  private readonly notes: string[] = [];
  /** |got - want| <= tol elementwise (NaN matches NaN). */
  close(what: string, got: ArrayLike<number>, want: ArrayLike<number>, tol: number | ArrayLike<number>): void {
    if (got.length !== want.length) {
      this.failures.push(`${what}: length ${got.length} vs ${want.length}`);
      return;
    }
    let worst = 0, at = -1;
    for (let i = 0; i < want.length; i++) {
      const g = got[i], w = want[i];
      if (Object.is(g, w) || (Number.isNaN(g) && Number.isNaN(w))) continue;
      this.exact = false;
      const t = typeof tol === 'number' ? tol : tol[i];
      const r = g === w ? 0 : Math.abs(g - w) / Math.max(t, Number.MIN_VALUE);
      if (!(r <= worst)) {
        worst = Number.isNaN(r) ? Infinity : r;
        at = i;
      }
    }
    this.ratio(what, worst, at >= 0 ? `at ${at}: ${got[at]} vs ${want[at]} (tol ${typeof tol === 'number' ? tol : tol[at]})` : '');
  }
  /** Bitwise equality (NaN matches NaN). */
  equal(what: string, got: ArrayLike<number>, want: ArrayLike<number>): void {
    if (got.length !== want.length) {
      this.failures.push(`${what}: length ${got.length} vs ${want.length}`);
      return;
    }
    for (let i = 0; i < want.length; i++) {
      if (!(Object.is(got[i], want[i]) || (Number.isNaN(got[i]) && Number.isNaN(want[i])))) {
        this.exact = false;
        this.failures.push(`${what}: element ${i} is ${got[i]}, expected exactly ${want[i]}`);
        return;
      }
    }
  }
  /** A bound already reduced to a ratio (<= 1 passes). */
  ratio(what: string, r: number, where = ''): void {
    if (!(r <= this.worst)) this.worst = Number.isNaN(r) ? Infinity : r;
    if (!(r <= 1)) this.failures.push(`${what}: error/tolerance ${r.toPrecision(3)} ${where}`.trim());
  }
  truth(what: string, ok: boolean): void {
    if (!ok) this.failures.push(what);
  }
  note(s: string): void {
    this.notes.push(s);
  }
  summary(): string {
    return [...this.failures, ...this.notes].join('; ');
  }
}

/** Tensors made on both backends from the same host data; disposed together. */
class Pair {
  private readonly live: Tensor[] = [];
  constructor(readonly ref: Backend, readonly dev: Backend) {}
  from(dt: DType, d: ArrayLike<number>, shape: number[], batch = 1): [Tensor, Tensor] {
    return [this.keep(this.ref.fromArray(typed(dt, d), shape, batch)), this.keep(this.dev.fromArray(typed(dt, d), shape, batch))];
  }
  /** A float64 tensor on the reference backend (for error bounds). */
  ref64(d: ArrayLike<number>, shape: number[], batch = 1): Tensor {
    return this.keep(this.ref.fromArray(Float64Array.from(d), shape, batch));
  }
  keep<T extends Tensor>(t: T): T {
    this.live.push(t);
    return t;
  }
  dispose(): void {
    for (const t of this.live.splice(0)) if (!t.disposed) t.dispose();
  }
}
const rd = (t: Tensor): Float64Array => Float64Array.from(t.read());

// ---- host float64 helpers for eigh/matpow checks ------------------------------------------

/** Symmetric matrix from the lower triangle of a row-major item (what eigh reads). */
function lowerSym(a: ArrayLike<number>, off: number, n: number): Float64Array {
  const s = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j <= i; j++) {
      s[i * n + j] = a[off + i * n + j];
      s[j * n + i] = a[off + i * n + j];
    }
  return s;
}
function norm1(a: ArrayLike<number>, n: number): number {
  let m = 0;
  for (let j = 0; j < n; j++) {
    let c = 0;
    for (let i = 0; i < n; i++) c += Math.abs(a[i * n + j]);
    m = Math.max(m, c);
  }
  return m;
}
/** ||S - V diag(w) V^T||_1 and ||V^T V - I||_1 for one item (V columns = eigenvectors). */
function eigResiduals(s: Float64Array, v: ArrayLike<number>, voff: number, w: ArrayLike<number>, woff: number, n: number) {
  const r = Float64Array.from(s);
  const o = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      let acc = 0, dot = 0;
      for (let k = 0; k < n; k++) {
        acc += v[voff + i * n + k] * w[woff + k] * v[voff + j * n + k];
        dot += v[voff + k * n + i] * v[voff + k * n + j];
      }
      r[i * n + j] -= acc;
      o[i * n + j] = dot - (i === j ? 1 : 0);
    }
  return { res: norm1(r, n), orth: norm1(o, n) };
}

// ---- the cases -----------------------------------------------------------------------------

export function withEnv<T>(name: string, value: string | undefined, fn: () => T): T {
  const old = process.env[name];
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
  try {
    return fn();
  } finally {
    if (old === undefined) delete process.env[name];
    else process.env[name] = old;
  }
}

function gemmCases(): OpCase[] {
  type G = { m: number; k: number; n: number; bA: number; bB: number; tA: boolean; tB: boolean; alpha: number; beta: number };
  const list: G[] = [];
  const dims: [number, number, number][] = [[1, 1, 1], [7, 5, 1], [1, 5, 7], [6, 1, 4], [33, 70, 65], [128, 128, 128]];
  const batches: [number, number][] = [[1, 1], [3, 3], [1, 4], [2, 1]];
  dims.forEach(([m, k, n], i) => {
    for (const tA of [false, true])
      for (const tB of [false, true]) {
        const [bA, bB] = batches[(i + (tA ? 1 : 0) + (tB ? 2 : 0)) % batches.length];
        const wb = (i + (tA ? 1 : 0)) % 2 === 0;
        list.push({ m, k, n, bA, bB, tA, tB, alpha: wb ? 0.75 : 1, beta: wb ? -1.5 : 0 });
      }
  });
  // Past cuBLAS's batch chunk (65535) with a broadcast A.
  list.push({ m: 2, k: 3, n: 2, bA: 1, bB: 70000, tA: false, tB: true, alpha: 1, beta: 0.5 });
  return DTYPES.flatMap((dt) =>
    list.map((g): OpCase => ({
      name: `gemm ${dt} ${label(g)}`,
      run(ref, dev, chk) {
        const p = new Pair(ref, dev);
        try {
          const rng = new Rng(hash(this.name));
          const aShape = g.tA ? [g.k, g.m] : [g.m, g.k], bShape = g.tB ? [g.n, g.k] : [g.k, g.n];
          const batch = Math.max(g.bA, g.bB);
          const a = stored(dt, rng.normals(g.bA * g.m * g.k)), b = stored(dt, rng.normals(g.bB * g.k * g.n));
          const c0 = stored(dt, rng.normals(batch * g.m * g.n));
          const [Ar, Ad] = p.from(dt, a, aShape, g.bA), [Br, Bd] = p.from(dt, b, bShape, g.bB);
          const [Cr, Cd] = p.from(dt, c0, [g.m, g.n], batch);
          const o = { transA: g.tA, transB: g.tB, alpha: g.alpha, beta: g.beta };
          ops.gemm(Ar, Br, Cr, o);
          ops.gemm(Ad, Bd, Cd, o);
          const ab = rd(p.keep(ops.gemm(p.ref64(absArr(a), aShape, g.bA), p.ref64(absArr(b), bShape, g.bB), undefined, { transA: g.tA, transB: g.tB })));
          const tol = Float64Array.from(ab, (x, i) => 4 * (g.k + 2) * U[dt] * (Math.abs(g.alpha) * x + Math.abs(g.beta) * Math.abs(c0[i])));
          const got = rd(Cd);
          chk.close('C', got, rd(Cr), tol);
          // Determinism: the same call again gives the same bits.
          const [, Cd2] = p.from(dt, c0, [g.m, g.n], batch);
          ops.gemm(Ad, Bd, Cd2, o);
          chk.equal('C (second run)', rd(Cd2), got);
        } finally {
          p.dispose();
        }
      },
    })),
  );
}

function gramModeCases(): OpCase[] {
  const out: OpCase[] = [];
  type Gc = { shape: number[]; mode: number; batch: number; alpha: number; beta: number };
  const grams: Gc[] = [
    { shape: [5, 7], mode: 0, batch: 1, alpha: 1, beta: 0 },
    { shape: [5, 7], mode: 1, batch: 3, alpha: 0.5, beta: 2 },
    { shape: [4, 6, 3], mode: 0, batch: 2, alpha: 1, beta: 0 },
    { shape: [4, 6, 3], mode: 1, batch: 2, alpha: 1, beta: 1 },
    { shape: [4, 6, 3], mode: 2, batch: 1, alpha: 2, beta: 0 },
    { shape: [3, 33, 2, 5], mode: 1, batch: 2, alpha: 1, beta: 0 },
    { shape: [70, 40, 3], mode: 1, batch: 2, alpha: 1, beta: 0 },
    // n >= 256: the CUDA backend's syrk path (G G^T, G^T G and a transposed unfolding; beta != 0).
    { shape: [300, 70], mode: 0, batch: 2, alpha: 1, beta: 0 },
    { shape: [50, 260], mode: 1, batch: 1, alpha: 0.5, beta: 1.5 },
    { shape: [3, 257, 4], mode: 1, batch: 2, alpha: 1, beta: 0 },
  ];
  for (const dt of DTYPES)
    for (const g of grams)
      out.push({
        name: `gram ${dt} ${label(g)}`,
        run(ref, dev, chk) {
          const p = new Pair(ref, dev);
          try {
            const rng = new Rng(hash(this.name));
            const q = g.shape[g.mode], k = prod(g.shape) / q;
            const x = stored(dt, rng.normals(g.batch * prod(g.shape))), h0 = stored(dt, rng.normals(g.batch * q * q));
            const [Gr, Gd] = p.from(dt, x, g.shape, g.batch), [Hr, Hd] = p.from(dt, h0, [q, q], g.batch);
            ops.gram(Gr, g.mode, Hr, g.alpha, g.beta);
            ops.gram(Gd, g.mode, Hd, g.alpha, g.beta);
            const gg = rd(p.keep(ops.gram(p.ref64(absArr(x), g.shape, g.batch), g.mode)));
            const tol = Float64Array.from(gg, (v, i) => 4 * (k + 2) * U[dt] * (Math.abs(g.alpha) * v + Math.abs(g.beta) * Math.abs(h0[i])));
            chk.close('H', rd(Hd), rd(Hr), tol);
            if (g.beta === 0) {
              // A Gram matrix comes out exactly symmetric on every backend.
              const h = rd(Hd), ht = new Float64Array(h.length);
              for (let b = 0; b < g.batch; b++) for (let i = 0; i < q; i++) for (let j = 0; j < q; j++) ht[b * q * q + j * q + i] = h[b * q * q + i * q + j];
              chk.equal('H symmetric', h, ht);
            }
          } finally {
            p.dispose();
          }
        },
      });
  type Mc = { shape: number[]; mode: number; batch: number; nOut: number; transM: boolean; bM: number };
  const mps: Mc[] = [
    { shape: [5, 7], mode: 0, batch: 1, nOut: 3, transM: false, bM: 1 },
    { shape: [5, 7], mode: 1, batch: 2, nOut: 7, transM: true, bM: 2 },
    { shape: [4, 6, 3], mode: 0, batch: 2, nOut: 4, transM: false, bM: 1 },
    { shape: [4, 6, 3], mode: 1, batch: 3, nOut: 6, transM: true, bM: 3 },
    { shape: [4, 6, 3], mode: 2, batch: 1, nOut: 2, transM: false, bM: 1 },
    { shape: [2, 33, 5, 3], mode: 1, batch: 2, nOut: 33, transM: true, bM: 1 },
    { shape: [40, 70], mode: 1, batch: 2, nOut: 70, transM: false, bM: 2 },
  ];
  for (const dt of DTYPES)
    for (const m of mps)
      out.push({
        name: `modeProduct ${dt} ${label(m)}`,
        run(ref, dev, chk) {
          const p = new Pair(ref, dev);
          try {
            const rng = new Rng(hash(this.name));
            const q = m.shape[m.mode];
            const mShape = m.transM ? [q, m.nOut] : [m.nOut, q];
            const x = stored(dt, rng.normals(m.batch * prod(m.shape))), mm = stored(dt, rng.normals(m.bM * q * m.nOut));
            const [Gr, Gd] = p.from(dt, x, m.shape, m.batch), [Mr, Md] = p.from(dt, mm, mShape, m.bM);
            const Or = p.keep(ops.modeProduct(Gr, m.mode, Mr, undefined, m.transM));
            const Od = p.keep(ops.modeProduct(Gd, m.mode, Md, undefined, m.transM));
            const bound = rd(p.keep(ops.modeProduct(p.ref64(absArr(x), m.shape, m.batch), m.mode, p.ref64(absArr(mm), mShape, m.bM), undefined, m.transM)));
            chk.close('out', rd(Od), rd(Or), Float64Array.from(bound, (v) => 4 * (q + 2) * U[dt] * v));
          } finally {
            p.dispose();
          }
        },
      });
  return out;
}

function eighCases(): OpCase[] {
  // sweeps: the Jacobi solver's sweep limit (KRADAGRAD_CUDA_SYEVJ_MAX_SWEEPS); 1 leaves the
  // items unconverged, so CUDA redoes them with syevd from the input (mirrored again).
  type E = { n: number; batch: number; method: 'auto' | 'syevd' | 'syevj'; bad?: number; badValue?: number; sweeps?: number };
  const list: E[] = [
    { n: 1, batch: 3, method: 'auto' },
    { n: 2, batch: 4, method: 'auto' },
    { n: 5, batch: 1, method: 'auto' },
    { n: 17, batch: 6, method: 'auto' },
    { n: 32, batch: 2, method: 'auto' },
    { n: 33, batch: 1, method: 'auto' },
    { n: 40, batch: 3, method: 'auto' },
    { n: 64, batch: 5, method: 'auto' },
    { n: 130, batch: 2, method: 'auto' },
    { n: 300, batch: 1, method: 'auto' },
    { n: 17, batch: 3, method: 'syevd' },
    { n: 40, batch: 2, method: 'syevj' },
    { n: 96, batch: 1, method: 'syevj' },
    { n: 64, batch: 3, method: 'syevd' },
    // n >= 128 with several items: concurrent syevd on the auxiliary streams (CUDA).
    { n: 130, batch: 5, method: 'syevd' },
    { n: 260, batch: 3, method: 'syevd', bad: 1, badValue: NaN },
    { n: 8, batch: 3, method: 'syevj', bad: 1, badValue: NaN },
    { n: 8, batch: 3, method: 'syevd', bad: 2, badValue: Infinity },
    { n: 50, batch: 4, method: 'auto', bad: 0, badValue: -Infinity },
    // The Jacobi retry on CUDA: one syevd at a time (n < 128) and on the solver lanes.
    { n: 40, batch: 3, method: 'syevj', sweeps: 1 },
    { n: 130, batch: 5, method: 'syevj', sweeps: 1, bad: 3, badValue: NaN },
  ];
  return DTYPES.flatMap((dt) =>
    list.map((e): OpCase => ({
      name: `eigh ${dt} ${label(e)}`,
      run(ref, dev, chk) {
        const p = new Pair(ref, dev);
        try {
          const rng = new Rng(hash(this.name));
          const { n, batch } = e;
          // Full random items: the strict upper triangle is garbage that must not be read.
          const a = stored(dt, rng.normals(batch * n * n));
          if (e.bad !== undefined) a[e.bad * n * n + (n * n - 1)] = e.badValue!; // last element: lower triangle
          const [Ar, Ad] = p.from(dt, a, [n, n], batch);
          const r = ops.eigh(Ar, { allowFailures: true });
          const d = withEnv('KRADAGRAD_CUDA_SYEVJ_MAX_SWEEPS', e.sweeps?.toString(), () =>
            withEnv('KRADAGRAD_CUDA_EIGH', e.method === 'auto' ? undefined : e.method, () => ops.eigh(Ad, { allowFailures: true })),
          );
          p.keep(r.w), p.keep(r.v), p.keep(d.w), p.keep(d.v);
          const wr = rd(r.w), wd = rd(d.w), vd = rd(d.v);
          for (let b = 0; b < batch; b++) {
            if (b === e.bad) {
              chk.truth(`item ${b} (non-finite) must fail: info ${r.info[b]} (ref) / ${d.info[b]} (dev)`, r.info[b] > 0 && d.info[b] > 0);
              chk.truth(`item ${b} (non-finite): eigenvalues must be NaN`, wd.subarray(b * n, b * n + n).every(Number.isNaN));
              continue;
            }
            chk.truth(`item ${b}: info ${r.info[b]} (ref) / ${d.info[b]} (dev)`, r.info[b] === 0 && d.info[b] === 0);
            const s = lowerSym(a, b * n * n, n);
            const an = Math.max(norm1(s, n), Number.MIN_VALUE);
            for (let j = 1; j < n; j++) chk.truth(`item ${b}: eigenvalues not ascending at ${j}`, wd[b * n + j] >= wd[b * n + j - 1]);
            chk.close(`w[${b}]`, wd.subarray(b * n, b * n + n), wr.subarray(b * n, b * n + n), 2 * 30 * n * ULP[dt] * an);
            const { res, orth } = eigResiduals(s, vd, b * n * n, wd, b * n, n);
            chk.ratio(`residual[${b}]`, res / (n * an * ULP[dt]) / 30);
            chk.ratio(`orthogonality[${b}]`, orth / (n * ULP[dt]) / 30);
          }
        } finally {
          p.dispose();
        }
      },
    })),
  );
}

function matpowCases(): OpCase[] {
  type M = { n: number; batch: number; p: number; floor: number; ridge: number; bad?: number };
  const list: M[] = [
    { n: 1, batch: 2, p: 0.5, floor: 0, ridge: 0 },
    { n: 8, batch: 3, p: -0.25, floor: 1e-6, ridge: 0 },
    { n: 33, batch: 2, p: 0.25, floor: 0, ridge: 1e-3 },
    { n: 100, batch: 1, p: -1, floor: 1e-6, ridge: 0 },
    { n: 12, batch: 3, p: -0.5, floor: 1e-6, ridge: 0, bad: 1 },
  ];
  return DTYPES.flatMap((dt) =>
    list.map((c): OpCase => ({
      name: `matpow ${dt} ${label(c)}`,
      run(ref, dev, chk) {
        const p = new Pair(ref, dev);
        try {
          const rng = new Rng(hash(this.name));
          const { n, batch } = c;
          // SPD items X X^T / n + I/2: eigenvalues in about [0.5, 4.5].
          const a = new Float64Array(batch * n * n);
          for (let b = 0; b < batch; b++) {
            const x = rng.normals(n * n);
            for (let i = 0; i < n; i++)
              for (let j = 0; j < n; j++) {
                let s = 0;
                for (let k = 0; k < n; k++) s += x[i * n + k] * x[j * n + k];
                a[b * n * n + i * n + j] = s / n + (i === j ? 0.5 : 0);
              }
          }
          if (c.bad !== undefined) a[c.bad * n * n] = NaN;
          const as = stored(dt, a);
          const prev = stored(dt, rng.normals(batch * n * n));
          const [Ar, Ad] = p.from(dt, as, [n, n], batch), [Or, Od] = p.from(dt, prev, [n, n], batch);
          const ir = ops.matpow(Ar, c.p, { floor: c.floor, ridge: c.ridge, out: Or, allowFailures: true }).info;
          const id = ops.matpow(Ad, c.p, { floor: c.floor, ridge: c.ridge, out: Od, allowFailures: true }).info;
          const outR = rd(Or), outD = rd(Od);
          const e = ops.eigh(p.keep(p.ref64(as, [n, n], batch)), { allowFailures: true });
          p.keep(e.w), p.keep(e.v);
          const w = rd(e.w);
          for (let b = 0; b < batch; b++) {
            const sl = (x: Float64Array) => x.subarray(b * n * n, (b + 1) * n * n);
            if (b === c.bad) {
              chk.truth(`item ${b} (non-finite) must fail on both: info ${ir[b]} / ${id[b]}`, ir[b] > 0 && id[b] > 0);
              chk.equal(`item ${b} keeps its previous output`, sl(outD), sl(prev));
              continue;
            }
            chk.truth(`item ${b}: info ${ir[b]} / ${id[b]}`, ir[b] === 0 && id[b] === 0);
            const an = norm1(lowerSym(as, b * n * n, n), n);
            const delta = 30 * n * ULP[dt] * an;
            const f = (x: number) => Math.max(x, c.floor) ** c.p;
            const lo = Math.max(w[b * n] + c.ridge - delta, c.floor || 1e-300), hi = w[b * n + n - 1] + c.ridge + delta;
            const lip = Math.abs(c.p) * Math.max(lo ** (c.p - 1), hi ** (c.p - 1));
            const bound = Math.sqrt(n) * (lip * delta + n * U[dt] * Math.max(f(lo), f(hi)));
            let diff = 0;
            const od = sl(outD), or = sl(outR);
            for (let i = 0; i < n * n; i++) diff += (od[i] - or[i]) ** 2;
            chk.ratio(`||out[${b}] dev - ref||_F`, Math.sqrt(diff) / (2 * bound));
          }
        } finally {
          p.dispose();
        }
      },
    })),
  );
}

function elementwiseCases(): OpCase[] {
  const shapes: { shape: number[]; batch: number }[] = [
    { shape: [1], batch: 1 },
    { shape: [5, 3], batch: 3 },
    { shape: [200003], batch: 1 },
    { shape: [3], batch: 70001 },
  ];
  const out: OpCase[] = [];
  for (const dt of DTYPES)
    for (const s of shapes) {
      const len = s.batch * prod(s.shape), count = prod(s.shape), B = s.batch;
      const mk = (name: string, run: (p: Pair, rng: Rng, chk: Check) => void): OpCase => ({
        name: `${name} ${dt} ${label(s)}`,
        run(ref, dev, chk) {
          const p = new Pair(ref, dev);
          try {
            run(p, new Rng(hash(this.name)), chk);
          } finally {
            p.dispose();
          }
        },
      });
      out.push(
        mk('axpby/scale', (p, rng, chk) => {
          const x = stored(dt, rng.normals(len)), y = stored(dt, rng.normals(len));
          const al = Array.from(rng.normals(B)), be = Float64Array.from(rng.normals(B));
          al[0] = 0; // a zero alpha: y = beta y, x not read
          const variants: [string, number | number[] | Float64Array, number | number[] | Float64Array][] = [
            ['scalars', 0.75, -1.25],
            ['per-item alphas', al, 1],
            ['per-item betas', 2, be],
            ['beta 0 (y never read)', -0.5, 0],
          ];
          for (const [what, a, b] of variants) {
            const xx = Float64Array.from(x), yy = Float64Array.from(y);
            if (what.startsWith('beta 0')) yy.fill(NaN);
            if (what === 'per-item alphas') for (let i = 0; i < count; i++) xx[i] = NaN;
            const [Xr, Xd] = p.from(dt, xx, s.shape, B), [Yr, Yd] = p.from(dt, yy, s.shape, B);
            ops.axpby(Xr, Yr, a, b);
            ops.axpby(Xd, Yd, a, b);
            const ai = (k: number) => (typeof a === 'number' ? a : a[Math.floor(k / count)]);
            const bi = (k: number) => (typeof b === 'number' ? b : b[Math.floor(k / count)]);
            const tol = Float64Array.from(xx, (v, k) => 4 * U[dt] * (Math.abs(ai(k) * (Number.isNaN(v) ? 0 : v)) + Math.abs(bi(k) * (Number.isNaN(yy[k]) ? 0 : yy[k]))));
            chk.close(`axpby ${what}`, rd(Yd), rd(Yr), tol);
          }
          const [Sr, Sd] = p.from(dt, x, s.shape, B);
          ops.scale(Sr, be);
          ops.scale(Sd, be);
          chk.close('scale per item', rd(Sd), rd(Sr), Float64Array.from(x, (v, k) => 2 * U[dt] * Math.abs(v * be[Math.floor(k / count)])));
        }),
        mk('mulAcc/divSqrt', (p, rng, chk) => {
          const x = stored(dt, rng.normals(len)), y = stored(dt, rng.normals(len)), acc = stored(dt, absArr(rng.normals(len)));
          const [Xr, Xd] = p.from(dt, x, s.shape, B), [Yr, Yd] = p.from(dt, y, s.shape, B), [Ar, Ad] = p.from(dt, acc, s.shape, B);
          ops.mulAcc(Xr, Yr, Ar, 0.9, 0.1);
          ops.mulAcc(Xd, Yd, Ad, 0.9, 0.1);
          chk.close('mulAcc', rd(Ad), rd(Ar), Float64Array.from(acc, (v, k) => 8 * U[dt] * (0.9 * v + 0.1 * Math.abs(x[k] * y[k]))));
          const [Or, Od] = p.from(dt, new Float64Array(len), s.shape, B);
          ops.divSqrt(Xr, Ar, Or, 2.5, 1e-8);
          ops.divSqrt(Xd, Ad, Od, 2.5, 1e-8);
          const o = rd(Or);
          chk.close('divSqrt', rd(Od), o, Float64Array.from(o, (v) => 10 * U[dt] * Math.abs(v)));
        }),
        mk('dot/frobNorm', (p, rng, chk) => {
          const x = stored(dt, rng.normals(len)), y = stored(dt, rng.normals(len));
          const [Xr, Xd] = p.from(dt, x, s.shape, B), [Yr, Yd] = p.from(dt, y, s.shape, B);
          const sabs = new Float64Array(B), sq = new Float64Array(B);
          for (let k = 0; k < len; k++) {
            sabs[Math.floor(k / count)] += Math.abs(x[k] * y[k]);
            sq[Math.floor(k / count)] += x[k] * x[k];
          }
          const tolD = Float64Array.from(sabs, (v) => 2 * (count + 2) * U.float64 * v + Number.MIN_VALUE);
          chk.close('dot', ops.dot(Xd, Yd), ops.dot(Xr, Yr), tolD);
          const fr = ops.frobNorm(Xr);
          chk.close('frobNorm', ops.frobNorm(Xd), fr, Float64Array.from(sq, (v) => 2 * (count + 3) * U.float64 * Math.sqrt(v) + Number.MIN_VALUE));
          const again = ops.dot(Xd, Yd);
          chk.equal('dot (second run)', again, ops.dot(Xd, Yd));
        }),
        mk('copy/cast/fill', (p, rng, chk) => {
          const x = rng.normals(len, 1e3);
          x[len - 1] = 1 + 2 ** -30; // not representable in float32
          const [Xr, Xd] = p.from(dt, x, s.shape, B);
          const other: DType = dt === 'float32' ? 'float64' : 'float32';
          const Cr = p.keep(p.ref.tensor(other, s.shape, B)), Cd = p.keep(p.dev.tensor(other, s.shape, B));
          ops.copy(Xr, Cr);
          ops.copy(Xd, Cd);
          chk.equal(`cast ${dt} -> ${other}`, rd(Cd), rd(Cr));
          const Sd = p.keep(p.dev.tensor(dt, s.shape, B));
          ops.copy(Xd, Sd);
          chk.equal('copy', rd(Sd), stored(dt, x));
          ops.fill(Sd, -0.1);
          chk.equal('fill', rd(Sd), stored(dt, new Float64Array(len).fill(-0.1)));
          // Upload/download round trip, read(into), and a reshaped view sharing the storage.
          const into = dt === 'float32' ? new Float32Array(len) : new Float64Array(len);
          Xd.read(into);
          chk.equal('read(into)', Float64Array.from(into), stored(dt, x));
          const view = p.keep(Xd.reshape([len]));
          ops.fill(view, 3);
          chk.equal('write through a view', rd(Xd), new Float64Array(len).fill(3));
        }),
        mk('allFinite', (p, rng, chk) => {
          const x = rng.normals(len);
          const bads = [0, Math.floor(B / 2), B - 1];
          x[count - 1] = NaN; // item 0, last element
          if (B > 2) x[Math.floor(B / 2) * count] = Infinity;
          if (B > 1) x[len - 1] = -Infinity;
          const [Xr, Xd] = p.from(dt, x, s.shape, B);
          const fr = ops.allFinite(Xr), fd = ops.allFinite(Xd);
          chk.equal('allFinite', fd.map(Number), fr.map(Number));
          chk.truth('allFinite flags the planted items', bads.every((b) => b >= B || !fr[b]));
        }),
      );
    }
  return out;
}

function squareCases(): OpCase[] {
  const list = [
    { n: 1, batch: 2 },
    { n: 7, batch: 3 },
    { n: 70, batch: 2 },
    { n: 2, batch: 70000 },
  ];
  return DTYPES.flatMap((dt) =>
    list.map((s): OpCase => ({
      name: `trace/addIdentity/symmetrize ${dt} ${label(s)}`,
      run(ref, dev, chk) {
        const p = new Pair(ref, dev);
        try {
          const rng = new Rng(hash(this.name));
          const { n, batch } = s;
          const a = stored(dt, rng.normals(batch * n * n));
          const [Ar, Ad] = p.from(dt, a, [n, n], batch);
          const sabs = new Float64Array(batch);
          for (let b = 0; b < batch; b++) for (let i = 0; i < n; i++) sabs[b] += Math.abs(a[b * n * n + i * (n + 1)]);
          chk.close('trace', ops.trace(Ad), ops.trace(Ar), Float64Array.from(sabs, (v) => 2 * (n + 2) * U.float64 * v + Number.MIN_VALUE));
          const al = rng.normals(batch);
          ops.addIdentity(Ar, al);
          ops.addIdentity(Ad, al);
          ops.addIdentity(Ar, 0.25);
          ops.addIdentity(Ad, 0.25);
          const t1 = rd(Ar);
          chk.close('addIdentity', rd(Ad), t1, Float64Array.from(t1, (v) => 8 * U[dt] * (Math.abs(v) + 1)));
          ops.symmetrize(Ar);
          ops.symmetrize(Ad);
          const t2 = rd(Ar);
          chk.close('symmetrize', rd(Ad), t2, Float64Array.from(t2, (v) => 8 * U[dt] * (Math.abs(v) + 1)));
        } finally {
          p.dispose();
        }
      },
    })),
  );
}

function boxesCases(): OpCase[] {
  type Bc = { full: number[]; box: number[]; offsets: number[][]; first: number; nblocks: number };
  const list: Bc[] = [
    { full: [10, 13], box: [4, 5], offsets: [[0, 0], [4, 5], [6, 8]], first: 1, nblocks: 4 },
    { full: [7], box: [3], offsets: [[0], [3], [4]], first: 0, nblocks: 3 },
    { full: [6, 7, 9], box: [2, 3, 4], offsets: [[0, 0, 0], [4, 4, 5], [2, 1, 3]], first: 0, nblocks: 3 },
    { full: [3, 40, 33], box: [1, 32, 32], offsets: [[0, 0, 0], [2, 8, 1]], first: 2, nblocks: 4 },
  ];
  return DTYPES.flatMap((dt) =>
    list.map((c): OpCase => ({
      name: `boxes ${dt} ${label(c)}`,
      run(ref, dev, chk) {
        const p = new Pair(ref, dev);
        try {
          const rng = new Rng(hash(this.name));
          const x = stored(dt, rng.normals(prod(c.full)));
          const [Fr, Fd] = p.from(dt, x, c.full, 1);
          const [Br, Bd] = p.from(dt, new Float64Array(c.nblocks * prod(c.box)), c.box, c.nblocks);
          ops.boxes(Fr, Br, c.offsets, false, c.first);
          ops.boxes(Fd, Bd, c.offsets, false, c.first);
          chk.equal('gather', rd(Bd), rd(Br));
          // Scatter (negated blocks) back into the full tensors.
          ops.scale(Br, -1);
          ops.scale(Bd, -1);
          ops.boxes(Fr, Br, c.offsets, true, c.first);
          ops.boxes(Fd, Bd, c.offsets, true, c.first);
          chk.equal('scatter', rd(Fd), rd(Fr));
        } finally {
          p.dispose();
        }
      },
    })),
  );
}

function fusedCases(): OpCase[] {
  const out: OpCase[] = [];
  for (const dt of DTYPES) {
    for (const s of [{ shape: [1], batch: 1 }, { shape: [4, 6], batch: 2 }, { shape: [100000], batch: 1 }, { shape: [2, 2], batch: 70000 }])
      out.push({
        name: `scaleByNormRatio ${dt} ${label(s)}`,
        run(ref, dev, chk) {
          const p = new Pair(ref, dev);
          try {
            const rng = new Rng(hash(this.name));
            const len = s.batch * prod(s.shape), count = prod(s.shape);
            const d = stored(dt, rng.normals(len)), a = stored(dt, rng.normals(len, 3));
            for (const eps of [0, 1e-3]) {
              const [Dr, Dd] = p.from(dt, d, s.shape, s.batch), [Ar, Ad] = p.from(dt, a, s.shape, s.batch);
              ops.scaleByNormRatio(Dr, Ar, eps);
              ops.scaleByNormRatio(Dd, Ad, eps);
              const r = rd(Dr);
              const rel = 2 * U[dt] + 2 * (count + 2) * U.float64;
              chk.close(`eps ${eps}`, rd(Dd), r, Float64Array.from(r, (v) => 2 * rel * Math.abs(v)));
            }
          } finally {
            p.dispose();
          }
        },
      });
    for (const s of [{ n: 1, batch: 2 }, { n: 12, batch: 3 }, { n: 90, batch: 2 }, { n: 200, batch: 2 }]) // CUDA: one launch up to 128, more above
      out.push({
        name: `inverseUpdate ${dt} ${label(s)}`,
        run(ref, dev, chk) {
          const p = new Pair(ref, dev);
          try {
            const rng = new Rng(hash(this.name));
            const { n, batch } = s, nn = n * n;
            const l = stored(dt, rng.normals(batch * nn)), t = stored(dt, rng.normals(batch * nn));
            const m = stored(dt, Float64Array.from(rng.normals(batch * nn, 0.1), (v, k) => v + ((k % nn) % (n + 1) === 0 ? 1 : 0)));
            for (const kind of ['trace', 'frobenius'] as const) {
              const [Lr, Ld] = p.from(dt, l, [n, n], batch), [Tr, Td] = p.from(dt, t, [n, n], batch), [Mr, Md] = p.from(dt, m, [n, n], batch);
              ops.inverseUpdate(Lr, Tr, Mr, kind);
              ops.inverseUpdate(Ld, Td, Md, kind);
              const sc = new Float64Array(batch);
              for (let b = 0; b < batch; b++) {
                let tr = 0, fr = 0;
                for (let i = 0; i < nn; i++) fr += m[b * nn + i] ** 2;
                for (let i = 0; i < n; i++) tr += m[b * nn + i * (n + 1)];
                sc[b] = kind === 'trace' ? n * (1 + tr) : 1 + Math.sqrt(fr);
              }
              // 1/s in double, rounded to the dtype, product, sum: 4 u (|L| + |T/s|) x2; plus s itself,
              // a reduction in double whose order differs between backends: (n^2 + 2) u64 |T/s| x2.
              const tol = Float64Array.from(l, (v, k) => {
                const ts = Math.abs(t[k] / sc[Math.floor(k / nn)]);
                return 8 * U[dt] * (Math.abs(v) + ts) + 2 * (nn + 2) * U.float64 * ts;
              });
              chk.close(kind, rd(Ld), rd(Lr), tol);
            }
          } finally {
            p.dispose();
          }
        },
      });
  }
  out.push({
    name: 'allFiniteMany mixed dtypes and shapes',
    run(ref, dev, chk) {
      const p = new Pair(ref, dev);
      try {
        const specs: [DType, number[], number[], number][] = [
          ['float32', [1, 2, 3], [3], 1],
          ['float64', [1, NaN], [1, 2], 1],
          ['float32', [Infinity, 0, 0, 0], [2, 2], 1],
          ['float64', [0, 0, 0, 0, 0, 0], [3], 2],
          ['float64', [0, 0, 0, 0, 0, -Infinity], [3], 2],
          // Past the fused kernel's grid: a NaN in the last element, and none.
          ['float32', [...new Array<number>(300000).fill(1), NaN], [300001], 1],
          ['float64', new Array<number>(300001).fill(2), [300001], 1],
        ];
        const pairs = specs.map(([dt, d, sh, b]) => p.from(dt, d, sh, b));
        const r = ops.allFiniteMany(pairs.map((x) => x[0])), d = ops.allFiniteMany(pairs.map((x) => x[1]));
        chk.equal('allFiniteMany', d.map(Number), r.map(Number));
        chk.equal('allFiniteMany (expected)', d.map(Number), [1, 0, 0, 1, 0, 0, 1]);
      } finally {
        p.dispose();
      }
    },
  });
  return out;
}

function asyncAndErrorCases(): OpCase[] {
  return [
    ...DTYPES.map(
      (dt): OpCase => ({
        name: `eighAsync/matpowAsync ${dt} (worker thread) equal the synchronous calls, with main-thread work in between`,
        async run(ref, dev, chk) {
          const p = new Pair(ref, dev);
          try {
            const rng = new Rng(hash(this.name));
            const n = 48, batch = 3;
            const x = rng.normals(batch * n * n);
            const a = new Float64Array(batch * n * n);
            for (let b = 0; b < batch; b++)
              for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[b * n * n + i * n + j] = x[b * n * n + i * n + j] + x[b * n * n + j * n + i] + (i === j ? 2 * n : 0);
            const [, Ad] = p.from(dt, a, [n, n], batch);
            const sync = ops.eigh(Ad);
            const syncPow = ops.matpow(Ad, -0.25, { floor: 1e-6 });
            p.keep(sync.w), p.keep(sync.v), p.keep(syncPow.out);
            const pe = ops.eighAsync(Ad);
            const pm = ops.matpowAsync(Ad, -0.25, { floor: 1e-6 });
            // Main-thread work on the same backend while the workers run.
            const [Gr, Gd] = p.from(dt, rng.normals(64 * 64), [64, 64]);
            const Hr = p.keep(ops.gram(Gr, 0)), Hd = p.keep(ops.gram(Gd, 0));
            const [ae, am] = await Promise.all([pe, pm]);
            p.keep(ae.w), p.keep(ae.v), p.keep(am.out);
            chk.equal('eighAsync w', rd(ae.w), rd(sync.w));
            chk.equal('eighAsync v', rd(ae.v), rd(sync.v));
            chk.equal('matpowAsync', rd(am.out), rd(syncPow.out));
            const gg = rd(p.keep(ops.gram(p.ref64(absArr(rd(Gr)), [64, 64]), 0)));
            chk.close('gram meanwhile', rd(Hd), rd(Hr), Float64Array.from(gg, (v) => 4 * 66 * U[dt] * v));
          } finally {
            p.dispose();
          }
        },
      }),
    ),
    // n >= 128, several items: on CUDA the solver lanes run with the backend lock released,
    // so the main thread's calls below go on meanwhile, among them ones that read back
    // through the backend's shared buffers (allFiniteMany, dot). Their results and the
    // eigendecomposition must be what they are one after the other.
    {
      name: 'eighAsync on the solver lanes (n = 160, 6 items) with main-thread read-backs in between',
      async run(ref, dev, chk) {
        const p = new Pair(ref, dev);
        try {
          const dt: DType = 'float32';
          const rng = new Rng(hash(this.name));
          const n = 160, batch = 6;
          const [, Ad] = p.from(dt, rng.normals(batch * n * n), [n, n], batch);
          const sync = ops.eigh(Ad, { allowFailures: true });
          p.keep(sync.w), p.keep(sync.v);
          const pe = ops.eighAsync(Ad, { allowFailures: true });
          const x = stored(dt, rng.normals(5000)), y = stored(dt, rng.normals(5000));
          const [Xr, Xd] = p.from(dt, x, [5000]), [Yr, Yd] = p.from(dt, y, [5000]);
          const [, Bd] = p.from(dt, [1, NaN, 3], [3]);
          const want = ops.dot(Xr, Yr)[0];
          let terms = 0;
          for (let i = 0; i < 5000; i++) terms += Math.abs(x[i] * y[i]);
          const tol = 2 * 5002 * U.float64 * terms; // both sums in double, in different orders
          let rounds = 0;
          for (let r = 0; r < 20; r++, rounds++) {
            chk.equal(`allFiniteMany (round ${r})`, ops.allFiniteMany([Xd, Bd, Yd]).map(Number), [1, 0, 1]);
            chk.close(`dot (round ${r})`, [ops.dot(Xd, Yd)[0]], [want], tol);
          }
          const ae = await pe;
          p.keep(ae.w), p.keep(ae.v);
          chk.truth(`info ${ae.info.join(',')}`, ae.info.every((v) => v === 0));
          chk.equal('eighAsync w', rd(ae.w), rd(sync.w));
          chk.equal('eighAsync v', rd(ae.v), rd(sync.v));
          chk.note(`${rounds} rounds of main-thread read-backs`);
        } finally {
          p.dispose();
        }
      },
    },
    {
      name: 'device out-of-memory is a CUDA_OOM KradagradError and the backend keeps working',
      deviceOnly: true,
      run(_ref, dev, chk) {
        let code = '';
        try {
          dev.tensor('float64', [1 << 20, 1 << 17]).dispose(); // 1 TiB
        } catch (e) {
          code = e instanceof KradagradError ? e.code : `not a KradagradError: ${String(e)}`;
        }
        chk.truth(`expected CUDA_OOM, got '${code}'`, code === 'CUDA_OOM');
        const t = dev.fromArray(new Float32Array([1, 2, 3]), [3]);
        chk.close('after OOM', ops.dot(t, t), [14], 0);
        t.dispose();
      },
    },
  ];
}

// ---- multi-tensor ("foreach") ops: fused on the device -----------------------------------

/**
 * Each multi-tensor op on the device equals, bit for bit, its single op applied entry by
 * entry on the device (the fused kernels repeat the single kernels' arithmetic), and
 * agrees with the CPU within the elementwise rounding bounds. The lists mix dtypes, a
 * batched entry, and entries large enough for the capped grid's stride loop and for 256
 * reduction chunks.
 */
function multiCases(): OpCase[] {
  const small: [DType, number[], number][] = [
    ['float32', [7], 1],
    ['float64', [3, 5], 1],
    ['float32', [1], 1],
    ['float64', [2, 3, 4], 2],
    ['float32', [3000], 1],
  ];
  // > 1024 blocks x 256 threads (the capped grid's stride loop) and > 256 reduction chunks
  // x 1024 elements: device runs only (the CPU part of test/cuda.test.ts skips "300001").
  const big: [DType, number[], number][] = [...small, ['float32', [300001], 1], ['float64', [263000], 1]];
  return [small, big].map((specs) => multiCase(specs, specs === big ? ' up to 300001 elements' : ''));
}

function multiCase(specs: [DType, number[], number][], suffix: string): OpCase {
  return {
    name: `multi-tensor ops (axpby/copy/mulAcc/divSqrt/scaleByNormRatio Many): fused = single ops bit for bit, mixed dtypes and sizes${suffix}`,
    run(ref, dev, chk) {
      const p = new Pair(ref, dev);
      try {
        const rng = new Rng(hash(this.name));
        // Host data per list, then [cpu, device fused, device single] tensors from it.
        const make = (positive: boolean): { c: Tensor[]; f: Tensor[]; s: Tensor[] } => {
          const c: Tensor[] = [], f: Tensor[] = [], s: Tensor[] = [];
          for (const [dt, sh, b] of specs) {
            const d = rng.normals(sh.reduce((x, y) => x * y, 1) * b);
            if (positive) for (let k = 0; k < d.length; k++) d[k] = 0.1 + Math.abs(d[k]);
            const [r, x] = p.from(dt, d, sh, b);
            c.push(r);
            f.push(x);
            s.push(p.keep(dev.fromArray(typed(dt, d), sh, b)));
          }
          return { c, f, s };
        };
        const X = make(false), Y = make(false), A = make(true), O = make(false);
        /** Elementwise bound: k roundings (x2 for the other backend) of the terms' magnitude. */
        const bound = (i: number, k: number, ...terms: Float64Array[]): Float64Array => {
          const t = new Float64Array(terms[0].length);
          for (let e = 0; e < t.length; e++) {
            let m = 0;
            for (const a of terms) m += Math.abs(a[e]);
            t[e] = 2 * k * U[specs[i][0]] * m;
          }
          return t;
        };
        const both = (what: string, f: Tensor[], s: Tensor[], c: Tensor[], tol: (i: number, want: Float64Array) => Float64Array): void =>
          f.forEach((t, i) => {
            const got = rd(t), want = rd(c[i]);
            chk.equal(`${what} [${i}] fused vs single`, got, rd(s[i]));
            chk.close(`${what} [${i}] vs cpu`, got, want, tol(i, want));
          });
        const scaled = (a: Float64Array, c: number): Float64Array => a.map((v) => c * v);
        // y = a x + b y
        const X0 = X.c.map(rd), Y0 = Y.c.map(rd), A0 = A.c.map(rd);
        ops.axpbyMany(X.c, Y.c, -0.37, 0.9);
        ops.axpbyMany(X.f, Y.f, -0.37, 0.9);
        X.s.forEach((x, i) => ops.axpby(x, Y.s[i], -0.37, 0.9));
        both('axpbyMany', Y.f, Y.s, Y.c, (i) => bound(i, 3, scaled(X0[i], 0.37), scaled(Y0[i], 0.9)));
        // aliased: a scale
        ops.axpbyMany(Y.c, Y.c, 0, 0.5);
        ops.axpbyMany(Y.f, Y.f, 0, 0.5);
        Y.s.forEach((y) => ops.scale(y, 0.5));
        both('axpbyMany (scale)', Y.f, Y.s, Y.c, (i, want) => bound(i, 1, want));
        // copy
        ops.copyMany(X.c, O.c);
        ops.copyMany(X.f, O.f);
        X.s.forEach((x, i) => ops.copy(x, O.s[i]));
        both('copyMany', O.f, O.s, O.c, (i, want) => new Float64Array(want.length));
        // acc = a acc + b x y
        const Y1 = Y.c.map(rd);
        ops.mulAccMany(X.c, Y.c, A.c, 0.99, 0.01);
        ops.mulAccMany(X.f, Y.f, A.f, 0.99, 0.01);
        X.s.forEach((x, i) => ops.mulAcc(x, Y.s[i], A.s[i], 0.99, 0.01));
        both('mulAccMany', A.f, A.s, A.c, (i) => bound(i, 4, A0[i], X0[i].map((v, e) => 0.01 * v * Y1[i][e])));
        // out = x / (sqrt(acc scale) + eps)
        ops.divSqrtMany(X.c, A.c, O.c, 3, 1e-8);
        ops.divSqrtMany(X.f, A.f, O.f, 3, 1e-8);
        X.s.forEach((x, i) => ops.divSqrt(x, A.s[i], O.s[i], 3, 1e-8));
        both('divSqrtMany', O.f, O.s, O.c, (i, want) => bound(i, 5, want));
        // d *= ||a|| / (||d|| + eps) per item: the ratio is a double reduction whose order
        // differs between backends ((count + 2) u64 relative, x2), then one rounding in the dtype.
        ops.scaleByNormRatioMany(O.c, X.c, 1e-16);
        ops.scaleByNormRatioMany(O.f, X.f, 1e-16);
        O.s.forEach((d, i) => ops.scaleByNormRatio(d, X.s[i], 1e-16));
        both('scaleByNormRatioMany', O.f, O.s, O.c, (i, want) => {
          const count = specs[i][1].reduce((x, y) => x * y, 1);
          const r = 2 * U[specs[i][0]] + 4 * (count + 2) * U.float64;
          return want.map((v) => r * Math.abs(v));
        });
      } finally {
        p.dispose();
      }
    },
  };
}

/**
 * boxesMany (one launch on CUDA) equals boxes entry by entry, both ways, bit for bit: three
 * sources of different shapes, several boxes each (edge offsets included), into one
 * blocks tensor, per dtype.
 */
function boxesManyCases(): OpCase[] {
  return DTYPES.map((dt) => ({
    name: `boxesMany ${dt}: fused gather and scatter = boxes per source, bit for bit`,
    run(ref: Backend, dev: Backend, chk: Check) {
      const p = new Pair(ref, dev);
      try {
        const rng = new Rng(hash(this.name));
        const box = [2, 3, 4];
        const srcs: { shape: number[]; offsets: number[][]; first: number }[] = [
          { shape: [2, 3, 4], offsets: [[0, 0, 0]], first: 0 },
          { shape: [4, 6, 9], offsets: [[0, 0, 0], [2, 3, 5], [0, 3, 0], [2, 0, 4]], first: 1 },
          { shape: [3, 7, 4], offsets: [[1, 4, 0], [0, 0, 0]], first: 5 },
        ];
        const nItems = 7;
        const make = (b: Backend, shape: number[], data: Float64Array, batch = 1): Tensor => p.keep(b.fromArray(typed(dt, data), shape, batch));
        const fullData = srcs.map((s) => rng.normals(prod(s.shape)));
        const blockData = rng.normals(nItems * prod(box));
        const run = (b: Backend, fused: boolean): Float64Array[] => {
          const fulls = srcs.map((s, i) => make(b, s.shape, fullData[i]));
          const blocks = make(b, box, blockData, nItems);
          const gather = (): void => {
            if (fused) ops.boxesMany(fulls, blocks, srcs.map((s) => s.offsets), srcs.map((s) => s.first));
            else srcs.forEach((s, i) => ops.boxes(fulls[i], blocks, s.offsets, false, s.first));
          };
          gather();
          const gathered = rd(blocks);
          ops.scale(blocks, -3);
          if (fused) ops.boxesMany(fulls, blocks, srcs.map((s) => s.offsets), srcs.map((s) => s.first), true);
          else srcs.forEach((s, i) => ops.boxes(fulls[i], blocks, s.offsets, true, s.first));
          return [gathered, ...fulls.map(rd)];
        };
        const fusedDev = run(dev, true), singleDev = run(dev, false), fusedRef = run(ref, true);
        fusedDev.forEach((x, i) => {
          chk.equal(`${i === 0 ? 'gathered blocks' : `scattered source ${i - 1}`} fused vs single`, x, singleDev[i]);
          chk.equal(`${i === 0 ? 'gathered blocks' : `scattered source ${i - 1}`} vs cpu`, x, fusedRef[i]);
        });
      } finally {
        p.dispose();
      }
    },
  }));
}

// ---- since the last GPU run: fused optimizer stages, roots, jobs and whole steps ----------

/** The stage switch of native/cuda: CUDA kernels for the fused stages instead of the primitive chains. */
export const FUSED_STAGES_ENV = 'KRADAGRAD_CUDA_FUSED_STAGES';
/** Each device run of a fused stage: the default (primitive chains) and the CUDA kernels. */
const STAGE_MODES: { name: string; env: string | undefined }[] = [
  { name: 'default', env: undefined },
  { name: 'kernels', env: '1' },
];
/**
 * Roundings on the longest dependency chain of a fused stage's element formula, the casts
 * of its coefficients to the dtype included (updateMany with every flag: 11; adamMany: 12).
 */
const STAGE_K = 12;
const natives = (ts: Tensor[]): Tensor['native'][] => ts.map((t) => t.native);
const allFinite = (xs: ArrayLike<number>[]): boolean => xs.every((x) => Array.prototype.every.call(x, Number.isFinite));

type SpecList = [DType, number[], number][];
/** Mixed dtypes and sizes, a batched entry, a one-element entry. */
const STAGE_SMALL: SpecList = [
  ['float32', [7], 1],
  ['float64', [3, 5], 1],
  ['float32', [1], 1],
  ['float64', [2, 3, 4], 2],
  ['float32', [3000], 1],
];
/** Past the grid cap of the elementwise kernels (> 1024 blocks x 256 threads): device runs only in CI. */
const STAGE_BIG: SpecList = [...STAGE_SMALL, ['float32', [300001], 1], ['float64', [263000], 1]];
const specCount = (s: [DType, number[], number]): number => prod(s[1]) * s[2];

/** Host data of one role: one array per entry, as the entry's dtype stores it. */
function roleData(rng: Rng, specs: SpecList, f: (x: number) => number = (x) => x): Float64Array[] {
  return specs.map((s) => stored(s[0], Float64Array.from(rng.normals(specCount(s)), f)));
}
/** Tensors of one role on backend b (kept by p for disposal). */
function roleTensors(p: Pair, b: Backend, specs: SpecList, data: Float64Array[]): Tensor[] {
  return specs.map((s, i) => p.keep(b.fromArray(typed(s[0], data[i]), s[1], s[2])));
}
/** Output tensors pre-filled with a sentinel (a stage must overwrite every element). */
function outTensors(p: Pair, b: Backend, specs: SpecList): Tensor[] {
  return roleTensors(p, b, specs, specs.map((s) => new Float64Array(specCount(s)).fill(-7.25)));
}

/**
 * Bound on |fl(q) - q| for q = num / (sqrt(x) + eps) (x >= 0): num has error <= dNum and
 * magnitude bound numA, x has error <= dX; `k` roundings for the scale, sqrt, add and divide.
 * sqrt is 1/2-Hoelder, so its error is at most min(dX / (2 sqrt x), sqrt dX).
 */
function quotientError(num: number, numA: number, dNum: number, x: number, dX: number, eps: number, u: number, k = 4): number {
  const den = Math.sqrt(x) + eps;
  const dDen = (x > 0 ? Math.min(dX / (2 * Math.sqrt(x)), Math.sqrt(dX)) : Math.sqrt(dX)) + k * u * den;
  if (!(den - dDen > 0)) return Infinity;
  const q = Math.abs(num) / den;
  return (dNum + q * dDen) / (den - dDen) + k * u * (numA / den);
}

/** Compares the device's outputs of one role with the CPU's and with its other runs. */
function compareRole(
  chk: Check,
  what: string,
  specs: SpecList,
  dev: Float64Array[],
  ref: Float64Array[],
  tol: (i: number) => Float64Array,
  same: [string, Float64Array[]][],
): void {
  dev.forEach((x, i) => {
    chk.close(`${what}[${i}] (${specs[i][0]}) vs cpu`, x, ref[i], tol(i));
    for (const [name, other] of same) chk.equal(`${what}[${i}] ${name}`, other[i], x);
  });
}

// updateMany: d -> momentum -> parameters (Backend::update_many), every flag combination.
type UpdFlags = { mu: number; nesterov: boolean; wd: 'none' | 'l2' | 'decoupled' | 'l2+decoupled'; ext: boolean };
function updateManyCase(c: UpdFlags, specs: SpecList, suffix: string): OpCase {
  return {
    name: `updateMany ${label(c)}: vs cpu, fused = single-op chain bit for bit, aliased outputs, finiteness${suffix}`,
    run(ref, dev, chk) {
      const p = new Pair(ref, dev);
      try {
        const rng = new Rng(hash(this.name));
        const lr = 0.1, wd = 0.01, mom = c.mu > 0;
        const l2 = c.wd === 'l2' || c.wd === 'l2+decoupled', decoupled = c.wd === 'decoupled' || c.wd === 'l2+decoupled';
        const prm = { lr, momentum: c.mu, weightDecay: wd, nesterov: c.nesterov, l2, decoupled };
        const d = roleData(rng, specs), m = roleData(rng, specs), w = roleData(rng, specs), u = roleData(rng, specs);
        d[1][2] = NaN; // entry 1: non-finite w' (and m')
        m[2][0] = NaN; // entry 2: non-finite m' with momentum; never read without
        u[3][5] = Infinity; // entry 3: non-finite w' with an external direction
        // In float64 on the host: the values (finiteness) and the magnitudes (bounds).
        const dec = 1 - lr * wd;
        const host = specs.map((_, i) => {
          const n = d[i].length;
          const wv = new Float64Array(n), mv = new Float64Array(n), wA = new Float64Array(n), mA = new Float64Array(n);
          for (let e = 0; e < n; e++) {
            const dv = l2 ? wd * w[i][e] + d[i][e] : d[i][e];
            const dA = l2 ? wd * Math.abs(w[i][e]) + Math.abs(d[i][e]) : Math.abs(d[i][e]);
            mv[e] = mom ? dv + c.mu * m[i][e] : 0;
            mA[e] = mom ? dA + c.mu * Math.abs(m[i][e]) : 0;
            const uv = c.ext ? u[i][e] : mom ? (c.nesterov ? c.mu * mv[e] + dv : mv[e]) : dv;
            const uA = c.ext ? Math.abs(u[i][e]) : mom ? (c.nesterov ? c.mu * mA[e] + dA : mA[e]) : dA;
            wv[e] = (decoupled ? dec * w[i][e] : w[i][e]) - lr * uv;
            wA[e] = (decoupled ? dec : 1) * Math.abs(w[i][e]) + lr * uA;
          }
          return { wv, mv, wA, mA };
        });
        const expected = host.map((h) => Number(allFinite(mom ? [h.wv, h.mv] : [h.wv])));
        const fused = (b: Backend, aliased: boolean, env?: string) => {
          const D = roleTensors(p, b, specs, d), M = mom ? roleTensors(p, b, specs, m) : null;
          const W = roleTensors(p, b, specs, w), Uo = c.ext ? roleTensors(p, b, specs, u) : null;
          const MO = M && (aliased ? M : outTensors(p, b, specs)), WO = aliased ? W : outTensors(p, b, specs);
          const f = withEnv(FUSED_STAGES_ENV, env, () =>
            b.addon.updateMany(natives(D), M && natives(M), natives(W), Uo && natives(Uo), MO && natives(MO), natives(WO), prm),
          );
          return { w: WO.map(rd), m: MO ? MO.map(rd) : [], f: Array.from(f ?? []) };
        };
        // The chain the stage replaces (backend.h), one single op at a time.
        const chain = (b: Backend) => {
          const D = roleTensors(p, b, specs, d), M = roleTensors(p, b, specs, m), W = roleTensors(p, b, specs, w), Uo = roleTensors(p, b, specs, u);
          const ws: Float64Array[] = [], ms: Float64Array[] = [];
          specs.forEach((_, i) => {
            const dd = p.keep(b.tensor(specs[i][0], specs[i][1], specs[i][2]));
            ops.copy(D[i], dd);
            if (l2) ops.axpby(W[i], dd, wd, 1);
            let uu = dd;
            if (mom) {
              ops.axpby(dd, M[i], 1, c.mu);
              uu = M[i];
              if (c.nesterov && !c.ext) {
                const nv = p.keep(b.tensor(specs[i][0], specs[i][1], specs[i][2]));
                ops.copy(dd, nv);
                ops.axpby(M[i], nv, c.mu, 1);
                uu = nv;
              }
            }
            if (c.ext) uu = Uo[i];
            if (decoupled) ops.axpby(W[i], W[i], 0, dec);
            ops.axpby(uu, W[i], -lr, 1);
            ws.push(rd(W[i]));
            ms.push(rd(M[i]));
          });
          return { w: ws, m: ms };
        };
        const r = fused(ref, false);
        const runs = STAGE_MODES.map((mode) => ({ mode, distinct: fused(dev, false, mode.env), aliased: fused(dev, true, mode.env) }));
        const single = chain(dev);
        const base = runs[0].distinct;
        const tolOf = (key: 'wA' | 'mA') => (i: number) => Float64Array.from(host[i][key], (a) => 2 * STAGE_K * U[specs[i][0]] * a);
        const same = (key: 'w' | 'm'): [string, Float64Array[]][] => [
          ['single-op chain vs fused (default)', single[key]],
          ...runs.flatMap((x): [string, Float64Array[]][] => [
            [`fused (${x.mode.name}) vs fused (default)`, x.distinct[key]],
            [`aliased outputs (${x.mode.name}) vs fused (default)`, x.aliased[key]],
          ]),
        ];
        compareRole(chk, "w'", specs, base.w, r.w, tolOf('wA'), same('w'));
        if (mom) compareRole(chk, "m'", specs, base.m, r.m, tolOf('mA'), same('m'));
        chk.equal('finite flags (cpu) vs expected', r.f, expected);
        for (const x of runs) {
          chk.equal(`finite flags (${x.mode.name}) vs expected`, x.distinct.f, expected);
          chk.equal(`finite flags (${x.mode.name}, aliased) vs expected`, x.aliased.f, expected);
        }
      } finally {
        p.dispose();
      }
    },
  };
}

function updateManyCases(): OpCase[] {
  const out: OpCase[] = [];
  for (const mu of [0, 0.9])
    for (const nesterov of [false, true])
      for (const wd of ['none', 'l2', 'decoupled', 'l2+decoupled'] as const)
        for (const ext of [false, true]) out.push(updateManyCase({ mu, nesterov, wd, ext }, STAGE_SMALL, ''));
  out.push(updateManyCase({ mu: 0.9, nesterov: true, wd: 'l2+decoupled', ext: false }, STAGE_BIG, ' up to 300001 elements'));
  out.push(updateManyCase({ mu: 0, nesterov: false, wd: 'none', ext: true }, STAGE_BIG, ' up to 300001 elements'));
  return out;
}

// adamMany (Backend::adam_many): weight decay modes, first and a later step.
type AdamFlags = { wd: 'none' | 'l2' | 'decoupled' | 'l2+decoupled'; t: number };
function adamManyCase(c: AdamFlags, specs: SpecList, suffix: string): OpCase {
  return {
    name: `adamMany ${label(c)}: vs cpu, fused = single-op chain bit for bit, aliased outputs, finiteness${suffix}`,
    run(ref, dev, chk) {
      const p = new Pair(ref, dev);
      try {
        const rng = new Rng(hash(this.name));
        const lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
        const bc1 = 1 - b1 ** c.t, bc2 = 1 - b2 ** c.t;
        const l2 = c.wd === 'l2' || c.wd === 'l2+decoupled', decoupled = c.wd === 'decoupled' || c.wd === 'l2+decoupled';
        const prm = { lr, beta1: b1, beta2: b2, eps, weightDecay: wd, bc1, bc2, l2, decoupled };
        const g = roleData(rng, specs), m = roleData(rng, specs, (x) => 0.1 * x), v = roleData(rng, specs, (x) => 0.01 * x * x), w = roleData(rng, specs);
        g[1][3] = NaN; // entry 1: non-finite m', v', w'
        g[4][7] = 0; // entry 4: zero gradient and second moment: the direction is m' / eps
        v[4][7] = 0;
        const dec = 1 - lr * wd, step = lr / bc1, u = (i: number) => U[specs[i][0]], K = STAGE_K;
        const host = specs.map((_, i) => {
          const n = g[i].length;
          const out = { mA: new Float64Array(n), vA: new Float64Array(n), wT: new Float64Array(n), ok: true };
          for (let e = 0; e < n; e++) {
            const gv = l2 ? wd * w[i][e] + g[i][e] : g[i][e];
            const gA = l2 ? wd * Math.abs(w[i][e]) + Math.abs(g[i][e]) : Math.abs(g[i][e]);
            const w0A = (decoupled ? dec : 1) * Math.abs(w[i][e]);
            const mv = (1 - b1) * gv + b1 * m[i][e];
            out.mA[e] = (1 - b1) * gA + b1 * Math.abs(m[i][e]);
            const vv = b2 * v[i][e] + (1 - b2) * gv * gv;
            out.vA[e] = b2 * v[i][e] + (1 - b2) * gA * gA;
            const dDir = quotientError(mv, out.mA[e], K * u(i) * out.mA[e], vv / bc2, (K * u(i) * out.vA[e]) / bc2, eps, u(i));
            const dir = Math.abs(mv) / (Math.sqrt(vv / bc2) + eps);
            out.wT[e] = K * u(i) * (w0A + step * (dir + dDir)) + step * dDir;
            const wv = (decoupled ? dec : 1) * w[i][e] - (step * mv) / (Math.sqrt(vv / bc2) + eps);
            out.ok = out.ok && [mv, vv, wv].every(Number.isFinite);
          }
          return out;
        });
        const expected = host.map((h) => Number(h.ok));
        const fused = (b: Backend, aliased: boolean, env?: string) => {
          const G = roleTensors(p, b, specs, g), M = roleTensors(p, b, specs, m), V = roleTensors(p, b, specs, v), W = roleTensors(p, b, specs, w);
          const MO = aliased ? M : outTensors(p, b, specs), VO = aliased ? V : outTensors(p, b, specs), WO = aliased ? W : outTensors(p, b, specs);
          const f = withEnv(FUSED_STAGES_ENV, env, () =>
            b.addon.adamMany(natives(G), natives(M), natives(V), natives(W), natives(MO), natives(VO), natives(WO), prm),
          );
          return { w: WO.map(rd), m: MO.map(rd), v: VO.map(rd), f: Array.from(f ?? []) };
        };
        const chain = (b: Backend) => {
          const G = roleTensors(p, b, specs, g), M = roleTensors(p, b, specs, m), V = roleTensors(p, b, specs, v), W = roleTensors(p, b, specs, w);
          specs.forEach((s, i) => {
            const gg = p.keep(b.tensor(s[0], s[1], s[2])), dir = p.keep(b.tensor(s[0], s[1], s[2]));
            ops.copy(G[i], gg);
            if (l2) ops.axpby(W[i], gg, wd, 1);
            if (decoupled) ops.axpby(W[i], W[i], 0, dec);
            ops.axpby(gg, M[i], 1 - b1, b1);
            ops.mulAcc(gg, gg, V[i], b2, 1 - b2);
            ops.divSqrt(M[i], V[i], dir, 1 / bc2, eps);
            ops.axpby(dir, W[i], -lr / bc1, 1);
          });
          return { w: W.map(rd), m: M.map(rd), v: V.map(rd) };
        };
        const r = fused(ref, false);
        const runs = STAGE_MODES.map((mode) => ({ mode, distinct: fused(dev, false, mode.env), aliased: fused(dev, true, mode.env) }));
        const single = chain(dev);
        const base = runs[0].distinct;
        const same = (key: 'w' | 'm' | 'v'): [string, Float64Array[]][] => [
          ['single-op chain vs fused (default)', single[key]],
          ...runs.flatMap((x): [string, Float64Array[]][] => [
            [`fused (${x.mode.name}) vs fused (default)`, x.distinct[key]],
            [`aliased outputs (${x.mode.name}) vs fused (default)`, x.aliased[key]],
          ]),
        ];
        compareRole(chk, "m'", specs, base.m, r.m, (i) => host[i].mA.map((a) => 2 * K * u(i) * a), same('m'));
        compareRole(chk, "v'", specs, base.v, r.v, (i) => host[i].vA.map((a) => 2 * K * u(i) * a), same('v'));
        compareRole(chk, "w'", specs, base.w, r.w, (i) => host[i].wT.map((t) => 2 * t), same('w'));
        chk.equal('finite flags (cpu) vs expected', r.f, expected);
        for (const x of runs) {
          chk.equal(`finite flags (${x.mode.name}) vs expected`, x.distinct.f, expected);
          chk.equal(`finite flags (${x.mode.name}, aliased) vs expected`, x.aliased.f, expected);
        }
      } finally {
        p.dispose();
      }
    },
  };
}

function adamManyCases(): OpCase[] {
  const out: OpCase[] = [];
  for (const wd of ['none', 'l2', 'decoupled', 'l2+decoupled'] as const) for (const t of [1, 10]) out.push(adamManyCase({ wd, t }, STAGE_SMALL, ''));
  out.push(adamManyCase({ wd: 'l2+decoupled', t: 3 }, STAGE_BIG, ' up to 300001 elements'));
  return out;
}

// graftMany (Backend::graft_many): AdaGrad and Adam graft directions.
function graftManyCase(kind: 'adagrad' | 'adam', specs: SpecList, suffix: string): OpCase {
  return {
    name: `graftMany ${kind}: vs cpu, fused = single-op chain bit for bit, aliased accumulators${suffix}`,
    run(ref, dev, chk) {
      const p = new Pair(ref, dev);
      try {
        const rng = new Rng(hash(this.name));
        const adam = kind === 'adam';
        const eps = adam ? 1e-8 : 1e-6, b1 = 0.9, b2 = 0.999, t = 4, bc1 = 1 - b1 ** t, bc2 = 1 - b2 ** t;
        const prm = adam ? { eps, beta1: b1, beta2: b2, bc1, bc2 } : { eps };
        const g = roleData(rng, specs), acc = roleData(rng, specs, (x) => 0.05 * x * x), mom = roleData(rng, specs, (x) => 0.1 * x);
        g[4][11] = 0; // zero gradient and accumulator: the direction is 0 / eps (AdaGrad), m' / eps (Adam)
        acc[4][11] = 0;
        const u = (i: number) => U[specs[i][0]], K = STAGE_K;
        const host = specs.map((_, i) => {
          const n = g[i].length;
          const o = { accA: new Float64Array(n), momA: new Float64Array(n), dirT: new Float64Array(n) };
          for (let e = 0; e < n; e++) {
            const gv = g[i][e];
            const mv = adam ? (1 - b1) * gv + b1 * mom[i][e] : gv;
            o.momA[e] = adam ? (1 - b1) * Math.abs(gv) + b1 * Math.abs(mom[i][e]) : Math.abs(gv);
            o.accA[e] = adam ? b2 * acc[i][e] + (1 - b2) * gv * gv : acc[i][e] + gv * gv; // all terms >= 0
            const sc = adam ? 1 / bc2 : 1;
            const dq = quotientError(mv, o.momA[e], adam ? K * u(i) * o.momA[e] : 0, o.accA[e] * sc, K * u(i) * o.accA[e] * sc, eps, u(i));
            const c1 = adam ? 1 / bc1 : 1;
            o.dirT[e] = c1 * dq + (adam ? 2 * u(i) * c1 * (Math.abs(mv) / (Math.sqrt(o.accA[e] * sc) + eps) + dq) : 0);
          }
          return o;
        });
        const fused = (b: Backend, aliased: boolean, env?: string) => {
          const G = roleTensors(p, b, specs, g), A = roleTensors(p, b, specs, acc), M = adam ? roleTensors(p, b, specs, mom) : null;
          const AO = aliased ? A : outTensors(p, b, specs), MO = M && (aliased ? M : outTensors(p, b, specs)), DIR = outTensors(p, b, specs);
          withEnv(FUSED_STAGES_ENV, env, () =>
            b.addon.graftMany(kind, natives(G), natives(A), M && natives(M), natives(AO), MO && natives(MO), natives(DIR), prm),
          );
          return { acc: AO.map(rd), mom: MO ? MO.map(rd) : [], dir: DIR.map(rd) };
        };
        const chain = (b: Backend) => {
          const G = roleTensors(p, b, specs, g), A = roleTensors(p, b, specs, acc), M = roleTensors(p, b, specs, mom);
          const DIR = outTensors(p, b, specs);
          specs.forEach((_, i) => {
            if (!adam) {
              ops.mulAcc(G[i], G[i], A[i], 1, 1);
              ops.divSqrt(G[i], A[i], DIR[i], 1, eps);
              return;
            }
            ops.axpby(G[i], M[i], 1 - b1, b1);
            ops.mulAcc(G[i], G[i], A[i], b2, 1 - b2);
            ops.divSqrt(M[i], A[i], DIR[i], 1 / bc2, eps);
            ops.scale(DIR[i], 1 / bc1);
          });
          return { acc: A.map(rd), mom: adam ? M.map(rd) : [], dir: DIR.map(rd) };
        };
        const r = fused(ref, false);
        const runs = STAGE_MODES.map((mode) => ({ mode, distinct: fused(dev, false, mode.env), aliased: fused(dev, true, mode.env) }));
        const single = chain(dev);
        const base = runs[0].distinct;
        const same = (key: 'acc' | 'mom' | 'dir'): [string, Float64Array[]][] => [
          ['single-op chain vs fused (default)', single[key]],
          ...runs.flatMap((x): [string, Float64Array[]][] => [
            [`fused (${x.mode.name}) vs fused (default)`, x.distinct[key]],
            [`aliased accumulators (${x.mode.name}) vs fused (default)`, x.aliased[key]],
          ]),
        ];
        compareRole(chk, "acc'", specs, base.acc, r.acc, (i) => host[i].accA.map((a) => 2 * K * u(i) * a), same('acc'));
        if (adam) compareRole(chk, "mom'", specs, base.mom, r.mom, (i) => host[i].momA.map((a) => 2 * K * u(i) * a), same('mom'));
        compareRole(chk, 'dir', specs, base.dir, r.dir, (i) => host[i].dirT.map((x) => 2 * x), same('dir'));
      } finally {
        p.dispose();
      }
    },
  };
}

// axpbyOutMany (Backend::axpby_out_many): z = a x + b y, out of place.
function axpbyOutManyCase(specs: SpecList, suffix: string): OpCase {
  return {
    name: `axpbyOutMany: vs cpu, = copy + axpby bit for bit, zero coefficients never read, z aliasing y${suffix}`,
    run(ref, dev, chk) {
      const p = new Pair(ref, dev);
      try {
        const rng = new Rng(hash(this.name));
        const x0 = roleData(rng, specs), y0 = roleData(rng, specs);
        const variants: [string, number, number][] = [
          ['a x + b y', 0.75, -1.25],
          ['a = 1 (momentum form)', 1, 0.9],
          ['a = 0: x never read', 0, 2],
          ['b = 0: y never read', -0.5, 0],
          ['a = b = 0: z = 0 y, signed zeros', 0, 0],
        ];
        for (const [what, a, b] of variants) {
          const x = x0.map((d) => Float64Array.from(d)), y = y0.map((d) => Float64Array.from(d));
          if (a === 0) x.forEach((d) => d.fill(NaN));
          if (b === 0 && a !== 0) y.forEach((d) => d.fill(NaN));
          const fused = (be: Backend, alias: boolean, env?: string) => {
            const X = roleTensors(p, be, specs, x), Y = roleTensors(p, be, specs, y), Z = alias ? Y : outTensors(p, be, specs);
            withEnv(FUSED_STAGES_ENV, env, () => be.addon.axpbyOutMany(natives(X), natives(Y), natives(Z), a, b));
            return Z.map(rd);
          };
          const chain = (be: Backend) => {
            const X = roleTensors(p, be, specs, x), Y = roleTensors(p, be, specs, y), Z = outTensors(p, be, specs);
            specs.forEach((_, i) => {
              ops.copy(Y[i], Z[i]);
              ops.axpby(X[i], Z[i], a, b);
            });
            return Z.map(rd);
          };
          const r = fused(ref, false);
          const runs = STAGE_MODES.map((mode) => ({ mode, distinct: fused(dev, false, mode.env), aliased: fused(dev, true, mode.env) }));
          const same: [string, Float64Array[]][] = [
            ['copy + axpby vs fused (default)', chain(dev)],
            ...runs.flatMap((m): [string, Float64Array[]][] => [
              [`fused (${m.mode.name}) vs fused (default)`, m.distinct],
              [`z = y (${m.mode.name}) vs fused (default)`, m.aliased],
            ]),
          ];
          const tol = (i: number) =>
            Float64Array.from(x[i], (xv, e) => 2 * 4 * U[specs[i][0]] * ((a === 0 ? 0 : Math.abs(a * xv)) + (b === 0 && a !== 0 ? 0 : Math.abs(b * y[i][e]))));
          compareRole(chk, `z (${what})`, specs, runs[0].distinct, r, tol, same);
          if (a === 0 || b === 0) chk.truth(`${what}: the unread input's NaN reached z`, allFinite(runs[0].distinct));
        }
      } finally {
        p.dispose();
      }
    },
  };
}

function fusedStageCases(): OpCase[] {
  return [
    ...updateManyCases(),
    ...adamManyCases(),
    graftManyCase('adagrad', STAGE_SMALL, ''),
    graftManyCase('adam', STAGE_SMALL, ''),
    graftManyCase('adagrad', STAGE_BIG, ' up to 300001 elements'),
    graftManyCase('adam', STAGE_BIG, ' up to 300001 elements'),
    axpbyOutManyCase(STAGE_SMALL, ''),
    axpbyOutManyCase(STAGE_BIG, ' up to 300001 elements'),
  ];
}

// ---- root (native/core/roots.cc): eigh, Newton, the float64 retry, the previous root kept ----

/** Batches of SPD items X X^T / n + lo I (eigenvalues in about [lo, lo + 4]). */
function spdItems(rng: Rng, n: number, batch: number, lo = 0.5): Float64Array {
  const a = new Float64Array(batch * n * n);
  for (let b = 0; b < batch; b++) {
    const x = rng.normals(n * n);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += x[i * n + k] * x[j * n + k];
        a[b * n * n + i * n + j] = s / n + (i === j ? lo : 0);
      }
  }
  return a;
}

/**
 * Per-item bounds on ||root_dev - root_exact||_F for the items of `a` (the matpow bound of
 * the header: Lip(f) times the eigensolver's backward error, plus the final product), and
 * what Newton's stopping rule adds: ||M - I||_F <= tol sqrt(n) with M = X^r A gives
 * ||X - A^(-1/r)|| <= ||A^(-1/r)||_2 tol sqrt(n) / r, and for the positive root A X^(r-1),
 * ||A^(1/r)||_2 (r - 1) / r tol sqrt(n) (to first order; x1.1 for the second).
 */
function rootBounds(ref: Backend, p: Pair, dt: DType, a: Float64Array, n: number, batch: number, s: NativeRootSpec): number[] {
  const e = ops.eigh(p.keep(p.ref64(a, [n, n], batch)), { allowFailures: true });
  p.keep(e.w), p.keep(e.v);
  const w = rd(e.w);
  const floor = s.floor ?? 0, ridge = s.ridge ?? 0;
  const r = Math.round(1 / Math.abs(s.p));
  const newtonOk = s.newton && Math.abs(Math.abs(s.p) * r - 1) < 1e-12;
  const tau = (s.tolerance ?? (dt === 'float32' ? 1e-5 : 1e-12)) * Math.sqrt(n);
  const out: number[] = [];
  for (let b = 0; b < batch; b++) {
    const an = norm1(lowerSym(a, b * n * n, n), n);
    const delta = 30 * n * ULP[dt] * an;
    const f = (x: number) => Math.max(x, floor) ** s.p;
    const lo = Math.max(w[b * n] + ridge - delta, floor || 1e-300), hi = w[b * n + n - 1] + ridge + delta;
    const lip = Math.abs(s.p) * Math.max(lo ** (s.p - 1), hi ** (s.p - 1));
    const fmax = Math.max(f(lo), f(hi));
    let bound = Math.sqrt(n) * (lip * delta + n * U[dt] * fmax);
    if (newtonOk) bound += 1.1 * fmax * (s.p < 0 ? 1 / r : (r - 1) / r) * tau;
    out.push(bound);
  }
  return out;
}

type RootCase = {
  n: number;
  batch: number;
  p: number;
  floor?: number;
  ridge?: number;
  newton?: boolean;
  maxIterations?: number;
  retryFloat64?: boolean;
  /** A NaN in this item: every solver fails it, the previous root stays. */
  bad?: number;
  /** out is prev (in place) rather than a separate tensor. */
  inPlace?: boolean;
  /** prev = the root itself (rounded), so Newton starts warm. */
  warm?: boolean;
};
function rootCases(): OpCase[] {
  const list: RootCase[] = [
    // eigh (matpow) path; n >= 128 with several items: syevd on the solver lanes (CUDA)
    { n: 8, batch: 3, p: -0.25, floor: 1e-6, ridge: 1e-8 },
    { n: 33, batch: 2, p: 0.5, inPlace: true },
    { n: 130, batch: 2, p: -0.25, floor: 1e-6 },
    // a NaN item: float32 fails, the float64 retry runs and fails too, prev stays
    { n: 20, batch: 4, p: -0.5, floor: 1e-6, bad: 2 },
    { n: 20, batch: 4, p: -0.5, floor: 1e-6, bad: 2, inPlace: true },
    { n: 20, batch: 4, p: -0.5, floor: 1e-6, bad: 1, retryFloat64: false },
    // Newton: cold start (inverse and positive roots), warm start, too few iterations for
    // any item (eigh for all), a NaN item (Newton declines the batch), an exponent that is
    // not 1/r (Newton declines: eigh)
    { n: 8, batch: 3, p: -0.25, floor: 1e-6, newton: true },
    { n: 24, batch: 2, p: 0.25, newton: true },
    { n: 16, batch: 3, p: -0.5, floor: 1e-6, newton: true, warm: true },
    { n: 16, batch: 3, p: -0.25, floor: 1e-6, newton: true, maxIterations: 1, inPlace: true },
    { n: 12, batch: 3, p: -0.25, floor: 1e-6, newton: true, bad: 1 },
    { n: 12, batch: 2, p: 0.3, newton: true },
  ];
  return DTYPES.flatMap((dt) =>
    list.map((c): OpCase => ({
      name: `root ${dt} ${label(c)}`,
      run(ref, dev, chk) {
        const p = new Pair(ref, dev);
        try {
          const rng = new Rng(hash(this.name));
          const { n, batch } = c, nn = n * n;
          const a = stored(dt, spdItems(rng, n, batch));
          if (c.bad !== undefined) a[c.bad * nn + nn - 1] = NaN;
          const spec: NativeRootSpec = { p: c.p, floor: c.floor ?? 0, ridge: c.ridge ?? 0, newton: c.newton, maxIterations: c.maxIterations, retryFloat64: c.retryFloat64 };
          let prev = stored(dt, rng.normals(batch * nn));
          if (c.warm) {
            const m = ops.matpow(p.keep(p.ref64(a, [n, n], batch)), c.p, { floor: c.floor ?? 0, ridge: c.ridge ?? 0 });
            prev = stored(dt, rd(p.keep(m.out)));
          }
          const run = (b: Backend) => {
            const A = p.keep(b.fromArray(typed(dt, a), [n, n], batch)), P = p.keep(b.fromArray(typed(dt, prev), [n, n], batch));
            const O = c.inPlace ? P : p.keep(b.fromArray(typed(dt, new Float64Array(batch * nn).fill(-7.25)), [n, n], batch));
            const info = Array.from(b.addon.root(A.native, P.native, O.native, spec));
            return { info, out: rd(O), prev: rd(P) };
          };
          const r = run(ref), d = run(dev), d2 = run(dev);
          const bounds = rootBounds(ref, p, dt, a, n, batch, spec);
          chk.equal('out (second run)', d2.out, d.out);
          for (let b = 0; b < batch; b++) {
            const sl = (x: Float64Array) => x.subarray(b * nn, (b + 1) * nn);
            if (b === c.bad) {
              chk.truth(`item ${b} (NaN) must fail on both: info ${r.info[b]} (cpu) / ${d.info[b]} (dev)`, r.info[b] !== 0 && d.info[b] !== 0);
              chk.equal(`item ${b} (NaN) keeps the previous root`, sl(d.out), sl(prev));
              continue;
            }
            chk.truth(`item ${b}: info ${r.info[b]} (cpu) / ${d.info[b]} (dev)`, r.info[b] === 0 && d.info[b] === 0);
            let diff = 0;
            const od = sl(d.out), or = sl(r.out);
            for (let i = 0; i < nn; i++) diff += (od[i] - or[i]) ** 2;
            chk.ratio(`||root[${b}] dev - cpu||_F`, Math.sqrt(diff) / (2 * bounds[b]));
          }
          if (!c.inPlace) chk.equal('prev is not modified', d.prev, prev);
        } finally {
          p.dispose();
        }
      },
    })),
  );
}

// ---- jobs (lib/exec.ts record): run() and runAsync(), guards, rootRefresh ----------------

/** Tensors of one job input set on one backend, made from the same host data for every run. */
interface JobSet {
  G: Tensor; // [6, 10] x 3: gradient blocks
  H: Tensor; // [6, 6] x 3: statistics
  R: Tensor; // [6, 6] x 3: previous roots
  Rout: Tensor;
  D: Tensor; // [6, 10] x 3: preconditioned
  gs: Tensor[]; // flat entries (mixed dtypes) for the fused stages
  ms: Tensor[];
  ws: Tensor[];
  vs: Tensor[];
  accs: Tensor[];
  mOut: Tensor[];
  wOut: Tensor[];
  vOut: Tensor[];
  accOut: Tensor[];
  dirs: Tensor[];
  zs: Tensor[];
  mOut2: Tensor[];
  wOut2: Tensor[];
}
const JOB_SPECS: SpecList = [
  ['float32', [60], 1],
  ['float64', [7], 1],
  ['float32', [33], 1],
];

function jobSet(p: Pair, b: Backend, dt: DType, data: Record<string, Float64Array | Float64Array[]>): JobSet {
  const t = (k: string, shape: number[], batch: number) => p.keep(b.fromArray(typed(dt, data[k] as Float64Array), shape, batch));
  const list = (k: string) => roleTensors(p, b, JOB_SPECS, data[k] as Float64Array[]);
  return {
    G: t('G', [6, 10], 3),
    H: t('H', [6, 6], 3),
    R: t('R', [6, 6], 3),
    Rout: t('Rout', [6, 6], 3),
    D: t('D', [6, 10], 3),
    gs: list('g'),
    ms: list('m'),
    ws: list('w'),
    vs: list('v'),
    accs: list('acc'),
    mOut: outTensors(p, b, JOB_SPECS),
    wOut: outTensors(p, b, JOB_SPECS),
    vOut: outTensors(p, b, JOB_SPECS),
    accOut: outTensors(p, b, JOB_SPECS),
    dirs: outTensors(p, b, JOB_SPECS),
    zs: outTensors(p, b, JOB_SPECS),
    mOut2: outTensors(p, b, JOB_SPECS),
    wOut2: outTensors(p, b, JOB_SPECS),
  };
}
const readSet = (s: JobSet): Float64Array[] =>
  [s.H, s.R, s.Rout, s.D, ...s.mOut, ...s.wOut, ...s.vOut, ...s.accOut, ...s.dirs, ...s.zs, ...s.mOut2, ...s.wOut2].map(rd);

/**
 * A step-like sequence on one set: statistics (gram, addIdentity), roots (rootRefresh in a
 * job, root immediately), preconditioning (gemm), grafting (graftMany, scaleByNormRatioMany),
 * the fused final stages (updateMany, adamMany, axpbyOutMany) and a finiteness guard.
 */
function jobBody(s: JobSet, recording: boolean, spec: NativeRootSpec): { info?: number; failures?: number } {
  const B = s.G.backend, A = B.addon;
  const slots: { info?: number; failures?: number } = {};
  ops.gram(s.G, 0, s.H, 0.5, 1);
  ops.addIdentity(s.H, 1e-3);
  if (recording) {
    const r = A.rootRefresh(s.H.native, s.R.native, s.Rout.native, spec, new Int32Array(3), 3, 4);
    slots.info = r.info;
    slots.failures = r.failures;
  } else {
    A.root(s.H.native, s.R.native, s.Rout.native, spec);
  }
  ops.gemm(s.Rout, s.G, s.D);
  A.graftMany('adagrad', natives(s.gs), natives(s.accs), null, natives(s.accOut), null, natives(s.dirs), { eps: 1e-6 });
  ops.scaleByNormRatioMany(s.dirs, s.gs, 1e-16);
  A.updateMany(natives(s.dirs), natives(s.ms), natives(s.ws), null, natives(s.mOut), natives(s.wOut), { lr: 0.1, momentum: 0.9, weightDecay: 0.01, nesterov: true, l2: true }, 5);
  A.adamMany(natives(s.gs), natives(s.ms), natives(s.vs), natives(s.wOut), natives(s.mOut2), natives(s.vOut), natives(s.wOut2), { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, bc1: 0.19, bc2: 0.002, decoupled: true, weightDecay: 0.01 }, 6);
  A.axpbyOutMany(natives(s.gs), natives(s.mOut), natives(s.zs), 1, 0.9);
  if (recording) A.guardFinite(natives([...s.wOut2, ...s.zs]), 7);
  return slots;
}

function jobCases(): OpCase[] {
  const out: OpCase[] = [];
  for (const dt of DTYPES) {
    out.push({
      name: `job ${dt}: a recorded step-like job, run() = runAsync() = the ops one by one, bit for bit; slots as the cpu's`,
      async run(ref, dev, chk) {
        const p = new Pair(ref, dev);
        try {
          const rng = new Rng(hash(this.name));
          const data: Record<string, Float64Array | Float64Array[]> = {
            G: stored(dt, rng.normals(180)),
            H: stored(dt, spdItems(rng, 6, 3)),
            R: stored(dt, rng.normals(108)),
            Rout: new Float64Array(108).fill(-7.25),
            D: new Float64Array(180),
            g: roleData(rng, JOB_SPECS),
            m: roleData(rng, JOB_SPECS),
            w: roleData(rng, JOB_SPECS),
            v: roleData(rng, JOB_SPECS, (x) => x * x),
            acc: roleData(rng, JOB_SPECS, (x) => x * x),
          };
          const spec: NativeRootSpec = { p: -0.25, floor: 1e-6, ridge: 1e-8 };
          // The ops one by one on the device (root() for rootRefresh).
          const now = jobSet(p, dev, dt, data);
          jobBody(now, false, spec);
          const want = readSet(now);
          // Recorded, then run on the main thread.
          const a = jobSet(p, dev, dt, data);
          let slotsA: { info?: number; failures?: number } = {};
          const jobA = record(dev, () => (slotsA = jobBody(a, true, spec)));
          chk.truth(`every op of the body was recorded: job size ${jobA.size}, expected 10`, jobA.size === 10);
          chk.equal('nothing ran while recording', rd(a.Rout), data.Rout as Float64Array);
          const resA = jobA.run();
          // Recorded, then run on the libuv pool while the main thread works on other tensors.
          const b = jobSet(p, dev, dt, data);
          let slotsB: { info?: number; failures?: number } = {};
          const jobB = record(dev, () => (slotsB = jobBody(b, true, spec)));
          const pending = jobB.runAsync();
          const x = stored(dt, rng.normals(4000));
          const [Xr, Xd] = p.from(dt, x, [4000]);
          const dots: number[] = [];
          for (let i = 0; i < 10; i++) dots.push(ops.dot(Xd, Xd)[0]);
          const resB = await pending;
          chk.equal('main-thread dot meanwhile, every round the same', dots, new Array(10).fill(dots[0]));
          chk.close('main-thread dot meanwhile vs cpu', [dots[0]], ops.dot(Xr, Xr), 2 * 4002 * U.float64 * ops.dot(Xr, Xr)[0]);
          // The CPU's job, for the discrete results.
          const c = jobSet(p, ref, dt, data);
          let slotsC: { info?: number; failures?: number } = {};
          const resC = record(ref, () => (slotsC = jobBody(c, true, spec))).run();
          for (const [name, res, sl] of [['run()', resA, slotsA], ['runAsync()', resB, slotsB], ['cpu', resC, slotsC]] as const) {
            chk.truth(`${name}: not aborted (${res.code ?? ''} ${res.index} ${res.tag})`, !res.aborted);
            chk.equal(`${name}: root info slot`, res.slots[sl.info!], [0, 0, 0]);
            chk.equal(`${name}: failure counts slot`, res.slots[sl.failures!], [0, 0, 0]);
          }
          const got = readSet(a), gotB = readSet(b);
          want.forEach((w, i) => {
            chk.equal(`tensor ${i}: run() vs the ops one by one`, got[i], w);
            chk.equal(`tensor ${i}: runAsync() vs run()`, gotB[i], got[i]);
          });
          let again = '';
          try {
            jobA.run();
          } catch (e) {
            again = e instanceof KradagradError ? e.code : String(e);
          }
          chk.truth(`a job runs once: a second run() must throw INVALID_ARGUMENT, got '${again}'`, again === 'INVALID_ARGUMENT');
        } finally {
          p.dispose();
        }
      },
    });
    out.push({
      name: `job ${dt}: guardFinite, rootRefresh failure counts and updateMany guards abort where the cpu's do; later ops do not run`,
      async run(ref, dev, chk) {
        const p = new Pair(ref, dev);
        try {
          const rng = new Rng(hash(this.name));
          const n = 10, batch = 3, nn = n * n;
          const fac = stored(dt, spdItems(rng, n, batch));
          fac[nn + 3 * n + 2] = NaN; // item 1: every solver fails it
          const prev = stored(dt, rng.normals(batch * nn));
          const xs = stored(dt, rng.normals(50)), ok = stored(dt, rng.normals(50)), bad = Float64Array.from(ok);
          bad[17] = Infinity;
          const spec: NativeRootSpec = { p: -0.25, floor: 1e-6, ridge: 1e-8 };
          type Scenario = { name: string; body: (t: Record<string, Tensor>, A: Backend['addon']) => { info?: number; failures?: number }; abort?: [string, number, number] };
          const scenarios: Scenario[] = [
            {
              name: 'guardFinite, a non-finite entry',
              body: (t, A) => (A.guardFinite(natives([t.ok, t.bad, t.ok]), 7), {}),
              abort: ['NONFINITE', 1, 7],
            },
            { name: 'guardFinite, all finite', body: (t, A) => (A.guardFinite(natives([t.ok, t.ok]), 7), {}) },
            {
              name: 'rootRefresh, failures within maxFailures',
              body: (t, A) => A.rootRefresh(t.fac.native, t.prev.native, t.out.native, spec, Int32Array.from([0, 2, 5]), 3, 9),
            },
            {
              name: 'rootRefresh, failures past maxFailures',
              body: (t, A) => A.rootRefresh(t.fac.native, t.prev.native, t.out.native, spec, Int32Array.from([0, 2, 5]), 2, 9),
              abort: ['NONFINITE_FACTOR', 1, 9],
            },
            {
              name: 'rootRefresh, the failing item inactive',
              body: (t, A) => A.rootRefresh(t.fac.native, t.prev.native, t.out.native, spec, Int32Array.from([0, 2, 5]), 2, 9, Uint8Array.from([1, 0, 1])),
            },
            {
              name: 'updateMany, a non-finite result in entry 1',
              body: (t, A) => (A.updateMany(natives([t.ok, t.bad]), null, natives([t.x, t.x]), null, null, natives([t.w0, t.w1]), { lr: 0.1 }, 11), {}),
              abort: ['NONFINITE', 1, 11],
            },
          ];
          const tensors = (b: Backend): Record<string, Tensor> => {
            const k = (d: Float64Array, shape: number[], bt = 1) => p.keep(b.fromArray(typed(dt, d), shape, bt));
            return {
              fac: k(fac, [n, n], batch),
              prev: k(prev, [n, n], batch),
              out: k(new Float64Array(batch * nn).fill(-7.25), [n, n], batch),
              x: k(xs, [50]),
              ok: k(ok, [50]),
              bad: k(bad, [50]),
              w0: k(new Float64Array(50), [50]),
              w1: k(new Float64Array(50), [50]),
              before: k(xs, [50]),
              after: k(xs, [50]),
            };
          };
          for (const sc of scenarios) {
            const runOn = async (b: Backend, async: boolean) => {
              const t = tensors(b);
              let sl: { info?: number; failures?: number } = {};
              const job = record(b, () => {
                ops.scale(t.before, 2);
                sl = sc.body(t, b.addon);
                ops.fill(t.after, 3);
              });
              const res = async ? await job.runAsync() : job.run();
              return { res, sl, before: rd(t.before), after: rd(t.after), out: rd(t.out) };
            };
            const runs = [
              ['dev run()', await runOn(dev, false)],
              ['dev runAsync()', await runOn(dev, true)],
              ['cpu run()', await runOn(ref, false)],
            ] as const;
            const scaled = stored(dt, Float64Array.from(xs, (v) => 2 * v));
            for (const [who, x] of runs) {
              const w = `${sc.name}, ${who}`;
              const aborted = sc.abort !== undefined;
              chk.truth(`${w}: aborted ${x.res.aborted}, expected ${aborted}`, x.res.aborted === aborted);
              if (sc.abort) {
                const [code, index, tag] = sc.abort;
                chk.truth(`${w}: ${x.res.code} at ${x.res.index} tag ${x.res.tag}, expected ${code} at ${index} tag ${tag}`, x.res.code === code && x.res.index === index && x.res.tag === tag);
              }
              chk.equal(`${w}: the op before the guard ran`, x.before, scaled);
              chk.equal(`${w}: the op after the guard ${aborted ? 'did not run' : 'ran'}`, x.after, aborted ? xs : new Float64Array(50).fill(3));
              if (x.sl.info !== undefined) {
                const inactive = sc.name.includes('inactive');
                const info = Array.from(x.res.slots[x.sl.info]), fails = Array.from(x.res.slots[x.sl.failures!]);
                chk.truth(`${w}: info ${info} (item 1 ${inactive ? 'inactive: 0' : 'fails'}, the others 0)`, info[0] === 0 && info[2] === 0 && (inactive ? info[1] === 0 : info[1] !== 0));
                chk.equal(`${w}: failure counts`, fails, inactive ? [0, 2, 0] : [0, 3, 0]);
                chk.equal(`${w}: item 1 keeps the previous root`, x.out.subarray(nn, 2 * nn), prev.subarray(nn, 2 * nn));
              }
            }
            const [, dA] = runs[0], [, dB] = runs[1], [, c] = runs[2];
            chk.equal(`${sc.name}: runAsync() out vs run() out`, dB.out, dA.out);
            if (dA.sl.info !== undefined) {
              const bounds = rootBounds(ref, p, dt, fac, n, batch, spec);
              for (const b of [0, 2]) {
                let diff = 0;
                for (let i = b * nn; i < (b + 1) * nn; i++) diff += (dA.out[i] - c.out[i]) ** 2;
                chk.ratio(`${sc.name}: ||root[${b}] dev - cpu||_F`, Math.sqrt(diff) / (2 * bounds[b]));
              }
            }
          }
        } finally {
          p.dispose();
        }
      },
    });
  }
  return out;
}

// ---- whole optimizer steps ----------------------------------------------------------------

type MakeOpt = (params: NamedParams, b: Backend, f64: boolean, extra?: Record<string, unknown>) => Optimizer;
/**
 * The optimizers on small well-conditioned problems (factor eigenvalues >= epsilon well
 * above float32's rounding of the largest): the cross-backend check then measures the
 * device's arithmetic, not how two float32 runs lose an ill-conditioned factor differently.
 * Each run exercises a fused stage: graftMany (adagrad, adam), updateMany (momentum,
 * nesterov, l2, decoupled, the pre-start external direction), axpbyOutMany (the pre-start
 * raw momentum of Shampoo float64), adamMany; rootRefresh and guardFinite in every
 * Kronecker step job.
 */
const STEP_KINDS: [string, boolean, MakeOpt][] = [
  ['KradagradStar', true, (q, b, f64, e) => new KradagradStar(q, { backend: b, lr: 0.05, blockSize: 8, rootFrequency: 2, momentum: 0.9, grafting: 'adagrad', epsilon: 1e-2, weightDecay: 1e-3, ...(f64 ? { statisticsDtype: 'float64' } : {}), ...e })],
  ['Kradagrad', true, (q, b, f64, e) => new Kradagrad(q, { backend: b, lr: 0.05, blockSize: 8, rootFrequency: 2, momentum: 0.5, epsilon: 1e-2, ...(f64 ? { statisticsDtype: 'float64' } : {}), ...e })],
  ['Shampoo float32', true, (q, b, f64, e) => new Shampoo(q, { backend: b, lr: 0.05, blockSize: 8, rootFrequency: 2, momentum: 0.9, nesterov: true, weightDecay: 0.01, grafting: 'adam', epsilon: 0.1, ...(f64 ? { statisticsDtype: 'float64' } : {}), ...e })],
  ['Shampoo float64', true, (q, b, _f64, e) => new Shampoo(q, { backend: b, lr: 0.05, blockSize: 8, rootFrequency: 2, momentum: 0.9, weightDecay: 0.01, weightDecayMode: 'decoupled', grafting: 'adagrad', startStep: 3, epsilon: 0.1, statisticsDtype: 'float64', ...e })],
  ['Adam', false, (q, b, _f64, e) => new Adam(q, { backend: b, lr: 0.01, weightDecay: 0.01, ...e })],
  ['Sgd', false, (q, b, _f64, e) => new Sgd(q, { backend: b, lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-3, ...e })],
];
/** Parameters: blocks of 8 and their remainders, a float64 parameter among float32 ones. */
const STEP_PARAMS: [string, number[], DType][] = [
  ['w', [9, 7], 'float32'],
  ['b', [7], 'float64'],
  ['c', [3, 4, 5], 'float32'],
  ['e', [40, 33], 'float32'],
];
const STEP_COUNT = 6;
/** The step forward-error factor: the device may be this much less accurate than the CPU. */
export const STEP_ERROR_FACTOR = 4;

function stepCases(): OpCase[] {
  return STEP_KINDS.map(([kind, kronecker, make]) => ({
    name: `optimizer step ${kind}: device vs cpu against a float64 run (${STEP_COUNT} steps), step = stepAsync bit for bit${kronecker ? ', asyncRoots' : ''}`,
    async run(ref, dev, chk) {
      const rng = new Rng(hash(this.name));
      const init = STEP_PARAMS.map(([, s, dt]) => stored(dt, rng.normals(prod(s), 0.5)));
      const grads = Array.from({ length: STEP_COUNT }, () => STEP_PARAMS.map(([, s, dt]) => stored(dt, rng.normals(prod(s)))));
      /** One run: the parameters after each step (host mode), and the final state. */
      const run = async (b: Backend, f64: boolean, mode: 'step' | 'stepAsync', extra: Record<string, unknown> = {}) => {
        const data = init.map((d, j) => (f64 || STEP_PARAMS[j][2] === 'float64' ? Float64Array.from(d) : Float32Array.from(d)));
        const opt = make(Object.fromEntries(STEP_PARAMS.map(([name, shape], j) => [name, { data: data[j], shape }])), b, f64, extra);
        const traj: Float64Array[][] = [];
        try {
          for (let t = 0; t < STEP_COUNT; t++) {
            const g = Object.fromEntries(STEP_PARAMS.map(([name], j) => [name, f64 || STEP_PARAMS[j][2] === 'float64' ? Float64Array.from(grads[t][j]) : Float32Array.from(grads[t][j])]));
            if (mode === 'step') opt.step(g);
            else await opt.stepAsync(g);
            traj.push(data.map((d) => Float64Array.from(d)));
          }
          return { traj, state: opt.saveState() };
        } finally {
          opt.dispose();
        }
      };
      const exact = await run(ref, true, 'step');
      const cpu = await run(ref, false, 'step');
      const sync = await run(dev, false, 'step');
      const asy = await run(dev, false, 'stepAsync');
      const dist = (x: Float64Array[], y: Float64Array[]) => Math.sqrt(x.reduce((s, d, j) => s + d.reduce((q, v, i) => q + (v - y[j][i]) ** 2, 0), 0));
      const notes: string[] = [];
      for (let t = 0; t < STEP_COUNT; t++) {
        const eCpu = dist(cpu.traj[t], exact.traj[t]), eDev = dist(sync.traj[t], exact.traj[t]);
        const wNorm = Math.sqrt(exact.traj[t].reduce((s, d) => s + d.reduce((q, v) => q + v * v, 0), 0));
        const allowed = STEP_ERROR_FACTOR * eCpu + 2 * U.float32 * wNorm;
        chk.ratio(`step ${t + 1}: device error ${eDev.toExponential(2)} vs ${STEP_ERROR_FACTOR} x cpu error ${eCpu.toExponential(2)} + 2u||W||`, eDev / allowed);
        notes.push(`${t + 1}: dev ${eDev.toExponential(1)} cpu ${eCpu.toExponential(1)}`);
        sync.traj[t].forEach((d, j) => chk.equal(`step ${t + 1} '${STEP_PARAMS[j][0]}': stepAsync vs step (device)`, asy.traj[t][j], d));
        if (sync.traj[t].some((d, j) => d.some((v, i) => !Object.is(v, cpu.traj[t][j][i])))) chk.exact = false;
      }
      chk.note(`device ${chk.exact ? '=' : '!='} cpu bit for bit; errors vs float64: ${notes.join(', ')}`);
      chk.truth('saveState after stepAsync = after step (device)', asy.state.equals(sync.state));
      if (kronecker) {
        // Background root refreshes: the same run whether the steps are sync or async, and
        // not the synchronous-roots run (the roots are one refresh older).
        const bg = await run(dev, false, 'stepAsync', { asyncRoots: true });
        const bgSync = await run(dev, false, 'step', { asyncRoots: true });
        bg.traj.forEach((st, t) => st.forEach((d, j) => chk.equal(`asyncRoots step ${t + 1} '${STEP_PARAMS[j][0]}': step vs stepAsync`, bgSync.traj[t][j], d)));
        chk.truth('asyncRoots: saveState after step = after stepAsync', bg.state.equals(bgSync.state));
        chk.truth('asyncRoots: the run differs from the synchronous-roots run', dist(bg.traj[STEP_COUNT - 1], sync.traj[STEP_COUNT - 1]) > 0);
      }
    },
  }));
}

/** Every case, in a stable order. */
export function opCases(): OpCase[] {
  return [
    ...gemmCases(),
    ...gramModeCases(),
    ...eighCases(),
    ...matpowCases(),
    ...elementwiseCases(),
    ...squareCases(),
    ...boxesCases(),
    ...fusedCases(),
    ...multiCases(),
    ...boxesManyCases(),
    ...asyncAndErrorCases(),
    ...fusedStageCases(),
    ...rootCases(),
    ...jobCases(),
    ...stepCases(),
  ];
}

export async function runCase(c: OpCase, ref: Backend, dev: Backend): Promise<CaseResult> {
  const chk = new Check();
  const t0 = process.hrtime.bigint();
  try {
    await c.run(ref, dev, chk);
  } catch (e) {
    chk.failures.push(`threw ${e instanceof KradagradError ? `${e.code}: ` : ''}${(e as Error).message ?? String(e)}`);
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  return { name: c.name, ok: chk.failures.length === 0, worst: chk.worst, exact: chk.exact, detail: chk.summary(), ms };
}

