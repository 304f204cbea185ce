/**
 * Fuzz cases of the typed ops (`ops.*`): each case builds a valid call of one op on small
 * random tensors, runs it on clones for a reference, then runs it with one argument
 * replaced by a bad value (the input), and, when that was rejected, runs the valid call
 * again: its outputs must equal the reference (a rejected call corrupted nothing), and the
 * tensors of the call must be unchanged by the rejection (Ctx.input's watch).
 */
import type { Tensor } from '../../lib';
import { Ctx, Expect, Rng, bytesOf, detached, junk, shared, show, tensorsState } from './support';

type DT = 'float32' | 'float64';
interface Mut {
  name: string;
  make: () => unknown;
  expect?: Expect;
  codes?: string[];
}
interface Arg {
  name: string;
  v: unknown;
  muts: Mut[];
}
interface OpCase {
  name: string;
  args: Arg[];
  call: (a: unknown[]) => unknown;
}

const prod = (s: number[]): number => s.reduce((a, b) => a * b, 1);
const other = (dt: DT): DT => (dt === 'float32' ? 'float64' : 'float32');

/** Tensor factory of a case: random contents, disposed at the end of the case. */
class T {
  constructor(private readonly ctx: Ctx) {}
  make(dt: DT, shape: number[], batch = 1, values?: number[]): Tensor {
    const n = prod(shape) * batch;
    const data = dt === 'float32' ? new Float32Array(values ?? this.ctx.r.floats(n)) : new Float64Array(values ?? this.ctx.r.floats(n));
    const t = this.ctx.B.fromArray(data, shape, batch);
    this.ctx.defer(() => t.dispose());
    return t;
  }
  /** Symmetric positive definite items: X X^T / n + I. */
  spd(dt: DT, n: number, batch: number): Tensor {
    const vals: number[] = [];
    for (let b = 0; b < batch; b++) {
      const x = this.ctx.r.floats(n * n);
      for (let i = 0; i < n; i++)
        for (let j = 0; j < n; j++) {
          let s = i === j ? 1 : 0;
          for (let q = 0; q < n; q++) s += (x[i * n + q] * x[j * n + q]) / n;
          vals.push(s);
        }
    }
    return this.make(dt, [n, n], batch, vals);
  }
  clone(t: Tensor): Tensor {
    const c = this.ctx.B.fromArray(t.read(), t.shape, t.batch);
    this.ctx.defer(() => c.dispose());
    return c;
  }
}

/** Mutations of a tensor argument. Flags say which relations the op checks (so the mutation is certainly invalid). */
function tensorMuts(
  ctx: Ctx,
  tf: T,
  t: Tensor,
  f: { dtype?: boolean; optional?: boolean; shapes?: [string, number[], number][]; nonsquare?: boolean } = {},
): Mut[] {
  const { k, r } = ctx;
  const dt = t.dtype as DT;
  const muts: Mut[] = [
    {
      name: 'disposed tensor',
      make: () => {
        const d = tf.clone(t);
        d.dispose();
        return d;
      },
      codes: ['DISPOSED'],
    },
    { name: 'Object.create(Tensor.prototype)', make: () => Object.create(k.Tensor.prototype), codes: ['INVALID_HANDLE'] },
    {
      name: 'plain object copying a tensor',
      make: () => ({ native: t.native, backend: t.backend, shape: t.shape, dtype: t.dtype, batch: t.batch }),
      codes: ['INVALID_HANDLE'],
    },
    {
      name: 'Tensor prototype around a forged native',
      make: () => {
        const o = Object.create(k.Tensor.prototype);
        Object.defineProperty(o, 'native', { value: Object.create((ctx.B.addon.NativeTensor as unknown as { prototype: object }).prototype) });
        Object.defineProperty(o, 'backend', { value: ctx.B });
        return o;
      },
      codes: ['INVALID_HANDLE'],
    },
    {
      name: 'new Tensor(backend, plain object)',
      make: () => new (k.Tensor as unknown as new (b: unknown, n: unknown) => Tensor)(ctx.B, { dtype: t.dtype, shape: t.shape, batch: t.batch }),
      codes: ['INVALID_HANDLE'],
    },
    {
      name: 'new Tensor(junk backend, real native)',
      make: () => new (k.Tensor as unknown as new (b: unknown, n: unknown) => Tensor)(junk(r), t.native),
      codes: ['INVALID_HANDLE'],
    },
  ];
  const j = junk(r);
  if (!(f.optional && (j === undefined || j === null))) {
    muts.push({ name: `not a tensor: ${show(j)}`, make: () => j, codes: ['INVALID_HANDLE', 'INVALID_ARGUMENT'] });
  }
  if (f.dtype) muts.push({ name: `${other(dt)} instead of ${dt}`, make: () => tf.make(other(dt), t.shape, t.batch), codes: ['DTYPE_MISMATCH'] });
  for (const [name, shape, batch] of f.shapes ?? []) {
    muts.push({ name: `${name}: batch ${batch} of [${shape}]`, make: () => tf.make(dt, shape, batch), codes: ['SHAPE_MISMATCH'] });
  }
  if (f.nonsquare) {
    const n = t.shape[0] ?? 2;
    muts.push({ name: `non-square [${n}, ${n + 1}]`, make: () => tf.make(dt, [n, n + 1], t.batch), codes: ['SHAPE_MISMATCH'] });
  }
  return muts;
}

