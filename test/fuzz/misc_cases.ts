/**
 * Fuzz cases outside ops and optimizers: Backend / Tensor methods (shapes, batches,
 * dtypes, data, views whose dims overflow, shared and detached arrays, forged tensors),
 * the raw addon functions with random arguments, the exported planning helpers,
 * checkpointSummary, getBackend, and async ops whose tensors are disposed while in flight.
 */
import type { Tensor } from '../../lib';
import type { NativeAddon, NativeTensor } from '../../lib/native';
import { Ctx, Rng, bytesOf, detached, junk, shared, show } from './support';

type DT = 'float32' | 'float64';
const prod = (s: number[]): number => s.reduce((a, b) => a * b, 1);

/** Shapes that are invalid, or whose element count overflows or exceeds what a tensor may hold (never allocated). */
function badShape(r: Rng): unknown {
  return r.pick([
    [],
    [0],
    [-1],
    [2, 0],
    [1.5],
    [NaN],
    [Infinity],
    ['2'],
    [null],
    [[2]],
    [2 ** 53 + 2],
    [2 ** 63],
    [-(2 ** 62)],
    [2 ** 31, 2 ** 31],
    [2 ** 21, 2 ** 21],
    [1024, 2 ** 18 + 1, 2 ** 36 - 2 ** 18 + 1],
    [2 ** 32, 2 ** 32, 2 ** 32],
    new Array(4).fill(2 ** 14),
    new Array(3),
    'abc',
    null,
    42,
    {},
    new Float64Array([2, 2]),
    { length: 2, 0: 1, 1: 2 },
  ] as unknown[]);
}
const ALLOWED_EMPTY = (s: unknown) => Array.isArray(s) && s.length === 0; // rank 0: a scalar item (valid)

function badBatch(r: Rng): unknown {
  return r.pick([0, -1, 1.5, NaN, Infinity, '2', null, 2 ** 53 + 2, 2 ** 60, 2 ** 41, {}, [2], true, 10n] as unknown[]);
}

