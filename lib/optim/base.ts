/**
 * What every optimizer shares: the parameter registry (host arrays or tensor handles),
 * gradient validation, the step skeleton, the final update (weight decay, momentum,
 * Nesterov) and checkpoints.
 *
 * A step is a transaction (step_tx.ts): the arguments are checked and the learning rate
 * computed first; then the whole step is recorded as one native job that computes into
 * spare buffers, with guards for what only the computation can tell (non-finite
 * gradients, statistics or updates; roots failing too often); the job runs on the main
 * thread (`step`) or off it (`stepAsync`), and the spare buffers are swapped in only when
 * it ran to the end. A rejected step therefore changes nothing.
 */
import { KradagradError, describe } from '../errors';
import { record, type NativeJob, type NativeJobResult } from '../exec';
import * as ops from '../ops';
import { Backend, DType, FloatArray, Tensor, getBackend } from '../tensor';
import {
  type CheckpointMeta,
  type DecodedCheckpoint,
  type StateTensor,
  checksumOf,
  checksumOfAsync,
  decodeCheckpoint,
  encodeCheckpoint,
  isV1,
  sealCheckpoint,
} from './checkpoint';
import { readFile, readFileAsync, writeFileAtomic, writeFileAtomicAsync } from './files';
import { ResolvedBase, lrAt } from './options';
import { StepTx, type Guard } from './step_tx';
import type { Grads, NamedParams, Optimizer } from './types';

/** One registered parameter. Flat tensors ([size]) unless noted. */
export interface ParamSlot {
  name: string;
  shape: number[];
  dtype: DType;
  size: number;
  /** Host mode: the user's array, updated in place after each step. */
  host?: FloatArray;
  /** The parameter: host mode, a mirror uploaded from `host` at each step; device mode, a flat view of the user's tensor. */
  w: Tensor;
  /** Where a step writes the new values: `w` itself in host mode (it is re-uploaded anyway); a spare in device mode, copied into `w` at the very end. */
  wOut: Tensor;
  /** The staged gradient of this step. */
  g: Tensor;
  /** Momentum buffer and its spare (when momentum > 0). */
  m?: Tensor;
  mNext?: Tensor;
}

const isFloatArray = (v: unknown): v is FloatArray => v instanceof Float32Array || v instanceof Float64Array;
const dtypeOf = (a: FloatArray): DType => (a instanceof Float32Array ? 'float32' : 'float64');
const MAX_FAILURE_COUNT = 0x7fffffff;

export abstract class BaseOptimizer implements Optimizer {
  abstract readonly kind: string;
  readonly backend: Backend;
  readonly paramNames: readonly string[];
  protected readonly slots: ParamSlot[];
  protected readonly base: ResolvedBase;
  protected t = 0;
  /** Steps skipped because of non-finite values (onNonFinite: 'skip'). */
  skippedSteps = 0;
  private disposed = false;
  /** A stepAsync in flight: every other call throws BUSY. */
  private inFlight = false;

  protected constructor(params: NamedParams, base: ResolvedBase, where: string) {
    this.base = base;
    this.backend = base.backend instanceof Backend ? base.backend : getBackend(base.backend ?? 'auto');
    if (params === null || typeof params !== 'object' || Array.isArray(params)) {
      throw new KradagradError(`Expected an object of named parameters for ${where} but received ${describe(params)}`, 'INVALID_ARGUMENT');
    }
    const names = Object.keys(params);
    if (names.length === 0) throw new KradagradError(`${where}: no parameters given`, 'INVALID_ARGUMENT');
    this.paramNames = names;
    this.slots = names.map((name) => this.register(name, params[name], where));
    if (base.momentum > 0) {
      for (const s of this.slots) {
        s.m = this.backend.tensor(s.dtype, [s.size]);
        s.mNext = this.backend.tensor(s.dtype, [s.size]);
      }
    }
  }