/** Mutations of a number argument (`optional`: undefined means the default). */
function numberMuts(r: Rng, extra: Mut[] = [], optional = true): Mut[] {
  const bad: unknown[] = [NaN, Infinity, -Infinity, '1', {}, [], [1], true, 10n, Symbol('n'), new Float64Array(1)];
  if (!optional) bad.push(undefined);
  const v = r.pick(bad);
  const muts: Mut[] = [{ name: `number ${show(v)}`, make: () => v, codes: ['INVALID_ARGUMENT'] }];
  // null is no number; a wrapper may read it as "absent" (default), so either outcome is fine.
  muts.push({ name: 'number null', make: () => null, expect: 'either' });
  return [...muts, ...extra];
}

/** Mutations of an integer argument (mode, first item). */
function intMuts(r: Rng, outOfRange: number[]): Mut[] {
  const bad: unknown[] = [-1, 1.5, NaN, Infinity, '0', 2 ** 31, 2 ** 32, 2 ** 53, -(2 ** 53), 1e300, {}, [0], true, null, 10n, ...outOfRange];
  const v = r.pick(bad);
  return [{ name: `integer ${show(v)}`, make: () => v, codes: ['INVALID_ARGUMENT', 'SHAPE_MISMATCH'] }];
}

function boolMuts(r: Rng): Mut[] {
  const v = r.pick([1, 0, 'yes', 'true', {}, [], NaN, 10n] as unknown[]);
  return [{ name: `boolean ${show(v)}`, make: () => v, codes: ['INVALID_ARGUMENT'] }];
}

/** Mutations of a per-item coefficient (number or one per item). */
function coeffMuts(r: Rng, batch: number): Mut[] {
  const arr = (n: number, fill = 1) => new Array(n).fill(fill);
  const pick: Mut[] = [
    { name: 'coefficient NaN', make: () => NaN, codes: ['INVALID_ARGUMENT'] },
    { name: 'coefficient Infinity', make: () => Infinity, codes: ['INVALID_ARGUMENT'] },
    { name: 'coefficient "2"', make: () => '2', codes: ['INVALID_ARGUMENT'] },
    { name: 'coefficient null', make: () => null, codes: ['INVALID_ARGUMENT', 'INVALID_OPTION'] },
    { name: 'coefficient {}', make: () => ({}), codes: ['INVALID_ARGUMENT'] },
    { name: 'empty coefficient array', make: () => [], codes: ['INVALID_OPTION'] },
    { name: 'empty Float64Array', make: () => new Float64Array(0), codes: ['INVALID_OPTION'] },
    { name: 'detached Float64Array', make: () => detached(new Float64Array(batch)), codes: ['INVALID_OPTION'] },
    { name: `${batch + 1} coefficients for ${batch} items`, make: () => arr(batch + 1), codes: ['SHAPE_MISMATCH'] },
    { name: 'a NaN coefficient', make: () => Object.assign(arr(batch), { [r.int(0, batch - 1)]: NaN }), codes: ['NONFINITE'] },
    { name: 'an Infinity coefficient in a Float64Array', make: () => new Float64Array(batch).fill(-Infinity), codes: ['NONFINITE'] },
    { name: 'a string coefficient', make: () => Object.assign(arr(batch), { 0: 'a' }), codes: ['INVALID_ARGUMENT'] },
    { name: 'a hole in the coefficients', make: () => new Array(batch), codes: ['INVALID_ARGUMENT'] },
    { name: 'Float32Array coefficients', make: () => new Float32Array(batch).fill(1), codes: ['INVALID_ARGUMENT'] },
    { name: 'array-like coefficients', make: () => ({ length: batch, 0: 1 }), codes: ['INVALID_ARGUMENT'] },
    { name: 'bigint coefficient', make: () => 1n, codes: ['INVALID_ARGUMENT'] },
    // A SharedArrayBuffer-backed Float64Array of the right length is valid.
    { name: 'shared Float64Array coefficients', make: () => shared('float64', arr(batch, 0.5)), expect: 'either' },
  ];
  return [r.pick(pick), r.pick(pick)];
}

/** Mutations of an options object. */
function optsMuts(r: Rng, known: string[], fields: Mut[]): Mut[] {
  const whole = r.pick([null, 42, 'opts', [], [1], true, Symbol('o'), () => ({})] as unknown[]);
  return [
    { name: `options ${show(whole)}`, make: () => whole, codes: ['INVALID_OPTION'] },
    { name: 'unknown option key', make: () => ({ [r.pick(known)]: undefined, [`${r.pick(known)}x`]: 1 }), codes: ['INVALID_OPTION'] },
    ...fields,
  ];
}

