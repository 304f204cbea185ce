/**
 * Fuzz cases of the optimizers:
 *   - sessions: an optimizer with random valid options takes valid control steps (step or
 *     stepAsync, host or tensor gradients, sometimes SharedArrayBuffer-backed) interleaved
 *     with bad inputs (gradients, schedules, calls while a stepAsync is in flight, damaged
 *     checkpoints, bad paths). Every rejection must leave the state bytes, the parameters
 *     and the step counter as they were; at the end a fresh optimizer replays only the
 *     accepted steps and must reach the same parameters and state, bit for bit;
 *   - constructors with one bad parameter or option;
 *   - extreme but valid options (huge learning rates, weight decays, tiny epsilons): each
 *     step is either rejected (NONFINITE / NONFINITE_FACTOR, nothing changed) or leaves
 *     finite parameters and a finite state.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { FloatArray, Optimizer, Tensor } from '../../lib';
import { checksumOf, sealCheckpoint } from '../../lib/optim/checkpoint';
import { Ctx, InputSpec, Rng, allFinite, bytesOf, detached, errText, junk, shared, show } from './support';

type DT = 'float32' | 'float64';
type Kind = 'KradagradStar' | 'Kradagrad' | 'Shampoo' | 'Adam' | 'Sgd';
const KINDS: Kind[] = ['KradagradStar', 'Kradagrad', 'Shampoo', 'Adam', 'Sgd'];
const SHAPES = [[5], [3, 4], [2, 3, 4], [6, 5], [1], [7, 3], [2, 1, 3], [9]];
const prod = (s: number[]): number => s.reduce((a, b) => a * b, 1);
const arrayOf = (dt: DT, v: ArrayLike<number>): FloatArray => (dt === 'float32' ? Float32Array.from(v) : Float64Array.from(v));

interface PSpec {
  name: string;
  shape: number[];
  dtype: DT;
  init: number[];
}
/** Gradients of one accepted step, for the replay: values per parameter (undefined = no gradient). */
type GradValues = Record<string, number[] | undefined>;

let tmpDir: string | undefined;
/** A scratch folder of this child (removed when it exits). */
export function scratchDir(): string {
  if (!tmpDir) {
    tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kradagrad-fuzz-'));
    const d = tmpDir;
    process.on('exit', () => fs.rmSync(d, { recursive: true, force: true }));
  }
  return tmpDir;
}

/** Steps skipped under onNonFinite 'skip' (BaseOptimizer.skippedSteps; not on the Optimizer interface). */
const skippedOf = (o: Optimizer): number => (o as unknown as { skippedSteps: number }).skippedSteps;

function construct(ctx: Ctx, kind: Kind, params: unknown, opts: unknown): Optimizer {
  const C = (ctx.k as unknown as Record<Kind, new (p: unknown, o: unknown) => Optimizer>)[kind];
  return new C(params, opts);
}

function randomParams(r: Rng): PSpec[] {
  const n = r.int(1, 3);
  const names = ['w', 'b', 'c'].slice(0, n);
  return names.map((name) => {
    const shape = r.pick(SHAPES);
    return { name, shape, dtype: r.bool(0.6) ? 'float32' : 'float64', init: r.floats(prod(shape)).map((x) => x / 2) };
  });
}

/** Parameters for a constructor: host arrays (sometimes SharedArrayBuffer-backed) or tensors. */
function buildParams(ctx: Ctx, specs: PSpec[], device: boolean, sharedData: boolean): { params: Record<string, unknown>; read: () => string; arrays: () => FloatArray[] } {
  const params: Record<string, unknown> = {};
  const live: (FloatArray | Tensor)[] = [];
  for (const s of specs) {
    if (device) {
      const t = ctx.B.fromArray(arrayOf(s.dtype, s.init), s.shape);
      ctx.defer(() => t.dispose());
      params[s.name] = t;
      live.push(t);
    } else {
      const data = sharedData ? shared(s.dtype, s.init) : arrayOf(s.dtype, s.init);
      params[s.name] = { data, shape: s.shape };
      live.push(data);
    }
  }
  const arrays = () => live.map((x) => (x instanceof ctx.k.Tensor ? x.read() : x));
  return { params, read: () => arrays().map((a) => bytesOf(a)).join('|'), arrays };
}

function randomOptions(r: Rng, kind: Kind, B: unknown): Record<string, unknown> {
  const o: Record<string, unknown> = { backend: r.bool() ? B : 'cpu' };
  if (r.bool(0.3)) o.momentum = r.pick([0.5, 0.9]);
  if (o.momentum && r.bool()) o.nesterov = true;
  if (r.bool(0.3)) o.weightDecay = r.pick([1e-3, 1e-2]);
  if (o.weightDecay && r.bool()) o.weightDecayMode = 'decoupled';
  if (r.bool(0.4)) o.onNonFinite = 'skip';
  if (r.bool(0.3)) o.missingGradient = 'skip';
  if (kind === 'Adam') {
    if (r.bool()) o.beta1 = 0.8;
    if (r.bool()) o.beta2 = 0.99;
    return o;
  }
  if (kind === 'Sgd') return o;
  o.blockSize = r.pick([2, 3, 4, 8]);
  o.rootFrequency = r.pick([1, 2, 3]);
  if (r.bool(0.3)) o.statisticsFrequency = 2;
  if (r.bool(0.3)) o.startStep = r.pick([2, 3]);
  if (r.bool(0.4)) o.statisticsDtype = 'float64';
  if (r.bool(0.4)) o.grafting = r.pick(['none', 'sgd', 'adagrad', 'adam']);
  if (r.bool(0.3)) o.asyncRoots = r.pick([true, { maxStaleness: 0 }, { maxStaleness: 2 }]);
  if (r.bool(0.3)) o.mergeDims = false;
  if (r.bool(0.3)) o.epsilon = r.pick([1e-3, 1e-4]);
  if (kind !== 'Shampoo' && r.bool(0.2)) o.rootMethod = 'newton';
  if (kind === 'Shampoo' && r.bool(0.3)) o.beta2 = 0.9;
  if (kind === 'KradagradStar') {
    if (r.bool(0.3)) o.normalization = 'reference';
    if (r.bool(0.3)) o.damping = ((o.epsilon as number) ?? 1e-6) / 2;
  }
  if (kind === 'Kradagrad' && r.bool(0.3)) o.damping = false;
  return o;
}

