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
 */
import { Backend, KradagradError, Tensor, getBackend, ops } from '../../lib';
import type { DType } from '../../lib';
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