/** Mutations of the offsets of ops.boxes (one offset array per box). */
function offsetsMuts(r: Rng, rank: number, nbox: number, fullShape: number[], extent: number[], maxBoxes: number): Mut[] {
  const ok = () => Array.from({ length: nbox }, () => new Array(rank).fill(0));
  const setOne = (v: unknown) => () => {
    const o: unknown[][] = ok();
    o[r.int(0, nbox - 1)][r.int(0, rank - 1)] = v;
    return o;
  };
  const i = r.int(0, rank - 1);
  const pick: Mut[] = [
    { name: 'offsets not an array', make: () => r.pick([5, 'ab', null, {}, { flat: () => [0] }, true, Symbol('o'), 10n] as unknown[]), codes: ['INVALID_ARGUMENT'] },
    { name: 'offsets a typed array', make: () => new Float64Array(rank), codes: ['INVALID_ARGUMENT'] },
    { name: 'an offset list that is not an array', make: () => [r.pick([0, 'ab', null, {}, new Int32Array(rank)] as unknown[])], codes: ['INVALID_ARGUMENT'] },
    { name: 'fractional offset', make: setOne(0.5), codes: ['INVALID_ARGUMENT'] },
    { name: 'negative offset', make: setOne(-1), codes: ['INVALID_ARGUMENT'] },
    { name: 'NaN offset', make: setOne(NaN), codes: ['INVALID_ARGUMENT'] },
    { name: 'offset 2^53', make: setOne(2 ** 53), codes: ['INVALID_ARGUMENT'] },
    { name: 'offset 2^63', make: setOne(2 ** 63), codes: ['INVALID_ARGUMENT'] },
    { name: 'offset 1e300', make: setOne(1e300), codes: ['INVALID_ARGUMENT'] },
    { name: 'offset -2^62', make: setOne(-(2 ** 62)), codes: ['INVALID_ARGUMENT'] },
    { name: 'string offset', make: setOne('0'), codes: ['INVALID_ARGUMENT'] },
    { name: 'null offset', make: setOne(null), codes: ['INVALID_ARGUMENT'] },
    { name: 'nested offset', make: setOne([0]), codes: ['INVALID_ARGUMENT'] },
    {
      name: `offset overruns dim ${i}`,
      make: () => {
        const o = ok();
        o[0][i] = fullShape[i] - extent[i] + 1;
        return o;
      },
      codes: ['INVALID_ARGUMENT'],
    },
    { name: 'an offset of the wrong rank', make: () => [new Array(rank + 1).fill(0)], codes: ['SHAPE_MISMATCH'] },
    { name: 'too many boxes', make: () => Array.from({ length: maxBoxes + 1 }, () => new Array(rank).fill(0)), codes: ['SHAPE_MISMATCH'] },
    { name: 'a hole in an offset', make: () => [new Array(rank)], codes: ['INVALID_ARGUMENT'] },
  ];
  return [r.pick(pick), r.pick(pick)];
}

function listMuts(ctx: Ctx, tf: T, list: Tensor[], shapesBound: boolean, dtypeBound: boolean): Mut[] {
  const { r } = ctx;
  const j = r.int(0, list.length - 1);
  const withEntry = (v: () => unknown) => () => list.map((t, i) => (i === j ? v() : t));
  const muts: Mut[] = [
    { name: `list ${show(r.pick([null, 42, 'xs', {}, new Float32Array(1)] as unknown[]))}`, make: () => r.pick([null, 42, 'xs', {}, new Float32Array(1)] as unknown[]), codes: ['INVALID_ARGUMENT'] },
    { name: 'one entry shorter', make: () => list.slice(1), codes: ['SHAPE_MISMATCH'] },
    { name: 'a hole for every entry', make: () => new Array(list.length), codes: ['INVALID_HANDLE', 'INVALID_ARGUMENT'] },
    { name: `entry ${j} junk`, make: withEntry(() => junk(r)), codes: ['INVALID_HANDLE', 'INVALID_ARGUMENT'] },
    {
      name: `entry ${j} disposed`,
      make: withEntry(() => {
        const d = tf.clone(list[j]);
        d.dispose();
        return d;
      }),
      codes: ['DISPOSED'],
    },
    { name: `entry ${j} forged`, make: withEntry(() => Object.create(ctx.k.Tensor.prototype)), codes: ['INVALID_HANDLE'] },
  ];
  if (shapesBound) muts.push({ name: `entry ${j} one element longer`, make: withEntry(() => tf.make(list[j].dtype as DT, [list[j].size + 1])), codes: ['SHAPE_MISMATCH'] });
  if (dtypeBound) muts.push({ name: `entry ${j} of the other dtype`, make: withEntry(() => tf.make(other(list[j].dtype as DT), list[j].shape, list[j].batch)), codes: ['DTYPE_MISMATCH'] });
  return muts;
}

// ---- the ops ----------------------------------------------------------------------------

type Builder = (ctx: Ctx, tf: T, dt: DT) => OpCase;

const gemm: Builder = (ctx, tf, dt) => {
  const { r, k } = ctx;
  const [m, kk, n] = [r.int(1, 4), r.int(1, 4), r.int(1, 4)];
  const ta = r.bool(),
    tb = r.bool();
  const giveC = r.bool(0.6);
  const bc = r.int(1, 3);
  const ba = giveC ? r.pick([1, bc]) : r.int(1, 3);
  const bb = giveC ? r.pick([1, bc]) : r.pick([1, ba]);
  const a = tf.make(dt, ta ? [kk, m] : [m, kk], ba);
  const b = tf.make(dt, tb ? [n, kk] : [kk, n], bb);
  const c = giveC ? tf.make(dt, [m, n], bc) : undefined;
  const opts: Record<string, unknown> = {};
  if (ta || r.bool()) opts.transA = ta;
  if (tb || r.bool()) opts.transB = tb;
  if (r.bool()) opts.alpha = r.floats(1)[0];
  if (r.bool()) opts.beta = r.floats(1)[0];
  const aShapes: [string, number[], number][] = [
    ['contracted dim + 1', ta ? [kk + 1, m] : [m, kk + 1], ba],
    ['rank 3', [m, kk, 1], ba],
  ];
  if (giveC) aShapes.push(['batch mismatch', ta ? [kk, m] : [m, kk], bc + 1]);
  const args: Arg[] = [
    { name: 'A', v: a, muts: tensorMuts(ctx, tf, a, { dtype: true, shapes: aShapes }) },
    { name: 'B', v: b, muts: tensorMuts(ctx, tf, b, { dtype: true, shapes: [['contracted dim + 1', tb ? [n, kk + 1] : [kk + 1, n], bb]] }) },
    {
      name: 'C',
      v: c,
      muts: c
        ? tensorMuts(ctx, tf, c, { dtype: true, optional: true, shapes: [['rows + 1', [m + 1, n], bc], ...(ba > 1 || bb > 1 ? [['batch + 1', [m, n], bc + 1] as [string, number[], number]] : [])] })
        : tensorMuts(ctx, tf, a, { optional: true }).slice(0, 6),
    },
    {
      name: 'opts',
      v: opts,
      muts: optsMuts(r, ['transA', 'transB', 'alpha', 'beta'], [
        { name: 'alpha NaN', make: () => ({ ...opts, alpha: NaN }), codes: ['INVALID_ARGUMENT', 'INVALID_OPTION'] },
        { name: 'beta "0"', make: () => ({ ...opts, beta: '0' }), codes: ['INVALID_ARGUMENT', 'INVALID_OPTION'] },
        { name: 'transA 1', make: () => ({ ...opts, transA: 1 }), codes: ['INVALID_ARGUMENT', 'INVALID_OPTION'] },
      ]),
    },
  ];
  return { name: 'gemm', args, call: (x) => k.ops.gemm(x[0] as Tensor, x[1] as Tensor, x[2] as Tensor, x[3] as object) };
};