// ---- checkpoints as bytes ---------------------------------------------------------------

/** A checkpoint without what legitimately differs after a skipped step (skip count, checksum). */
export function normalizedState(buf: Buffer): string {
  const n = Number(buf.readBigUInt64LE(0));
  const h = JSON.parse(buf.toString('utf8', 8, 8 + n));
  delete h.__metadata__.checksum;
  delete h.__metadata__.skipped;
  return JSON.stringify(h) + '#' + buf.subarray(8 + n).toString('base64');
}
/** Every value of every tensor of a checkpoint is finite. */
export function stateFinite(buf: Buffer): string | undefined {
  const n = Number(buf.readBigUInt64LE(0));
  const h = JSON.parse(buf.toString('utf8', 8, 8 + n)) as Record<string, { dtype: string; data_offsets: number[] }>;
  for (const [name, e] of Object.entries(h)) {
    if (name === '__metadata__') continue;
    const [b, end] = e.data_offsets;
    const bytes = Uint8Array.from(buf.subarray(8 + n + b, 8 + n + end));
    const a = e.dtype === 'F32' ? new Float32Array(bytes.buffer) : new Float64Array(bytes.buffer);
    if (!allFinite(a)) return `state tensor '${name}' is not finite`;
  }
  return undefined;
}
/** Replaces the checkpoint's header (keeping its data) and seals it with a valid checksum. */
function withHeader(ctx: Ctx, buf: Buffer, edit: (h: Record<string, Record<string, unknown>>) => void): Buffer {
  const n = Number(buf.readBigUInt64LE(0));
  const h = JSON.parse(buf.toString('utf8', 8, 8 + n));
  edit(h);
  h.__metadata__.checksum = 'crc32c:00000000';
  const { __metadata__, ...rest } = h;
  const json = Buffer.from(JSON.stringify({ __metadata__, ...rest }));
  const len = Math.ceil((8 + json.length) / 8) * 8 - 8;
  const out = Buffer.alloc(8 + len + (buf.length - 8 - n), 0x20);
  out.writeBigUInt64LE(BigInt(len), 0);
  json.copy(out, 8);
  buf.copy(out, 8 + len, 8 + n);
  return sealCheckpoint(out, checksumOf(out, ctx.B.addon.crc32c));
}
/** The checkpoint with its first tensor's first value set to `v`, resealed. */
function withValue(ctx: Ctx, buf: Buffer, v: number): Buffer | undefined {
  const n = Number(buf.readBigUInt64LE(0));
  const h = JSON.parse(buf.toString('utf8', 8, 8 + n)) as Record<string, { dtype: string; data_offsets: number[] }>;
  const e = Object.entries(h).find(([k]) => k !== '__metadata__');
  if (!e) return undefined;
  const out = Buffer.from(buf);
  const at = 8 + n + e[1].data_offsets[0];
  if (e[1].dtype === 'F32') out.writeFloatLE(v, at);
  else out.writeDoubleLE(v, at);
  return sealCheckpoint(out, checksumOf(out, ctx.B.addon.crc32c));
}

// ---- sessions -----------------------------------------------------------------------------

interface Session {
  ctx: Ctx;
  kind: Kind;
  specs: PSpec[];
  opts: Record<string, unknown>;
  device: boolean;
  opt: Optimizer;
  read: () => string;
  arrays: () => FloatArray[];
  /** The learning rate the schedule returns now (sessions with a schedule function). */
  lr: { now: unknown; fn: boolean };
  applied: { grads: GradValues; lr: number }[];
  /** The parameters as given to the constructor. */
  paramValues: unknown[];
  /** Set once the optimizer can no longer be compared (disposed, parameters detached). */
  over?: 'disposed' | 'broken';
  /** An extreme input was accepted: the session ends after it (later steps may overflow legitimately). */
  tainted?: boolean;
}

const BASE_LR: Record<Kind, number> = { KradagradStar: 0.01, Kradagrad: 0.01, Shampoo: 0.01, Adam: 0.01, Sgd: 0.05 };

function gradValues(s: Session, all = true): GradValues {
  const { r } = s.ctx;
  const g: GradValues = {};
  for (const p of s.specs) g[p.name] = !all && s.opts.missingGradient === 'skip' && r.bool(0.2) ? undefined : r.floats(prod(p.shape));
  return g;
}
/** Gradients for a call: typed arrays (sometimes shared) or tensors; missing ones left out or null/undefined. */
function gradArgs(s: Session, g: GradValues): Record<string, unknown> {
  const { r, B } = s.ctx;
  const out: Record<string, unknown> = {};
  for (const p of s.specs) {
    const v = g[p.name];
    if (v === undefined) {
      const how = r.int(0, 2);
      if (how === 1) out[p.name] = undefined;
      if (how === 2) out[p.name] = null;
      continue;
    }
    const kind = r.int(0, 5);
    if (kind === 0) {
      const t = B.fromArray(arrayOf(p.dtype, v), r.bool() ? p.shape : [v.length]);
      s.ctx.defer(() => t.dispose());
      out[p.name] = t;
    } else if (kind === 1) out[p.name] = shared(p.dtype, v);
    else out[p.name] = arrayOf(p.dtype, v);
  }
  return out;
}

function watchOf(s: Session): () => string {
  return () => `${s.opt.stepCount}#${s.over === 'broken' ? '' : s.read()}#${normalizedState(s.opt.saveState())}`;
}

/** After an accepted step: parameters and state finite. */
function finiteAfter(s: Session): string | undefined {
  if (s.over !== 'broken' && !s.arrays().every((a) => allFinite(a))) return 'an accepted step left non-finite parameters';
  return stateFinite(s.opt.saveState());
}

