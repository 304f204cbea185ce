/**
 * Root methods behave the same for KrADagrad*, KrADagrad and Shampoo: typed configs
 * (`{ method: 'eigh', retryFloat64 }`, `{ method: 'newton', maxIterations, tolerance }`),
 * Newton agrees with eigh and falls back to it item by item, the background refresh
 * (asyncRoots) honours the method, and the eigenvalue floor is honoured or the
 * combination refused.
 */
import { Kradagrad, KradagradStar, Shampoo, getBackend, ops } from '../lib';
import type { NamedParams, Optimizer } from '../lib';
import { mulberry32 } from './ref/linalg';

const B = getBackend('cpu');
type Make = (p: NamedParams, extra: Record<string, unknown>) => Optimizer;
const kinds: [string, Make][] = [
  ['KradagradStar', (p, e) => new KradagradStar(p, { backend: B, blockSize: 6, rootFrequency: 1, statisticsDtype: 'float64', epsilon: 1e-2, ...e })],
  ['Kradagrad', (p, e) => new Kradagrad(p, { backend: B, blockSize: 6, rootFrequency: 1, statisticsDtype: 'float64', epsilon: 1e-2, ...e })],
  ['Shampoo', (p, e) => new Shampoo(p, { backend: B, blockSize: 6, rootFrequency: 1, statisticsDtype: 'float64', epsilon: 1e-2, ...e })],
];
const rand = (n: number, seed: number) => {
  const r = mulberry32(seed);
  return Float64Array.from({ length: n }, () => 2 * r() - 1);
};
async function run(make: Make, extra: Record<string, unknown>, steps = 6, async = false): Promise<Float64Array> {
  const w = rand(30, 1);
  const b = rand(6, 2);
  const o = make({ w: { data: w, shape: [5, 6] }, b: { data: b, shape: [6] } }, extra);
  for (let t = 1; t <= steps; t++) {
    const g = { w: rand(30, 10 + t), b: rand(6, 20 + t) };
    if (async) await o.stepAsync(g);
    else o.step(g);
  }
  o.dispose();
  return Float64Array.from([...w, ...b]);
}
const maxRel = (a: Float64Array, b: Float64Array) => {
  let e = 0;
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    e = Math.max(e, Math.abs(a[i] - b[i]));
    s = Math.max(s, Math.abs(b[i]));
  }
  return e / s;
};
const same = (a: Float64Array, b: Float64Array) => Buffer.from(a.buffer).equals(Buffer.from(b.buffer));

describe.each(kinds)('%s', (_name, make) => {
  test("'newton' agrees with 'eigh' (float64), and differs from it (it is really used)", async () => {
    const eigh = await run(make, { rootMethod: 'eigh' });
    const newton = await run(make, { rootMethod: { method: 'newton', tolerance: 1e-13 } });
    expect(maxRel(newton, eigh)).toBeLessThan(1e-8);
    expect(same(newton, eigh)).toBe(false);
  });

  test('Newton that cannot converge falls back to eigh: bitwise the eigh run', async () => {
    const eigh = await run(make, {});
    const capped = await run(make, { rootMethod: { method: 'newton', maxIterations: 1 } });
    expect(same(capped, eigh)).toBe(true);
  });

  test('asyncRoots honours the root method', async () => {
    const eigh = await run(make, { asyncRoots: true, rootFrequency: 2 }, 8, true);
    const newton = await run(make, { asyncRoots: true, rootFrequency: 2, rootMethod: { method: 'newton', tolerance: 1e-13 } }, 8, true);
    const capped = await run(make, { asyncRoots: true, rootFrequency: 2, rootMethod: { method: 'newton', maxIterations: 1 } }, 8, true);
    expect(same(newton, eigh)).toBe(false);
    expect(maxRel(newton, eigh)).toBeLessThan(1e-8);
    expect(same(capped, eigh)).toBe(true);
  });

  test.each([
    [{ method: 'jacobi' }, /rootMethod.method/],
    [{ method: 'newton', maxIterations: 0 }, /maxIterations/],
    [{ method: 'newton', tolerance: 2 }, /tolerance/],
    [{ method: 'newton', bogus: 1 }, /Unknown option 'bogus'/],
    [{ method: 'eigh', retryFloat64: 'yes' }, /retryFloat64/],
    ['qr', /rootMethod/],
  ])('bad root method %j: INVALID_OPTION', (rootMethod, msg) => {
    expect(() => make({ w: { data: new Float64Array(30), shape: [5, 6] } }, { rootMethod })).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTION', message: expect.stringMatching(msg) }),
    );
  });
});

describe('the eigenvalue floor', () => {
  const shampoo: Make = kinds[2][1];
  test('eigh honours eigenvalueFloor (a large floor changes the run)', async () => {
    // Without grafting, so the roots' scale shows in the step.
    const plain = await run(shampoo, { grafting: 'none', lr: 1 });
    const floored = await run(shampoo, { grafting: 'none', lr: 1, eigenvalueFloor: 10 });
    expect(maxRel(floored, plain)).toBeGreaterThan(1e-2);
  });
  test.each([
    [{ eigenvalueFloor: 10 }, /eigenvalueFloor > epsilon or beta2 < 1/],
    [{ beta2: 0.9 }, /eigenvalueFloor > epsilon or beta2 < 1/],
  ])('Newton where the floor can bind is refused: %j', (extra, msg) => {
    expect(() => shampoo({ w: { data: new Float64Array(30), shape: [5, 6] } }, { ...extra, rootMethod: 'newton' })).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTION', message: expect.stringMatching(msg) }),
    );
  });
  test('Shampoo with epsilon 0 needs an explicit floor', () => {
    expect(() => shampoo({ w: { data: new Float64Array(30), shape: [5, 6] } }, { epsilon: 0 })).toThrow(expect.objectContaining({ code: 'INVALID_OPTION', message: expect.stringMatching(/eigenvalueFloor/) }));
    expect(() => shampoo({ w: { data: new Float64Array(30), shape: [5, 6] } }, { epsilon: 0, eigenvalueFloor: 1e-6 })).not.toThrow();
  });
});

describe('ops.root: the solver chain as an op', () => {
  test('float64 retry of float32 items, previous root kept where every method fails', () => {
    const n = 4;
    const a = new Float32Array(3 * n * n);
    for (let b = 0; b < 3; b++) for (let i = 0; i < n; i++) a[b * n * n + i * (n + 1)] = 2 + b;
    a[2 * n * n + 1] = NaN; // item 2 fails in every method
    const A = B.fromArray(a, [n, n], 3);
    const prev = B.fromArray(new Float32Array(3 * n * n).fill(7), [n, n], 3);
    const out = B.tensor('float32', [n, n], 3);
    const info = ops.root(A, prev, out, { p: 0.5 });
    expect(Array.from(info).map((x) => x !== 0)).toEqual([false, false, true]);
    const r = out.read();
    expect(r[0]).toBeCloseTo(Math.sqrt(2), 6);
    expect(r[n * n + n + 1]).toBeCloseTo(Math.sqrt(3), 6);
    expect(Array.from(r.subarray(2 * n * n))).toEqual(new Array(n * n).fill(7));
    [A, prev, out].forEach((t) => t.dispose());
  });
});
