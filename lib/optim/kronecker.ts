/**
 * The Kronecker-factored optimizers' shared machinery: blocking plan, batched block
 * groups, gathering gradients into blocks and scattering directions back, root refresh
 * with guards (keep the previous root, float64 retry, coded error after repeated
 * failures), grafting, and the update schedule (statistics / root frequency, start step).
 * Subclasses supply the factor statistics and the root exponent.
 */
import { KradagradError } from '../errors';
import * as ops from '../ops';
import type { DType, Tensor } from '../tensor';
import { BaseOptimizer, ParamSlot } from './base';
import { BlockGroup, ParamPlan, groupBlocks, planParam } from './blocking';
import { ResolvedPreconditioner } from './options';
import { newtonRoot } from './roots';
import type { StateEntry } from './state';
import type { NamedParams } from './types';

/** Ridge added to every factor before its eigendecomposition (the reference's 1e-8 I). */
export const ROOT_RIDGE = 1e-8;

/** A batch of same-extent blocks and their factors. */
export interface Group {
  extent: number[];
  k: number;
  batch: number;
  members: BlockGroup['members'];
  /** Per parameter: where its blocks sit in the batch and their offsets. */
  segments: { param: number; first: number; offsets: number[][] }[];
  /** The gradient blocks of this step (compute dtype). */
  G: Tensor;
  /** Ping-pong buffers for mode products. */
  bufA: Tensor;
  bufB: Tensor;
  /** Per dim: statistics (S or L) and root, batch of [n_i, n_i]. */
  stats: Tensor[];
  roots: Tensor[];
  /** Per dim scratch, batch of [n_i, n_i]. */
  scratch: Tensor[][];
  /** Per dim, per item: consecutive root failures. */
  failures: Int32Array[];
  /** An asynchronous root refresh in flight (asyncRoots option). */
  pending?: PendingRoots;
  /** Views for preconditioning G in every dim in the reference's rotating order (made on first use). */
  rotation?: { inp: Tensor; out: Tensor }[];
}

/** A root refresh running off the main thread on snapshots of the statistics. */
interface PendingRoots {
  stats: Tensor[];
  roots: Tensor[];
  info?: Int32Array[];
  error?: unknown;
  done: boolean;
  /** Due refreshes that passed while this one was in flight. */
  missed: number;
  promise: Promise<void>;
}

/** Per-parameter buffers of the Kronecker optimizers. */
interface KSlot {
  plan: ParamPlan;
  /** Gradient in compute dtype, viewed in the transformed shape (aliases slot.g when dtypes match). */
  gT?: Tensor;
  gc: Tensor;
  /** Preconditioned direction in compute dtype (flat) and its transformed view. */
  dc: Tensor;
  dT?: Tensor;
  /** Direction in parameter dtype (aliases dc when dtypes match). */
  d: Tensor;
  /** Graft state. */
  graftAcc?: Tensor;
  graftMom?: Tensor;
  graftDir?: Tensor;
  /** Pre-start momentum of raw gradients (AdaGrad graft, as the reference). */
  rawMom?: Tensor;
}

export abstract class KroneckerOptimizer extends BaseOptimizer {
  protected readonly o: ResolvedPreconditioner;
  protected readonly groups: Group[];
  protected readonly k: KSlot[];
  protected readonly cdt: DType;

  protected constructor(params: NamedParams, o: ResolvedPreconditioner, where: string) {
    super(params, o, where);
    this.o = o;
    this.cdt = o.statisticsDtype;
    const B = this.backend;
    const plans = this.slots.map((s) => planParam(s.name, s.shape, o.blockSize, o.mergeDims));
    this.k = this.slots.map((s, i) => {
      const plan = plans[i];
      const gc = s.dtype === this.cdt ? s.g : B.tensor(this.cdt, [s.size]);
      const dc = B.tensor(this.cdt, [s.size]);
      const ks: KSlot = { plan, gc, dc, d: s.dtype === this.cdt ? dc : B.tensor(s.dtype, [s.size]) };
      if (plan.transformed.length) {
        ks.gT = gc.reshape(plan.transformed);
        ks.dT = dc.reshape(plan.transformed);
      }
      return ks;
    });
    this.groups = groupBlocks(plans).map((bg) => this.makeGroup(bg, plans));
  }

