/**
 * Issue 11, "nothing a caller does crashes the process" and "a rejected step changes
 * nothing": the known cases, one test each, plus a test for every fix the fuzz suite
 * (test/fuzz) led to. Every rejection here must be a KradagradError with the stated code.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Adam, Kradagrad, KradagradError, KradagradStar, Sgd, Shampoo, Tensor, getBackend, mergeDims, ops, partition, planParam, groupBlocks, scheduleDim } from '../lib';
import type { ErrorCode, NamedParams, Optimizer } from '../lib';
import { checksumOf, sealCheckpoint } from '../lib/optim/checkpoint';
import { mulberry32 } from './support/rand';

const B = getBackend('cpu');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kradagrad-robust-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof KradagradError)) return `not a KradagradError: ${String(e)}`;
    return e.code;
  }
  return 'accepted';
}
async function codeOfAsync(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
  } catch (e) {
    if (!(e instanceof KradagradError)) return `not a KradagradError: ${String(e)}`;
    return e.code;
  }
  return 'accepted';
}
const expectCode = (fn: () => unknown, code: ErrorCode): void => expect(codeOf(fn)).toBe(code);

const f32 = (values: number[], shape: number[], batch = 1): Tensor => B.fromArray(Float32Array.from(values), shape, batch);
const b64 = (a: ArrayBufferView): string => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
const rand = (n: number, seed: number, scale = 1): number[] => {
  const r = mulberry32(seed);
  return Array.from({ length: n }, () => scale * (2 * r() - 1));
};

/** The overflow: 1024 (2^18 + 1) (2^36 - 2^18 + 1) = 2^64 + 1024, which wraps to 1024 in 64 bits. */
const WRAPS = [1024, 2 ** 18 + 1, 2 ** 36 - 2 ** 18 + 1];

describe('views whose dims overflow', () => {
  test('reshape of 1024 elements to dims whose product wraps to 1024 is INVALID_ARGUMENT (typed and raw)', () => {
    const x = B.fromArray(new Float32Array(1024), [1024]);
    expectCode(() => x.reshape(WRAPS), 'INVALID_ARGUMENT');
    expectCode(() => x.reshape([2 ** 18 + 1, 2 ** 36 - 2 ** 18 + 1], 1024), 'INVALID_ARGUMENT'); // the batch takes part
    expectCode(() => x.native.reshape(1, WRAPS), 'INVALID_ARGUMENT');
    expectCode(() => B.tensor('float32', WRAPS), 'INVALID_ARGUMENT');
    expectCode(() => x.reshape([2 ** 32, 2 ** 32, 2 ** 32]), 'INVALID_ARGUMENT');
    expect(x.reshape([32, 32]).shape).toEqual([32, 32]); // a real view still works
    x.dispose();
  });

  test("the issue's sequence (reshape, then ops.boxes gather and scatter) in a child process: no signal, coded rejection", () => {
    const script = `
      require(${JSON.stringify(path.join(__dirname, 'fuzz', 'register.js'))});
      const k = require(${JSON.stringify(path.join(__dirname, '..', 'lib', 'index.ts'))});
      const B = k.getBackend('cpu');
      const x = B.fromArray(new Float32Array(1024).fill(1), [1024]);
      let view;
      try { view = x.reshape(${JSON.stringify(WRAPS)}); } catch (e) { console.log('reshape', e instanceof k.KradagradError ? e.code : 'uncoded'); }
      if (view) {
        const blocks = B.tensor('float32', [4, 4, 4], 1);
        k.ops.boxes(view, blocks, [[1000, 200000, 60000000000]], false);
        k.ops.boxes(view, blocks, [[1000, 200000, 60000000000]], true);
        console.log('reshape accepted');
      }
    `;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect({ signal: r.signal, status: r.status, out: r.stdout.trim() }).toEqual({ signal: null, status: 0, out: 'reshape INVALID_ARGUMENT' });
  });
});