  private register(name: string, p: unknown, where: string): ParamSlot {
    const B = this.backend;
    if (p instanceof Tensor) {
      if (p.disposed) throw new KradagradError(`${where}: parameter '${name}' has been disposed`, 'DISPOSED');
      if (p.backend.addon !== B.addon || p.backend.name !== B.name) {
        throw new KradagradError(`${where}: parameter '${name}' lives on ${p.backend.name} but the optimizer on ${B.name}`, 'BACKEND_MISMATCH');
      }
      if (p.batch !== 1) throw new KradagradError(`${where}: parameter '${name}' must have batch 1, got ${p.batch}`, 'SHAPE_MISMATCH');
      const size = p.itemSize;
      return { name, shape: p.shape, dtype: p.dtype, size, w: p.reshape([size]), wOut: B.tensor(p.dtype, [size]), g: B.tensor(p.dtype, [size]) };
    }
    const hp = p as { data?: unknown; shape?: unknown } | null;
    if (!hp || typeof hp !== 'object' || !isFloatArray(hp.data) || !Array.isArray(hp.shape)) {
      throw new KradagradError(
        `${where}: parameter '${name}' must be a Tensor or {data: Float32Array | Float64Array, shape: number[]} but received ${describe(p)}`,
        'INVALID_ARGUMENT',
      );
    }
    const shape = hp.shape as unknown[];
    if (shape.some((d) => !Number.isSafeInteger(d) || (d as number) < 1) || shape.length > 64) {
      throw new KradagradError(`${where}: parameter '${name}' has an invalid shape ${JSON.stringify(shape)}`, 'INVALID_ARGUMENT');
    }
    const size = (shape as number[]).reduce((a, b) => a * b, 1);
    if (hp.data.length !== size) {
      throw new KradagradError(`${where}: parameter '${name}' has shape [${shape}] (${size} elements) but its data has ${hp.data.length}`, 'SHAPE_MISMATCH');
    }
    const dtype = dtypeOf(hp.data);
    const w = B.fromArray(hp.data, [size]);
    return { name, shape: (shape as number[]).slice(), dtype, size, host: hp.data, w, wOut: w, g: B.tensor(dtype, [size]) };
  }

  get stepCount(): number {
    return this.t;
  }

  /** DISPOSED / BUSY checks of every public call. */
  protected enter(op: string): void {
    if (this.disposed) throw new KradagradError(`${this.kind}: the optimizer has been disposed (${op})`, 'DISPOSED');
    if (this.inFlight) {
      throw new KradagradError(`${this.kind}: ${op}() while a stepAsync() is in flight; await it first`, 'BUSY');
    }
  }

  // ---- the step -------------------------------------------------------------------------

  /** Checks the gradients and the learning rate of the next step; changes nothing. */
  private begin(grads: Grads): StepTx {
    if (grads === null || typeof grads !== 'object' || Array.isArray(grads)) {
      throw new KradagradError(`Expected gradients as an object keyed by parameter name but received ${describe(grads)}`, 'INVALID_ARGUMENT');
    }
    for (const k of Object.keys(grads)) {
      if (!this.paramNames.includes(k)) {
        throw new KradagradError(`Gradient for unknown parameter '${k}'; parameters are ${this.paramNames.join(', ')}`, 'INVALID_ARGUMENT');
      }
    }
    const active = this.slots.map((s) => {
      const g = (grads as Record<string, unknown>)[s.name];
      if (g === undefined || g === null) {
        if (this.base.missingGradient === 'skip') return false;
        throw new KradagradError(
          `Missing gradient for parameter '${s.name}' (missingGradient: 'skip' lets a parameter without a gradient sit the step out)`,
          'INVALID_ARGUMENT',
        );
      }
      if (g instanceof Tensor) {
        if (g.disposed) throw new KradagradError(`Gradient of '${s.name}' has been disposed`, 'DISPOSED');
        if (g.backend.addon !== this.backend.addon || g.backend.name !== this.backend.name) {
          throw new KradagradError(`Gradient of '${s.name}' lives on another backend`, 'BACKEND_MISMATCH');
        }
        if (g.dtype !== s.dtype) throw new KradagradError(`Gradient of '${s.name}' is ${g.dtype} but the parameter is ${s.dtype}`, 'DTYPE_MISMATCH');
        if (g.size !== s.size) throw new KradagradError(`Gradient of '${s.name}' has ${g.size} elements, expected ${s.size} (shape [${s.shape}])`, 'SHAPE_MISMATCH');
      } else if (isFloatArray(g)) {
        if (dtypeOf(g) !== s.dtype) {
          throw new KradagradError(`Gradient of '${s.name}' is a ${g.constructor.name} but the parameter is ${s.dtype}`, 'DTYPE_MISMATCH');
        }
        if (g.length !== s.size) throw new KradagradError(`Gradient of '${s.name}' has ${g.length} elements, expected ${s.size} (shape [${s.shape}])`, 'SHAPE_MISMATCH');
      } else {
        throw new KradagradError(`Gradient of '${s.name}' must be a Float32Array, Float64Array or Tensor but received ${describe(g)}`, 'INVALID_ARGUMENT');
      }
      return true;
    });
    for (const s of this.slots) {
      if (s.host && s.host.length !== s.size) {
        throw new KradagradError(`The data array of parameter '${s.name}' now has ${s.host.length} elements, expected ${s.size} (detached or replaced?)`, 'SHAPE_MISMATCH');
      }
      if (!s.host && s.w.disposed) throw new KradagradError(`Parameter '${s.name}' has been disposed`, 'DISPOSED');
    }
    const t = this.t + 1;
    return new StepTx(t, lrAt(this.base.lr, t), active, grads as Record<string, unknown>);
  }

