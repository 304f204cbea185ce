/**
 * stepAsync: the whole step runs off the main thread and gives bitwise the results of
 * step(); calls while it is in flight throw BUSY; background root refreshes (asyncRoots)
 * are deterministic for every Kronecker optimizer and survive a checkpoint taken while
 * they are in flight.
 */
import { Adam, Kradagrad, KradagradStar, Sgd, Shampoo, getBackend } from '../lib';
import type { NamedParams, Optimizer } from '../lib';
import { mulberry32 } from './ref/linalg';

const B = getBackend('cpu');
type Make = (p: NamedParams, extra?: Record<string, unknown>) => Optimizer;
const kinds: [string, Make][] = [
  ['KradagradStar', (p, e) => new KradagradStar(p, { backend: B, blockSize: 6, rootFrequency: 2, momentum: 0.9, grafting: 'adagrad', ...e })],
  ['Kradagrad', (p, e) => new Kradagrad(p, { backend: B, blockSize: 6, rootFrequency: 2, momentum: 0.5, ...e })],
  ['Shampoo fp32', (p, e) => new Shampoo(p, { backend: B, blockSize: 6, rootFrequency: 2, momentum: 0.9, ...e })],
  ['Shampoo fp64', (p, e) => new Shampoo(p, { backend: B, blockSize: 6, rootFrequency: 2, statisticsDtype: 'float64', ...e })],
];
const firstOrder: [string, Make][] = [
  ['Adam', (p, e) => new Adam(p, { backend: B, lr: 0.01, weightDecay: 0.01, ...e })],
  ['Sgd', (p, e) => new Sgd(p, { backend: B, lr: 0.01, momentum: 0.9, nesterov: true, ...e })],
];

const shapes: [string, number[]][] = [
  ['w', [9, 7]],
  ['b', [7]],
  ['c', [3, 4, 5]],
];
function params(seed = 1): { p: NamedParams; data: Float32Array[] } {
  const data = shapes.map(([, s], j) => {
    const r = mulberry32(seed * 31 + j);
    return Float32Array.from({ length: s.reduce((a, b) => a * b, 1) }, () => 0.5 * (2 * r() - 1));
  });
  return { p: Object.fromEntries(shapes.map(([n, s], j) => [n, { data: data[j], shape: s }])), data };
}
function grads(t: number): Record<string, Float32Array> {
  return Object.fromEntries(
    shapes.map(([n, s], j) => {
      const r = mulberry32(1000 * t + j);
      return [n, Float32Array.from({ length: s.reduce((a, b) => a * b, 1) }, () => 2 * r() - 1)];
    }),
  );
}
const bits = (xs: Float32Array[]): string => Buffer.concat(xs.map((x) => Buffer.from(x.buffer, x.byteOffset, x.byteLength))).toString('base64');

describe('stepAsync gives bitwise the results of step()', () => {
  test.each([...kinds, ...firstOrder])('%s', async (_name, make) => {
    const a = params();
    const b = params();
    const sync = make(a.p);
    const asy = make(b.p);
    for (let t = 1; t <= 7; t++) {
      sync.step(grads(t));
      await asy.stepAsync(grads(t));
      expect(bits(b.data)).toBe(bits(a.data));
    }
    expect(asy.saveState().equals(sync.saveState())).toBe(true);
    sync.dispose();
    asy.dispose();
  });
});