describe('SharedArrayBuffer-backed typed arrays work', () => {
  const shared32 = (v: number[]): Float32Array => {
    const a = new Float32Array(new SharedArrayBuffer(4 * v.length) as unknown as ArrayBuffer);
    a.set(v);
    return a;
  };
  test('fromArray, write, read(into), coefficients and crc32c', () => {
    const v = rand(12, 1);
    const t = B.fromArray(shared32(v), [3, 4]);
    expect(Array.from(t.read())).toEqual(Array.from(Float32Array.from(v)));
    const into = shared32(new Array(12).fill(0));
    t.write(shared32(v.map((x) => 2 * x)));
    t.read(into);
    expect(Array.from(into)).toEqual(Array.from(Float32Array.from(v.map((x) => 2 * x))));
    const c = new Float64Array(new SharedArrayBuffer(16) as unknown as ArrayBuffer);
    c.set([0.5, 2]);
    const y = f32(new Array(8).fill(1), [4], 2);
    ops.scale(y, c);
    expect(Array.from(y.read())).toEqual([0.5, 0.5, 0.5, 0.5, 2, 2, 2, 2]);
    const bytes = new Uint8Array(new SharedArrayBuffer(100) as unknown as ArrayBuffer).fill(7);
    expect(B.addon.crc32c(bytes)).toBe(B.addon.crc32c(new Uint8Array(100).fill(7)));
    [t, y].forEach((x) => x.dispose());
  });
  test('an optimizer with shared parameter and gradient arrays gives bitwise the results of plain ones, and loads a shared Buffer', async () => {
    const init = rand(30, 2);
    const plain = Float32Array.from(init);
    const sh = shared32(init);
    const a = new KradagradStar({ w: { data: plain, shape: [5, 6] } }, { backend: B, blockSize: 6, rootFrequency: 2, momentum: 0.9 });
    const b = new KradagradStar({ w: { data: sh, shape: [5, 6] } }, { backend: B, blockSize: 6, rootFrequency: 2, momentum: 0.9 });
    for (let t = 1; t <= 4; t++) {
      const g = rand(30, 100 + t);
      a.step({ w: Float32Array.from(g) });
      if (t % 2) await b.stepAsync({ w: shared32(g) });
      else b.step({ w: shared32(g) });
    }
    expect(b64(sh)).toBe(b64(plain));
    const state = a.saveState();
    expect(b.saveState().equals(state)).toBe(true);
    const sb = Buffer.from(new SharedArrayBuffer(state.length));
    state.copy(sb);
    b.loadState(sb);
    expect(b.saveState().equals(state)).toBe(true);
    a.dispose();
    b.dispose();
  });
});