  /** Records staging: gradients into slot.g, host parameters into slot.w, and the gradient guard. */
  private stage(tx: StepTx): void {
    const src: Tensor[] = [];
    const dst: Tensor[] = [];
    for (const i of tx.activeSlots) {
      const s = this.slots[i];
      const g = tx.grads[s.name];
      if (g instanceof Tensor) {
        src.push(g);
        dst.push(s.g);
      } else {
        s.g.write(g as FloatArray); // copied now: the caller may reuse its array
      }
      if (s.host) s.w.write(s.host);
    }
    ops.copyMany(src, dst);
    const active = tx.activeSlots.map((i) => this.slots[i]);
    if (active.length) {
      const tag = tx.guard({ kind: 'gradient', params: active.map((s) => s.name) });
      this.backend.addon.guardFinite(active.map((s) => s.g.native), tag);
    }
  }

  /** Records the optimizer's math for step tx.t (reads slot.g of the active slots, writes slot.wOut and spares, registers commits). */
  protected abstract recordUpdate(tx: StepTx): void;

  private recordStep(tx: StepTx): NativeJob {
    return record(this.backend, () => {
      this.stage(tx);
      this.recordUpdate(tx);
      // Device mode: the new values reach the user's tensors only after every guard passed.
      const out = tx.activeSlots.map((i) => this.slots[i]).filter((s) => s.wOut !== s.w);
      ops.copyMany(
        out.map((s) => s.wOut),
        out.map((s) => s.w),
      );
    });
  }

  /** Work a step must wait for before it is recorded, without blocking (stepAsync). */
  protected async beforeRecordAsync(_tx: StepTx): Promise<void> {}
  /** What runs after a step committed (e.g. background root refreshes it launches). */
  protected afterCommit(_tx: StepTx): void {}

  private complete(tx: StepTx, r: NativeJobResult): void {
    if (r.aborted) {
      const err = this.abortError(tx.guardOf(r.tag), r);
      if (err.code === 'NONFINITE' && this.base.onNonFinite === 'skip') {
        this.skippedSteps++;
        return;
      }
      throw err;
    }
    // The new values go back into the host arrays after the commit; an array detached or
    // replaced while a stepAsync was in flight cannot take them, so that is checked first
    // (rejecting after the commit would leave a rejected step that changed the state).
    for (const i of tx.activeSlots) {
      const s = this.slots[i];
      if (s.host && s.host.length !== s.size) {
        throw new KradagradError(
          `The data array of parameter '${s.name}' now has ${s.host.length} elements, expected ${s.size} (detached while the step was in flight?); the step was rejected and the state is unchanged`,
          'SHAPE_MISMATCH',
        );
      }
    }
    tx.commit(r);
    this.t = tx.t;
    for (const i of tx.activeSlots) {
      const s = this.slots[i];
      if (s.host) s.w.read(s.host);
    }
    this.afterCommit(tx);
  }