  private makeGroup(bg: BlockGroup, plans: ParamPlan[]): Group {
    const B = this.backend;
    const batch = bg.members.length;
    const segments: Group['segments'] = [];
    bg.members.forEach((m, j) => {
      const last = segments[segments.length - 1];
      const off = plans[m.param].blocks[m.block].offset;
      if (last && last.param === m.param) last.offsets.push(off);
      else segments.push({ param: m.param, first: j, offsets: [off] });
    });
    const t = (shape: number[]): Tensor => B.tensor(this.cdt, shape, batch);
    const stats = bg.extent.map((n) => this.initStatistic(t([n, n])));
    const roots = bg.extent.map((n) => ops.addIdentity(t([n, n]), 1));
    return {
      extent: bg.extent,
      k: bg.extent.length,
      batch,
      members: bg.members,
      segments,
      G: t(bg.extent),
      bufA: t(bg.extent),
      bufB: t(bg.extent),
      stats,
      roots,
      scratch: bg.extent.map((n) => [t([n, n]), t([n, n]), t([n, n])]),
      failures: bg.extent.map(() => new Int32Array(batch)),
    };
  }

  /** Initial factor statistic (e.g. eps I for Shampoo, I / eps for KrADagrad*), written into `s`. */
  protected abstract initStatistic(s: Tensor): Tensor;
  /** Updates the factor statistics of `g` from its gradient blocks g.G. */
  protected abstract updateStatistics(g: Group): void;
  /** Root exponent and eigenvalue floor for a block of rank k. */
  protected abstract rootSpec(k: number): { p: number; floor: number };

  /** Casts gradients to the compute dtype and gathers every group's blocks (one call per group). */
  protected gather(): void {
    const cast = this.slots.flatMap((s, i) => (this.k[i].gc !== s.g ? [i] : []));
    ops.copyMany(
      cast.map((i) => this.slots[i].g),
      cast.map((i) => this.k[i].gc),
    );
    for (const g of this.groups) this.moveBoxes(g, g.G, false);
  }

  /** Writes the blocks of `x` (a group-shaped tensor) into the parameters' directions. */
  protected scatter(g: Group, x: Tensor): void {
    this.moveBoxes(g, x, true);
  }

  private moveBoxes(g: Group, blocks: Tensor, scatter: boolean): void {
    ops.boxesMany(
      g.segments.map((seg) => (scatter ? this.k[seg.param].dT! : this.k[seg.param].gT!)),
      blocks,
      g.segments.map((seg) => seg.offsets),
      g.segments.map((seg) => seg.first),
      scatter,
    );
  }

  /** x x_0 P_0 x_1 P_1 ... over `dims` (contracting each axis with the root's first axis); returns the buffer holding the result. */
  protected precondition(g: Group, x: Tensor, dims: number[], factors: Tensor[] = g.roots): Tensor {
    if (x === g.G && dims.length === g.k && dims.every((d, i) => d === i)) {
      // Every dim of G in order, as the reference does it: contract axis 0 with P_j, which
      // appends the new axis at the end; after k steps the axes are back in order. Each
      // step is one batched GEMM on 2-D views, with no transposes.
      g.rotation ??= this.rotationViews(g);
      g.rotation.forEach((v, j) => ops.gemm(v.inp, factors[j], v.out, { transA: true }));
      return g.k % 2 === 1 ? g.bufA : g.bufB;
    }
    let cur = x;
    for (const i of dims) {
      const out = cur === g.bufA ? g.bufB : g.bufA;
      ops.modeProduct(cur, i, factors[i], out, true);
      cur = out;
    }
    return cur;
  }

  /** Step j views its input as [n_j, rest] and its output as [rest, n_j]: G, then bufA and bufB in turn. */
  private rotationViews(g: Group): { inp: Tensor; out: Tensor }[] {
    const total = g.extent.reduce((a, b) => a * b, 1);
    let cur = g.G;
    return g.extent.map((n) => {
      const next = cur === g.bufA ? g.bufB : g.bufA;
      const v = { inp: cur.reshape([n, total / n], g.batch), out: next.reshape([total / n, n], g.batch) };
      cur = next;
      return v;
    });
  }