export async function tensorCase(ctx: Ctx): Promise<void> {
  const { r, B, k } = ctx;
  const dt: DT = r.bool() ? 'float32' : 'float64';
  const shape = Array.from({ length: r.int(1, 3) }, () => r.int(1, 4));
  const batch = r.int(1, 3);
  const n = prod(shape) * batch;
  const vals = r.floats(n);
  const C = dt === 'float32' ? Float32Array : Float64Array;
  const t = B.fromArray(C.from(vals), shape, batch);
  ctx.defer(() => t.dispose());
  const watch = () => (t.disposed ? 'D' : bytesOf(t.read()));
  const which = r.int(0, 12);
  if (which === 0) {
    const s = badShape(r);
    await ctx.input({ what: `backend.tensor(${dt}, ${show(s)})`, expect: ALLOWED_EMPTY(s) ? 'either' : 'reject', codes: ['INVALID_ARGUMENT'], run: () => own(ctx, B.tensor(dt, s as number[])) });
  } else if (which === 1) {
    const b = badBatch(r);
    await ctx.input({ what: `backend.tensor(${dt}, [${shape}], batch ${show(b)})`, expect: 'reject', codes: ['INVALID_ARGUMENT'], run: () => own(ctx, B.tensor(dt, shape, b as number)) });
  } else if (which === 2) {
    const d = r.pick(['float16', 'int32', '', null, 42, {}, 'FLOAT32'] as unknown[]);
    await ctx.input({ what: `backend.tensor(dtype ${show(d)})`, expect: 'reject', codes: ['INVALID_ARGUMENT'], run: () => own(ctx, B.tensor(d as DT, shape)) });
  } else if (which === 3) {
    const data = r.pick([
      () => C.from(vals).subarray(1),
      () => new C(n + 1),
      () => detached(C.from(vals)),
      () => new Int32Array(n),
      () => Array.from(vals),
      () => new DataView(new ArrayBuffer(n * 8)),
      () => junk(r),
      () => shared(dt, vals.slice(1)),
    ])();
    await ctx.input({
      what: `backend.fromArray(${show(data)}, [${shape}], ${batch})`,
      expect: maybeValid(data, n) ? 'either' : 'reject',
      codes: ['INVALID_ARGUMENT', 'SHAPE_MISMATCH'],
      run: () => own(ctx, B.fromArray(data as Float32Array, shape, batch)),
    });
  } else if (which === 4) {
    const s = badShape(r);
    await ctx.input({ what: `backend.fromArray(.., shape ${show(s)})`, expect: ALLOWED_EMPTY(s) && n === 1 ? 'either' : 'reject', codes: ['INVALID_ARGUMENT', 'SHAPE_MISMATCH'], run: () => own(ctx, B.fromArray(C.from(vals), s as number[])) });
  } else if (which === 5) {
    // Views: dims that overflow (wrapping to the real count), huge, negative, fractional.
    const big = B.fromArray(new Float32Array(1024), [1024]);
    ctx.defer(() => big.dispose());
    const s = r.bool(0.3) ? [1024, 2 ** 18 + 1, 2 ** 36 - 2 ** 18 + 1] : badShape(r);
    const b = r.bool(0.7) ? 1 : badBatch(r);
    let view: Tensor | undefined;
    const res = await ctx.input({
      what: `reshape of 1024 elements to batch ${show(b)} of ${show(s)}`,
      expect: ALLOWED_EMPTY(s) ? 'either' : 'reject',
      codes: ['INVALID_ARGUMENT', 'SHAPE_MISMATCH'],
      run: () => (view = own(ctx, big.reshape(s as number[], b as number))),
    });
    if (res.accepted && view) {
      // Were such a view accepted, boxes and scatter through it must still be safe: a box
      // in the middle of every dim is far outside the real 1024 elements when they lie.
      const blocks = own(ctx, B.tensor('float32', view.shape.map(() => 1), 1));
      const mid = [view.shape.map((d) => Math.floor(d / 2))];
      await ctx.input({ what: 'ops.boxes gather through an accepted odd view', expect: 'either', run: () => k.ops.boxes(view!, blocks, mid, false) });
      await ctx.input({ what: 'ops.boxes scatter through an accepted odd view', expect: 'either', run: () => k.ops.boxes(view!, blocks, mid, true) });
    }
  } else if (which === 6) {
    const s = badShape(r);
    const b = r.bool() ? batch : badBatch(r);
    await ctx.input({ what: `t.reshape(${show(s)}, ${show(b)})`, expect: 'reject', codes: ['INVALID_ARGUMENT', 'SHAPE_MISMATCH'], watch, run: () => own(ctx, t.reshape(s as number[], b as number)) });
  } else if (which === 7) {
    const into = r.pick([
      () => new C(n + 1),
      () => new C(n - 1 >= 0 ? n - 1 : 0),
      () => detached(new C(n)),
      () => new (dt === 'float32' ? Float64Array : Float32Array)(n),
      () => new Int32Array(n),
      () => junk(r),
    ])();
    await ctx.input({
      what: `t.read(into ${show(into)})`,
      expect: into === undefined || maybeValid(into, n, dt) ? 'either' : 'reject',
      codes: ['INVALID_ARGUMENT', 'SHAPE_MISMATCH', 'DTYPE_MISMATCH'],
      watch,
      run: () => t.read(into as Float32Array),
    });
  } else if (which === 8) {
    const data = r.pick([() => new C(n + 1), () => detached(C.from(vals)), () => new (dt === 'float32' ? Float64Array : Float32Array)(n), () => Array.from(vals), () => junk(r), () => shared(dt, vals.slice(1))])();
    await ctx.input({ what: `t.write(${show(data)})`, expect: maybeValid(data, n, dt) ? 'either' : 'reject', codes: ['INVALID_ARGUMENT', 'SHAPE_MISMATCH', 'DTYPE_MISMATCH'], watch, run: () => t.write(data as Float32Array) });
  } else if (which === 9) {
    // SharedArrayBuffer-backed arrays are valid everywhere a Float32Array / Float64Array is.
    const how = r.int(0, 2);
    const sv = shared(dt, vals);
    await ctx.input({
      what: `shared array through ${['fromArray', 'write', 'read(into)'][how]}`,
      expect: 'either',
      run: () => {
        if (how === 0) return bytesOf(own(ctx, B.fromArray(sv, shape, batch)).read());
        if (how === 1) {
          t.write(sv);
          return bytesOf(t.read());
        }
        const into = shared(dt, new Array(n).fill(0));
        t.read(into);
        return bytesOf(into);
      },
      afterAccept: (res) => (res === bytesOf(C.from(vals)) ? undefined : 'the values through a shared array differ'),
    });
  } else if (which === 10) {
    // Disposed tensors: every method and getter is DISPOSED.
    const d = B.fromArray(C.from(vals), shape, batch);
    d.dispose();
    const m = r.pick(['read', 'write', 'reshape', 'shape', 'dtype', 'batch', 'bytes', 'size', 'itemSize'] as const);
    await ctx.input({
      what: `disposed tensor: ${m}`,
      expect: 'reject',
      codes: ['DISPOSED'],
      run: () => {
        if (m === 'read') return d.read();
        if (m === 'write') return d.write(C.from(vals));
        if (m === 'reshape') return d.reshape([n]);
        return d[m];
      },
    });
  } else if (which === 11) {
    // Forged tensors: getters and methods of objects that are no tensors.
    const forged = r.pick([
      () => Object.create(k.Tensor.prototype),
      () => Object.assign(Object.create(k.Tensor.prototype), { native: {}, backend: B }),
      () => Object.assign(Object.create(k.Tensor.prototype), { native: t.native }),
      () => Object.assign(Object.create(k.Tensor.prototype), { native: Object.create((B.addon.NativeTensor as unknown as { prototype: object }).prototype), backend: B }),
    ])();
    const m = r.pick(['read', 'write', 'reshape', 'shape', 'dtype', 'batch', 'bytes', 'size', 'itemSize', 'dispose', 'disposed'] as const);
    await ctx.input({
      what: `forged tensor: ${m}`,
      expect: m === 'dispose' || m === 'disposed' ? 'either' : 'reject',
      codes: ['INVALID_HANDLE'],
      watch,
      run: () => {
        const f = forged as Tensor;
        if (m === 'read') return f.read();
        if (m === 'write') return f.write(C.from(vals));
        if (m === 'reshape') return f.reshape([n]);
        if (m === 'dispose') return f.dispose();
        return f[m];
      },
    });
  } else {
    const req = r.pick(['tpu', '', 'CPU', null, 42, {}, [], Symbol('b'), 10n, 'auto ', () => 'cpu'] as unknown[]);
    await ctx.input({ what: `getBackend(${show(req)})`, expect: 'reject', codes: ['INVALID_OPTION'], run: () => k.getBackend(req as 'cpu') });
  }
}