const gram: Builder = (ctx, tf, dt) => {
  const { r, k } = ctx;
  const rank = r.int(1, 3);
  const shape = Array.from({ length: rank }, () => r.int(1, 4));
  const b = r.int(1, 3);
  const mode = r.int(0, rank - 1);
  const d = shape[mode];
  const g = tf.make(dt, shape, b);
  const h = r.bool(0.6) ? tf.make(dt, [d, d], b) : undefined;
  const alpha = r.floats(1)[0],
    beta = r.floats(1)[0];
  const args: Arg[] = [
    { name: 'G', v: g, muts: tensorMuts(ctx, tf, g, { dtype: !!h }) },
    { name: 'mode', v: mode, muts: intMuts(r, [rank, -rank]) },
    {
      name: 'H',
      v: h,
      muts: h ? tensorMuts(ctx, tf, h, { dtype: true, optional: true, nonsquare: true, shapes: [['size + 1', [d + 1, d + 1], b], ['batch + 1', [d, d], b + 1]] }) : [],
    },
    { name: 'alpha', v: alpha, muts: numberMuts(r) },
    { name: 'beta', v: beta, muts: numberMuts(r) },
  ];
  return { name: 'gram', args, call: (x) => k.ops.gram(x[0] as Tensor, x[1] as number, x[2] as Tensor, x[3] as number, x[4] as number) };
};

const modeProduct: Builder = (ctx, tf, dt) => {
  const { r, k } = ctx;
  const rank = r.int(1, 3);
  const shape = Array.from({ length: rank }, () => r.int(1, 4));
  const b = r.int(1, 3);
  const mode = r.int(0, rank - 1);
  const q = shape[mode];
  const nout = r.int(1, 4);
  const tm = r.bool();
  const bm = r.pick([1, b]);
  const g = tf.make(dt, shape, b);
  const m = tf.make(dt, tm ? [q, nout] : [nout, q], bm);
  const outShape = shape.slice();
  outShape[mode] = nout;
  const out = r.bool(0.6) ? tf.make(dt, outShape, b) : undefined;
  const wrongOut = outShape.slice();
  wrongOut[mode] = nout + 1;
  const args: Arg[] = [
    { name: 'G', v: g, muts: tensorMuts(ctx, tf, g, { dtype: true }) },
    { name: 'mode', v: mode, muts: intMuts(r, [rank, 64]) },
    {
      name: 'M',
      v: m,
      muts: tensorMuts(ctx, tf, m, { dtype: true, shapes: [['contracted dim + 1', tm ? [q + 1, nout] : [nout, q + 1], bm], ['rank 3', [1, ...m.shape], bm], ['batch', m.shape, b + 1]] }),
    },
    { name: 'out', v: out, muts: out ? tensorMuts(ctx, tf, out, { dtype: true, optional: true, shapes: [['wrong mode size', wrongOut, b]] }) : [] },
    { name: 'transM', v: tm, muts: boolMuts(r) },
  ];
  return { name: 'modeProduct', args, call: (x) => k.ops.modeProduct(x[0] as Tensor, x[1] as number, x[2] as Tensor, x[3] as Tensor, x[4] as boolean) };
};

const eighOpts = (r: Rng, opts: object): Mut[] =>
  optsMuts(r, ['allowFailures'], [
    { name: "allowFailures 'no'", make: () => ({ allowFailures: 'no' }), codes: ['INVALID_OPTION'] },
    { name: 'allowFailures 1', make: () => ({ ...opts, allowFailures: 1 }), codes: ['INVALID_OPTION'] },
    { name: 'allowFailures null', make: () => ({ allowFailures: null }), codes: ['INVALID_OPTION'] },
  ]);

