/**
 * What only the computation can tell is guarded inside the step's job, and a guarded step
 * changes nothing: a finite gradient too large for float32 statistics, an update whose new
 * values are not finite (a learning rate or weight decay too large), a learning-rate
 * schedule that returns nonsense (checked before anything runs).
 */
import { Adam, KradagradError, KradagradStar, Sgd, Shampoo, getBackend } from '../lib';
import type { Optimizer } from '../lib';

const B = getBackend('cpu');
const w0 = () => Float32Array.from({ length: 12 }, (_, i) => Math.sin(i + 1));
const g0 = () => Float32Array.from({ length: 12 }, (_, i) => Math.cos(i + 1));

function expectRejected(opt: Optimizer, w: Float32Array, grads: Record<string, Float32Array>, code: string, msg: RegExp): void {
  const state = opt.saveState();
  const params = Buffer.from(w.buffer).toString('base64');
  const t = opt.stepCount;
  let caught: unknown;
  try {
    opt.step(grads);
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(KradagradError);
  expect((caught as KradagradError).code).toBe(code);
  expect((caught as Error).message).toMatch(msg);
  expect(opt.stepCount).toBe(t);
  expect(opt.saveState().equals(state)).toBe(true);
  expect(Buffer.from(w.buffer).toString('base64')).toBe(params);
}

describe.each([
  ['KradagradStar', (p: never, e: object) => new KradagradStar(p, { backend: B, rootFrequency: 1, momentum: 0.9, ...e })],
  ['Shampoo', (p: never, e: object) => new Shampoo(p, { backend: B, rootFrequency: 1, momentum: 0.9, ...e })],
])('%s (float32 statistics)', (_n, make) => {
  test('a finite gradient whose statistics overflow: NONFINITE, nothing changes; skip policy skips', async () => {
    const w = w0();
    const opt = make({ w: { data: w, shape: [3, 4] } } as never, {});
    opt.step({ w: g0() });
    const huge = g0().map((x) => x * 1e25); // finite in float32, its square is not
    expectRejected(opt, w, { w: huge }, 'NONFINITE', /statistics of factor \d .*overflowed/);
    await expect(opt.stepAsync({ w: huge })).rejects.toMatchObject({ code: 'NONFINITE' });
    const skip = make({ w: { data: w0(), shape: [3, 4] } } as never, { onNonFinite: 'skip' });
    skip.step({ w: g0() });
    const state = skip.saveState();
    skip.step({ w: huge });
    expect([skip.stepCount, skip.skippedSteps]).toEqual([1, 1]);
    expect(skip.saveState().equals(state)).toBe(false); // only the skipped count differs
    skip.step({ w: g0() });
    expect(skip.stepCount).toBe(2);
  });
});

describe.each([
  ['KradagradStar', (p: never, e: object) => new KradagradStar(p, { backend: B, momentum: 0.9, ...e })],
  ['Adam', (p: never, e: object) => new Adam(p, { backend: B, ...e })],
  ['Sgd', (p: never, e: object) => new Sgd(p, { backend: B, momentum: 0.9, ...e })],
])('%s: an update that is not finite', (_n, make) => {
  test.each([
    [{ lr: 1e38 }],
    [{ lr: 10, weightDecay: 3e38, weightDecayMode: 'decoupled' }],
    [{ lr: 1e3, weightDecay: 1e38 }],
  ])('%j: NONFINITE, nothing changes', (opts) => {
    const w = w0();
    const opt = make({ w: { data: w, shape: [3, 4] } } as never, { ...opts });
    expectRejected(opt, w, { w: g0().map((x) => x * 1e3) }, 'NONFINITE', /update of 'w' is not finite/);
  });
  test('a schedule returning NaN, a negative or a string rejects the step before anything', () => {
    for (const bad of [NaN, -1, '0.1']) {
      const w = w0();
      const opt = make({ w: { data: w, shape: [3, 4] } } as never, { lr: (t: number) => (t === 2 ? bad : 0.01) });
      opt.step({ w: g0() });
      expectRejected(opt, w, { w: g0() }, 'INVALID_OPTION', /learning-rate schedule returned/);
      // Step 2 again: still rejected, the counter did not move.
      expect(() => opt.step({ w: g0() })).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
      expect(opt.stepCount).toBe(1);
    }
  });
});