describe('no uncoded error escapes the public API', () => {
  const forged = (): unknown[] => {
    const t = f32([1, 2, 3, 4], [2, 2]);
    return [
      Object.create(Tensor.prototype),
      Object.assign(Object.create(Tensor.prototype), { native: {}, backend: B }),
      Object.assign(Object.create(Tensor.prototype), { native: Object.create((B.addon.NativeTensor as unknown as { prototype: object }).prototype), backend: B }),
      { native: t.native, backend: B, shape: [2, 2], dtype: 'float32', batch: 1 },
    ];
  };
  test('forged tensor objects: getters, methods, ops, optimizer parameters and gradients are INVALID_HANDLE', () => {
    for (const f of forged()) {
      const t = f as Tensor;
      if (t instanceof Tensor) {
        for (const get of [() => t.shape, () => t.dtype, () => t.batch, () => t.size, () => t.itemSize, () => t.bytes, () => t.disposed, () => t.read(), () => t.write(new Float32Array(4)), () => t.reshape([4]), () => t.dispose()]) {
          expectCode(get, 'INVALID_HANDLE');
        }
      }
      const real = f32([1, 0, 0, 1], [2, 2]);
      for (const op of [() => ops.gemm(t, real), () => ops.gemm(real, real, t), () => ops.eigh(t), () => ops.matpow(t, 0.5), () => ops.matpow(real, 0.5, { out: t }), () => ops.scale(t, 2), () => ops.trace(t), () => ops.allFiniteMany([real, t]), () => ops.copyMany([t], [real]), () => ops.boxes(t, real, [[0, 0]])]) {
        expectCode(op, 'INVALID_HANDLE');
      }
      expect(Array.from(real.read())).toEqual([1, 0, 0, 1]);
      // A plain object is no Tensor at all: the optimizers reject it as a parameter of the wrong kind.
      const want = t instanceof Tensor ? 'INVALID_HANDLE' : 'INVALID_ARGUMENT';
      expect(codeOf(() => new Sgd({ w: t }, { backend: B }))).toBe(want);
      const opt = new Sgd({ w: { data: new Float32Array(4), shape: [4] } }, { backend: B });
      expect(codeOf(() => opt.step({ w: t as unknown as Float32Array }))).toBe(want);
      expect(opt.stepCount).toBe(0);
      opt.dispose();
      real.dispose();
    }
    expectCode(() => new (Tensor as unknown as new (b: unknown, n: unknown) => Tensor)(B, {}), 'INVALID_HANDLE');
    expectCode(() => new (Tensor as unknown as new (b: unknown, n: unknown) => Tensor)({}, f32([1], [1]).native), 'INVALID_HANDLE');
  });
  test('raw addon: NativeTensor and job members called on another receiver are INVALID_HANDLE', () => {
    const P = (B.addon.NativeTensor as unknown as { prototype: Record<string, (...a: unknown[]) => unknown> }).prototype;
    for (const recv of [{}, Object.create(P), 5, null]) {
      for (const m of ['read', 'write', 'reshape', 'dispose']) expectCode(() => P[m].call(recv, 1, [1]), 'INVALID_HANDLE');
      for (const g of ['shape', 'dtype', 'batch', 'bytes', 'backend', 'disposed']) expectCode(() => Object.getOwnPropertyDescriptor(P, g)!.get!.call(recv), 'INVALID_HANDLE');
    }
    B.addon.beginJob();
    const job = B.addon.endJob();
    const JP = Object.getPrototypeOf(job) as Record<string, (...a: unknown[]) => unknown>;
    for (const m of ['run', 'runAsync', 'wait']) expectCode(() => JP[m].call({}), 'INVALID_HANDLE');
    expectCode(() => Object.getOwnPropertyDescriptor(JP, 'size')!.get!.call({}), 'INVALID_HANDLE');
    expect(job.run().aborted).toBe(false);
  });
  test('options of null, 42, a string or an array: INVALID_OPTION (ops and optimizers)', async () => {
    const a = f32([2, 0, 0, 3], [2, 2]);
    for (const o of [null, 42, 'opts', [], true]) {
      expectCode(() => ops.gemm(a, a, undefined, o as never), 'INVALID_OPTION');
      expectCode(() => ops.eigh(a, o as never), 'INVALID_OPTION');
      expectCode(() => ops.matpow(a, 0.5, o as never), 'INVALID_OPTION');
      expect(await codeOfAsync(() => ops.eighAsync(a, o as never))).toBe('INVALID_OPTION');
      expect(await codeOfAsync(() => ops.matpowAsync(a, 0.5, o as never))).toBe('INVALID_OPTION');
      for (const C of [Sgd, Adam, Shampoo, KradagradStar, Kradagrad]) expectCode(() => new C({ w: { data: new Float32Array(4), shape: [2, 2] } }, o as never), 'INVALID_OPTION');
    }
    a.dispose();
  });
  test('an optional output that is neither a Tensor nor undefined/null is INVALID_HANDLE (it used to be read as absent)', () => {
    const a = f32([1, 2, 3, 4], [2, 2]);
    for (const c of [0, '', false, NaN]) {
      expectCode(() => ops.gemm(a, a, c as never), 'INVALID_HANDLE');
      expectCode(() => ops.gram(a, 0, c as never), 'INVALID_HANDLE');
      expectCode(() => ops.modeProduct(a, 0, a, c as never), 'INVALID_HANDLE');
    }
    ops.gemm(a, a, null as never).dispose(); // null still means "allocate one"
    a.dispose();
  });
  test('offsets of ops.boxes / boxesMany that are not arrays of arrays: INVALID_ARGUMENT before any native call', () => {
    const full = f32(new Array(16).fill(1), [4, 4]);
    const blocks = B.tensor('float32', [2, 2], 2);
    for (const o of [5, 'ab', null, {}, { flat: () => [0, 0] }, [0, 0], [[0, 0], 'ab'], new Float64Array(2)]) {
      expectCode(() => ops.boxes(full, blocks, o as never), 'INVALID_ARGUMENT');
      expectCode(() => ops.boxesMany([full], blocks, [o] as never, [0]), 'INVALID_ARGUMENT');
    }
    // A hole in an offset is an element that is missing, not one to skip (flat() skipped it).
    expectCode(() => ops.boxes(full, blocks, [new Array(2)]), 'INVALID_ARGUMENT');
    // An offset of the wrong length would shift the boxes after it (or make two boxes of one).
    expectCode(() => ops.boxes(f32([1, 2, 3, 4], [4]), B.tensor('float32', [1], 2), [[0, 1]]), 'SHAPE_MISMATCH');
    expectCode(() => ops.boxesMany([f32([1, 2, 3, 4], [4])], B.tensor('float32', [1], 2), [[[0, 1]]], [0]), 'SHAPE_MISMATCH');
    expect(Array.from(blocks.read())).toEqual(new Array(8).fill(0));
  });
  test('tensor lists: null, holes and junk entries are coded', () => {
    const x = f32([1, 2], [2]);
    expectCode(() => ops.allFiniteMany(null as never), 'INVALID_ARGUMENT');
    expectCode(() => ops.axpbyMany(new Array(2), new Array(2), 1), 'INVALID_HANDLE');
    expectCode(() => ops.copyMany([x, 42 as never], [x, x]), 'INVALID_HANDLE');
    x.dispose();
  });
  test('file-system errors of saveStateFile / loadStateFile (and Async) are IO_ERROR naming the path, and leave no temporary file', async () => {
    const opt = new Sgd({ w: { data: new Float32Array(4), shape: [4] } }, { backend: B, momentum: 0.5 });
    const file = path.join(tmp, 'plain');
    fs.writeFileSync(file, 'x');
    const bad = [path.join(tmp, 'a\0b.krad'), path.join(tmp, 'n'.repeat(300)), path.join(file, 'x.krad'), path.join(tmp, 'no', 'dir', 'x.krad'), tmp];
    for (const p of bad) {
      for (const call of [() => opt.saveStateFile(p), () => opt.loadStateFile(p)]) {
        let err: unknown;
        try {
          call();
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(KradagradError);
        expect((err as KradagradError).code).toBe('IO_ERROR');
        expect((err as KradagradError).details).toMatchObject({ path: p });
      }
      expect(await codeOfAsync(() => opt.saveStateFileAsync(p))).toBe('IO_ERROR');
      expect(await codeOfAsync(() => opt.loadStateFileAsync(p))).toBe('IO_ERROR');
    }
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-'))).toEqual([]);
    opt.dispose();
  });
  test('the exported planning helpers reject bad arguments (partition used to loop or exhaust the heap)', () => {
    expectCode(() => partition([10], 0), 'INVALID_ARGUMENT');
    expectCode(() => partition([10], 1e-300), 'INVALID_ARGUMENT');
    expectCode(() => partition([2 ** 31], 1), 'INVALID_ARGUMENT'); // 2^31 blocks
    expectCode(() => partition(null as never, 4), 'INVALID_ARGUMENT');
    expectCode(() => mergeDims([3, 'a'] as never, 4), 'INVALID_ARGUMENT');
    expectCode(() => planParam('w', null as never, 4, true), 'INVALID_ARGUMENT');
    expectCode(() => groupBlocks([null] as never), 'INVALID_ARGUMENT');
    expectCode(() => scheduleDim(3, null as never), 'INVALID_ARGUMENT');
    expectCode(() => scheduleDim(-1, [2, 3]), 'INVALID_ARGUMENT');
    // Valid calls are unchanged.
    expect(mergeDims([2, 3, 16, 4], 8)).toEqual([6, 16, 4]);
    expect(partition([5, 3], 2).length).toBe(6);
    expect(scheduleDim(5, [2, 3])).toBe(1);
  });
});

describe('loose options are INVALID_OPTION', () => {
  test("allowFailures must be a boolean in eigh / eighAsync / matpow / matpowAsync ('no' used to mean true)", async () => {
    const a = f32([2, 0, 0, 3], [2, 2]);
    for (const v of ['no', 1, null, 'false']) {
      expectCode(() => ops.eigh(a, { allowFailures: v as never }), 'INVALID_OPTION');
      expectCode(() => ops.matpow(a, 0.5, { allowFailures: v as never }), 'INVALID_OPTION');
      expect(await codeOfAsync(() => ops.eighAsync(a, { allowFailures: v as never }))).toBe('INVALID_OPTION');
      expect(await codeOfAsync(() => ops.matpowAsync(a, 0.5, { allowFailures: v as never }))).toBe('INVALID_OPTION');
    }
    a.dispose();
  });
  test('empty or detached per-item coefficient arrays (which used to mean 1 for every item)', () => {
    const y = f32(new Array(8).fill(3), [2, 2], 2);
    const det = new Float64Array(2);
    structuredClone(det.buffer, { transfer: [det.buffer] });
    for (const c of [[], new Float64Array(0), det]) {
      expectCode(() => ops.axpby(y, y, c), 'INVALID_OPTION');
      expectCode(() => ops.axpby(y, y, 1, c), 'INVALID_OPTION');
      expectCode(() => ops.scale(y, c), 'INVALID_OPTION');
      expectCode(() => ops.addIdentity(y, c), 'INVALID_OPTION');
    }
    expect(Array.from(y.read())).toEqual(new Array(8).fill(3));
    y.dispose();
  });
  test('integer options beyond 2^53 (1e300 is an integer to JavaScript) and maxRootFailures beyond int32', () => {
    const p = (): NamedParams => ({ w: { data: new Float32Array(4), shape: [2, 2] } });
    for (const key of ['rootFrequency', 'statisticsFrequency', 'blockSize', 'startStep', 'maxRootFailures']) {
      expectCode(() => new Shampoo(p(), { backend: B, [key]: 1e300 }), 'INVALID_OPTION');
    }
    expectCode(() => new KradagradStar(p(), { backend: B, maxRootFailures: 2 ** 31 }), 'INVALID_OPTION');
    // Before: accepted, and every step then failed natively (INVALID_ARGUMENT for maxFailures).
    const o = new KradagradStar(p(), { backend: B, maxRootFailures: 2 ** 31 - 1, rootFrequency: 1 });
    o.step({ w: Float32Array.from(rand(4, 5)) });
    expect(o.stepCount).toBe(1);
    o.dispose();
  });
  test('Shampoo: epsilon 0 without an eigenvalue floor, and a float32 epsilon that is Inf in float32', () => {
    const p = (): NamedParams => ({ w: { data: new Float32Array(4), shape: [2, 2] } });
    expectCode(() => new Shampoo(p(), { backend: B, epsilon: 0 }), 'INVALID_OPTION'); // the floor was NaN
    expectCode(() => new Shampoo(p(), { backend: B, epsilon: 1e300 }), 'INVALID_OPTION'); // S0 = Inf I
    new Shampoo(p(), { backend: B, epsilon: 0, eigenvalueFloor: 1e-6 }).dispose();
    new Shampoo(p(), { backend: B, epsilon: 1e300, statisticsDtype: 'float64' }).dispose();
  });
});

/** A checkpoint without its skip count and checksum (what a skipped step legitimately changes). */
function withoutSkips(buf: Buffer): string {
  const n = Number(buf.readBigUInt64LE(0));
  const h = JSON.parse(buf.toString('utf8', 8, 8 + n));
  delete h.__metadata__.skipped;
  delete h.__metadata__.checksum;
  return JSON.stringify(h) + buf.subarray(8 + n).toString('base64');
}
/** The state of an optimizer (skip count aside), its parameters and its counter. */
const snapshot = (o: Optimizer, w: Float32Array): string => `${o.stepCount}#${b64(w)}#${withoutSkips(o.saveState())}`;

describe('a step whose new parameters would not be finite is caught by onNonFinite', () => {
  const kinds: [string, (p: NamedParams, e: Record<string, unknown>) => Optimizer][] = [
    ['Sgd', (p, e) => new Sgd(p, { backend: B, momentum: 0.9, ...e })],
    ['Adam', (p, e) => new Adam(p, { backend: B, ...e })],
    ['KradagradStar', (p, e) => new KradagradStar(p, { backend: B, blockSize: 4, rootFrequency: 1, momentum: 0.5, ...e })],
    ['Kradagrad', (p, e) => new Kradagrad(p, { backend: B, blockSize: 4, rootFrequency: 1, startStep: 0, ...e })],
    ['Shampoo', (p, e) => new Shampoo(p, { backend: B, blockSize: 4, rootFrequency: 1, ...e })],
  ];
  const cases: [string, Record<string, unknown>][] = [
    ['weightDecay 1e38 (l2)', { weightDecay: 1e38, lr: 10 }],
    ['weightDecay 1e30 (decoupled)', { weightDecay: 1e30, weightDecayMode: 'decoupled', lr: 1e10 }],
    ['lr 1e39 (Inf in float32)', { lr: 1e39 }],
    ['a schedule that jumps to 1e39 at step 2', { lr: (t: number) => (t === 2 ? 1e39 : 0.01) }],
  ];
  for (const [kind, make] of kinds) {
    test.each(cases)(`${kind}, %s: 'throw' rejects it with NONFINITE and nothing changes; 'skip' skips it`, (_what, extra) => {
      for (const policy of ['throw', 'skip'] as const) {
        const w = Float32Array.from(rand(16, 7, 0.5));
        const o = make({ w: { data: w, shape: [4, 4] } }, { ...extra, onNonFinite: policy });
        const g = () => ({ w: Float32Array.from(rand(16, 9, 0.1)) });
        if (typeof extra.lr === 'function') o.step(g()); // step 1 is fine
        const before = snapshot(o, w);
        const skipped = (o as unknown as { skippedSteps: number }).skippedSteps;
        const code = codeOf(() => o.step(g()));
        if (policy === 'throw') expect(code).toBe('NONFINITE');
        else {
          expect(code).toBe('accepted');
          expect((o as unknown as { skippedSteps: number }).skippedSteps).toBe(skipped + 1);
        }
        expect(snapshot(o, w)).toBe(before);
        expect(w.every(Number.isFinite)).toBe(true);
        o.dispose();
      }
    });
  }
});

describe('a learning-rate schedule returning NaN, a negative or a non-number rejects the step; the counter does not advance', () => {
  test.each([NaN, -1, -1e-300, Infinity, 'x', undefined, null, {}, 1n] as unknown[])('schedule returns %p (step and stepAsync)', async (bad) => {
    for (const C of [Sgd, Adam, KradagradStar]) {
      let value: unknown = 0.01;
      const w = Float32Array.from(rand(12, 3));
      const o = new C({ w: { data: w, shape: [3, 4] } }, { backend: B, lr: () => value as number, momentum: C === Adam ? 0 : 0.5, ...(C === KradagradStar ? { blockSize: 4, rootFrequency: 1 } : {}) });
      o.step({ w: Float32Array.from(rand(12, 4)) });
      const before = snapshot(o, w);
      value = bad;
      expectCode(() => o.step({ w: Float32Array.from(rand(12, 5)) }), 'INVALID_OPTION');
      expect(await codeOfAsync(() => o.stepAsync({ w: Float32Array.from(rand(12, 5)) }))).toBe('INVALID_OPTION');
      expect(snapshot(o, w)).toBe(before);
      expect(o.stepCount).toBe(1);
      // The run then continues as if the rejected steps never happened.
      value = 0.01;
      o.step({ w: Float32Array.from(rand(12, 6)) });
      const w2 = Float32Array.from(rand(12, 3));
      const fresh = new C({ w: { data: w2, shape: [3, 4] } }, { backend: B, lr: 0.01, momentum: C === Adam ? 0 : 0.5, ...(C === KradagradStar ? { blockSize: 4, rootFrequency: 1 } : {}) });
      fresh.step({ w: Float32Array.from(rand(12, 4)) });
      fresh.step({ w: Float32Array.from(rand(12, 6)) });
      expect(b64(w)).toBe(b64(w2));
      o.dispose();
      fresh.dispose();
    }
  });
});

describe('KrADagrad* epsilon/damping pairs that make float32 factors non-finite are rejected at construction', () => {
  const p = (): NamedParams => ({ w: { data: Float32Array.from(rand(64, 8)), shape: [8, 8] } });
  test('epsilon below the bound (float32: L H L = H / epsilon^2 overflows; float64: the first direction |G| / sqrt(epsilon) overflows a float32 parameter): INVALID_OPTION', () => {
    for (const eps of [1e-39, 1e-30, 1e-20, 5e-17]) expectCode(() => new KradagradStar(p(), { backend: B, epsilon: eps }), 'INVALID_OPTION');
    for (const eps of [1e-70, 1e-160]) expectCode(() => new KradagradStar(p(), { backend: B, epsilon: eps, statisticsDtype: 'float64' }), 'INVALID_OPTION');
  });
  test('the smallest allowed epsilon keeps ordinary gradients finite (blocks up to 128, entries ~1)', () => {
    for (const [dtype, eps] of [['float32', 1e-16], ['float64', 1e-64]] as const) {
      for (const n of [8, 128]) {
        const w = Float32Array.from(rand(n * n, 9, 0.5));
        const o = new KradagradStar({ w: { data: w, shape: [n, n] } }, { backend: B, epsilon: eps, statisticsDtype: dtype, blockSize: n, rootFrequency: 1 });
        for (let t = 1; t <= 3; t++) o.step({ w: Float32Array.from(rand(n * n, 20 + t)) });
        expect(o.stepCount).toBe(3);
        expect(w.every(Number.isFinite)).toBe(true);
        o.dispose();
      }
    }
  });
  test('damping >= epsilon: INVALID_OPTION; just below it the steps stay finite', () => {
    for (const [eps, d] of [[1e-6, 1e-6], [1e-3, 2e-3], [1e-16, 1e-16]]) expectCode(() => new KradagradStar(p(), { backend: B, epsilon: eps, damping: d }), 'INVALID_OPTION');
    expectCode(() => new Kradagrad(p(), { backend: B, epsilon: 1, damping: true }), 'INVALID_OPTION');
    for (const [eps, d] of [[1e-6, 0.999999e-6], [1e-16, 0.5e-16]]) {
      const w = Float32Array.from(rand(64, 10, 0.5));
      const o = new KradagradStar({ w: { data: w, shape: [8, 8] } }, { backend: B, epsilon: eps, damping: d, blockSize: 8, rootFrequency: 1 });
      for (let t = 1; t <= 3; t++) o.step({ w: Float32Array.from(rand(64, 30 + t)) });
      expect(o.stepCount).toBe(3);
      expect(w.every(Number.isFinite)).toBe(true);
      o.dispose();
    }
  });
});

describe('fixes from the fuzz suite', () => {
  test('a graft accumulator that would overflow rejects the step (it used to be stored as Inf, and the checkpoint then refused to load)', () => {
    for (const grafting of ['adagrad', 'adam'] as const) {
      for (const policy of ['throw', 'skip'] as const) {
        const w = Float32Array.from(rand(16, 11, 0.5));
        const o = new Shampoo({ w: { data: w, shape: [4, 4] } }, { backend: B, grafting, blockSize: 4, onNonFinite: policy, statisticsDtype: 'float64' });
        o.step({ w: Float32Array.from(rand(16, 12)) });
        const before = snapshot(o, w);
        // g^2 overflows float32 (the parameter dtype of the graft state); the float64 statistics do not.
        const code = codeOf(() => o.step({ w: Float32Array.from(rand(16, 13, 1e30)) }));
        expect(code).toBe(policy === 'throw' ? 'NONFINITE' : 'accepted');
        expect(snapshot(o, w)).toBe(before);
        o.loadState(o.saveState()); // the state is still a loadable checkpoint
        o.dispose();
      }
    }
  });
  test('matpow: a power that is not finite fails the item (info -1) and keeps the output; the root chain keeps the previous root', () => {
    // Eigenvalue 0 with p = -1/2 and a floor of 1e-300, which is 0 in float32.
    const a = f32([1, 0, 0, 0], [2, 2]);
    const out = f32([5, 5, 5, 5], [2, 2]);
    const r = ops.matpow(a, -0.5, { floor: 1e-300, out, allowFailures: true });
    expect(Array.from(r.info)).toEqual([ops.NONFINITE_RESULT]);
    expect(Array.from(out.read())).toEqual([5, 5, 5, 5]);
    let err: unknown;
    try {
      ops.matpow(a, -0.5, { floor: 1e-300 });
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'NONFINITE', details: { item: 0, info: -1 } });
    // The float64 retry solves it (1e150), but that is Inf in float32: the previous root stays.
    const prev = f32([7, 0, 0, 7], [2, 2]);
    const root = B.tensor('float32', [2, 2]);
    expect(Array.from(B.addon.root(a.native, prev.native, root.native, { p: -0.5, floor: 1e-300 }))).toEqual([-1]);
    expect(Array.from(root.read())).toEqual([7, 0, 0, 7]);
    [a, out, prev, root].forEach((t) => t.dispose());
  });
  test('checkpoints with counters this optimizer does not have are STATE_FORMAT', () => {
    const reseal = (buf: Buffer, edit: (c: Record<string, unknown>) => void): Buffer => {
      const n = Number(buf.readBigUInt64LE(0));
      const h = JSON.parse(buf.toString('utf8', 8, 8 + n));
      const c = JSON.parse(h.__metadata__.counters);
      edit(c);
      h.__metadata__.counters = JSON.stringify(c);
      h.__metadata__.checksum = 'crc32c:00000000';
      const json = Buffer.from(JSON.stringify(h));
      const len = Math.ceil((8 + json.length) / 8) * 8 - 8;
      const out = Buffer.alloc(8 + len + buf.length - 8 - n, 0x20);
      out.writeBigUInt64LE(BigInt(len), 0);
      json.copy(out, 8);
      buf.copy(out, 8 + len, 8 + n);
      return sealCheckpoint(out, checksumOf(out, B.addon.crc32c));
    };
    for (const o of [new Adam({ w: { data: new Float32Array(4), shape: [4] } }, { backend: B }), new Shampoo({ w: { data: new Float32Array(4), shape: [2, 2] } }, { backend: B })]) {
      const own = o.saveState();
      o.loadState(reseal(own, () => undefined)); // the resealing itself is sound
      expectCode(() => o.loadState(reseal(own, (c) => (c.extra = 1))), 'STATE_FORMAT');
      expect(o.saveState().equals(own)).toBe(true);
      o.dispose();
    }
  });
  test('stateBytes() after dispose() is DISPOSED (it answered 0 for optimizers without state)', () => {
    const o = new Sgd({ w: { data: new Float32Array(4), shape: [4] } }, { backend: B });
    expect(o.stateBytes()).toBe(0);
    o.dispose();
    expectCode(() => o.stateBytes(), 'DISPOSED');
  });
  test('a parameter array detached while its stepAsync is in flight: SHAPE_MISMATCH and nothing changed (the step used to commit first)', async () => {
    for (const C of [Sgd, Adam, KradagradStar]) {
      for (const ticks of [0, 3, 10]) {
        const w = Float32Array.from(rand(64, 14));
        const o = new C({ w: { data: w, shape: [8, 8] } }, { backend: B, momentum: C === Adam ? 0 : 0.9, ...(C === KradagradStar ? { blockSize: 8 } : {}) });
        o.step({ w: Float32Array.from(rand(64, 15)) });
        const before = `${o.stepCount}#${o.saveState().toString('base64')}`;
        const p = o.stepAsync({ w: Float32Array.from(rand(64, 16)) });
        for (let i = 0; i < ticks; i++) await Promise.resolve();
        structuredClone(w.buffer, { transfer: [w.buffer as ArrayBuffer] });
        expect(await codeOfAsync(() => p)).toBe('SHAPE_MISMATCH');
        expect(`${o.stepCount}#${o.saveState().toString('base64')}`).toBe(before);
        o.dispose();
      }
    }
  });
});