/** A valid control step (step or stepAsync); must be accepted. */
async function control(s: Session): Promise<boolean> {
  const g = gradValues(s, false);
  const lr = BASE_LR[s.kind];
  s.lr.now = lr;
  const args = gradArgs(s, g);
  const useAsync = s.ctx.r.bool();
  try {
    if (useAsync) await s.opt.stepAsync(args as never);
    else s.opt.step(args as never);
  } catch (e) {
    s.ctx.fail(`a valid control step (${useAsync ? 'stepAsync' : 'step'}) was rejected: ${errText(e)}`);
    return false;
  }
  s.applied.push({ grads: g, lr });
  const f = finiteAfter(s);
  if (f) s.ctx.fail(`after a control step: ${f}`);
  return true;
}

type BadInput = (s: Session) => InputSpec | undefined;

const stepCall = (s: Session, grads: unknown, useAsync = s.ctx.r.bool()) => () => (useAsync ? s.opt.stepAsync(grads as never) : s.opt.step(grads as never));

/** A bad step: rejected (or skipped under onNonFinite 'skip') with the state unchanged. */
function badStep(s: Session, what: string, grads: unknown, codes: string[], nonFinite = false): InputSpec {
  const skippedBefore = skippedOf(s.opt);
  return {
    what: `${s.kind} step: ${what}`,
    expect: 'reject',
    codes,
    watch: watchOf(s),
    run: stepCall(s, grads),
    skipped: nonFinite && s.opts.onNonFinite === 'skip' ? () => skippedOf(s.opt) === skippedBefore + 1 : undefined,
  };
}