  /**
   * Recomputes the roots of dims `dims` from the statistics. Items whose root fails
   * (non-finite statistics, solver failure) keep their previous root; float32 failures
   * are retried in float64 first; a factor failing more than maxRootFailures times in a
   * row throws NONFINITE_FACTOR naming the parameter and factor.
   */
  protected refreshRoots(g: Group, dims: number[] = g.extent.map((_, i) => i)): void {
    const { p, floor } = this.rootSpec(g.k);
    for (const i of dims) {
      let info: Int32Array;
      info = this.o.rootMethod === 'newton' ? newtonRoot(g.stats[i], g.roots[i], p, floor, ROOT_RIDGE, g.scratch[i]) : new Int32Array([1]);
      // eigh: the default, and the fallback when Newton did not converge.
      if (info.some((x) => x !== 0)) {
        info = ops.matpow(g.stats[i], p, { floor, ridge: ROOT_RIDGE, out: g.roots[i], allowFailures: true }).info;
      }
      if (info.some((x) => x !== 0) && this.cdt === 'float32') info = this.retryFloat64(g.stats[i], g.roots[i], p, floor, info);
      this.countFailures(g, i, info);
    }
  }

  private retryFloat64(stat: Tensor, root: Tensor, p: number, floor: number, info32: Int32Array): Int32Array {
    const B = this.backend;
    const s64 = ops.copy(stat, B.tensor('float64', stat.shape, stat.batch));
    const r64 = ops.copy(root, B.tensor('float64', root.shape, root.batch));
    try {
      const info = ops.matpow(s64, p, { floor, ridge: ROOT_RIDGE, out: r64, allowFailures: true }).info;
      // Only the items that failed in float32 take the float64 root.
      if (info.some((x, b) => x === 0 && info32[b] !== 0)) {
        const r32 = root.read() as Float32Array;
        const r = r64.read();
        const nn = root.itemSize;
        info32.forEach((x, b) => {
          if (x !== 0 && info[b] === 0) for (let j = 0; j < nn; j++) r32[b * nn + j] = r[b * nn + j];
        });
        root.write(r32);
      }
      return Int32Array.from(info32, (x, b) => (x !== 0 ? info[b] : 0));
    } finally {
      s64.dispose();
      r64.dispose();
    }
  }

  protected countFailures(g: Group, dim: number, info: Int32Array): void {
    const f = g.failures[dim];
    for (let b = 0; b < g.batch; b++) {
      f[b] = info[b] === 0 ? 0 : f[b] + 1;
      if (f[b] > this.o.maxRootFailures) {
        const m = g.members[b];
        const name = this.slots[m.param].name;
        throw new KradagradError(
          `Root of factor ${dim} of block ${m.block} of parameter '${name}' failed ${f[b]} times in a row ` +
            `(non-finite or ill-posed statistics; float64 retry included). Previous roots were kept until now.`,
          'NONFINITE_FACTOR',
          { param: name, block: m.block, factor: dim, failures: f[b] },
        );
      }
    }
  }

  protected get grafting(): ResolvedPreconditioner['grafting'] {
    return this.o.grafting;
  }

  /** Graft directions A of every parameter for this step (updates the graft state). */
  protected graftDirections(t: number): Tensor[] {
    const B = this.backend;
    const o = this.o;
    const gs = this.slots.map((s) => s.g);
    const own = (key: 'graftAcc' | 'graftMom' | 'graftDir'): Tensor[] =>
      this.slots.map((s, i) => (this.k[i][key] ??= B.tensor(s.dtype, [s.size])));
    switch (this.grafting) {
      case 'adagrad': {
        const [acc, dir] = [own('graftAcc'), own('graftDir')];
        ops.mulAccMany(gs, gs, acc, 1, 1);
        ops.divSqrtMany(gs, acc, dir, 1, o.graftEpsilon);
        return dir;
      }
      case 'adam': {
        const [acc, mom, dir] = [own('graftAcc'), own('graftMom'), own('graftDir')];
        ops.axpbyMany(gs, mom, 1 - o.graftBeta1, o.graftBeta1);
        ops.mulAccMany(gs, gs, acc, o.graftBeta2, 1 - o.graftBeta2);
        ops.divSqrtMany(mom, acc, dir, 1 / (1 - o.graftBeta2 ** t), o.graftEpsilon);
        ops.axpbyMany(dir, dir, 0, 1 / (1 - o.graftBeta1 ** t)); // scale
        return dir;
      }
      default:
        return gs;
    }
  }

