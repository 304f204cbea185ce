/**
 * The multi-tensor ("foreach") ops: each must equal, bit for bit, the single op applied
 * entry by entry (they run the same backend primitive), on lists that mix float32 and
 * float64 and sizes; and a bad entry anywhere must raise a coded error before any entry
 * is touched.
 */
import { KradagradError, Tensor, getBackend, ops } from '../lib';
import type { DType } from '../lib';
import * as R from './ref/linalg';

const backend = getBackend('cpu');
const made: Tensor[] = [];
afterEach(() => made.splice(0).forEach((t) => t.dispose()));

const rng = new R.Rng(20261128);
function rand(dt: DType, shape: number[], positive = false, batch = 1): Tensor {
  const size = shape.reduce((a, b) => a * b, 1) * batch;
  const data = Float64Array.from({ length: size }, () => (positive ? 0.1 + Math.abs(rng.normal()) : rng.normal()));
  const t = backend.fromArray(dt === 'float32' ? Float32Array.from(data) : data, shape, batch);
  made.push(t);
  return t;
}
const clone = (t: Tensor): Tensor => {
  const c = backend.fromArray(t.read(), t.shape, t.batch);
  made.push(c);
  return c;
};
const SPECS: [DType, number[]][] = [
  ['float32', [7]],
  ['float64', [3, 5]],
  ['float32', [1]],
  ['float64', [2, 3, 4]],
  ['float32', [33, 2]],
];
const list = (positive = false): Tensor[] => SPECS.map(([dt, s]) => rand(dt, s, positive));
const same = (a: Tensor[], b: Tensor[]): void => a.forEach((x, i) => expect(Array.from(x.read())).toEqual(Array.from(b[i].read())));

function expectCode(fn: () => unknown, code: string, msg?: RegExp): void {
  let thrown: unknown;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  expect(thrown).toBeInstanceOf(KradagradError);
  expect((thrown as KradagradError).code).toBe(code);
  if (msg) expect((thrown as Error).message).toMatch(msg);
}

describe('multi-tensor ops equal the single ops entry by entry', () => {
  test('axpbyMany (distinct and aliased x = y)', () => {
    const xs = list();
    const ys = list();
    const ref = ys.map(clone);
    ops.axpbyMany(xs, ys, -0.37, 0.9);
    xs.forEach((x, i) => ops.axpby(x, ref[i], -0.37, 0.9));
    same(ys, ref);
    const ref2 = ys.map(clone);
    ops.axpbyMany(ys, ys, 0, 0.5); // a scale
    ref2.forEach((r) => ops.scale(r, 0.5));
    same(ys, ref2);
  });
  test('copyMany, with casts', () => {
    const src = list();
    const dst = SPECS.map(([dt, s]) => rand(dt === 'float32' ? 'float64' : 'float32', s));
    const ref = dst.map(clone);
    ops.copyMany(src, dst);
    src.forEach((x, i) => ops.copy(x, ref[i]));
    same(dst, ref);
  });
  test('mulAccMany and divSqrtMany', () => {
    const xs = list();
    const ys = list();
    const acc = list(true);
    const refAcc = acc.map(clone);
    ops.mulAccMany(xs, ys, acc, 0.99, 0.01);
    xs.forEach((x, i) => ops.mulAcc(x, ys[i], refAcc[i], 0.99, 0.01));
    same(acc, refAcc);
    const out = list();
    const refOut = out.map(clone);
    ops.divSqrtMany(xs, acc, out, 3, 1e-8);
    xs.forEach((x, i) => ops.divSqrt(x, acc[i], refOut[i], 3, 1e-8));
    same(out, refOut);
  });
  test('scaleByNormRatioMany (batched items too)', () => {
    const ds = [...list(), rand('float64', [4, 4], false, 3)];
    const as = [...list(), rand('float64', [4, 4], false, 3)];
    const ref = ds.map(clone);
    ops.scaleByNormRatioMany(ds, as, 1e-16);
    ref.forEach((d, i) => ops.scaleByNormRatio(d, as[i], 1e-16));
    same(ds, ref);
    // And against the definition: ||d_i|| becomes ||a_i||.
    ds.slice(0, SPECS.length).forEach((d, i) => {
      expect(ops.frobNorm(d)[0]).toBeCloseTo(ops.frobNorm(as[i])[0], 4);
    });
  });
  test('boxesMany gathers and scatters like boxes', () => {
    const a = rand('float64', [6, 4]);
    const b = rand('float64', [3, 8]);
    const blocks = rand('float64', [3, 4], false, 4);
    const ref = clone(blocks);
    const offs = [[[0, 0], [3, 0]], [[0, 0], [0, 4]]];
    ops.boxesMany([a, b], blocks, offs, [0, 2]);
    ops.boxes(a, ref, offs[0], false, 0);
    ops.boxes(b, ref, offs[1], false, 2);
    same([blocks], [ref]);
    // Round trip: scatter a scaled copy back and compare with the single op.
    ops.scale(blocks, 2);
    const a2 = clone(a);
    const b2 = clone(b);
    ops.boxesMany([a, b], blocks, offs, [0, 2], true);
    ops.boxes(a2, blocks, offs[0], true, 0);
    ops.boxes(b2, blocks, offs[1], true, 2);
    same([a, b], [a2, b2]);
  });
  test('empty lists are no-ops', () => {
    expect(() => ops.axpbyMany([], [], 1, 1)).not.toThrow();
    expect(() => ops.copyMany([], [])).not.toThrow();
    expect(() => ops.boxesMany([], rand('float32', [2]), [], [])).not.toThrow();
  });
});