const BAD_INPUTS: [number, BadInput][] = [
  [3, (s) => {
    const v = s.ctx.r.pick([null, undefined, 42, 'grads', [], true, Symbol('g'), () => ({}), new Float32Array(3), 10n] as unknown[]);
    return badStep(s, `gradients ${show(v)}`, v, ['INVALID_ARGUMENT']);
  }],
  [2, (s) => badStep(s, 'an unknown gradient name', { ...gradArgs(s, gradValues(s)), [`${s.specs[0].name}_x`]: new Float32Array(1) }, ['INVALID_ARGUMENT'])],
  [2, (s) => {
    if (s.opts.missingGradient === 'skip') return undefined;
    const g = gradArgs(s, gradValues(s));
    const p = s.ctx.r.pick(s.specs).name;
    const how = s.ctx.r.int(0, 2);
    if (how === 0) delete g[p];
    else g[p] = how === 1 ? undefined : null;
    return badStep(s, `gradient of '${p}' missing (${['absent', 'undefined', 'null'][how]})`, g, ['INVALID_ARGUMENT']);
  }],
  [4, (s) => {
    const { r, B } = s.ctx;
    const g = gradArgs(s, gradValues(s));
    const p = r.pick(s.specs);
    const n = prod(p.shape);
    const otherDt: DT = p.dtype === 'float32' ? 'float64' : 'float32';
    const forged = () => {
      const t = B.fromArray(arrayOf(p.dtype, new Array(n).fill(0)), [n]);
      s.ctx.defer(() => t.dispose());
      return t;
    };
    const bad: [string, () => unknown, string[]][] = [
      [`${otherDt} array`, () => arrayOf(otherDt, new Array(n).fill(0)), ['DTYPE_MISMATCH']],
      [`${n + 1} elements`, () => arrayOf(p.dtype, new Array(n + 1).fill(0)), ['SHAPE_MISMATCH']],
      ['0 elements', () => arrayOf(p.dtype, []), ['SHAPE_MISMATCH']],
      ['a detached array', () => detached(arrayOf(p.dtype, new Array(n).fill(0))), ['SHAPE_MISMATCH']],
      ['a shared array of the wrong length', () => shared(p.dtype, new Array(n + 2).fill(0)), ['SHAPE_MISMATCH']],
      ['an Int32Array', () => new Int32Array(n), ['INVALID_ARGUMENT']],
      ['a Uint8Array', () => new Uint8Array(n * 4), ['INVALID_ARGUMENT']],
      ['a DataView', () => new DataView(new ArrayBuffer(n * 4)), ['INVALID_ARGUMENT']],
      ['a number array', () => new Array(n).fill(0), ['INVALID_ARGUMENT']],
      [`junk`, () => r.pick([0, 'g', {}, true, Symbol('g'), 10n, new Map()] as unknown[]), ['INVALID_ARGUMENT']],
      [
        'a disposed tensor',
        () => {
          const t = forged();
          t.dispose();
          return t;
        },
        ['DISPOSED'],
      ],
      [`a ${otherDt} tensor`, () => {
        const t = B.fromArray(arrayOf(otherDt, new Array(n).fill(0)), [n]);
        s.ctx.defer(() => t.dispose());
        return t;
      }, ['DTYPE_MISMATCH']],
      [`a tensor of ${n + 1} elements`, () => {
        const t = B.fromArray(arrayOf(p.dtype, new Array(n + 1).fill(0)), [n + 1]);
        s.ctx.defer(() => t.dispose());
        return t;
      }, ['SHAPE_MISMATCH']],
      ['Object.create(Tensor.prototype)', () => Object.create(s.ctx.k.Tensor.prototype), ['INVALID_HANDLE']],
      ['a plain object copying a tensor', () => {
        const t = forged();
        return { native: t.native, backend: t.backend, shape: t.shape, dtype: t.dtype, batch: 1, size: n };
      }, ['INVALID_ARGUMENT']],
    ];
    const [what, make, codes] = r.pick(bad);
    g[p.name] = make();
    return badStep(s, `gradient of '${p.name}': ${what}`, g, codes);
  }],
  [4, (s) => {
    const { r, B } = s.ctx;
    const g = gradValues(s);
    const p = r.pick(s.specs);
    const v = g[p.name]!;
    v[r.int(0, v.length - 1)] = r.pick([NaN, Infinity, -Infinity]);
    const args = gradArgs(s, g);
    if (r.bool(0.3)) {
      const t = B.fromArray(arrayOf(p.dtype, v), [v.length]);
      s.ctx.defer(() => t.dispose());
      args[p.name] = t;
    }
    return badStep(s, `NaN/Inf in the gradient of '${p.name}'`, args, ['NONFINITE'], true);
  }],
  [2, (s) => {
    if (!s.lr.fn) return undefined;
    const v = s.ctx.r.pick([NaN, -1, -1e-300, Infinity, -Infinity, 'x', undefined, null, {}, [0.1], 10n, true] as unknown[]);
    s.lr.now = v;
    return { ...badStep(s, `the learning-rate schedule returns ${show(v)}`, gradArgs(s, gradValues(s)), ['INVALID_OPTION']) };
  }],
  [2, (s) => {
    // BUSY: a call while a valid stepAsync is in flight; the step itself must complete.
    const { r } = s.ctx;
    const g = gradValues(s, false);
    const lr = BASE_LR[s.kind];
    s.lr.now = lr;
    const file = path.join(scratchDir(), `busy-${s.ctx.caseIndex}.krad`);
    const calls: [string, () => unknown][] = [
      ['step', () => s.opt.step(gradArgs(s, gradValues(s)) as never)],
      ['stepAsync', () => s.opt.stepAsync(gradArgs(s, gradValues(s)) as never)],
      ['saveState', () => s.opt.saveState()],
      ['loadState', () => s.opt.loadState(Buffer.alloc(16))],
      ['saveStateFile', () => s.opt.saveStateFile(file)],
      ['loadStateFile', () => s.opt.loadStateFile(file)],
      ['saveStateFileAsync', () => s.opt.saveStateFileAsync(file)],
      ['loadStateFileAsync', () => s.opt.loadStateFileAsync(file)],
      ['dispose', () => s.opt.dispose()],
    ];
    const [name, call] = r.pick(calls);
    let flight: Promise<void> | undefined;
    return {
      what: `${s.kind}: ${name}() while a stepAsync is in flight`,
      expect: 'reject',
      codes: ['BUSY'],
      run: () => {
        flight = s.opt.stepAsync(gradArgs(s, g) as never);
        flight.catch(() => undefined);
        return call();
      },
      // The in-flight step is a control: optimSession awaits it and records it.
      busy: { flight: () => flight, grads: g, lr },
    } as InputSpec & { busy: { flight: () => Promise<void> | undefined; grads: GradValues; lr: number } };
  }],
  [3, (s) => {
    const { r } = s.ctx;
    const own = s.opt.saveState();
    const other = otherState(s);
    const flip = Buffer.from(own);
    flip[r.int(0, flip.length - 1)] ^= 1 << r.int(0, 7);
    const bufs: [string, () => unknown][] = [
      ['random bytes', () => Buffer.from(Array.from({ length: r.int(0, 600) }, () => r.int(0, 255)))],
      ['the own state truncated', () => own.subarray(0, r.int(0, own.length - 1))],
      ['the own state with one bit flipped', () => flip],
      ['the own state as a Uint8Array', () => new Uint8Array(own)],
      ['an empty Buffer', () => Buffer.alloc(0)],
      ['junk', () => r.pick([null, undefined, 42, 'state', {}, [], new Float64Array(4), true, Symbol('s')] as unknown[])],
      ['another optimizer’s state', () => other],
      ['the own state with NaN in a tensor (resealed)', () => withValue(s.ctx, own, NaN) ?? Buffer.alloc(3)],
      ['the own state with Infinity in a tensor (resealed)', () => withValue(s.ctx, own, -Infinity) ?? Buffer.alloc(3)],
      ['the own state with step "-1" (resealed)', () => withHeader(s.ctx, own, (h) => (h.__metadata__.step = '-1'))],
      ['the own state with step 2^60 (resealed)', () => withHeader(s.ctx, own, (h) => (h.__metadata__.step = '1152921504606846976'))],
      ['the own state with another kind (resealed)', () => withHeader(s.ctx, own, (h) => (h.__metadata__.kind = s.kind === 'Sgd' ? 'adam' : 'sgd'))],
      ['the own state with params "[]" (resealed)', () => withHeader(s.ctx, own, (h) => (h.__metadata__.params = '[]'))],
      ['the own state with an unknown counter (resealed)', () => withHeader(s.ctx, own, (h) => (h.__metadata__.counters = JSON.stringify({ ...JSON.parse(h.__metadata__.counters as string), extra: 1 })))],
      ['the own state with counters junk (resealed)', () => withHeader(s.ctx, own, (h) => (h.__metadata__.counters = r.pick(['{"failures":"x"}', '[]', '{"pending":[{"step":1e400}]}', 'null', '{"failures":[[[1e99]]]}'])))],
      ['the own state with a tensor renamed (resealed)', () => withHeader(s.ctx, own, (h) => {
        const k = Object.keys(h).find((x) => x !== '__metadata__');
        if (k) {
          h[`${k}x`] = h[k];
          delete h[k];
        } else h.__metadata__.format = 'x';
      })],
      ['the own state with a tensor shape changed (resealed)', () => withHeader(s.ctx, own, (h) => {
        const k = Object.keys(h).find((x) => x !== '__metadata__');
        if (k) (h[k] as { shape: number[] }).shape = [2 ** 53, 0];
        else h.__metadata__.version = '3';
      })],
    ];
    const [what, make] = r.pick(bufs);
    const buf = make();
    return { what: `${s.kind} loadState: ${what}`, expect: 'reject', codes: ['STATE_FORMAT'], watch: watchOf(s), run: () => s.opt.loadState(buf as Buffer) };
  }],
  [1, (s) => {
    // The own state in a SharedArrayBuffer-backed Buffer: valid, and a no-op.
    const own = s.opt.saveState();
    const sab = new SharedArrayBuffer(own.length);
    const buf = Buffer.from(sab);
    own.copy(buf);
    const before = watchOf(s)();
    return {
      what: `${s.kind} loadState: the own state in a shared Buffer`,
      expect: 'either',
      watch: watchOf(s),
      run: () => s.opt.loadState(buf),
      afterAccept: () => (watchOf(s)() === before ? undefined : 'loading the own state changed the state'),
    };
  }],
  [3, (s) => {
    const { r } = s.ctx;
    const dir = scratchDir();
    const garbage = path.join(dir, `garbage-${s.ctx.caseIndex}.krad`);
    fs.writeFileSync(garbage, Buffer.from('not a checkpoint at all'));
    const otherFile = path.join(dir, `other-${s.ctx.caseIndex}.krad`);
    fs.writeFileSync(otherFile, otherState(s));
    const fileInDir = path.join(dir, `plain-${s.ctx.caseIndex}`);
    fs.writeFileSync(fileInDir, 'x');
    const paths: [string, unknown, string[]][] = [
      ['an empty path', '', ['INVALID_ARGUMENT']],
      ['junk', r.pick([null, undefined, 42, {}, [], true, Symbol('p'), Buffer.from('/tmp/x'), new URL('file:///tmp/x')] as unknown[]), ['INVALID_ARGUMENT', 'IO_ERROR']],
      ['a folder', dir, ['IO_ERROR']],
      ['a missing file', path.join(dir, 'no', 'such', 'file.krad'), ['IO_ERROR']],
      ['a path with a NUL byte', path.join(dir, 'a\0b.krad'), ['IO_ERROR', 'INVALID_ARGUMENT']],
      ['a name of 300 characters', path.join(dir, 'n'.repeat(300)), ['IO_ERROR']],
      ['a path through a file', path.join(fileInDir, 'x.krad'), ['IO_ERROR']],
      ['a file that is no checkpoint', garbage, ['STATE_FORMAT']],
      ['another optimizer’s checkpoint', otherFile, ['STATE_FORMAT']],
      ['/proc/self/mem', '/proc/self/mem', ['IO_ERROR', 'STATE_FORMAT']],
    ];
    const [what, p, codes] = r.pick(paths);
    const save = r.bool();
    const useAsync = r.bool();
    if (save && (p === garbage || p === otherFile || p === '/proc/self/mem')) return undefined; // writable: a valid save
    const name = `${save ? 'saveStateFile' : 'loadStateFile'}${useAsync ? 'Async' : ''}`;
    return {
      what: `${s.kind} ${name}: ${what}`,
      expect: 'reject',
      codes,
      watch: () => `${watchOf(s)()}#${fs.readdirSync(dir).filter((f) => f.includes('.tmp-')).join(',')}`,
      run: () => (s.opt as unknown as Record<string, (p: unknown) => unknown>)[name](p),
    };
  }],
  [1, (s) => {
    // Extreme values that may overflow: rejected as NONFINITE, or accepted with finite results (then the session ends).
    const { r } = s.ctx;
    const g = gradValues(s);
    const big = r.bool();
    if (big) {
      const p = r.pick(s.specs);
      g[p.name] = g[p.name]!.map((x) => x * (p.dtype === 'float32' ? 1e30 : 1e200));
    }
    const lr = big ? BASE_LR[s.kind] : r.pick([1e39, 1e300, 1.7e308]);
    if (!big && !s.lr.fn) return undefined;
    s.lr.now = lr;
    const skippedBefore = skippedOf(s.opt);
    return {
      what: `${s.kind} step: ${big ? 'huge gradient values' : `learning rate ${lr}`}`,
      expect: 'either',
      codes: ['NONFINITE', 'NONFINITE_FACTOR'],
      watch: watchOf(s),
      run: stepCall(s, gradArgs(s, g)),
      skipped: s.opts.onNonFinite === 'skip' ? () => skippedOf(s.opt) === skippedBefore + 1 : undefined,
      afterAccept: () => {
        s.applied.push({ grads: g, lr });
        s.tainted = true;
        return finiteAfter(s);
      },
    };
  }],
];

