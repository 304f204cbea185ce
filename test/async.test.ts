/**
 * Async eigh / matpow: same results as the synchronous ops, the event loop keeps running
 * while they work on the libuv pool, and disposing (or dropping) their tensors meanwhile
 * is safe: the work keeps its buffers alive until it is done.
 */
import * as v8 from 'v8';
import * as vm from 'vm';
import { Tensor, getBackend, ops } from '../lib';
import type { DType } from '../lib';
import { DTYPES, LAPACK_THRESH, Pool, ULP, expectClose, stored } from './ref/check';
import * as R from './ref/linalg';

const backend = getBackend('cpu');
const pool = new Pool(backend);
afterEach(() => pool.disposeAll());

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

const read = (t: Tensor): Float64Array => Float64Array.from(t.read());

/** A batch of random symmetric matrices (stored in dtype `dt`) and its float64 values. */
function symmetric(dt: DType, n: number, batch: number, seed: number): { a: Float64Array; A: Tensor } {
  const rng = new R.Rng(seed);
  const a = new Float64Array(batch * n * n);
  for (let b = 0; b < batch; b++) a.set(R.symmetrizeRef(rng.normals(n * n), n, 1), b * n * n);
  const s = stored(dt, a);
  return { a: s, A: pool.from(dt, s, [n, n], batch) };
}
/** Spd batch with eigenvalues in [0.1, 10]. */
function spd(dt: DType, n: number, batch: number, seed: number): { a: Float64Array; A: Tensor } {
  const rng = new R.Rng(seed);
  const a = new Float64Array(batch * n * n);
  for (let b = 0; b < batch; b++) a.set(rng.symmetricWithEigenvalues(rng.uniforms(n, 0.1, 10)), b * n * n);
  const s = stored(dt, a);
  return { a: s, A: pool.from(dt, s, [n, n], batch) };
}

/**
 * The two runs execute the same LAPACK code on the same data, but on different threads (and
 * OpenBLAS may split work differently there), so they are compared within LAPACK's own
 * accuracy rather than bitwise: eigenvalues within 30 n ulp ||A||_1, eigenvectors (defined
 * up to sign) through the residual of the async result.
 */
function expectSameEigh(dt: DType, a: Float64Array, n: number, batch: number, w1: Float64Array, w2: Float64Array, v2: Float64Array): void {
  for (let b = 0; b < batch; b++) {
    const sym = R.lowerSym(a, n, b);
    const anorm = R.oneNorm(sym, n) || 1;
    expectClose(w2.subarray(b * n, (b + 1) * n), w1.subarray(b * n, (b + 1) * n), LAPACK_THRESH * n * anorm * ULP[dt], `eigenvalues of item ${b}`);
    const rec = R.reconstruct(v2, w2, n, b * n * n, b * n);
    expect(R.oneNorm(rec.map((x, i) => x - sym[i]), n) / (n * anorm * ULP[dt])).toBeLessThan(LAPACK_THRESH);
  }
}

describe('async results equal the synchronous ones', () => {
  test.each(DTYPES)('%s eighAsync', async (dt) => {
    const n = 24;
    const batch = 3;
    const { a, A } = symmetric(dt, n, batch, 1);
    const s = ops.eigh(A);
    const r = await ops.eighAsync(A);
    [s.w, s.v, r.w, r.v].forEach((t) => pool.keep(t));
    expect(Array.from(r.info)).toEqual([0, 0, 0]);
    expect(r.w.shape).toEqual([n]);
    expect(r.v.batch).toBe(batch);
    expectSameEigh(dt, a, n, batch, read(s.w), read(r.w), read(r.v));
  });

  test.each(DTYPES)('%s matpowAsync (with floor, ridge and a given output)', async (dt) => {
    const n = 16;
    const { A } = spd(dt, n, 2, 2);
    const s = pool.keep(ops.matpow(A, -0.25, { floor: 1e-3, ridge: 1e-2 }).out);
    const out = pool.zeros(dt, [n, n], 2);
    const r = await ops.matpowAsync(A, -0.25, { floor: 1e-3, ridge: 1e-2, out });
    expect(r.out).toBe(out);
    expect(Array.from(r.info)).toEqual([0, 0]);
    // Same algorithm on the same data: agreement within the matpow tolerance of ops.test.ts
    // (sqrt(n) * L * delta with L = |p| floor-ish slope at the smallest eigenvalue ~ 0.1).
    const tol = Math.sqrt(n) * 0.25 * Math.pow(0.1, -1.25) * LAPACK_THRESH * n * ULP[dt] * 10 * 2;
    expectClose(read(out), read(s), tol, 'matpowAsync vs matpow');
  });

  test('several async ops in flight at once all resolve to the right results', async () => {
    const n = 20;
    const items = Array.from({ length: 6 }, (_, i) => spd('float64', n, 2, 10 + i));
    const results = await Promise.all(items.map(({ A }) => ops.matpowAsync(A, 0.5)));
    results.forEach((r, i) => {
      pool.keep(r.out);
      const ref = R.matpowRef(items[i].a, n, 2, 0.5);
      expectClose(read(r.out), ref, 1e-10, `matpow ${i}`);
    });
  });
});