  /**
   * The update of every parameter, one multi-tensor call per stage. The direction is the
   * preconditioned ks.dc once `started` (the raw gradient before), following the
   * reference: norm grafting D *= ||A|| / (||D|| + 1e-16), D += wd W (l2), m = mu m + D;
   * W -= lr m (or the Nesterov / pre-start forms).
   */
  protected finishAll(t: number, lr: number, started: boolean): void {
    const src: Tensor[] = [];
    const dst: Tensor[] = [];
    this.slots.forEach((s, i) => {
      const ks = this.k[i];
      if (!started || ks.plan.blocks.length === 0) {
        src.push(s.g);
        dst.push(ks.d);
      } else if (ks.d !== ks.dc) {
        src.push(ks.dc);
        dst.push(ks.d);
      }
    });
    ops.copyMany(src, dst);
    const ds = this.k.map((ks) => ks.d);
    if (this.grafting !== 'none') ops.scaleByNormRatioMany(ds, this.graftDirections(t), 1e-16);
    if (started) this.applyDirections(this.slots, ds, lr);
    else this.slots.forEach((s, i) => this.preStartUpdate(s, this.k[i], lr));
  }

  /**
   * Before startStep (as the reference): m still accumulates the grafted D, but W moves
   * along the graft's own direction: g (sgd/none), the momentum of raw gradients
   * (adagrad), or Adam's.
   */
  private preStartUpdate(s: ParamSlot, ks: KSlot, lr: number): void {
    const d = ks.d;
    const { momentum, weightDecay, weightDecayMode } = this.o;
    if (weightDecay > 0 && weightDecayMode === 'l2') ops.axpby(s.w, d, weightDecay, 1);
    if (momentum > 0) ops.axpby(d, this.momentumOf(s), 1, momentum);
    if (weightDecay > 0 && weightDecayMode === 'decoupled') ops.scale(s.w, 1 - lr * weightDecay);
    let u: Tensor = s.g;
    if (this.grafting === 'adagrad' && momentum > 0) {
      ks.rawMom ??= this.backend.tensor(s.dtype, [s.size]);
      u = ops.axpby(s.g, ks.rawMom, 1, momentum);
    } else if (this.grafting === 'adam') {
      u = ks.graftDir!;
    }
    ops.axpby(u, s.w, -lr, 1);
  }

  /** Shampoo / KrADagrad* step: statistics, roots, preconditioning, grafting, update. */
  protected update(t: number): void {
    this.updateWith(t, (g) => this.refreshRootsMaybeAsync(g));
  }

  protected async updateAsync(t: number): Promise<void> {
    if (!this.o.asyncRoots) return this.update(t);
    // Wait (outside the math) for refreshes that reached the staleness bound.
    const due = t % this.o.rootFrequency === 0;
    for (const g of this.groups) {
      if (due && g.pending && !g.pending.done && g.pending.missed + 1 > this.o.asyncRoots.maxStaleness) await g.pending.promise;
    }
    this.update(t);
  }

  private updateWith(t: number, roots: (g: Group) => void): void {
    const o = this.o;
    const lr = this.lr(t);
    const pre = t >= o.startStep;
    this.gather();
    for (const g of this.groups) {
      if (t % o.statisticsFrequency === 0) this.updateStatistics(g);
      if (o.asyncRoots) this.swapInFinished(g);
      if (t % o.rootFrequency === 0) roots(g);
      if (pre) this.scatter(g, this.precondition(g, g.G, g.extent.map((_, i) => i)));
    }
    this.finishAll(t, lr, pre);
  }

  /**
   * Due root refresh. Synchronous unless asyncRoots: then the refresh runs on snapshots of
   * the statistics in the libuv pool and is swapped in at the first step after it ends; a
   * refresh still running when `maxStaleness` more refreshes fall due is replaced by a
   * synchronous one, so roots are never more than maxStaleness refreshes old.
   */
  private refreshRootsMaybeAsync(g: Group): void {
    const a = this.o.asyncRoots;
    if (!a) return this.refreshRoots(g);
    if (g.pending) {
      g.pending.missed++;
      if (g.pending.missed <= a.maxStaleness) return;
      this.abandon(g);
      return this.refreshRoots(g);
    }
    if (a.maxStaleness === 0) return this.refreshRoots(g);
    this.launch(g);
  }