  private abortError(g: Guard | undefined, r: NativeJobResult): KradagradError {
    const unchanged = 'the step was rejected and the state is unchanged';
    switch (g?.kind) {
      case 'gradient':
        return new KradagradError(`Gradient of '${g.params[r.index]}' contains NaN or Inf; ${unchanged}`, 'NONFINITE', { param: g.params[r.index] });
      case 'update':
        return new KradagradError(
          `The update of '${g.params[r.index]}' is not finite (the learning rate or weight decay is too large for these values?); ${unchanged}`,
          'NONFINITE',
          { param: g.params[r.index], stage: 'update' },
        );
      case 'statistics':
        return new KradagradError(
          `The statistics of ${g.factors[r.index]} overflowed to Inf/NaN (a gradient too large for ${'statistics'} in this dtype?); ${unchanged}`,
          'NONFINITE',
          { factor: g.factors[r.index], stage: 'statistics' },
        );
      case 'roots': {
        const d = g.describe(r.index, r);
        return new KradagradError(`${d.message}; ${unchanged}`, 'NONFINITE_FACTOR', d.details);
      }
      default:
        return new KradagradError(`A step guard (${r.code}) stopped the step; ${unchanged}`, (r.code as 'NONFINITE') ?? 'INTERNAL');
    }
  }

  step(grads: Grads): void {
    this.enter('step');
    const tx = this.begin(grads);
    this.beforeRecordSync(tx);
    this.complete(tx, this.recordStep(tx).run());
  }

  async stepAsync(grads: Grads): Promise<void> {
    this.enter('stepAsync');
    this.inFlight = true;
    try {
      const tx = this.begin(grads);
      await this.beforeRecordAsync(tx);
      const r = await this.recordStep(tx).runAsync();
      this.complete(tx, r);
    } finally {
      this.inFlight = false;
    }
  }

  /** step(): the synchronous counterpart of beforeRecordAsync (may block). */
  protected beforeRecordSync(_tx: StepTx): void {}

  protected lr(t: number): number {
    return lrAt(this.base.lr, t);
  }

  /**
   * Records the final update of the given slots from their directions `ds` (flat, parameter
   * dtype), fused and out of place (Backend::update_many): l2: d += wd W; m' = mu m + d;
   * u = nesterov ? d + mu m' : m' (u = d without momentum); decoupled: W -= lr wd W; W' = W - lr u.
   * `us` replaces u (the pre-start update of the Kronecker optimizers, where m still
   * accumulates d). The new values go to the spares, swapped in on commit; the update is the
   * guard of the new parameter values.
   */
  protected recordUpdateStage(tx: StepTx, slots: ParamSlot[], ds: Tensor[], us?: Tensor[]): void {
    if (slots.length === 0) return;
    const { momentum, nesterov, weightDecay, weightDecayMode } = this.base;
    const mom = momentum > 0;
    const n = (xs: Tensor[]) => xs.map((x) => x.native);
    const tag = tx.guard({ kind: 'update', params: slots.map((s) => s.name) });
    this.backend.addon.updateMany(
      n(ds),
      mom ? n(slots.map((s) => s.m!)) : null,
      n(slots.map((s) => s.w)),
      us ? n(us) : null,
      mom ? n(slots.map((s) => s.mNext!)) : null,
      n(slots.map((s) => s.wOut)),
      {
        lr: tx.lr,
        momentum,
        weightDecay,
        nesterov,
        l2: weightDecay > 0 && weightDecayMode === 'l2',
        decoupled: weightDecay > 0 && weightDecayMode === 'decoupled',
      },
      tag,
    );
    if (mom) {
      tx.onCommit(() => {
        for (const s of slots) [s.m, s.mNext] = [s.mNext, s.m];
      });
    }
  }

  // ---- checkpoints ----------------------------------------------------------------------

