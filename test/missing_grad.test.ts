/**
 * Parameters without a gradient in a step (frozen layers, heads a batch does not use):
 * `missingGradient: 'skip'` leaves such a parameter, its statistics, roots, momentum and
 * graft state exactly as they were, the others step as if it did not exist, and a
 * checkpoint taken after such steps resumes exactly. The default rejects the step.
 */
import * as tf from '@tensorflow/tfjs';
import { Adam, Kradagrad, KradagradStar, Sgd, Shampoo, getBackend } from '../lib';
import type { NamedParams, Optimizer } from '../lib';
import { KradagradStarOptimizer } from '../lib/tfjs';
import { mulberry32 } from './ref/linalg';

const B = getBackend('cpu');
type Make = (p: NamedParams, extra?: Record<string, unknown>) => Optimizer;
const makes: [string, Make][] = [
  ['KradagradStar', (p, e) => new KradagradStar(p, { backend: B, blockSize: 5, rootFrequency: 2, momentum: 0.9, grafting: 'adam', ...e })],
  ['Kradagrad', (p, e) => new Kradagrad(p, { backend: B, blockSize: 5, rootFrequency: 2, momentum: 0.5, ...e })],
  ['Shampoo', (p, e) => new Shampoo(p, { backend: B, blockSize: 5, rootFrequency: 2, beta2: 0.9, statisticsDtype: 'float64', momentum: 0.9, ...e })],
  ['Shampoo async roots', (p, e) => new Shampoo(p, { backend: B, blockSize: 5, rootFrequency: 2, asyncRoots: true, ...e })],
  ['Adam', (p, e) => new Adam(p, { backend: B, lr: 0.01, ...e })],
  ['Sgd', (p, e) => new Sgd(p, { backend: B, lr: 0.01, momentum: 0.9, ...e })],
];
// a and b share block shapes (5 x 5 blocks), so their blocks are batched together.
const shapes: Record<string, number[]> = { a: [10, 5], b: [5, 5], c: [7] };
const size = (n: string) => shapes[n].reduce((x, y) => x * y, 1);
const init = (n: string) => {
  const r = mulberry32(n.charCodeAt(0));
  return Float32Array.from({ length: size(n) }, () => 2 * r() - 1);
};
const grad = (n: string, t: number) => {
  const r = mulberry32(100 * t + n.charCodeAt(0));
  return Float32Array.from({ length: size(n) }, () => 2 * r() - 1);
};
/** Which parameters have a gradient at step t. */
const has = (n: string, t: number) => n !== 'b' || t % 3 !== 1 || t === 1;

function setup(names: string[]): { p: NamedParams; data: Record<string, Float32Array> } {
  const data = Object.fromEntries(names.map((n) => [n, init(n)]));
  return { p: Object.fromEntries(names.map((n) => [n, { data: data[n], shape: shapes[n] }])), data };
}
const gradsAt = (names: string[], t: number) => Object.fromEntries(names.filter((n) => has(n, t)).map((n) => [n, grad(n, t)]));
/**
 * The checkpoint's tensors of parameter `param` (names `<param>/...`), as base64 of their
 * bytes; background-refresh snapshots are group bookkeeping and left out.
 */
function stateOf(buf: Buffer, param: string): Record<string, string> {
  const n = Number(buf.readBigUInt64LE(0));
  const h = JSON.parse(buf.toString('utf8', 8, 8 + n));
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) {
    if (!k.startsWith(`${param}/`) || k.includes('/pending/')) continue;
    const [b, e] = (v as { data_offsets: number[] }).data_offsets;
    out[k] = buf.subarray(8 + n + b, 8 + n + e).toString('base64');
  }
  return out;
}
const b64 = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');