  private launch(g: Group): void {
    const { p, floor } = this.rootSpec(g.k);
    const stats = g.stats.map((s) => ops.copy(s, this.backend.tensor(s.dtype, s.shape, s.batch)));
    const roots = g.roots.map((r) => ops.copy(r, this.backend.tensor(r.dtype, r.shape, r.batch)));
    const pending: PendingRoots = { stats, roots, done: false, missed: 0, promise: Promise.resolve() };
    pending.promise = Promise.all(
      stats.map((s, i) => ops.matpowAsync(s, p, { floor, ridge: ROOT_RIDGE, out: roots[i], allowFailures: true })),
    ).then(
      (res) => {
        pending.info = res.map((r) => r.info);
        pending.done = true;
      },
      (e) => {
        pending.error = e;
        pending.done = true;
      },
    );
    g.pending = pending;
  }

  private swapInFinished(g: Group): void {
    const pd = g.pending;
    if (!pd || !pd.done) return;
    g.pending = undefined;
    try {
      if (pd.error) throw pd.error;
      pd.roots.forEach((r, i) => {
        const info = pd.info![i];
        if (info.every((x) => x === 0)) {
          ops.copy(r, g.roots[i]);
          this.countFailures(g, i, info);
        } else {
          this.refreshRoots(g, [i]); // failures: the synchronous path with its retries and guards
        }
      });
    } finally {
      [...pd.stats, ...pd.roots].forEach((x) => x.dispose());
    }
  }

  /** Drops an in-flight refresh; its buffers are freed when the worker finishes. */
  private abandon(g: Group): void {
    const pd = g.pending!;
    g.pending = undefined;
    void pd.promise.then(() => [...pd.stats, ...pd.roots].forEach((x) => x.dispose()));
  }

  protected stateEntries(): StateEntry[] {
    const out = super.stateEntries();
    this.groups.forEach((g, gi) => {
      g.stats.forEach((s, i) => out.push({ name: `group/${gi}/stat/${i}`, tensor: s }));
      g.roots.forEach((r, i) => out.push({ name: `group/${gi}/root/${i}`, tensor: r }));
    });
    const B = this.backend;
    this.slots.forEach((s, i) => {
      const ks = this.k[i];
      if (this.grafting === 'adagrad' || this.grafting === 'adam') {
        ks.graftAcc ??= B.tensor(s.dtype, [s.size]);
        out.push({ name: `param/${s.name}/graft_acc`, tensor: ks.graftAcc });
      }
      if (this.grafting === 'adam') {
        ks.graftMom ??= B.tensor(s.dtype, [s.size]);
        out.push({ name: `param/${s.name}/graft_mom`, tensor: ks.graftMom });
      }
      if (this.grafting === 'adagrad' && this.o.momentum > 0 && this.o.startStep > 1) {
        ks.rawMom ??= B.tensor(s.dtype, [s.size]);
        out.push({ name: `param/${s.name}/raw_mom`, tensor: ks.rawMom });
      }
    });
    return out;
  }

  protected stateScalars(): Record<string, unknown> {
    return { failures: this.groups.map((g) => g.failures.map((f) => Array.from(f))) };
  }
  protected loadScalars(s: Record<string, unknown>): void {
    const f = s.failures as number[][][] | undefined;
    if (f) this.groups.forEach((g, gi) => g.failures.forEach((x, i) => x.set(f[gi][i])));
  }

  protected disposeScratch(): void {
    for (const g of this.groups) {
      if (g.pending) this.abandon(g);
      [g.G, g.bufA, g.bufB, ...g.scratch.flat(), ...(g.rotation ?? []).flatMap((v) => [v.inp, v.out])].forEach((t) => t.dispose());
    }
    this.slots.forEach((s, i) => {
      const ks = this.k[i];
      if (ks.gc !== s.g) ks.gc.dispose();
      if (ks.d !== ks.dc) ks.d.dispose();
      ks.dc.dispose();
      ks.graftDir?.dispose();
    });
  }
}