/** A float array of the right length (of dtype `dt` when given): junk that happens to be valid. */
function maybeValid(v: unknown, n: number, dt?: DT): boolean {
  const f32 = v instanceof Float32Array,
    f64 = v instanceof Float64Array;
  return (f32 || f64) && (v as Float32Array).length === n && (dt === undefined || (dt === 'float32') === f32);
}

function own(ctx: Ctx, t: Tensor): Tensor {
  ctx.defer(() => t.dispose());
  return t;
}

// ---- the raw addon ------------------------------------------------------------------------

const RAW_FUNCS = [
  'backends', 'tensor', 'fromArray', 'gemm', 'gram', 'modeProduct', 'eigh', 'eighAsync', 'matpow', 'matpowAsync',
  'axpby', 'scale', 'addIdentity', 'symmetrize', 'copy', 'fill', 'mulAcc', 'divSqrt', 'dot', 'frobNorm', 'trace',
  'allFinite', 'boxes', 'synchronize', 'scaleByNormRatio', 'inverseUpdate', 'allFiniteMany', 'axpbyMany', 'copyMany',
  'mulAccMany', 'divSqrtMany', 'scaleByNormRatioMany', 'boxesMany', 'root', 'rootRefresh', 'guardFinite', 'updateMany',
  'adamMany', 'graftMany', 'axpbyOutMany', 'crc32c', 'crc32cAsync',
] as const;