/** Terminal bad inputs: the optimizer (or a parameter) is unusable afterwards. */
const TERMINAL: BadInput[] = [
  (s) => {
    // A host parameter's array detached while a stepAsync is in flight: the step cannot
    // write its result back, so it must be rejected with nothing changed.
    if (s.device || s.arrays()[0].buffer instanceof SharedArrayBuffer) return undefined;
    const watch = () => `${s.opt.stepCount}#${normalizedState(s.opt.saveState())}`;
    return {
      what: `${s.kind} stepAsync: parameter '${s.specs[0].name}' detached while the step is in flight`,
      expect: 'reject',
      codes: ['SHAPE_MISMATCH'],
      watch,
      run: async () => {
        const p = s.opt.stepAsync(gradArgs(s, gradValues(s)) as never);
        // Before the step is recorded, or after (while its job runs), at random.
        for (let i = s.ctx.r.int(0, 8); i > 0; i--) await Promise.resolve();
        const arrays = s.arrays();
        detached(arrays[0]);
        s.over = 'broken';
        return p;
      },
    };
  },
  (s) => {
    s.opt.dispose();
    s.over = 'disposed';
    const call = s.ctx.r.pick(['step', 'stepAsync', 'saveState', 'loadState', 'stateBytes'] as const);
    return {
      what: `${s.kind}: ${call}() after dispose()`,
      expect: 'reject',
      codes: ['DISPOSED'],
      watch: () => s.read(),
      run: () => {
        if (call === 'step' || call === 'stepAsync') return s.opt[call](gradArgs(s, gradValues(s)) as never);
        if (call === 'loadState') return s.opt.loadState(Buffer.alloc(8));
        return s.opt[call]();
      },
      afterAccept: () => (call === 'stateBytes' ? undefined : 'accepted after dispose()'),
    };
  },
  (s) => {
    // A host parameter's array detached by the caller: SHAPE_MISMATCH. A device parameter's
    // tensor disposed by the caller: the optimizer holds its own view of the storage, so a
    // step may go on (either outcome is fine; nothing may crash).
    if (s.device) (s.paramValues[0] as Tensor).dispose();
    else if (s.arrays()[0].buffer instanceof SharedArrayBuffer) return undefined; // a shared buffer cannot be detached
    else detached(s.arrays()[0]);
    s.over = 'broken';
    return {
      what: `${s.kind} step: parameter '${s.specs[0].name}' ${s.device ? 'disposed' : 'detached'} by the caller`,
      expect: s.device ? 'either' : 'reject',
      codes: s.device ? ['DISPOSED'] : ['SHAPE_MISMATCH'],
      watch: () => `${s.opt.stepCount}#${normalizedState(s.opt.saveState())}`,
      run: stepCall(s, gradArgs(s, gradValues(s))),
    };
  },
];

