/**
 * What every optimizer shares: the parameter registry (host arrays or tensor handles),
 * gradient validation and staging, the step skeleton (validate -> stage -> finiteness ->
 * update -> write back), the final update (weight decay, momentum, Nesterov) and state
 * save/load. Subclasses implement only `update(t)`.
 */
import * as fs from 'fs';
import { KradagradError, describe } from '../errors';
import * as ops from '../ops';
import { Backend, DType, FloatArray, Tensor, getBackend } from '../tensor';
import { ResolvedBase, lrAt } from './options';
import { readState, writeState, type StateEntry } from './state';
import type { Grads, NamedParams, Optimizer } from './types';

/** One registered parameter. Flat tensors ([size]) unless noted. */
export interface ParamSlot {
  name: string;
  shape: number[];
  dtype: DType;
  size: number;
  /** Host mode: the user's array, updated in place after each step. */
  host?: FloatArray;
  /** The parameter (device mode: a flat view of the user's tensor). */
  w: Tensor;
  /** The staged gradient of this step. */
  g: Tensor;
  /** Momentum buffer (allocated when momentum > 0). */
  m?: Tensor;
}

const isFloatArray = (v: unknown): v is FloatArray => v instanceof Float32Array || v instanceof Float64Array;
const dtypeOf = (a: FloatArray): DType => (a instanceof Float32Array ? 'float32' : 'float64');