describe('multi-tensor ops reject bad input before touching anything', () => {
  test('a bad entry late in the list leaves the earlier ones unchanged', () => {
    const xs = list();
    const ys = list();
    const before = ys.map((y) => Array.from(y.read()));
    const bad = rand('float32', [2]);
    expectCode(() => ops.axpbyMany([...xs, bad], [...ys, rand('float32', [3])], 1, 1), 'SHAPE_MISMATCH', /entry 5/);
    expectCode(() => ops.axpbyMany([...xs, bad], [...ys, rand('float64', [2])], 1, 1), 'DTYPE_MISMATCH', /entry 5/);
    ys.forEach((y, i) => expect(Array.from(y.read())).toEqual(before[i]));
  });
  test('list lengths must agree', () => {
    expectCode(() => ops.axpbyMany(list(), list().slice(1), 1, 1), 'SHAPE_MISMATCH', /lengths/);
    expectCode(() => ops.mulAccMany(list(), list(), list().slice(2), 1, 1), 'SHAPE_MISMATCH', /lengths/);
    expectCode(() => ops.boxesMany([rand('float32', [4])], rand('float32', [2], false, 2), [], []), 'SHAPE_MISMATCH');
  });
  test('disposed and foreign handles', () => {
    const xs = list();
    const ys = list();
    const gone = rand('float32', [7]);
    gone.dispose();
    expectCode(() => ops.copyMany([gone, ...xs.slice(1)], ys), 'DISPOSED');
    expectCode(() => ops.axpbyMany([{} as Tensor], [ys[0]], 1, 1), 'INVALID_HANDLE');
    expectCode(() => ops.axpbyMany(undefined as never, ys, 1, 1), 'INVALID_ARGUMENT', /arrays of tensors/);
    expectCode(() => ops.copyMany(xs, 'ys' as never), 'INVALID_ARGUMENT', /arrays of tensors/);
    expectCode(() => backend.addon.axpbyMany([{} as never], [ys[0].native], 1, 1), 'INVALID_HANDLE');
    expectCode(() => backend.addon.axpbyMany('x' as never, [ys[0].native], 1, 1), 'INVALID_ARGUMENT', /array of tensors/);
  });
  test('bad scalars and offsets', () => {
    const ds = list();
    expectCode(() => ops.scaleByNormRatioMany(ds, list(), -1), 'INVALID_ARGUMENT', /eps/);
    expectCode(() => backend.addon.axpbyMany([], [], 'a' as never, 1), 'INVALID_ARGUMENT');
    const a = rand('float32', [4, 4]);
    const blocks = rand('float32', [2, 2], false, 2);
    const before = Array.from(blocks.read());
    expectCode(() => ops.boxesMany([a, a], blocks, [[[0, 0]], [[3, 3]]], [0, 1]), 'INVALID_ARGUMENT', /entry 1.*overruns/);
    expectCode(() => ops.boxesMany([a], blocks, [5 as never], [0]), 'INVALID_ARGUMENT', /offset arrays/);
    expectCode(() => ops.boxesMany([a], blocks, [[[0, 0]]], [0.5]), 'INVALID_ARGUMENT');
    expectCode(() => ops.boxesMany('a' as never, blocks, [], []), 'INVALID_ARGUMENT');
    expect(Array.from(blocks.read())).toEqual(before);
  });
});