function otherState(s: Session): Buffer {
  const { k, B } = s.ctx;
  const o = s.kind === 'Sgd' ? new k.Adam({ q: { data: new Float32Array(3), shape: [3] } }, { backend: B }) : new k.Sgd({ [s.specs[0].name]: { data: new Float32Array(2), shape: [2] } }, { backend: B, momentum: 0.5 });
  const buf = o.saveState();
  o.dispose();
  return buf;
}

export async function optimSession(ctx: Ctx): Promise<void> {
  const { r } = ctx;
  const kind = r.pick(KINDS);
  const specs = randomParams(r);
  const device = r.bool(0.3);
  const opts = randomOptions(r, kind, ctx.B);
  const lr = { now: BASE_LR[kind] as unknown, fn: r.bool(0.75) };
  if (lr.fn) opts.lr = () => lr.now;
  else opts.lr = BASE_LR[kind];
  const built = buildParams(ctx, specs, device, r.bool(0.2));
  let opt: Optimizer;
  try {
    opt = construct(ctx, kind, built.params, opts);
  } catch (e) {
    ctx.fail(`valid options were rejected: ${kind} ${show(opts)}: ${errText(e)}`);
    return;
  }
  const s: Session = { ctx, kind, specs, opts, device, opt, read: built.read, arrays: built.arrays, lr, applied: [], paramValues: Object.values(built.params) };
  ctx.defer(() => {
    if (s.over !== 'disposed') s.opt.dispose();
  });
  const rounds = r.int(2, 5);
  for (let i = 0; i < rounds && !s.over && !s.tainted; i++) {
    if (r.bool(0.6) && !(await control(s))) return;
    let spec: InputSpec | undefined;
    const terminal = i === rounds - 1 && r.bool(0.15);
    for (let tries = 0; !spec && tries < 10; tries++) {
      spec = terminal ? r.pick(TERMINAL)(s) : pickWeighted(r, BAD_INPUTS)(s);
    }
    if (!spec) continue;
    const busy = (spec as { busy?: { flight: () => Promise<void> | undefined; grads: GradValues; lr: number } }).busy;
    await ctx.input(spec);
    s.lr.now = BASE_LR[kind];
    if (busy) {
      try {
        await busy.flight();
        s.applied.push({ grads: busy.grads, lr: busy.lr });
      } catch (e) {
        ctx.fail(`the valid stepAsync in flight during a BUSY call was rejected: ${errText(e)}`);
        return;
      }
    }
  }
  if (!s.over && !s.tainted && r.bool(0.5)) await control(s);
  await replay(s);
}

function pickWeighted<T>(r: Rng, xs: [number, T][]): T {
  const total = xs.reduce((a, [w]) => a + w, 0);
  let u = r.next() * total;
  for (const [w, x] of xs) {
    if ((u -= w) < 0) return x;
  }
  return xs[xs.length - 1][1];
}

/** A fresh optimizer takes only the accepted steps: parameters and state must be identical. */
async function replay(s: Session): Promise<void> {
  const { ctx } = s;
  const built = buildParams(ctx, s.specs, s.device, false);
  const opts = { ...s.opts, lr: s.lr.fn ? (t: number) => s.applied[t - 1]?.lr ?? NaN : s.opts.lr };
  const fresh = construct(ctx, s.kind, built.params, opts);
  try {
    for (const a of s.applied) {
      const g: Record<string, unknown> = {};
      for (const p of s.specs) if (a.grads[p.name] !== undefined) g[p.name] = arrayOf(p.dtype, a.grads[p.name]!);
      fresh.step(g as never);
    }
    if (s.over !== 'broken') {
      const mine = s.read();
      if (mine !== built.read()) ctx.fail(`${s.kind}: the parameters differ from a fresh optimizer given only the ${s.applied.length} accepted steps`);
    }
    if (!s.over) {
      if (s.opt.stepCount !== fresh.stepCount) ctx.fail(`${s.kind}: step count ${s.opt.stepCount}, a fresh replay ${fresh.stepCount}`);
      if (normalizedState(s.opt.saveState()) !== normalizedState(fresh.saveState())) {
        ctx.fail(`${s.kind}: the state differs from a fresh optimizer given only the ${s.applied.length} accepted steps`);
      }
    }
  } catch (e) {
    ctx.fail(`${s.kind}: the replay of the accepted steps failed: ${errText(e)}`);
  } finally {
    fresh.dispose();
  }
}

// ---- constructors ---------------------------------------------------------------------------