  /** Named state tensors (format 2 names). Getters never allocate: every buffer exists from the constructor on. */
  protected stateTensors(): StateTensor[] {
    const out: StateTensor[] = [];
    for (const s of this.slots) if (s.m) out.push({ name: `${s.name}/momentum`, tensor: s.m, shape: s.shape });
    return out;
  }
  /** Counters beyond the step count (JSON). */
  protected counters(): Record<string, unknown> {
    return {};
  }
  /** Validates counters of a checkpoint; returns what applies them (run only when everything is valid). This optimizer has none. */
  protected restoreCounters(c: Record<string, unknown>): () => void {
    const extra = Object.keys(c);
    if (extra.length) {
      throw new KradagradError(`Checkpoint does not fit this optimizer: '${this.kind}' has no counters, the checkpoint has ${extra.map((k) => `'${k}'`).join(', ')}`, 'STATE_FORMAT');
    }
    return () => undefined;
  }
  /**
   * The tensors a checkpoint with counters `c` must hold and what applies its counters. The
   * default: this optimizer's state tensors. (The Kronecker optimizers add the snapshots of
   * background refreshes the checkpoint records.)
   */
  protected loadPlan(c: Record<string, unknown>, _step: number): { tensors: StateTensor[]; commit: () => void; abandon: () => void } {
    return { tensors: this.stateTensors(), commit: this.restoreCounters(c), abandon: () => undefined };
  }
  /** Format 1 name of each format 2 state tensor (and the item within a batched format 1 tensor). */
  protected v1Names(): Map<string, { v1: string; item?: number }> {
    const m = new Map<string, { v1: string; item?: number }>();
    for (const s of this.slots) if (s.m) m.set(`${s.name}/momentum`, { v1: `param/${s.name}/momentum` });
    return m;
  }
  /** Format 1 counters (its `scalars`) in format 2 form. */
  protected v1Counters(scalars: Record<string, unknown>): Record<string, unknown> {
    return scalars;
  }
  /** The resolved options, as recorded in checkpoints (functions and backends by name). */
  protected optionsRecord(): Record<string, unknown> {
    return JSON.parse(
      JSON.stringify(this.base, (_k, v) => (typeof v === 'function' ? 'function' : v instanceof Backend ? v.name : v)),
    ) as Record<string, unknown>;
  }

  stateBytes(): number {
    if (this.disposed) throw new KradagradError(`${this.kind}: the optimizer has been disposed (stateBytes)`, 'DISPOSED');
    const seen = new Set<Tensor>();
    let bytes = 0;
    for (const e of this.stateTensors()) {
      if (e.item === undefined) bytes += e.tensor.bytes;
      else if (!seen.has(e.tensor)) {
        seen.add(e.tensor);
        bytes += e.tensor.bytes;
      }
    }
    return bytes;
  }

  private meta(): CheckpointMeta {
    return {
      kind: this.kind,
      step: this.t,
      skipped: this.skippedSteps,
      params: this.slots.map((s) => ({ name: s.name, shape: s.shape, dtype: s.dtype })),
      options: this.optionsRecord(),
      counters: this.counters(),
    };
  }

  saveState(): Buffer {
    this.enter('saveState');
    const buf = encodeCheckpoint(this.meta(), this.stateTensors());
    return sealCheckpoint(buf, checksumOf(buf, this.backend.addon.crc32c));
  }

  private async saveStateAsync(): Promise<Buffer> {
    const buf = encodeCheckpoint(this.meta(), this.stateTensors());
    const a = this.backend.addon;
    return sealCheckpoint(buf, await checksumOfAsync(buf, a.crc32c, a.crc32cAsync));
  }

  loadState(buf: Buffer): void {
    this.enter('loadState');
    if (!Buffer.isBuffer(buf)) throw new KradagradError(`loadState expects a Buffer but received ${describe(buf)}`, 'STATE_FORMAT');
    const crc = isV1(buf) ? undefined : checksumOf(buf, this.backend.addon.crc32c);
    this.apply(decodeCheckpoint(buf, crc));
  }

  private async loadStateAsync(buf: Buffer): Promise<void> {
    const a = this.backend.addon;
    const crc = isV1(buf) ? undefined : await checksumOfAsync(buf, a.crc32c, a.crc32cAsync);
    this.enter('loadStateFileAsync');
    this.apply(decodeCheckpoint(buf, crc));
  }

  /** Checks a decoded checkpoint against this optimizer in full, then writes it (all or nothing). */
  private apply(d: DecodedCheckpoint): void {
    const bad = (msg: string): never => {
      throw new KradagradError(`Checkpoint does not fit this optimizer: ${msg}`, 'STATE_FORMAT');
    };
    if (d.meta.kind !== this.kind) bad(`it is for '${d.meta.kind}' but this optimizer is '${this.kind}'`);
    const mine = this.slots.map((s) => ({ name: s.name, shape: s.shape, dtype: s.dtype }));
    if (JSON.stringify(d.meta.params) !== JSON.stringify(mine)) bad(`its parameters ${JSON.stringify(d.meta.params)} differ from ${JSON.stringify(mine)}`);
    const plan = this.loadPlan(d.version === 1 ? this.v1Counters(d.meta.counters) : d.meta.counters, d.meta.step);
    try {
      this.applyPlan(d, plan.tensors);
    } catch (e) {
      plan.abandon();
      throw e;
    }
    plan.commit();
    this.t = d.meta.step;
    this.skippedSteps = d.meta.skipped;
  }