const eigh =
  (async: boolean): Builder =>
  (ctx, tf, dt) => {
    const { r, k } = ctx;
    const n = r.int(1, 5),
      b = r.int(1, 3);
    const a = tf.spd(dt, n, b);
    const opts = r.bool() ? { allowFailures: r.bool() } : {};
    const nan = (): Tensor => {
      const v = Array.from(a.read());
      v[r.int(0, v.length - 1)] = r.pick([NaN, Infinity]);
      return tf.make(dt, a.shape, a.batch, v);
    };
    const args: Arg[] = [
      {
        name: 'A',
        v: a,
        muts: [
          ...tensorMuts(ctx, tf, a, { nonsquare: true, shapes: [['rank 1', [n], b], ['rank 3', [n, n, 1], b]] }),
          { name: 'NaN/Inf in A', make: nan, expect: (opts as { allowFailures?: boolean }).allowFailures ? 'either' : 'reject', codes: ['NONFINITE'] },
        ],
      },
      { name: 'opts', v: opts, muts: eighOpts(r, opts) },
    ];
    const own = (res: unknown) => {
      const e = res as { w?: Tensor; v?: Tensor };
      if (e?.w) ctx.defer(() => e.w!.dispose());
      if (e?.v) ctx.defer(() => e.v!.dispose());
      return res;
    };
    return {
      name: async ? 'eighAsync' : 'eigh',
      args,
      call: (x) => (async ? k.ops.eighAsync(x[0] as Tensor, x[1] as object).then(own) : own(k.ops.eigh(x[0] as Tensor, x[1] as object))),
    };
  };

const matpow =
  (async: boolean): Builder =>
  (ctx, tf, dt) => {
    const { r, k } = ctx;
    const n = r.int(1, 5),
      b = r.int(1, 3);
    const a = tf.spd(dt, n, b);
    const p = r.pick([0.5, 0.25, 1, -0.25, -0.5]);
    const opts: Record<string, unknown> = {};
    if (p < 0 || r.bool()) opts.floor = p < 0 ? 1e-3 : 0;
    if (r.bool()) opts.ridge = 1e-3;
    if (r.bool()) opts.out = tf.make(dt, [n, n], b);
    if (r.bool()) opts.allowFailures = false;
    const args: Arg[] = [
      { name: 'A', v: a, muts: tensorMuts(ctx, tf, a, { nonsquare: true, shapes: [['rank 1', [n], b]] }) },
      { name: 'p', v: p, muts: [...numberMuts(r, [], false), ...(opts.floor ? [] : [{ name: 'negative p without a floor', make: () => -0.5, codes: ['INVALID_ARGUMENT'] }])] },
      {
        name: 'opts',
        v: opts,
        muts: [
          ...eighOpts(r, opts),
          { name: 'floor NaN', make: () => ({ ...opts, floor: NaN }), codes: ['INVALID_ARGUMENT', 'INVALID_OPTION'] },
          { name: 'ridge Infinity', make: () => ({ ...opts, ridge: Infinity }), codes: ['INVALID_ARGUMENT', 'INVALID_OPTION'] },
          { name: 'floor "1"', make: () => ({ ...opts, floor: '1' }), codes: ['INVALID_ARGUMENT', 'INVALID_OPTION'] },
          { name: 'out of the wrong shape', make: () => ({ ...opts, out: tf.make(dt, [n + 1, n + 1], b) }), codes: ['SHAPE_MISMATCH'] },
          { name: 'out of the other dtype', make: () => ({ ...opts, out: tf.make(other(dt), [n, n], b) }), codes: ['DTYPE_MISMATCH'] },
          { name: 'out forged', make: () => ({ ...opts, out: Object.create(k.Tensor.prototype) }), codes: ['INVALID_HANDLE'] },
          { name: 'out junk', make: () => ({ ...opts, out: r.pick([42, 'out', {}, [], true] as unknown[]) }), codes: ['INVALID_HANDLE', 'INVALID_OPTION'] },
        ],
      },
    ];
    const own = (res: unknown) => {
      const e = res as { out?: Tensor };
      if (e?.out && e.out !== opts.out) ctx.defer(() => e.out!.dispose());
      return res;
    };
    return {
      name: async ? 'matpowAsync' : 'matpow',
      args,
      call: (x) => (async ? k.ops.matpowAsync(x[0] as Tensor, x[1] as number, x[2] as object).then(own) : own(k.ops.matpow(x[0] as Tensor, x[1] as number, x[2] as object))),
    };
  };