const OPTION_JUNK: Record<string, unknown[]> = {
  num: [NaN, Infinity, -Infinity, '0.1', null, {}, [], true, 10n, Symbol('o')],
  nonneg: [-1, -1e-300],
  unit: [1, 1.5, -0.1],
  int: [0.5, -1, 2 ** 53 + 2, NaN, '2', null, 1e300],
  bool: [1, 0, 'true', null, {}, 'false'],
  enum: ['bogus', 1, null, {}, '', 'SGD'],
};
const KEYS: Record<string, [string, unknown[]][]> = {
  base: [
    ['lr', [...OPTION_JUNK.num.filter((v) => typeof v !== 'function'), -1, -1e-300]],
    ['momentum', [...OPTION_JUNK.num, ...OPTION_JUNK.nonneg, 1, 1.5]],
    ['nesterov', OPTION_JUNK.bool],
    ['weightDecay', [...OPTION_JUNK.num, ...OPTION_JUNK.nonneg]],
    ['weightDecayMode', OPTION_JUNK.enum],
    ['backend', ['tpu', 42, {}, null, 'CPU', '']],
    ['onNonFinite', OPTION_JUNK.enum],
    ['missingGradient', OPTION_JUNK.enum],
  ],
  adam: [
    ['beta1', [...OPTION_JUNK.num, ...OPTION_JUNK.nonneg, ...OPTION_JUNK.unit]],
    ['beta2', [...OPTION_JUNK.num, ...OPTION_JUNK.nonneg, ...OPTION_JUNK.unit]],
    ['eps', [...OPTION_JUNK.num, 0, -1]],
  ],
  pre: [
    ['epsilon', [...OPTION_JUNK.num, ...OPTION_JUNK.nonneg]],
    ['beta2', [...OPTION_JUNK.num, 0, -0.5, 1.5]],
    ['blockSize', OPTION_JUNK.int],
    ['mergeDims', OPTION_JUNK.bool],
    ['grafting', OPTION_JUNK.enum],
    ['graftEpsilon', [...OPTION_JUNK.num, ...OPTION_JUNK.nonneg]],
    ['graftBeta1', [...OPTION_JUNK.num, ...OPTION_JUNK.unit]],
    ['graftBeta2', [...OPTION_JUNK.num, ...OPTION_JUNK.unit]],
    ['statisticsFrequency', OPTION_JUNK.int],
    ['rootFrequency', OPTION_JUNK.int],
    ['startStep', [0.5, -1, NaN, '1', null]],
    ['statisticsDtype', [...OPTION_JUNK.enum, 'float16']],
    ['rootMethod', ['qr', 1, null, {}, { method: 'newton', maxIterations: 0 }, { method: 'newton', tolerance: 2 }, { method: 'eigh', x: 1 }, { method: 'newton', retryFloat64: 'yes' }, []]],
    ['maxRootFailures', OPTION_JUNK.int],
    ['asyncRoots', [1, 'yes', null, { maxStaleness: -1 }, { maxStaleness: 0.5 }, { other: 1 }, []]],
  ],
  KradagradStar: [
    ['normalization', OPTION_JUNK.enum],
    ['damping', [...OPTION_JUNK.num, -1]],
  ],
  Kradagrad: [['damping', OPTION_JUNK.bool]],
  Shampoo: [['eigenvalueFloor', [...OPTION_JUNK.num, 0, -1]]],
};

export async function constructorCase(ctx: Ctx): Promise<void> {
  const { r, B, k } = ctx;
  const kind = r.pick(KINDS);
  const specs = randomParams(r);
  const device = r.bool(0.3);
  const built = buildParams(ctx, specs, device, false);
  const opts = randomOptions(r, kind, B);
  let params: unknown = built.params;
  let options: unknown = opts;
  let what: string;
  let codes: string[];
  let expect: 'reject' | 'either' = 'reject';
  const p0 = specs[0];
  if (r.bool(0.55)) {
    // One bad option (or a bad options object).
    codes = ['INVALID_OPTION'];
    const keys = [...KEYS.base, ...(kind === 'Adam' ? KEYS.adam : kind === 'Sgd' ? [] : [...KEYS.pre, ...KEYS[kind]])];
    const pick = r.int(0, 9);
    if (pick === 0) {
      options = r.pick([null, 42, 'opts', [], true, Symbol('o'), () => ({}), 10n] as unknown[]);
      what = `options ${show(options)}`;
    } else if (pick === 1) {
      options = { ...opts, [`${r.pick(keys)[0]}s`]: 1 };
      what = 'an unknown option key';
    } else if (pick === 2 && kind === 'KradagradStar') {
      const eps = r.pick([1e-6, 1e-3, 1]);
      options = { ...opts, epsilon: eps, damping: eps * r.pick([1, 1.5, 1e10]) };
      what = `damping >= epsilon (${eps})`;
    } else if (pick === 2 && kind === 'Kradagrad') {
      options = { ...opts, epsilon: r.pick([1, 2, 1e10]), damping: true };
      what = 'epsilon >= 1 with damping';
    } else if (pick === 2 && kind === 'Shampoo') {
      options = { ...opts, epsilon: 0, eigenvalueFloor: undefined };
      what = 'epsilon 0 without an eigenvalue floor';
    } else if (pick === 3 && kind === 'KradagradStar') {
      const eps = r.pick([1e-39, 1e-30, 1e-25, 1e-20, 5e-17]);
      options = { ...opts, statisticsDtype: 'float32', epsilon: eps, damping: 0 };
      what = `float32 statistics with epsilon ${eps} (L H L = H / eps^2 overflows)`;
    } else {
      const [key, values] = r.pick(keys);
      const v = r.pick(values);
      options = { ...opts, [key]: v };
      what = `option ${key} ${show(v)}`;
    }
  } else {
    const p = r.int(0, 12);
    const n = prod(p0.shape);
    const set = (v: unknown) => ({ ...built.params, [p0.name]: v });
    codes = ['INVALID_ARGUMENT', 'SHAPE_MISMATCH', 'DTYPE_MISMATCH', 'DISPOSED', 'INVALID_HANDLE'];
    if (p === 0) {
      params = r.pick([null, undefined, 42, 'params', [], true, Symbol('p'), new Float32Array(3)] as unknown[]);
      what = `params ${show(params)}`;
    } else if (p === 1) {
      params = {};
      what = 'no parameters';
    } else if (p === 2) {
      params = set(junk(r));
      what = 'a junk parameter';
    } else if (p === 3) {
      params = set({ data: r.pick([new Int32Array(n), new Array(n).fill(0), null, 'data', new Uint8Array(n)] as unknown[]), shape: p0.shape });
      what = 'parameter data of the wrong type';
    } else if (p === 4) {
      const shape = r.pick([[n + 1], [0], [-1], [1.5], [NaN], ['2'], [2 ** 53], [1024, 2 ** 18 + 1, 2 ** 36 - 2 ** 18 + 1], new Array(65).fill(1), 'x', null, {}] as unknown[]);
      params = set({ data: arrayOf(p0.dtype, p0.init), shape });
      what = `parameter shape ${show(shape)}`;
    } else if (p === 5) {
      params = set({ data: detached(arrayOf(p0.dtype, p0.init)), shape: p0.shape });
      what = 'detached parameter data';
    } else if (p === 6) {
      const t = B.fromArray(arrayOf(p0.dtype, p0.init), p0.shape);
      t.dispose();
      params = set(t);
      what = 'a disposed parameter tensor';
    } else if (p === 7) {
      const t = B.fromArray(arrayOf(p0.dtype, [...p0.init, ...p0.init]), p0.shape, 2);
      ctx.defer(() => t.dispose());
      params = set(t);
      what = 'a parameter tensor of batch 2';
    } else if (p === 8) {
      params = set(Object.create(k.Tensor.prototype));
      what = 'Object.create(Tensor.prototype) as a parameter';
    } else if (p === 9) {
      params = set({ data: arrayOf(p0.dtype, p0.init), shape: p0.shape, extra: 1 });
      what = 'a parameter with an extra key';
      expect = 'either';
    } else if (p === 10) {
      params = set({ data: shared(p0.dtype, p0.init), shape: p0.shape });
      what = 'shared parameter data';
      expect = 'either';
    } else if (p === 11) {
      params = Object.assign(Object.create(null), built.params);
      what = 'a null-prototype params object';
      expect = 'either';
    } else {
      params = new Map(Object.entries(built.params));
      what = 'a Map of parameters';
    }
  }
  await ctx.input({
    what: `new ${kind}: ${what}`,
    expect,
    codes: expect === 'either' ? undefined : codes,
    watch: built.read,
    run: () => {
      const o = construct(ctx, kind, params, options);
      ctx.defer(() => o.dispose());
      return o;
    },
    afterAccept: (o) => {
      const opt = o as Optimizer;
      const g: Record<string, FloatArray> = {};
      for (const s of specs) g[s.name] = arrayOf(s.dtype, r.floats(prod(s.shape)));
      try {
        opt.step(g as never);
      } catch (e) {
        return `accepted, but a valid step then failed: ${errText(e)}`;
      }
      return opt.paramNames.length === specs.length ? undefined : `accepted with parameters ${opt.paramNames.join(',')}`;
    },
  });
}