  private applyPlan(d: DecodedCheckpoint, entries: StateTensor[]): void {
    const bad = (msg: string): never => {
      throw new KradagradError(`Checkpoint does not fit this optimizer: ${msg}`, 'STATE_FORMAT');
    };
    const names = d.version === 1 ? this.v1Names() : undefined;
    const sources = entries.map((e) => {
      if (!names) {
        const src = d.tensors.get(e.name) ?? bad(`tensor '${e.name}' is missing (options differ?)`);
        if (src.dtype !== e.tensor.dtype || JSON.stringify(src.shape) !== JSON.stringify(e.shape)) {
          bad(`tensor '${e.name}' is ${src.dtype} [${src.shape}], expected ${e.tensor.dtype} [${e.shape}]`);
        }
        return src.data;
      }
      const v1 = names.get(e.name) ?? bad(`no format 1 name for '${e.name}'`);
      const src = d.tensors.get(v1.v1) ?? bad(`tensor '${v1.v1}' is missing (options differ?)`);
      const n = e.item === undefined ? e.tensor.size : e.tensor.itemSize;
      const start = (v1.item ?? 0) * n;
      if (src.dtype !== e.tensor.dtype || src.data.length < start + n || (v1.item === undefined && src.data.length !== n)) {
        bad(`tensor '${v1.v1}' is ${src.dtype}[${src.data.length}], expected ${e.tensor.dtype} with ${n} elements per item`);
      }
      return src.data.subarray(start, start + n);
    });
    // A state that steps produce is always finite (steps that would make it otherwise are
    // rejected): NaN or Inf in a checkpoint means it is damaged.
    sources.forEach((src, i) => {
      for (let j = 0; j < src.length; j++) if (!Number.isFinite(src[j])) bad(`tensor '${entries[i].name}' holds NaN or Inf (element ${j})`);
    });
    const expected = names ? new Set([...names.values()].map((v) => v.v1)) : new Set(entries.map((e) => e.name));
    for (const k of d.tensors.keys()) if (!expected.has(k)) bad(`it holds tensor '${k}' this optimizer does not have (options differ?)`);
    // Everything checked: write. Batched tensors are assembled on the host and written once.
    const whole = new Map<Tensor, FloatArray>();
    entries.forEach((e, i) => {
      if (e.item === undefined) {
        e.tensor.write(sources[i] as FloatArray);
        return;
      }
      let buf = whole.get(e.tensor);
      if (!buf) whole.set(e.tensor, (buf = e.tensor.dtype === 'float32' ? new Float32Array(e.tensor.size) : new Float64Array(e.tensor.size)));
      buf.set(sources[i], e.item * e.tensor.itemSize);
    });
    for (const [t, data] of whole) t.write(data);
  }

  saveStateFile(path: string): void {
    writeFileAtomic(path, this.saveState());
  }
  loadStateFile(path: string): void {
    this.enter('loadStateFile');
    this.loadState(readFile(path));
  }
  async saveStateFileAsync(path: string): Promise<void> {
    this.enter('saveStateFileAsync');
    await writeFileAtomicAsync(path, await this.saveStateAsync());
  }
  async loadStateFileAsync(path: string): Promise<void> {
    this.enter('loadStateFileAsync');
    await this.loadStateAsync(await readFileAsync(path));
  }

  dispose(): void {
    if (this.disposed) return;
    this.enter('dispose');
    this.disposed = true;
    for (const s of this.slots) {
      for (const x of [s.g, s.m, s.mNext]) x?.dispose();
      if (s.wOut !== s.w) s.wOut.dispose();
      if (s.host) s.w.dispose();
    }
    this.disposeState();
  }
  /** Frees the subclass's buffers. */
  protected disposeState(): void {}
}

export { MAX_FAILURE_COUNT };