const elementwise: Builder = (ctx, tf, dt) => {
  const { r, k } = ctx;
  const shape = Array.from({ length: r.int(1, 3) }, () => r.int(1, 4));
  const b = r.int(1, 3);
  const n = prod(shape);
  const mk = () => tf.make(dt, shape, b);
  const sq = r.int(1, 4);
  const mkSq = () => tf.make(dt, [sq, sq], b);
  const coeff = (): unknown => (r.bool() ? r.floats(1)[0] : r.bool() ? r.floats(b) : Float64Array.from(r.floats(b)));
  const sizeShapes: [string, number[], number][] = [['one element more', [n + 1], b], ['batch + 1', shape, b + 1]];
  const which = r.pick(['axpby', 'scale', 'addIdentity', 'symmetrize', 'copy', 'fill', 'mulAcc', 'divSqrt', 'dot', 'frobNorm', 'trace', 'allFinite', 'scaleByNormRatio', 'inverseUpdate']);
  const ops = k.ops as unknown as Record<string, (...a: unknown[]) => unknown>;
  const call = (x: unknown[]) => ops[which](...x);
  const tm = (t: Tensor, f: Parameters<typeof tensorMuts>[3] = {}) => tensorMuts(ctx, tf, t, f);
  switch (which) {
    case 'axpby': {
      const x = mk(),
        y = mk();
      return {
        name: which,
        call,
        args: [
          { name: 'x', v: x, muts: tm(x, { dtype: true, shapes: sizeShapes }) },
          { name: 'y', v: y, muts: tm(y, { dtype: true, shapes: sizeShapes }) },
          { name: 'alpha', v: coeff(), muts: coeffMuts(r, b) },
          { name: 'beta', v: coeff(), muts: coeffMuts(r, b) },
        ],
      };
    }
    case 'scale': {
      const x = mk();
      return { name: which, call, args: [{ name: 'x', v: x, muts: tm(x) }, { name: 'alpha', v: coeff(), muts: coeffMuts(r, b) }] };
    }
    case 'addIdentity': {
      const a = mkSq();
      return { name: which, call, args: [{ name: 'A', v: a, muts: tm(a, { nonsquare: true }) }, { name: 'alpha', v: coeff(), muts: coeffMuts(r, b) }] };
    }
    case 'symmetrize': {
      const a = mkSq();
      return { name: which, call, args: [{ name: 'A', v: a, muts: tm(a, { nonsquare: true }) }] };
    }
    case 'copy': {
      const s = mk(),
        d = r.bool() ? mk() : tf.make(other(dt), [n], b);
      return {
        name: which,
        call,
        args: [
          { name: 'src', v: s, muts: tm(s, { shapes: [['one element more', [n + 1], b]] }) },
          { name: 'dst', v: d, muts: tm(d, { shapes: [['one element more', [n + 1], b]] }) },
        ],
      };
    }
    case 'fill': {
      const x = mk();
      return { name: which, call, args: [{ name: 'x', v: x, muts: tm(x) }, { name: 'value', v: r.floats(1)[0], muts: numberMuts(r, [], false) }] };
    }
    case 'mulAcc':
    case 'divSqrt': {
      const [x, y, z] = [mk(), mk(), mk()];
      if (which === 'divSqrt') y.write(y.dtype === 'float32' ? new Float32Array(y.size).fill(0.25) : new Float64Array(y.size).fill(0.25));
      const s3: [string, number[], number][] = [['one element more', [n * b + 1], 1]];
      return {
        name: which,
        call,
        args: [
          { name: 'x', v: x, muts: tm(x, { dtype: true, shapes: s3 }) },
          { name: which === 'mulAcc' ? 'y' : 'acc', v: y, muts: tm(y, { dtype: true, shapes: s3 }) },
          { name: which === 'mulAcc' ? 'acc' : 'out', v: z, muts: tm(z, { dtype: true, shapes: s3 }) },
          { name: 'a', v: r.floats(1)[0], muts: numberMuts(r, [], false) },
          { name: 'b', v: Math.abs(r.floats(1)[0]), muts: numberMuts(r, [], false) },
        ],
      };
    }
    case 'dot': {
      const x = mk(),
        y = mk();
      return {
        name: which,
        call,
        args: [
          { name: 'x', v: x, muts: tm(x, { dtype: true, shapes: sizeShapes }) },
          { name: 'y', v: y, muts: tm(y, { dtype: true, shapes: sizeShapes }) },
        ],
      };
    }
    case 'frobNorm':
    case 'allFinite': {
      const x = mk();
      return { name: which, call, args: [{ name: 'x', v: x, muts: tm(x) }] };
    }
    case 'trace': {
      const a = mkSq();
      return { name: which, call, args: [{ name: 'A', v: a, muts: tm(a, { nonsquare: true, shapes: [['rank 1', [sq], b]] }) }] };
    }
    case 'scaleByNormRatio': {
      const d = mk(),
        a = mk();
      return {
        name: which,
        call,
        args: [
          { name: 'd', v: d, muts: tm(d, { dtype: true, shapes: sizeShapes }) },
          { name: 'a', v: a, muts: tm(a, { dtype: true, shapes: sizeShapes }) },
          { name: 'eps', v: 1e-6, muts: numberMuts(r, [{ name: 'eps -1', make: () => -1, codes: ['INVALID_ARGUMENT'] }], false) },
        ],
      };
    }
    default: {
      // inverseUpdate
      const l = tf.spd(dt, sq, b),
        t = mkSq(),
        m = mkSq();
      const sh: [string, number[], number][] = [['size + 1', [sq + 1, sq + 1], b], ['batch + 1', [sq, sq], b + 1]];
      return {
        name: 'inverseUpdate',
        call,
        args: [
          { name: 'L', v: l, muts: tm(l, { dtype: true, nonsquare: true }) },
          { name: 'T', v: t, muts: [...tm(t, { dtype: true, shapes: sh }), { name: 'T aliases L', make: () => l, codes: ['INVALID_ARGUMENT'] }] },
          { name: 'M', v: m, muts: tm(m, { dtype: true, shapes: sh }) },
          { name: 'kind', v: r.pick(['trace', 'frobenius']), muts: [{ name: 'kind junk', make: () => r.pick(['spectral', '', 1, null, {}, 'TRACE'] as unknown[]), codes: ['INVALID_ARGUMENT'] }] },
        ],
      };
    }
  }
};