// ---- extreme but valid options --------------------------------------------------------------

export async function extremeCase(ctx: Ctx): Promise<void> {
  const { r, B } = ctx;
  const kind = r.pick(KINDS);
  const specs = randomParams(r);
  const built = buildParams(ctx, specs, r.bool(0.3), false);
  const opts = randomOptions(r, kind, B);
  const ex: Record<string, unknown> = {};
  const put = (key: string, values: unknown[]) => {
    if (r.bool(0.5)) ex[key] = r.pick(values);
  };
  put('lr', [1e-30, 1e10, 1e30, 3e38, 1e300]);
  put('weightDecay', [1e10, 1e30, 1e300]);
  if (kind === 'Adam') {
    put('eps', [1e-300, 1e-45, 1e300]);
    put('beta1', [0, 0.999999]);
    put('beta2', [0, 0.999999]);
  } else if (kind !== 'Sgd') {
    put('epsilon', kind === 'Kradagrad' ? [1e-300, 0.999999, 0] : [1e-300, 1e-45, 1e-16, 1e-8, 1e10, 1e30, 1e300]);
    put('beta2', [1e-300, 1e-10, 0.999999]);
    put('graftEpsilon', [0, 1e-300, 1e300]);
    put('momentum', [0.999999]);
    if (kind === 'Shampoo') put('eigenvalueFloor', [1e-300, 1e-45, 1e300]);
    if (kind === 'KradagradStar') {
      const eps = (ex.epsilon as number) ?? (opts.epsilon as number) ?? 1e-6;
      put('damping', [eps * 0.999999, eps / 2, eps * 1e-300]);
    }
  }
  const options = { ...opts, ...ex };
  if (ex.epsilon === 0 && kind === 'Kradagrad') options.damping = true;
  let opt: Optimizer | undefined;
  await ctx.input({
    what: `new ${kind} with extreme options ${JSON.stringify(ex)} (${show(opts)})`,
    expect: 'either',
    codes: ['INVALID_OPTION'],
    watch: built.read,
    run: () => (opt = construct(ctx, kind, built.params, options)),
  });
  if (!opt) return;
  const o = opt;
  ctx.defer(() => o.dispose());
  const scale = r.pick([1e-30, 1e-10, 1, 1e10, 1e30]);
  for (let i = 0; i < r.int(1, 4); i++) {
    const g: Record<string, FloatArray> = {};
    for (const p of specs) g[p.name] = arrayOf(p.dtype, r.floats(prod(p.shape)).map((x) => x * scale));
    const skipped = skippedOf(o);
    const res = await ctx.input({
      what: `${kind} extreme ${JSON.stringify(ex)} ${JSON.stringify({ ...opts, backend: undefined })} step ${i + 1} (gradients x ${scale})`,
      expect: 'either',
      codes: ['NONFINITE', 'NONFINITE_FACTOR'],
      watch: () => `${o.stepCount}#${built.read()}#${normalizedState(o.saveState())}`,
      run: stepCall({ ctx, opt: o } as Session, g),
      skipped: options.onNonFinite === 'skip' ? () => skippedOf(o) === skipped + 1 : undefined,
      afterAccept: () => (built.arrays().every((a) => allFinite(a)) ? stateFinite(o.saveState()) : 'an accepted step left non-finite parameters'),
    });
    if (!res.accepted && !(res.error === undefined)) break;
  }
}