describe.each(makes)("missingGradient: 'skip' (%s)", (_name, make) => {
  test('a parameter without a gradient keeps value and state; the others step as if it did not exist', () => {
    const x = setup(['a', 'b', 'c']);
    const y = setup(['a', 'c']);
    const ox = make(x.p, { missingGradient: 'skip' });
    const oy = make(y.p);
    let skips = 0;
    for (let t = 1; t <= 8; t++) {
      const before = stateOf(ox.saveState(), 'b');
      const bValue = b64(x.data.b);
      ox.step(gradsAt(['a', 'b', 'c'], t));
      oy.step(gradsAt(['a', 'c'], t));
      expect(b64(x.data.a)).toBe(b64(y.data.a));
      expect(b64(x.data.c)).toBe(b64(y.data.c));
      if (!has('b', t)) {
        skips++;
        expect(b64(x.data.b)).toBe(bValue);
        expect(stateOf(ox.saveState(), 'b')).toEqual(before);
      } else {
        expect(b64(x.data.b)).not.toBe(bValue);
      }
    }
    expect(skips).toBeGreaterThan(1);
    expect(ox.stepCount).toBe(8);
    ox.dispose();
    oy.dispose();
  });

  test('a checkpoint after skipped steps resumes exactly', () => {
    const whole = setup(['a', 'b', 'c']);
    const o1 = make(whole.p, { missingGradient: 'skip' });
    for (let t = 1; t <= 9; t++) o1.step(gradsAt(['a', 'b', 'c'], t));
    const part = setup(['a', 'b', 'c']);
    const o2 = make(part.p, { missingGradient: 'skip' });
    for (let t = 1; t <= 4; t++) o2.step(gradsAt(['a', 'b', 'c'], t)); // step 4 skips b
    const saved = o2.saveState();
    const rest = setup(['a', 'b', 'c']);
    for (const n of ['a', 'b', 'c']) rest.data[n].set(part.data[n]);
    const o3 = make(rest.p, { missingGradient: 'skip' });
    o3.loadState(saved);
    for (let t = 5; t <= 9; t++) o3.step(gradsAt(['a', 'b', 'c'], t));
    for (const n of ['a', 'b', 'c']) expect(b64(rest.data[n])).toBe(b64(whole.data[n]));
    expect(o3.saveState().equals(o1.saveState())).toBe(true);
    [o1, o2, o3].forEach((o) => o.dispose());
  });

  test.each(['throw', 'skip'] as const)(
    'a step rejected for a NaN gradient leaves nothing behind for later steps that skip that parameter (onNonFinite %s)',
    (onNonFinite) => {
      // The rejected gradient stays in b's staging buffer (batched with a's blocks): the
      // later steps without b must neither read it into statistics nor be rejected for it.
      const clean = setup(['a', 'b', 'c']);
      const dirty = setup(['a', 'b', 'c']);
      const oc = make(clean.p, { missingGradient: 'skip', onNonFinite });
      const od = make(dirty.p, { missingGradient: 'skip', onNonFinite });
      oc.step(gradsAt(['a', 'b', 'c'], 1));
      od.step(gradsAt(['a', 'b', 'c'], 1));
      const nan = Object.fromEntries(['a', 'b', 'c'].map((n) => [n, new Float32Array(size(n)).fill(NaN)]));
      if (onNonFinite === 'throw') expect(() => od.step(nan)).toThrow(expect.objectContaining({ code: 'NONFINITE' }));
      else od.step(nan);
      for (let t = 2; t <= 6; t++) {
        const g = { a: grad('a', t), c: grad('c', t) };
        oc.step(g);
        od.step(g);
      }
      oc.step(gradsAt(['a', 'b', 'c'], 7));
      od.step(gradsAt(['a', 'b', 'c'], 7));
      for (const n of ['a', 'b', 'c']) expect(b64(dirty.data[n])).toBe(b64(clean.data[n]));
      oc.dispose();
      od.dispose();
    },
  );

  test("the default ('error') rejects a missing gradient and changes nothing", () => {
    const x = setup(['a', 'b', 'c']);
    const o = make(x.p);
    o.step(gradsAt(['a', 'b', 'c'], 1));
    const state = o.saveState();
    const bValue = b64(x.data.b);
    expect(() => o.step({ a: grad('a', 2), c: grad('c', 2) })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/Missing gradient for parameter 'b'/) }));
    expect(() => o.step({ a: grad('a', 2), b: null as never, c: grad('c', 2) })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(o.saveState().equals(state)).toBe(true);
    expect(b64(x.data.b)).toBe(bValue);
    o.dispose();
  });
});

describe('kradagrad/tfjs: a variable whose gradient is null sits the step out', () => {
  test('unused head unchanged; getWeights/setWeights in the middle resumes exactly', () => {
    tf.setBackend('cpu');
    const mk = (p: string) => ({
      w: tf.variable(tf.tensor2d(init('a'), [10, 5]), true, `${p}/w`),
      h1: tf.variable(tf.tensor2d(init('b'), [5, 5]), true, `${p}/h1`),
      h2: tf.variable(tf.tensor1d(init('c').subarray(0, 5)), true, `${p}/h2`),
    });
    const x = tf.tensor2d(Float32Array.from({ length: 30 }, (_, i) => Math.sin(i)), [3, 10]);
    const loss = (v: ReturnType<typeof mk>, t: number) => () => {
      const z = tf.matMul(x, v.w);
      // Odd steps use head 1, even steps head 2: the other head gets a null gradient.
      return (t % 2 ? tf.sum(tf.square(tf.matMul(z, v.h1))) : tf.sum(tf.square(tf.mul(z, v.h2)))) as tf.Scalar;
    };
    const run = (v: ReturnType<typeof mk>, opt: KradagradStarOptimizer, from: number, to: number) => {
      for (let t = from; t <= to; t++) {
        const unused = t % 2 ? v.h2 : v.h1;
        const before = unused.dataSync().slice();
        opt.minimize(loss(v, t), false, [v.w, v.h1, v.h2]);
        expect(Array.from(unused.dataSync())).toEqual(Array.from(before));
      }
    };
    const v1 = mk('mg1');
    const o1 = new KradagradStarOptimizer({ lr: 0.01, blockSize: 5, rootFrequency: 2, momentum: 0.9, backend: 'cpu' });
    run(v1, o1, 1, 6);
    const v2 = mk('mg2');
    const o2 = new KradagradStarOptimizer({ lr: 0.01, blockSize: 5, rootFrequency: 2, momentum: 0.9, backend: 'cpu' });
    run(v2, o2, 1, 3);
    return o2.getWeights().then(async (weights) => {
      const o3 = new KradagradStarOptimizer({ lr: 0.01, blockSize: 5, rootFrequency: 2, momentum: 0.9, backend: 'cpu' });
      await o3.setWeights(weights);
      run(v2, o3, 4, 6);
      for (const k of ['w', 'h1', 'h2'] as const) expect(Array.from(v2[k].dataSync())).toEqual(Array.from(v1[k].dataSync()));
      [o1, o2, o3].forEach((o) => o.dispose());
      tf.dispose([v1.w, v1.h1, v1.h2, v2.w, v2.h1, v2.h2, x]);
    });
  });
});