describe('while a stepAsync is in flight', () => {
  test('every other call throws BUSY and changes nothing; afterwards all work', async () => {
    const a = params();
    const opt = kinds[0][1](a.p);
    opt.step(grads(1));
    const state = opt.saveState();
    const p = opt.stepAsync(grads(2));
    const busy = expect.objectContaining({ code: 'BUSY' });
    expect(() => opt.step(grads(2))).toThrow(busy);
    await expect(opt.stepAsync(grads(2))).rejects.toEqual(busy);
    expect(() => opt.saveState()).toThrow(busy);
    expect(() => opt.loadState(state)).toThrow(busy);
    expect(() => opt.dispose()).toThrow(busy);
    await expect(opt.saveStateFileAsync('/tmp/never-written.krad')).rejects.toEqual(busy);
    await p;
    expect(opt.stepCount).toBe(2);
    opt.step(grads(3));
    expect(opt.stepCount).toBe(3);
    opt.dispose();
  });

  test('the event loop keeps running: a timer fires while one long step computes', async () => {
    const n = 512;
    const w = Float32Array.from({ length: n * n }, (_, i) => Math.sin(i) * 0.01);
    const g = Float32Array.from({ length: n * n }, (_, i) => Math.cos(1.3 * i) * 0.01);
    const opt = new KradagradStar({ w: { data: w, shape: [n, n] } }, { backend: B, blockSize: n, rootFrequency: 1 });
    let ticks = 0;
    let done = false;
    const timer = setInterval(() => {
      if (!done) ticks++;
    }, 1);
    // Were the step's math on the main thread, the promise would settle before any timer ran.
    await opt.stepAsync({ w: g }).then(() => (done = true));
    clearInterval(timer);
    expect(opt.stepCount).toBe(1);
    expect(ticks).toBeGreaterThan(0);
    opt.dispose();
  });
});

describe('asyncRoots: background refreshes, deterministic for every Kronecker optimizer', () => {
  const run = async (make: Make, steps: number, delay: (t: number) => number, extra: Record<string, unknown>) => {
    const a = params();
    const opt = make(a.p, extra);
    for (let t = 1; t <= steps; t++) {
      await opt.stepAsync(grads(t));
      const ms = delay(t);
      if (ms) await new Promise((r) => setTimeout(r, ms));
    }
    const out = { bits: bits(a.data), state: opt.saveState() };
    opt.dispose();
    return out;
  };

  test.each(kinds)('%s: timing does not change the run; roots lag the synchronous ones', async (_name, make) => {
    const fast = await run(make, 9, () => 0, { asyncRoots: true });
    const slow = await run(make, 9, (t) => (t % 3) * 5, { asyncRoots: true });
    expect(slow.bits).toBe(fast.bits);
    // Sync steps wait for the refresh they need: same run again.
    const a = params();
    const opt = make(a.p, { asyncRoots: true });
    for (let t = 1; t <= 9; t++) opt.step(grads(t));
    expect(bits(a.data)).toBe(fast.bits);
    opt.dispose();
    // And it is not the synchronous run (the roots are one refresh older).
    const sync = await run(make, 9, () => 0, {});
    expect(sync.bits).not.toBe(fast.bits);
  });

  test.each(kinds)('%s: a checkpoint taken with a refresh in flight resumes bit for bit', async (_name, make) => {
    const whole = await run(make, 10, () => 0, { asyncRoots: true });
    const a = params();
    const first = make(a.p, { asyncRoots: true });
    for (let t = 1; t <= 5; t++) await first.stepAsync(grads(t));
    // Step 4 launched a refresh (rootFrequency 2) that applies at step 6: in flight now.
    const saved = first.saveState();
    const n = Number(saved.readBigUInt64LE(0));
    const meta = JSON.parse(saved.toString('utf8', 8, 8 + n)).__metadata__;
    expect(JSON.parse(meta.counters).pending.length).toBeGreaterThan(0);
    first.dispose();
    const b = params(7); // other values: the checkpoint and the parameter data restore everything
    b.data.forEach((d, j) => d.set(a.data[j]));
    const second = make(b.p, { asyncRoots: true });
    second.loadState(saved);
    for (let t = 6; t <= 10; t++) await second.stepAsync(grads(t));
    expect(bits(b.data)).toBe(whole.bits);
    expect(second.saveState().equals(whole.state)).toBe(true);
    second.dispose();
  });
});