const boxes: Builder = (ctx, tf, dt) => {
  const { r, k } = ctx;
  const rank = r.int(1, 3);
  const full = Array.from({ length: rank }, () => r.int(2, 5));
  const ext = full.map((d) => r.int(1, d));
  const nbox = r.int(1, 3);
  const first = r.int(0, 1);
  const nb = nbox + first + r.int(0, 1);
  const F = tf.make(dt, full, 1);
  const Bk = tf.make(dt, ext, nb);
  const offsets = Array.from({ length: nbox }, () => full.map((d, i) => r.int(0, d - ext[i])));
  const scatter = r.bool();
  const args: Arg[] = [
    { name: 'full', v: F, muts: tensorMuts(ctx, tf, F, { dtype: true, shapes: [['batch 2', full, 2], ['rank + 1', [...full, 1], 1]] }) },
    {
      name: 'blocks',
      v: Bk,
      muts: tensorMuts(ctx, tf, Bk, { dtype: true, shapes: [['rank + 1', [...ext, 1], nb], ...(nbox + first > 1 ? [['too few items', ext, nbox + first - 1] as [string, number[], number]] : [])] }),
    },
    { name: 'offsets', v: offsets, muts: offsetsMuts(r, rank, nbox, full, ext, nb - first) },
    { name: 'scatter', v: scatter, muts: boolMuts(r).concat([{ name: 'scatter null', make: () => null, codes: ['INVALID_ARGUMENT'] }]) },
    { name: 'first', v: first, muts: intMuts(r, [nb - nbox + 1, -1]) },
  ];
  return { name: 'boxes', args, call: (x) => k.ops.boxes(x[0] as Tensor, x[1] as Tensor, x[2] as number[][], x[3] as boolean, x[4] as number) };
};

const many: Builder = (ctx, tf, dt) => {
  const { r, k } = ctx;
  const len = r.int(1, 3);
  const shapes = Array.from({ length: len }, () => [r.int(1, 5)]);
  const dts = shapes.map(() => (r.bool(0.7) ? dt : other(dt)));
  const list = () => shapes.map((s, i) => tf.make(dts[i], s));
  const which = r.pick(['axpbyMany', 'copyMany', 'mulAccMany', 'divSqrtMany', 'scaleByNormRatioMany', 'allFiniteMany', 'boxesMany']);
  const ops = k.ops as unknown as Record<string, (...a: unknown[]) => unknown>;
  const call = (x: unknown[]) => ops[which](...x);
  const L = (l: Tensor[], name: string, dtypeBound = true): Arg => ({ name, v: l, muts: listMuts(ctx, tf, l, true, dtypeBound) });
  const num = (name: string, v = r.floats(1)[0], optional = false): Arg => ({ name, v, muts: numberMuts(r, [], optional) });
  switch (which) {
    case 'axpbyMany':
      return { name: which, call, args: [L(list(), 'xs'), L(list(), 'ys'), num('alpha'), num('beta', undefined, true)] };
    case 'copyMany':
      return { name: which, call, args: [L(list(), 'srcs', false), L(list(), 'dsts', false)] };
    case 'mulAccMany':
      return { name: which, call, args: [L(list(), 'xs'), L(list(), 'ys'), L(list(), 'accs'), num('a'), num('b')] };
    case 'divSqrtMany':
      return { name: which, call, args: [L(list(), 'xs'), L(list(), 'accs'), L(list(), 'outs'), num('scale', 0.5), num('eps', 1e-3)] };
    case 'scaleByNormRatioMany':
      return { name: which, call, args: [L(list(), 'ds'), L(list(), 'as'), num('eps', 1e-6)] };
    case 'allFiniteMany': {
      const l = list();
      return {
        name: which,
        call,
        args: [{ name: 'xs', v: l, muts: listMuts(ctx, tf, l, false, false).filter((m) => m.name !== 'one entry shorter') }],
      };
    }
    default: {
      // boxesMany: fulls of rank 2 into one blocks tensor
      const ext = [r.int(1, 2), r.int(1, 2)];
      const fulls = Array.from({ length: len }, () => tf.make(dt, [ext[0] + r.int(0, 2), ext[1] + r.int(0, 2)]));
      const per = fulls.map(() => r.int(1, 2));
      const firsts: number[] = [];
      let at = 0;
      for (const p of per) {
        firsts.push(at);
        at += p;
      }
      const blocks = tf.make(dt, ext, at);
      const offsets = fulls.map((f, i) => Array.from({ length: per[i] }, () => [r.int(0, f.shape[0] - ext[0]), r.int(0, f.shape[1] - ext[1])]));
      const offMuts: Mut[] = [
        { name: 'offsets not an array', make: () => r.pick([null, 5, 'ab', {}] as unknown[]), codes: ['INVALID_ARGUMENT'] },
        { name: 'one offset list too few', make: () => offsets.slice(1), codes: ['SHAPE_MISMATCH', 'INVALID_ARGUMENT'] },
        { name: 'an offset list of numbers', make: () => offsets.map((o, i) => (i === 0 ? o.flat() : o)), codes: ['INVALID_ARGUMENT'] },
        { name: 'a fractional offset', make: () => offsets.map((o, i) => (i === 0 ? [[0.5, 0], ...o.slice(1)] : o)), codes: ['INVALID_ARGUMENT'] },
        { name: 'an offset 2^62', make: () => offsets.map((o, i) => (i === 0 ? [[2 ** 62, 0], ...o.slice(1)] : o)), codes: ['INVALID_ARGUMENT'] },
        { name: 'a string offset list', make: () => offsets.map((o, i) => (i === 0 ? 'ab' : o)), codes: ['INVALID_ARGUMENT'] },
      ];
      const firstMuts: Mut[] = [
        { name: 'firsts not an array', make: () => r.pick([null, 0, 'ab', {}, new Int32Array(len)] as unknown[]), codes: ['INVALID_ARGUMENT'] },
        { name: 'firsts too short', make: () => firsts.slice(1), codes: ['SHAPE_MISMATCH', 'INVALID_ARGUMENT'] },
        { name: 'a first past the end', make: () => firsts.map((f, i) => (i === len - 1 ? at : f)), codes: ['SHAPE_MISMATCH'] },
        { name: 'a first -1', make: () => firsts.map((f, i) => (i === 0 ? -1 : f)), codes: ['SHAPE_MISMATCH', 'INVALID_ARGUMENT'] },
        { name: 'a first 2^53', make: () => firsts.map((f, i) => (i === 0 ? 2 ** 53 : f)), codes: ['SHAPE_MISMATCH', 'INVALID_ARGUMENT'] },
        { name: 'a first NaN', make: () => firsts.map((f, i) => (i === 0 ? NaN : f)), codes: ['INVALID_ARGUMENT'] },
      ];
      return {
        name: which,
        call,
        args: [
          { name: 'fulls', v: fulls, muts: listMuts(ctx, tf, fulls, false, true) },
          { name: 'blocks', v: blocks, muts: tensorMuts(ctx, tf, blocks, { dtype: true, shapes: [['rank 3', [...ext, 1], at]] }) },
          { name: 'offsets', v: offsets, muts: offMuts },
          { name: 'firsts', v: firsts, muts: firstMuts },
          { name: 'scatter', v: r.bool(), muts: boolMuts(r) },
        ],
      };
    }
  }
};

