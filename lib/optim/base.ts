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
 *
 * With the `distributed` option (data_parallel.ts) a step is two jobs around collectives:
 * the gradients' all-reduce, job 1 (staging and this rank's share: recordLocal), the
 * verdict exchange that decides for every rank, the all-gather of what the ranks computed
 * (exchangeLocal / receiveExchanged), job 2 (recordReplicated, the same on every rank).
 */
import { KradagradError, describe } from '../errors';
import { record, type NativeJob, type NativeJobResult } from '../exec';
import * as ops from '../ops';
import { Backend, DType, FloatArray, Tensor, getBackend } from '../tensor';
import {
  type CheckpointMeta,
  type DecodedCheckpoint,
  type EncodedTensor,
  type StateTensor,
  checksumOf,
  checksumOfAsync,
  decodeCheckpoint,
  encodeCheckpoint,
  encodeEntries,
  isV1,
  readStateTensors,
  sealCheckpoint,
} from './checkpoint';
import { DataParallel, type LocalVerdict, type StepProfile, allGatherBytes, fingerprint } from './data_parallel';
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
  /** Data-parallel mode (the `distributed` option): the gradient buffers and the collective decisions. */
  protected readonly dp?: DataParallel;

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
    if (base.distributed) {
      // NCCL on the GPU when the communicator has it (initNccl) and this optimizer runs on
      // its CUDA backend; otherwise the collectives go through host memory.
      const nccl = base.distributed.ncclFor();
      const device = nccl && nccl.serves(this.backend) ? nccl : undefined;
      this.dp = new DataParallel(base.distributed, this.slots, device);
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
        // (On the NCCL path the averaged gradient already is s.g: nothing to copy.)
        if (g !== s.g) {
          src.push(g);
          dst.push(s.g);
        }
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
      this.recordCopyOut(tx);
    });
  }

  /** Device mode: the new values reach the user's tensors only after every guard passed. */
  private recordCopyOut(tx: StepTx): void {
    const out = tx.activeSlots.map((i) => this.slots[i]).filter((s) => s.wOut !== s.w);
    ops.copyMany(
      out.map((s) => s.wOut),
      out.map((s) => s.w),
    );
  }

  // ---- data-parallel steps (the distributed option) ---------------------------------------

  /** Distributed, job 1 after staging: this rank's share of the step. Default: none (everything is replicated). */
  protected recordLocal(_tx: StepTx): void {}
  /**
   * Distributed, after job 1 committed to go on: what this rank contributes to the
   * all-gather (`send`, read out of job 1's results now) and where every rank's arrive
   * (`recv`, rank order), or null when the step exchanges nothing.
   */
  protected exchangeLocal(_tx: StepTx): { send: FloatArray; recv: FloatArray } | null {
    return null;
  }
  /** Distributed: takes in what the all-gather delivered (before job 2 is recorded). */
  protected receiveExchanged(_tx: StepTx): void {}
  /**
   * Distributed on the GPU (NCCL): the exchange as one group of in-place broadcasts, the
   * same list on every rank: each rank's results (`root` = that rank; on it, the tensor job
   * 1 wrote) into the tensors job 2 reads on the others. Null when the step exchanges
   * nothing. Default: none.
   */
  protected exchangeDevice(_tx: StepTx): { root: number; tensor: Tensor }[] | null {
    return null;
  }

  /**
   * NCCL path, before job 1: every gradient into its staging tensor (slot.g; zeros for
   * parameters without one, and everywhere on a rank whose arguments were rejected, which
   * still takes part), where the all-reduce averages it in place.
   */
  private stageForDevice(tx: StepTx | undefined): void {
    const src: Tensor[] = [];
    const dst: Tensor[] = [];
    this.slots.forEach((s, i) => {
      const g = tx && tx.active[i] ? tx.grads[s.name] : undefined;
      if (g instanceof Tensor) {
        src.push(g);
        dst.push(s.g);
      } else if (g !== undefined) {
        s.g.write(g as FloatArray);
      } else {
        ops.fill(s.g, 0);
      }
    });
    ops.copyMany(src, dst);
  }
  /** Distributed, job 2: the rest of the step, identical on every rank. Default: recordUpdate. */
  protected recordReplicated(tx: StepTx): void {
    this.recordUpdate(tx);
  }

  /** The parameters' values (host arrays, or read back from device tensors), for the replica check. */
  private paramValues(): FloatArray[] {
    return this.slots.map((s) => s.host ?? s.w.read());
  }

  /** CRC-32C of what every rank's optimizer must agree on: kind, parameters, options. */
  private configCrc(): number {
    const cfg = JSON.stringify({ kind: this.kind, params: this.meta().params, options: this.optionsRecord() });
    return this.backend.addon.crc32c(Buffer.from(cfg, 'utf8'));
  }

  /**
   * One data-parallel step (data_parallel.ts has the sequence). Every rank takes part in
   * every collective whatever happened locally, and throws only after the verdict
   * exchange, so a rank's failure never leaves the others waiting.
   */
  private async stepDistributed(dp: DataParallel, grads: Grads): Promise<void> {
    const comm = dp.comm;
    const a = this.backend.addon;
    const t0 = performance.now();
    const prof: StepProfile = { allReduceMs: 0, localMs: 0, localCpuMs: 0, verdictMs: 0, allGatherMs: 0, replicatedMs: 0, totalMs: 0, allReduceBytes: 0, allGatherBytes: 0 };
    if (dp.configCrc < 0) dp.configCrc = this.configCrc();
    const v: LocalVerdict = { status: 'ok', active: null, gradCrc: -1, paramCrc: -1 };
    let tx: StepTx | undefined;
    try {
      tx = this.begin(grads);
      v.active = tx.active.slice();
    } catch (e) {
      v.status = 'invalid';
      v.error = e;
    }
    // (a) One all-reduce of every gradient (per dtype present).
    let staged: Record<string, unknown> | undefined = tx?.grads;
    let crcOf: FloatArray[] | null = null;
    if (!this.base.gradientsAveraged && dp.device) {
      // NCCL: one group of in-place all-reduces of the staging tensors, on the GPU. The
      // averaged gradients are not fingerprinted (that would read them back); the layout,
      // with the optimizer's configuration, is agreed before NCCL runs.
      this.stageForDevice(tx);
      await dp.device.allReduceMany(
        this.slots.map((s) => s.g),
        'mean',
        dp.configCrc,
      );
      prof.allReduceBytes = dp.gradientBytes;
      if (tx) {
        const avg: Record<string, Tensor> = {};
        for (const i of tx.activeSlots) avg[this.slots[i].name] = this.slots[i].g;
        staged = avg;
      }
    } else if (!this.base.gradientsAveraged) {
      dp.pack(this.slots.map((s, i) => (tx && tx.active[i] ? (tx.grads[s.name] as FloatArray | Tensor) : undefined)));
      await dp.average();
      prof.allReduceBytes = dp.gradientBytes;
      if (tx) {
        const avg: Record<string, FloatArray> = {};
        for (const i of tx.activeSlots) avg[this.slots[i].name] = dp.averaged(i);
        staged = avg;
      }
      crcOf = dp.buffers();
    } else if (tx) {
      const gs = tx.activeSlots.map((i) => tx!.grads[this.slots[i].name]);
      // Device tensors given as averaged are not read back just to compare them.
      crcOf = gs.every((g) => !(g instanceof Tensor)) ? (gs as FloatArray[]) : null;
    }
    const t1 = performance.now();
    const cpu1 = process.cpuUsage();
    prof.allReduceMs = t1 - t0;
    // (b) Job 1: staging, the gradient guard, this rank's share. The fingerprints run on the
    // pool meanwhile (never rejecting: a failure leaves the value unknown, -1).
    let r1: NativeJobResult | undefined;
    let stx: StepTx | undefined;
    if (tx && v.status === 'ok') {
      stx = tx.withGrads(staged!);
      const gradCrc = (crcOf ? fingerprint(crcOf, a.crc32c, a.crc32cAsync) : Promise.resolve(-1)).catch(() => -1);
      const paramCrc = (dp.checkParams ? fingerprint(this.paramValues(), a.crc32c, a.crc32cAsync) : Promise.resolve(-1)).catch(() => -1);
      try {
        const tx1 = stx;
        const job = record(this.backend, () => {
          this.stage(tx1);
          this.recordLocal(tx1);
        });
        r1 = await job.runAsync();
        if (r1.aborted) {
          v.status = 'abort';
          v.error = this.abortError(stx.guardOf(r1.tag), r1);
        }
      } catch (e) {
        v.status = 'error';
        v.error = e;
      }
      v.gradCrc = await gradCrc;
      v.paramCrc = await paramCrc;
    }
    const t2 = performance.now();
    const cpu = process.cpuUsage(cpu1);
    prof.localMs = t2 - t1;
    prof.localCpuMs = (cpu.user + cpu.system) / 1000;
    // (c) The verdicts: every rank decides the same from the same records.
    const records = await dp.exchange(v);
    const decision = dp.decide(records, v, this.paramNames, this.base.onNonFinite === 'skip', !!this.base.gradientsAveraged);
    const t3 = performance.now();
    prof.verdictMs = t3 - t2;
    if (decision.kind === 'throw') throw decision.error;
    dp.checkParams = false;
    if (decision.kind === 'skip') {
      this.skippedSteps++;
      return;
    }
    // (d) What the ranks computed, to every rank: on the GPU (NCCL) or through host memory.
    if (dp.device) {
      const entries = this.exchangeDevice(stx!);
      if (entries) {
        await dp.device.broadcastMany(entries, dp.configCrc);
        prof.allGatherBytes = entries.reduce((n, e) => n + (e.root === comm.rank ? e.tensor.size * (e.tensor.dtype === 'float64' ? 8 : 4) : 0), 0);
      }
    } else {
      const x = this.exchangeLocal(stx!);
      if (x) {
        await comm.allGather(x.send, x.recv);
        this.receiveExchanged(stx!);
        prof.allGatherBytes = x.send.byteLength;
      }
    }
    const t4 = performance.now();
    prof.allGatherMs = t4 - t3;
    // (e) Job 2: the same inputs on every rank, so the same bits; its guard (the new
    // values) therefore decides the same everywhere too.
    const tx2 = stx!;
    tx2.job = 1;
    const r2 = await record(this.backend, () => {
      this.recordReplicated(tx2);
      this.recordCopyOut(tx2);
    }).runAsync();
    this.complete(tx2, r2, [r1!, r2]);
    const t5 = performance.now();
    prof.replicatedMs = t5 - t4;
    prof.totalMs = t5 - t0;
    dp.profile = prof;
  }

  /** @internal Phase times of the last data-parallel step on this rank (null before one, or without `distributed`). */
  get distributedProfile(): StepProfile | null {
    return this.dp?.profile ?? null;
  }

  /** Work a step must wait for before it is recorded, without blocking (stepAsync). */
  protected async beforeRecordAsync(_tx: StepTx): Promise<void> {}
  /** What runs after a step committed (e.g. background root refreshes it launches). */
  protected afterCommit(_tx: StepTx): void {}

  private complete(tx: StepTx, r: NativeJobResult, all?: NativeJobResult[]): void {
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
    tx.commit(all ?? r);
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
    if (this.dp) {
      throw new KradagradError(
        `${this.kind}: step() is not available with the distributed option: a step waits for collectives, which must never block the event loop; use await stepAsync(grads)`,
        'UNSUPPORTED',
      );
    }
    const tx = this.begin(grads);
    this.beforeRecordSync(tx);
    this.complete(tx, this.recordStep(tx).run());
  }

  async stepAsync(grads: Grads): Promise<void> {
    this.enter('stepAsync');
    this.inFlight = true;
    try {
      if (this.dp) return await this.stepDistributed(this.dp, grads);
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
  /**
   * The resolved options, as recorded in checkpoints (functions and backends by name). The
   * communicator and gradientsAveraged are how a run is wired, not what its state means:
   * left out, so that a checkpoint is the same whichever world size saved it.
   */
  protected optionsRecord(): Record<string, unknown> {
    return JSON.parse(
      JSON.stringify(this.base, (k, v) =>
        k === 'distributed' || k === 'gradientsAveraged' ? undefined : typeof v === 'function' ? 'function' : v instanceof Backend ? v.name : v,
      ),
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

  // ---- distributed checkpoints: the shards ---------------------------------------------

  /** Distributed: the state tensors only this rank holds (its blocks). Default none: all state is replicated. */
  protected shardTensors(): StateTensor[] {
    return [];
  }
  /**
   * Distributed: the whole state in the order a single process saves it, from this rank's
   * replicated tensors and every rank's shard (`shards[r]`: rank r's shard tensors and
   * counters, decoded), and the merged counters. Default: the replicated state alone.
   */
  protected mergeShards(_shards: DecodedCheckpoint[]): { entries: EncodedTensor[]; counters: Record<string, unknown> } {
    return { entries: readStateTensors(this.stateTensors()), counters: this.counters() };
  }
  /**
   * The names a checkpoint may hold beyond this rank's state tensors (distributed: the
   * other ranks' blocks, which a rank skips when loading). Default none.
   */
  protected foreignStateNames(): ReadonlySet<string> {
    return new Set();
  }

  private async seal(buf: Buffer): Promise<Buffer> {
    const a = this.backend.addon;
    return sealCheckpoint(buf, await checksumOfAsync(buf, a.crc32c, a.crc32cAsync));
  }

  /**
   * Every rank's shard, gathered: each rank encodes its shard as a checkpoint of its own
   * (its blocks and their counters), all ranks all-gather them, and each rank merges them
   * with its replicated state into the whole checkpoint.
   */
  private async gatherState(dp: DataParallel): Promise<Buffer> {
    const a = this.backend.addon;
    const mine = await this.seal(encodeCheckpoint(this.meta(), this.shardTensors()));
    const parts = await allGatherBytes(dp.comm, mine);
    const shards: DecodedCheckpoint[] = [];
    for (const p of parts) {
      const b = Buffer.from(p.buffer, p.byteOffset, p.byteLength);
      shards.push(decodeCheckpoint(b, await checksumOfAsync(b, a.crc32c, a.crc32cAsync)));
    }
    const { entries, counters } = this.mergeShards(shards);
    return this.seal(encodeEntries({ ...this.meta(), counters }, entries));
  }

  /**
   * Runs a collective of this optimizer (BUSY meanwhile) and agrees on its outcome: every
   * rank all-gathers whether its part succeeded; all resolve, or all reject (a failing
   * rank with its own error, the others naming it). `fingerprint` values (e.g. the CRC of
   * a loaded file) must agree too, or all reject with `mismatch`.
   */
  private async agree<T>(
    dp: DataParallel,
    op: string,
    body: () => Promise<{ value?: T; fingerprint?: number }>,
    mismatch?: (r: number) => KradagradError,
  ): Promise<T | undefined> {
    this.enter(op);
    this.inFlight = true;
    try {
      let res: { value?: T; fingerprint?: number } = {};
      let error: unknown;
      try {
        res = await body();
      } catch (e) {
        error = e;
      }
      const e = error as { code?: unknown; message?: unknown } | undefined;
      const mine = JSON.stringify(error ? { ok: false, code: typeof e?.code === 'string' ? e.code : 'INTERNAL', message: String(e?.message ?? error) } : { ok: true, f: res.fingerprint ?? -1 });
      const all = (await allGatherBytes(dp.comm, Buffer.from(mine, 'utf8'))).map((b) => JSON.parse(Buffer.from(b).toString('utf8')) as { ok: boolean; code?: string; message?: string; f?: number });
      const bad = all.findIndex((x) => !x.ok);
      if (bad >= 0) {
        if (bad === dp.comm.rank) throw error;
        throw new KradagradError(`${op} failed on rank ${bad} of ${dp.comm.size}: ${all[bad].message}`, (all[bad].code ?? 'INTERNAL') as 'INTERNAL', { rank: bad });
      }
      const odd = all.findIndex((x) => x.f !== all[0].f);
      if (odd >= 0 && mismatch) throw mismatch(odd);
      return res.value;
    } finally {
      this.inFlight = false;
    }
  }

  saveState(): Buffer {
    this.enter('saveState');
    if (this.dp) {
      throw new KradagradError(
        `${this.kind}: saveState() is not available with the distributed option (the state is spread over the ranks, and gathering it is a collective); use await saveStateAsync() or saveStateFileAsync(path) on every rank`,
        'UNSUPPORTED',
      );
    }
    const buf = encodeCheckpoint(this.meta(), this.stateTensors());
    return sealCheckpoint(buf, checksumOf(buf, this.backend.addon.crc32c));
  }

  async saveStateAsync(): Promise<Buffer> {
    this.enter('saveStateAsync');
    const dp = this.dp;
    if (dp) return (await this.agree(dp, 'saveStateAsync', async () => ({ value: await this.gatherState(dp) })))!;
    return this.seal(encodeCheckpoint(this.meta(), this.stateTensors()));
  }

  loadState(buf: Buffer): void {
    this.enter('loadState');
    if (!Buffer.isBuffer(buf)) throw new KradagradError(`loadState expects a Buffer but received ${describe(buf)}`, 'STATE_FORMAT');
    const crc = isV1(buf) ? undefined : checksumOf(buf, this.backend.addon.crc32c);
    this.prepareApply(decodeCheckpoint(buf, crc)).commit();
  }

  async loadStateAsync(buf: Buffer): Promise<void> {
    this.enter('loadStateAsync');
    await this.loadAsync('loadStateAsync', async () => buf);
  }

  /**
   * The asynchronous loads. Distributed: a collective; each rank validates the checkpoint
   * against its own shard, and all write it only when every rank can, and all were given
   * the same checkpoint (its checksum).
   */
  private async loadAsync(op: string, read: () => Promise<Buffer>): Promise<void> {
    const a = this.backend.addon;
    const check = async (): Promise<{ d: DecodedCheckpoint; crc: number }> => {
      const buf = await read();
      if (!Buffer.isBuffer(buf)) throw new KradagradError(`${op} expects a Buffer but received ${describe(buf)}`, 'STATE_FORMAT');
      const crc = isV1(buf) ? undefined : await checksumOfAsync(buf, a.crc32c, a.crc32cAsync);
      return { d: decodeCheckpoint(buf, crc), crc: crc ?? -1 };
    };
    const dp = this.dp;
    if (!dp) {
      const { d } = await check();
      this.enter(op);
      this.prepareApply(d).commit();
      return;
    }
    let plan: { commit: () => void; abandon: () => void } | undefined;
    try {
      await this.agree(
        dp,
        op,
        async () => {
          const { d, crc } = await check();
          plan = this.prepareApply(d);
          return { fingerprint: crc }; // the same checkpoint on every rank
        },
        (r) => new KradagradError(`${op}: rank 0 and rank ${r} were given different checkpoints; nothing was loaded`, 'STATE_FORMAT', { rank: r }),
      );
    } catch (e) {
      plan?.abandon();
      throw e;
    }
    plan!.commit();
  }

  /**
   * Checks a decoded checkpoint against this optimizer in full and returns what writes it
   * (all or nothing: nothing changes until the returned function runs).
   */
  private prepareApply(d: DecodedCheckpoint): { commit: () => void; abandon: () => void } {
    const bad = (msg: string): never => {
      throw new KradagradError(`Checkpoint does not fit this optimizer: ${msg}`, 'STATE_FORMAT');
    };
    if (d.meta.kind !== this.kind) bad(`it is for '${d.meta.kind}' but this optimizer is '${this.kind}'`);
    const mine = this.slots.map((s) => ({ name: s.name, shape: s.shape, dtype: s.dtype }));
    if (JSON.stringify(d.meta.params) !== JSON.stringify(mine)) bad(`its parameters ${JSON.stringify(d.meta.params)} differ from ${JSON.stringify(mine)}`);
    if (d.version === 1 && this.dp) bad('format 1 checkpoints load into a single-process optimizer only (load it there and save it again: format 2 loads at any world size)');
    const plan = this.loadPlan(d.version === 1 ? this.v1Counters(d.meta.counters) : d.meta.counters, d.meta.step);
    let write: () => void;
    try {
      write = this.checkPlan(d, plan.tensors);
    } catch (e) {
      plan.abandon();
      throw e;
    }
    const commit = (): void => {
      try {
        write();
      } catch (e) {
        plan.abandon();
        throw e;
      }
      plan.commit();
      this.t = d.meta.step;
      this.skippedSteps = d.meta.skipped;
      // A resumed run may come with parameters of its own: the next step compares them.
      if (this.dp) this.dp.checkParams = true;
    };
    return { commit, abandon: plan.abandon };
  }

  /** Checks every tensor the plan needs against the checkpoint; returns what writes them. */
  private checkPlan(d: DecodedCheckpoint, entries: StateTensor[]): () => void {
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
    const expected = names ? new Set([...names.values()].map((v) => v.v1)) : new Set([...entries.map((e) => e.name), ...this.foreignStateNames()]);
    for (const k of d.tensors.keys()) if (!expected.has(k)) bad(`it holds tensor '${k}' this optimizer does not have (options differ?)`);
    // Everything checked: the writes. Batched tensors are assembled on the host and written once.
    return () => {
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
    };
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
    const dp = this.dp;
    if (!dp) {
      await writeFileAtomicAsync(path, await this.saveStateAsync());
      return;
    }
    // Rank 0 writes; every rank resolves (or rejects) once the file is complete.
    await this.agree(dp, 'saveStateFileAsync', async () => {
      const buf = await this.gatherState(dp);
      if (dp.comm.rank === 0) await writeFileAtomicAsync(path, buf);
      return {};
    });
  }
  async loadStateFileAsync(path: string): Promise<void> {
    this.enter('loadStateFileAsync');
    await this.loadAsync('loadStateFileAsync', () => readFileAsync(path));
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