/** A random argument for a raw addon function: small handles, junk, shapes, lists, specs. */
function rawArg(ctx: Ctx, pool: NativeTensor[]): unknown {
  const { r, B } = ctx;
  const addon = B.addon;
  const choice = r.int(0, 15);
  switch (choice) {
    case 0:
    case 1:
    case 2:
      return r.pick(pool);
    case 3: {
      const d = B.tensor('float32', [2, 2]).native;
      d.dispose();
      return d;
    }
    case 4:
      return Object.create((addon.NativeTensor as unknown as { prototype: object }).prototype);
    case 5:
      return junk(r);
    case 6:
      return r.pick(['cpu', 'cuda', 'tpu', 'float32', 'float64', 'trace', 'frobenius', 'adam', 'adagrad']);
    case 7:
      return r.int(-2, 4);
    case 8:
      return badShape(r);
    case 9:
      return [r.int(1, 3), r.int(1, 3)];
    case 10:
      return Array.from({ length: r.int(0, 3) }, () => (r.bool(0.8) ? r.pick(pool) : junk(r)));
    case 11:
      return { p: r.pick([0.5, -0.5, NaN, 'x']), floor: r.pick([0, 1e-3, -1, undefined]), newton: r.pick([true, false, 1]), maxIterations: r.pick([0, 5, -1, 1e6, 0.5]), tolerance: r.pick([0, -1, 1e-3]) };
    case 12:
      return { lr: r.pick([0.1, NaN, -1, '1']), momentum: r.pick([0, 0.5, 2, undefined]), weightDecay: r.pick([0, 1, -1]), beta1: 0.9, beta2: 0.99, eps: r.pick([1e-8, 0, -1]), bc1: r.pick([1, 0, -1]), bc2: r.pick([1, 0]), nesterov: r.pick([true, 1]) };
    case 13:
      return r.pick([new Int32Array(r.int(0, 3)), new Uint8Array(r.int(0, 3)), new Float32Array(r.int(0, 8)), new Float64Array(r.int(0, 8)), shared('float32', [1, 2, 3, 4]), detached(new Float32Array(4))]);
    case 14:
      return [[0, 0], [1, 0]];
    default:
      return r.pick([0, 1, 2, -1, 2 ** 53, 1e300, 0.5]);
  }
}

export async function rawCase(ctx: Ctx): Promise<void> {
  const { r, B } = ctx;
  const addon = B.addon as unknown as Record<string, (...a: unknown[]) => unknown>;
  const pool: NativeTensor[] = [];
  for (let i = 0; i < 5; i++) {
    const dt: DT = r.bool() ? 'float32' : 'float64';
    const s = r.pick([[2, 2], [3], [2, 3], [3, 3], [1], [2, 2, 2]]);
    const b = r.int(1, 2);
    const t = B.fromArray(dt === 'float32' ? Float32Array.from(r.floats(prod(s) * b)) : Float64Array.from(r.floats(prod(s) * b)), s, b);
    ctx.defer(() => t.dispose());
    pool.push(t.native);
  }
  const name = r.pick(RAW_FUNCS);
  const nargs = r.int(0, 9);
  const args = Array.from({ length: nargs }, () => rawArg(ctx, pool));
  const recording = r.bool(0.25);
  await ctx.input({
    what: `raw addon.${name}(${args.map(show).join(', ')})${recording ? ' while recording a job' : ''}`,
    expect: 'either',
    run: async () => {
      if (!recording) return await addon[name](...args);
      (B.addon as NativeAddon).beginJob();
      let job;
      try {
        addon[name](...args);
      } finally {
        job = (B.addon as NativeAddon).endJob();
      }
      const how = r.int(0, 2);
      const res = how === 0 ? job.run() : how === 1 ? await job.runAsync() : (void job.runAsync().catch(() => undefined), job.wait());
      // A job runs once.
      try {
        job.run();
        return 'ran twice';
      } catch (e) {
        if (!(e instanceof ctx.k.KradagradError)) throw e;
      }
      return res;
    },
    afterAccept: (res) => (res === 'ran twice' ? 'a job ran twice' : undefined),
  });
  (B.addon as NativeAddon).discardJob();
}

// ---- the exported planning helpers and checkpointSummary ---------------------------------------

export async function planningCase(ctx: Ctx): Promise<void> {
  const { r, k } = ctx;
  const shapeArg = (): unknown => (r.bool(0.4) ? Array.from({ length: r.int(0, 3) }, () => r.int(1, 9)) : badShape(r));
  const sizeArg = (): unknown => (r.bool(0.4) ? r.int(1, 8) : r.pick([0, -1, 0.5, NaN, Infinity, '4', null, {}, 2 ** 53 + 2, -Infinity, 1e-300] as unknown[]));
  const which = r.int(0, 5);
  const calls: [string, () => unknown][] = [
    ['mergeDims', () => k.mergeDims(shapeArg() as number[], sizeArg() as number)],
    ['partition', () => k.partition(shapeArg() as number[], sizeArg() as number)],
    ['planParam', () => k.planParam(r.pick(['w', '', 42, null] as unknown[]) as string, shapeArg() as number[], sizeArg() as number, r.pick([true, false, 1, null] as unknown[]) as boolean)],
    ['groupBlocks', () => k.groupBlocks(r.pick([null, 42, [], [null], [{}], [{ name: 'w', shape: [2], transformed: [2], blocks: null }], [{ blocks: [{ offset: [0], extent: 'x' }] }]] as unknown[]) as never)],
    ['scheduleDim', () => k.scheduleDim(r.pick([0, 5, -1, 0.5, NaN, 2 ** 53, '3', null] as unknown[]) as number, r.pick([[], [2, 3], null, 'ab', [NaN], {}] as unknown[]) as number[])],
    ['checkpointSummary', () => k.checkpointSummary(r.pick([() => junk(r), () => Buffer.from(Array.from({ length: r.int(0, 64) }, () => r.int(0, 255))), () => Buffer.from('KRADSTAT' + 'x'.repeat(r.int(0, 20)))])() as Buffer)],
  ];
  const [name, call] = calls[which];
  let desc = '';
  await ctx.input({
    what: `${name} with random arguments`,
    expect: 'either',
    run: () => {
      const res = call();
      desc = show(res);
      return res;
    },
  });
  void desc;
}