const BUILDERS: [string, Builder][] = [
  ['gemm', gemm],
  ['gram', gram],
  ['modeProduct', modeProduct],
  ['eigh', eigh(false)],
  ['eighAsync', eigh(true)],
  ['matpow', matpow(false)],
  ['matpowAsync', matpow(true)],
  ['elementwise', elementwise],
  ['elementwise', elementwise],
  ['boxes', boxes],
  ['boxes', boxes],
  ['many', many],
  ['many', many],
];

/** Every Tensor inside a value (arrays and plain objects, one level of options). */
function tensorsIn(ctx: Ctx, v: unknown, out: Tensor[] = []): Tensor[] {
  if (v instanceof ctx.k.Tensor) {
    try {
      if (!v.disposed) out.push(v);
    } catch {
      /* forged */
    }
  } else if (Array.isArray(v)) for (const x of v) tensorsIn(ctx, x, out);
  else if (v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) for (const x of Object.values(v)) tensorsIn(ctx, x, out);
  return out;
}

/** A fingerprint of a call's result and of the tensors it touched. */
function fingerprint(ctx: Ctx, ts: Tensor[], ret: unknown): string {
  const f = (v: unknown): string => {
    if (v === undefined) return 'u';
    if (v instanceof ctx.k.Tensor) return v.disposed ? 'D' : 'T' + bytesOf(v.read());
    if (ArrayBuffer.isView(v)) return 'A' + bytesOf(v);
    if (Array.isArray(v)) return '[' + v.map(f).join(',') + ']';
    if (v && typeof v === 'object') return '{' + Object.entries(v).map(([k, x]) => `${k}:${f(x)}`).join(',') + '}';
    return JSON.stringify(v);
  };
  return tensorsState(ts) + '#' + f(ret);
}

export async function opsCase(ctx: Ctx): Promise<void> {
  const { r } = ctx;
  const tf = new T(ctx);
  const dt: DT = r.bool() ? 'float32' : 'float64';
  const [, build] = r.pick(BUILDERS);
  const c = build(ctx, tf, dt);
  // Clones of every tensor of the valid call (options objects included) for the reference.
  const clones = new Map<Tensor, Tensor>();
  const cloneVal = (v: unknown): unknown => {
    if (v instanceof ctx.k.Tensor) {
      if (!clones.has(v)) clones.set(v, tf.clone(v));
      return clones.get(v);
    }
    if (Array.isArray(v)) return v.map(cloneVal);
    if (v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, cloneVal(x)]));
    return v;
  };
  const valid = c.args.map((a) => a.v);
  const cloned = valid.map(cloneVal);
  let ref: string;
  try {
    const ret = await c.call(cloned);
    ref = fingerprint(ctx, tensorsIn(ctx, cloned), ret);
  } catch (e) {
    ctx.fail(`the valid call ${c.name}(${valid.map(show).join(', ')}) was rejected: ${String((e as Error)?.message ?? e)}`);
    return;
  }
  const candidates = c.args.map((a, i) => [a, i] as const).filter(([a]) => a.muts.length > 0);
  const [arg, ai] = r.pick(candidates);
  const mut = r.pick(arg.muts);
  const touched = tensorsIn(ctx, valid);
  const res = await ctx.input({
    what: `${c.name} ${arg.name}: ${mut.name}`,
    expect: mut.expect ?? 'reject',
    codes: mut.codes,
    watch: () => tensorsState(touched),
    run: () => c.call(valid.map((v, i) => (i === ai ? mut.make() : v))),
  });
  if (res.accepted) return;
  // The control: the valid call again on the originals, after the rejection.
  try {
    const ret = await c.call(valid);
    const got = fingerprint(ctx, touched, ret);
    if (got !== ref) ctx.fail(`${c.name}: the valid call after the rejected input (${arg.name}: ${mut.name}) gives another result than on fresh copies`);
  } catch (e) {
    ctx.fail(`${c.name}: the valid call after the rejected input (${arg.name}: ${mut.name}) was rejected: ${String((e as Error)?.message ?? e)}`);
  }
}