export abstract class BaseOptimizer implements Optimizer {
  abstract readonly kind: string;
  readonly backend: Backend;
  readonly paramNames: readonly string[];
  protected readonly slots: ParamSlot[];
  protected readonly base: ResolvedBase;
  protected t = 0;
  /** Steps skipped because of non-finite gradients (onNonFinite: 'skip'). */
  skippedSteps = 0;
  private disposed = false;

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
  }

  private register(name: string, p: unknown, where: string): ParamSlot {
    const B = this.backend;
    if (p instanceof Tensor) {
      if (p.backend.addon !== B.addon || p.backend.name !== B.name) {
        throw new KradagradError(`${where}: parameter '${name}' lives on ${p.backend.name} but the optimizer on ${B.name}`, 'BACKEND_MISMATCH');
      }
      if (p.batch !== 1) throw new KradagradError(`${where}: parameter '${name}' must have batch 1, got ${p.batch}`, 'SHAPE_MISMATCH');
      const size = p.itemSize;
      return { name, shape: p.shape, dtype: p.dtype, size, w: p.reshape([size]), g: B.tensor(p.dtype, [size]) };
    }
    const hp = p as { data?: unknown; shape?: unknown } | null;
    if (!hp || typeof hp !== 'object' || !isFloatArray(hp.data) || !Array.isArray(hp.shape)) {
      throw new KradagradError(
        `${where}: parameter '${name}' must be a Tensor or {data: Float32Array | Float64Array, shape: number[]} but received ${describe(p)}`,
        'INVALID_ARGUMENT',
      );
    }
    const shape = hp.shape as number[];
    if (shape.some((d) => !Number.isInteger(d) || d < 1)) {
      throw new KradagradError(`${where}: parameter '${name}' has an invalid shape [${shape}]`, 'INVALID_ARGUMENT');
    }
    const size = shape.reduce((a, b) => a * b, 1);
    if (hp.data.length !== size) {
      throw new KradagradError(`${where}: parameter '${name}' has shape [${shape}] (${size} elements) but its data has ${hp.data.length}`, 'SHAPE_MISMATCH');
    }
    const dtype = dtypeOf(hp.data);
    return { name, shape: shape.slice(), dtype, size, host: hp.data, w: B.fromArray(hp.data, [size]), g: B.tensor(dtype, [size]) };
  }

  get stepCount(): number {
    return this.t;
  }

  /** Validates all gradients before anything changes, then stages them into slot.g. */
  private stage(grads: Grads): boolean {
    if (this.disposed) throw new KradagradError(`${this.kind}: the optimizer has been disposed`, 'DISPOSED');
    if (grads === null || typeof grads !== 'object') {
      throw new KradagradError(`Expected gradients as an object keyed by parameter name but received ${describe(grads)}`, 'INVALID_ARGUMENT');
    }
    for (const k of Object.keys(grads)) {
      if (!this.paramNames.includes(k)) {
        throw new KradagradError(`Gradient for unknown parameter '${k}'; parameters are ${this.paramNames.join(', ')}`, 'INVALID_ARGUMENT');
      }
    }
    for (const s of this.slots) {
      const g = grads[s.name];
      if (g === undefined) throw new KradagradError(`Missing gradient for parameter '${s.name}'`, 'INVALID_ARGUMENT');
      if (g instanceof Tensor) {
        if (g.disposed) throw new KradagradError(`Gradient of '${s.name}' has been disposed`, 'DISPOSED');
        if (g.backend.addon !== this.backend.addon) throw new KradagradError(`Gradient of '${s.name}' lives on another backend`, 'BACKEND_MISMATCH');
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
    }
    const src: Tensor[] = [];
    const dst: Tensor[] = [];
    for (const s of this.slots) {
      const g = grads[s.name];
      if (g instanceof Tensor) {
        src.push(g);
        dst.push(s.g);
      } else {
        s.g.write(g as FloatArray);
      }
    }
    ops.copyMany(src, dst);
    const finite = ops.allFiniteMany(this.slots.map((s) => s.g));
    const bad = this.slots.find((_, i) => !finite[i]);
    if (bad) {
      if (this.base.onNonFinite === 'skip') {
        this.skippedSteps++;
        return false;
      }
      throw new KradagradError(`Gradient of '${bad.name}' contains NaN or Inf; the step was rejected and the state is unchanged`, 'NONFINITE', {
        param: bad.name,
      });
    }
    for (const s of this.slots) if (s.host) s.w.write(s.host);
    return true;
  }

  step(grads: Grads): void {
    if (!this.stage(grads)) return;
    this.t++;
    this.update(this.t);
    this.writeBack();
  }

  async stepAsync(grads: Grads): Promise<void> {
    if (!this.stage(grads)) return;
    this.t++;
    await this.updateAsync(this.t);
    this.writeBack();
  }

  private writeBack(): void {
    for (const s of this.slots) if (s.host) s.w.read(s.host);
  }

  /** The optimizer's math for 1-based step t: read slot.g, update slot.w. */
  protected abstract update(t: number): void;
  /** Async variant (default: the synchronous one). */
  protected async updateAsync(t: number): Promise<void> {
    this.update(t);
  }

  protected lr(t: number): number {
    return lrAt(this.base.lr, t);
  }

  /**
   * The final update of `slots` from their directions `ds` (flat, parameter dtype; may be
   * modified), one multi-tensor call per stage:
   * l2: d += wd W; m = mu m + d; u = nesterov ? d + mu m : m (u = d without momentum);
   * decoupled: W -= lr wd W; W -= lr u.
   */
  protected applyDirections(slots: ParamSlot[], ds: Tensor[], lr: number): void {
    const { momentum, nesterov, weightDecay, weightDecayMode } = this.base;
    const ws = slots.map((s) => s.w);
    if (weightDecay > 0 && weightDecayMode === 'l2') ops.axpbyMany(ws, ds, weightDecay, 1);
    if (weightDecay > 0 && weightDecayMode === 'decoupled') ops.axpbyMany(ws, ws, 0, 1 - lr * weightDecay);
    let us = ds;
    if (momentum > 0) {
      const ms = slots.map((s) => this.momentumOf(s));
      ops.axpbyMany(ds, ms, 1, momentum);
      if (nesterov) ops.axpbyMany(ms, ds, momentum, 1);
      else us = ms;
    }
    ops.axpbyMany(us, ws, -lr, 1);
  }

  protected momentumOf(s: ParamSlot): Tensor {
    if (!s.m) s.m = this.backend.tensor(s.dtype, [s.size]);
    return s.m;
  }

  /** Named state tensors (checkpointed). Subclasses add theirs. */
  protected stateEntries(): StateEntry[] {
    const out: StateEntry[] = [];
    for (const s of this.slots) if (this.base.momentum > 0) out.push({ name: `param/${s.name}/momentum`, tensor: this.momentumOf(s) });
    return out;
  }
  /** Scalars (checkpointed) beyond the step count. */
  protected stateScalars(): Record<string, unknown> {
    return {};
  }
  protected loadScalars(_s: Record<string, unknown>): void {}

  stateBytes(): number {
    return this.stateEntries().reduce((a, e) => a + e.tensor.bytes, 0);
  }

  saveState(): Buffer {
    return writeState({
      kind: this.kind,
      step: this.t,
      skipped: this.skippedSteps,
      params: this.slots.map((s) => ({ name: s.name, shape: s.shape, dtype: s.dtype })),
      scalars: this.stateScalars(),
      entries: this.stateEntries(),
    });
  }

  loadState(buf: Buffer): void {
    const st = readState(buf);
    if (st.kind !== this.kind) throw new KradagradError(`State is for '${st.kind}' but this optimizer is '${this.kind}'`, 'STATE_FORMAT');
    const mine = this.slots.map((s) => ({ name: s.name, shape: s.shape, dtype: s.dtype }));
    if (JSON.stringify(st.params) !== JSON.stringify(mine)) {
      throw new KradagradError(`State parameters ${JSON.stringify(st.params)} do not match this optimizer's ${JSON.stringify(mine)}`, 'STATE_FORMAT');
    }
    const entries = this.stateEntries();
    const byName = new Map(st.tensors.map((e) => [e.name, e]));
    for (const e of entries) {
      const src = byName.get(e.name);
      if (!src) throw new KradagradError(`State lacks tensor '${e.name}'`, 'STATE_FORMAT');
      if (src.dtype !== e.tensor.dtype || src.data.length !== e.tensor.size) {
        throw new KradagradError(`State tensor '${e.name}' is ${src.dtype}[${src.data.length}], expected ${e.tensor.dtype}[${e.tensor.size}]`, 'STATE_FORMAT');
      }
    }
    if (st.tensors.length !== entries.length) {
      throw new KradagradError(`State has ${st.tensors.length} tensors, this optimizer ${entries.length} (options differ?)`, 'STATE_FORMAT');
    }
    for (const e of entries) e.tensor.write(byName.get(e.name)!.data);
    this.t = st.step;
    this.skippedSteps = st.skipped;
    this.loadScalars(st.scalars);
  }

  saveStateFile(path: string): void {
    fs.writeFileSync(path, this.saveState());
  }
  loadStateFile(path: string): void {
    this.loadState(fs.readFileSync(path));
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const e of this.stateEntries()) e.tensor.dispose();
    for (const s of this.slots) {
      s.g.dispose();
      if (s.host) s.w.dispose();
    }
    this.disposeScratch();
  }
  protected disposeScratch(): void {}
}