// ---- async ops: disposal and garbage while in flight -------------------------------------------

export async function asyncCase(ctx: Ctx): Promise<void> {
  const { r, B, k } = ctx;
  const n = r.int(2, 12);
  const dt: DT = r.bool() ? 'float32' : 'float64';
  const C = dt === 'float32' ? Float32Array : Float64Array;
  const vals = r.floats(n * n);
  const sym = vals.map((_, i) => vals[i] + vals[(i % n) * n + Math.floor(i / n)]);
  const a = B.fromArray(C.from(sym), [n, n]);
  const which = r.int(0, 3);
  if (which === 0) {
    // The input disposed right after the call: the result is still that of the data.
    const ref = k.ops.eigh(own(ctx, B.fromArray(C.from(sym), [n, n])));
    own(ctx, ref.w);
    own(ctx, ref.v);
    await ctx.input({
      what: `eighAsync of [${n}, ${n}] ${dt}, input disposed while in flight`,
      expect: 'either',
      run: async () => {
        const p = k.ops.eighAsync(a);
        a.dispose();
        const res = await p;
        own(ctx, res.w);
        own(ctx, res.v);
        return bytesOf(res.w.read());
      },
      afterAccept: (w) => (w === bytesOf(ref.w.read()) ? undefined : 'eigenvalues differ from the synchronous call'),
    });
  } else if (which === 1) {
    const out = B.tensor(dt, [n, n]);
    await ctx.input({
      what: `matpowAsync with input and output disposed while in flight`,
      expect: 'either',
      run: async () => {
        const p = k.ops.matpowAsync(a, 0.5, { out, allowFailures: true });
        a.dispose();
        out.dispose();
        return await p;
      },
    });
  } else if (which === 2) {
    const bytes = r.pick([() => new Uint8Array(r.int(0, 5000)), () => Buffer.from('x'.repeat(r.int(0, 100))), () => shared('float64', r.floats(r.int(0, 50))), () => detached(new Uint8Array(64)), () => junk(r)])();
    const seed = r.pick([undefined, 0, 1, 2 ** 32 - 1, -1, 2 ** 32, 0.5, NaN, '1', null] as unknown[]);
    await ctx.input({
      what: `crc32c / crc32cAsync of ${show(bytes)} seed ${show(seed)}`,
      expect: 'either',
      run: async () => {
        const s = B.addon.crc32c(bytes as Uint8Array, seed as number);
        const t = await B.addon.crc32cAsync(bytes as Uint8Array, seed as number);
        return s === t ? s : `sync ${s} async ${t}`;
      },
      afterAccept: (v) => (typeof v === 'number' ? undefined : `crc32c and crc32cAsync disagree: ${String(v)}`),
    });
    a.dispose();
  } else {
    const bad = r.pick([() => Object.create(k.Tensor.prototype), () => junk(r), () => own(ctx, a.reshape([n * n]))]);
    const op = r.pick(['eighAsync', 'matpowAsync'] as const);
    const arg = bad();
    await ctx.input({
      what: `${op}(${show(arg)})`,
      expect: 'reject',
      codes: ['INVALID_HANDLE', 'SHAPE_MISMATCH', 'INVALID_ARGUMENT'],
      run: () => (op === 'eighAsync' ? k.ops.eighAsync(arg as Tensor) : k.ops.matpowAsync(arg as Tensor, 0.5)),
    });
    a.dispose();
  }
}
