/**
 * Tensor handles: host round trips, reshape views sharing storage, explicit and scoped
 * (`using`) disposal, read(into), native memory reported to V8 and the
 * FinalizationRegistry safety net.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { KradagradError, Tensor, getBackend, ops } from '../lib';
import { record } from '../lib/exec';
import { DTYPES, typed } from './ref/check';
import { Rng } from './ref/linalg';

const backend = getBackend('cpu');

describe('round trips', () => {
  const shapes: [number[], number][] = [
    [[1], 1],
    [[7], 3],
    [[3, 1], 2],
    [[1, 5], 1],
    [[2, 3, 4], 2],
    [[2, 1, 3, 2], 3],
  ];
  test.each(DTYPES.flatMap((d) => shapes.map(([s, b]) => [d, s, b] as const)))('%s %p batch %p', (dt, shape, batch) => {
    const n = batch * shape.reduce((a, b) => a * b, 1);
    const data = typed(dt, new Rng(n).normals(n));
    using t = backend.fromArray(data, shape, batch);
    expect(t.dtype).toBe(dt);
    expect(t.shape).toEqual(shape);
    expect(t.batch).toBe(batch);
    expect(t.itemSize).toBe(n / batch);
    expect(t.size).toBe(n);
    expect(t.bytes).toBe(n * (dt === 'float32' ? 4 : 8));
    expect(t.backend).toBe(backend);
    const back = t.read();
    // By tag, not instanceof: the addon's arrays come from Node's main realm, Jest runs tests in a vm realm.
    expect(Object.prototype.toString.call(back)).toBe(dt === 'float32' ? '[object Float32Array]' : '[object Float64Array]');
    expect(Array.from(back)).toEqual(Array.from(data));
    expect(back).not.toBe(data); // a copy, not the caller's array
    data[0] = 123; // the tensor holds its own copy
    expect(t.read()[0]).not.toBe(123);
  });

  test('float64 values survive exactly, float32 values are rounded once on the way in', () => {
    const x = [Math.PI, 1 / 3, 1e-310, -0, 1e300];
    using t64 = backend.fromArray(Float64Array.from(x), [5]);
    expect(Array.from(t64.read())).toEqual(x);
    expect(Object.is(t64.read()[3], -0)).toBe(true);
    using t32 = backend.fromArray(Float32Array.from(x), [5]);
    expect(Array.from(t32.read())).toEqual(x.map(Math.fround));
  });

  test('new tensors are zero; write overwrites everything', () => {
    using t = backend.tensor('float32', [3, 2], 2);
    expect(Array.from(t.read())).toEqual(new Array(12).fill(0));
    const d = Float32Array.from({ length: 12 }, (_, i) => i - 5.5);
    expect(t.write(d)).toBe(t);
    expect(Array.from(t.read())).toEqual(Array.from(d));
  });

  test('typed-array views with a byte offset are read from the right place', () => {
    const buf = Float64Array.from({ length: 10 }, (_, i) => i);
    using t = backend.fromArray(buf.subarray(3, 7), [4]);
    expect(Array.from(t.read())).toEqual([3, 4, 5, 6]);
    t.write(buf.subarray(6, 10));
    expect(Array.from(t.read())).toEqual([6, 7, 8, 9]);
  });

  test('read(into) fills and returns the given array, also a subarray view', () => {
    using t = backend.fromArray(Float32Array.from([1, 2, 3, 4]), [2, 2]);
    const into = new Float32Array(4);
    expect(t.read(into)).toBe(into);
    expect(Array.from(into)).toEqual([1, 2, 3, 4]);
    const big = new Float32Array(8).fill(-1);
    t.read(big.subarray(2, 6));
    expect(Array.from(big)).toEqual([-1, -1, 1, 2, 3, 4, -1, -1]);
  });

  test('shape is a copy: mutating it changes nothing', () => {
    using t = backend.tensor('float64', [2, 3]);
    t.shape.push(9);
    t.shape[0] = 7;
    expect(t.shape).toEqual([2, 3]);
  });
});

describe('write() inside a recorded job', () => {
  // A recorded write copies the data into the handle's staging buffer at once; the buffer
  // is reused by later writes only once no job holds it.
  const big = (v: number) => new Float32Array(1 << 18).fill(v); // 1 MiB
  test('the caller may change its array right after write(); jobs queued together each upload their own data', async () => {
    const t = backend.tensor('float32', [1 << 18]);
    const src = big(1);
    const j1 = record(backend, () => t.write(src));
    src.fill(2); // after the write: must not reach j1
    const j2 = record(backend, () => t.write(src)); // j1 still holds the first staging buffer
    src.fill(3);
    const r1 = j1.runAsync();
    await r1;
    expect(t.read()[12345]).toBe(1);
    j2.run();
    expect(t.read()[12345]).toBe(2);
    // Reused once the jobs are gone: still the new data each time.
    for (let v = 4; v < 8; v++) {
      record(backend, () => t.write(big(v))).run();
      expect(Array.from(new Set(t.read()))).toEqual([v]);
      await record(backend, () => t.write(big(v + 0.5))).runAsync();
      expect(Array.from(new Set(t.read()))).toEqual([v + 0.5]);
    }
    t.dispose();
  });
});

describe('reshape views', () => {
  test('share storage both ways, with any batch/shape of the same element count', () => {
    using t = backend.fromArray(Float64Array.from({ length: 12 }, (_, i) => i), [3, 4]);
    using v = t.reshape([2, 3], 2);
    expect(v.shape).toEqual([2, 3]);
    expect(v.batch).toBe(2);
    expect(Array.from(v.read())).toEqual(Array.from(t.read()));
    v.write(Float64Array.from({ length: 12 }, (_, i) => -i));
    expect(t.read()[5]).toBe(-5);
    ops.scale(t, 2); // an op on the original is seen through the view
    expect(v.read()[5]).toBe(-10);
    using w = v.reshape([12]);
    ops.fill(w, 1);
    expect(Array.from(t.read())).toEqual(new Array(12).fill(1));
  });
  test('disposing a view leaves the original usable, and vice versa', () => {
    const t = backend.fromArray(Float32Array.from([1, 2, 3, 4]), [4]);
    const v = t.reshape([2, 2]);
    v.dispose();
    expect(Array.from(t.read())).toEqual([1, 2, 3, 4]);
    const w = t.reshape([2], 2);
    t.dispose();
    expect(Array.from(w.read())).toEqual([1, 2, 3, 4]);
    w.dispose();
  });
});

describe('disposal', () => {
  test('dispose is idempotent and marks the tensor disposed', () => {
    const t = backend.tensor('float32', [4]);
    expect(t.disposed).toBe(false);
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(() => t.dispose()).not.toThrow();
    expect(t.disposed).toBe(true);
    expect(() => t.read()).toThrow(KradagradError);
  });

  test('`using` disposes at the end of the block, also when it throws', () => {
    let kept: Tensor | undefined;
    {
      using t = backend.tensor('float64', [3]);
      kept = t;
      expect(t.disposed).toBe(false);
    }
    expect(kept.disposed).toBe(true);
    let kept2: Tensor | undefined;
    expect(() => {
      using t = backend.tensor('float64', [3]);
      kept2 = t;
      throw new Error('boom');
    }).toThrow('boom');
    expect(kept2!.disposed).toBe(true);
  });

  test('Symbol.dispose is dispose', () => {
    const t = backend.tensor('float32', [2]);
    t[Symbol.dispose]();
    expect(t.disposed).toBe(true);
    t[Symbol.dispose](); // idempotent too
  });
});

// The safety net runs in a fresh node process (the compiled library, dist/lib, which npm
// test builds first): in a Jest worker that has already run other suites, V8 has been seen
// to hold back these finalizers for seconds, which says nothing about the library.
describe('garbage collection safety net (fresh node process)', () => {
  const lib = path.resolve(__dirname, '..', 'dist', 'lib');
  const script = `
    const { getBackend } = require(${JSON.stringify(lib)});
    const backend = getBackend('cpu');
    const wait = (ms) => new Promise((r) => setTimeout(r, ms));
    (async () => {
      // 1. Four forgotten Tensor wrappers: their native handles get disposed once collected.
      const natives = (() => {
        const out = [];
        for (let i = 0; i < 4; i++) out.push(backend.tensor('float32', [1000]).native); // wrappers dropped
        return out;
      })();
      const before = natives.map((n) => n.disposed);
      let rounds = 0;
      for (; rounds < 200 && !natives.every((n) => n.disposed); rounds++) {
        gc();
        await wait(5);
      }
      // 2. 24 x 32 MB allocated and never disposed: the resident set stays bounded.
      const MB = 1 << 20;
      gc();
      const start = process.memoryUsage().rss;
      let peak = start;
      for (let i = 0; i < 24; i++) {
        backend.tensor('float64', [4 * MB]); // zero-filled (resident), dropped at once
        peak = Math.max(peak, process.memoryUsage().rss);
        gc();
        await wait(1);
      }
      console.log(JSON.stringify({ before, after: natives.map((n) => n.disposed), rounds, growthMB: (peak - start) / MB }));
    })();
  `;
  let result: { before: boolean[]; after: boolean[]; rounds: number; growthMB: number } | undefined;
  let failure = '';
  beforeAll(() => {
    if (!fs.existsSync(path.join(lib, 'index.js'))) {
      failure = `${lib} is not built: npm test builds it (npm run build:ts)`;
      return;
    }
    const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', timeout: 60000 });
    if (r.status !== 0) failure = `child exited ${r.status}: ${r.stderr}`;
    else result = JSON.parse(r.stdout.trim().split('\n').pop()!);
  });

  test('a forgotten Tensor disposes its native handle once collected (FinalizationRegistry)', () => {
    expect(failure).toBe('');
    expect(result!.before).toEqual([false, false, false, false]);
    expect(result!.after).toEqual([true, true, true, true]);
  });

  test('the memory of forgotten tensors is returned: allocating 24 x 32 MB never disposed stays bounded', () => {
    expect(failure).toBe('');
    // Without the safety net the resident set would grow by ~768 MB.
    expect(result!.growthMB).toBeLessThan(320);
  });
});