describe('the event loop stays responsive', () => {
  test('timer callbacks run while a batch of 8 eigh of 512 x 512 float64 is computed', async () => {
    const n = process.env.KRAD_MEMCHECK ? 128 : 512; // scripts/memcheck.sh: valgrind is ~50x slower
    const batch = 8;
    const A = pool.from('float64', R.fastFill(batch * n * n, 3), [n, n], batch);
    ops.symmetrize(A);
    let done = false;
    let ticksWhileRunning = 0;
    // A timer, not a setImmediate spin: it shows the loop is free without starving the
    // worker of CPU. Whether the count is 1 or 500 depends on the machine; it must not be 0.
    // (Were the work done synchronously, the promise would settle in a microtask before any
    // timer could fire, and the count would be 0.)
    const timer = setInterval(() => {
      if (!done) ticksWhileRunning++;
    }, 1);
    // Main-thread work meanwhile, through the addon too.
    const pending = ops.eighAsync(A).then((r) => {
      done = true;
      return r;
    });
    const small = ops.gemm(pool.from('float64', [1, 2, 3, 4], [2, 2]), pool.from('float64', [1, 0, 0, 1], [2, 2]));
    pool.keep(small);
    expect(Array.from(small.read())).toEqual([1, 2, 3, 4]);
    const r = await pending;
    clearInterval(timer);
    pool.keep(r.w);
    pool.keep(r.v);
    expect(ticksWhileRunning).toBeGreaterThan(0);
    expect(Array.from(r.info)).toEqual(new Array(batch).fill(0));
    // Spot check: trace = sum of eigenvalues for every item.
    const w = read(r.w);
    const tr = ops.trace(A);
    for (let b = 0; b < batch; b++) {
      const sw = w.subarray(b * n, (b + 1) * n).reduce((s, x) => s + x, 0);
      expect(Math.abs(sw - tr[b])).toBeLessThan(1e-9 * n);
    }
  });
});

describe('disposing tensors while an async op runs', () => {
  test('disposing the input right after eighAsync starts: the result is still right', async () => {
    const n = 64;
    const { a, A } = symmetric('float64', n, 4, 4);
    const p = ops.eighAsync(A);
    A.dispose();
    const r = await p;
    pool.keep(r.w);
    pool.keep(r.v);
    expect(A.disposed).toBe(true);
    const ref = R.eighRef(a, n, 4);
    expectClose(read(r.w), ref.w, LAPACK_THRESH * n * 20 * ULP.float64, 'eigenvalues');
  });

  test('disposing input and output of matpowAsync meanwhile: resolves, output then reads as DISPOSED', async () => {
    const { A } = spd('float32', 48, 4, 5);
    const out = pool.zeros('float32', [48, 48], 4);
    const p = ops.matpowAsync(A, 0.5, { out });
    A.dispose();
    out.dispose();
    const r = await p;
    expect(Array.from(r.info)).toEqual([0, 0, 0, 0]);
    expect(() => r.out.read()).toThrow(expect.objectContaining({ code: 'DISPOSED' }));
  });

  test('raw addon: all three handles disposed and collected while eighAsync runs', async () => {
    const n = 96;
    const { A } = symmetric('float64', n, 4, 6);
    const W = backend.tensor('float64', [n], 4);
    const V = backend.tensor('float64', [n, n], 4);
    const p = backend.addon.eighAsync(A.native, W.native, V.native);
    A.dispose();
    W.dispose();
    V.dispose();
    gc();
    const info = await p;
    expect(Array.from(info)).toEqual([0, 0, 0, 0]);
  });

  test('failures are reported per item through the promise', async () => {
    const n = 8;
    const a = new Float64Array(2 * n * n);
    a.set(R.symmetrizeRef(new R.Rng(7).normals(n * n), n, 1));
    a[n * n + 3] = NaN;
    const A = pool.from('float64', a, [n, n], 2);
    const r = await ops.eighAsync(A, { allowFailures: true });
    pool.keep(r.w);
    pool.keep(r.v);
    expect(r.info[0]).toBe(0);
    expect(r.info[1]).not.toBe(0);
    await expect(ops.eighAsync(A)).rejects.toMatchObject({ code: 'NONFINITE', details: { item: 1 } });
  });
});
