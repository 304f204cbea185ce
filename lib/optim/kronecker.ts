/**
 * The Kronecker-factored optimizers as one template. A step is one fixed sequence, recorded
 * into the step's job (base.ts):
 *   1. gather      cast gradients to the compute dtype and cut them into blocks, one batch
 *                  per group of same-shape blocks (blocking.ts)
 *   2. factors     which dims of each block this step works on (all; KrADagrad: one)
 *   3. statistics  when due: the new statistics of those dims, into spare buffers
 *   4. roots       when due: synchronous or background refresh (root_refresh.ts)
 *   5. direction   when preconditioning has started: the blocks preconditioned in every
 *                  dim, scattered back into each parameter's direction
 *   6. finish      grafting (grafting.ts), momentum and the update (base.ts)
 * The schedule (schedule.ts) answers "is it due?". Subclasses supply only what differs:
 * the initial statistic, its update, the root exponent and floor, and (KrADagrad) which
 * factors a step uses and how its statistics see the gradient.
 *
 * Data-parallel (the `distributed` option): the blocks of all parameters are assigned to
 * the ranks by cost (assignBlocks: n^3 per factor, the same on every rank), and a rank
 * builds its groups from its own blocks only, so it holds statistics, roots and their
 * scratch for those alone (about 1/size of the factor memory). Job 1 runs steps 1-5 for
 * them without the scatter; the preconditioned blocks of every rank are all-gathered (in
 * the compute dtype, each rank's groups back to back); job 2 scatters every rank's blocks
 * into the directions and runs step 6, the same on every rank. Per block the arithmetic is
 * the same as in one process (a batched op computes each item on its own), so with the
 * same gradients the trajectory is the same, bit for bit, at any world size.
 */
import { KradagradError } from '../errors';
import * as ops from '../ops';
import type { DType, FloatArray, Tensor } from '../tensor';
import { BaseOptimizer, ParamSlot } from './base';
import { BlockGroup, ParamPlan, groupBlocks, planParam } from './blocking';
import { type DecodedCheckpoint, type EncodedTensor, type StateTensor, readStateTensors } from './checkpoint';
import { Graft, makeGraft } from './grafting';
import { ResolvedPreconditioner } from './options';
import { PendingRefresh, RootGroup, RootRefresher, nativeRootSpec } from './root_refresh';
import { Schedule } from './schedule';
import { StepTx } from './step_tx';
import type { NamedParams } from './types';

export { ROOT_RIDGE } from './root_refresh';

/** A batch of same-extent blocks and their factors. */
export interface Group extends RootGroup {
  extent: number[];
  k: number;
  batch: number;
  members: BlockGroup['members'];
  /** Per parameter: where its blocks sit in the batch and their offsets. */
  segments: { param: number; first: number; offsets: number[][] }[];
  /** The gradient blocks of this step (compute dtype). */
  G: Tensor;
  /** Ping-pong buffers for preconditioning. */
  bufA: Tensor;
  bufB: Tensor;
  /** Per dim: statistics (S or L) and root, batch of [n_i, n_i]. */
  stats: Tensor[];
  roots: Tensor[];
  /** Per dim: three spare [n_i, n_i] batches; [0] takes the new statistics, [2] the new roots. */
  scratch: Tensor[][];
  /** Per dim, per item: consecutive root failures. */
  failures: Int32Array[];
  /** Views for preconditioning G in every dim in the reference's rotating order (made with the group). */
  rotation: { inp: Tensor; out: Tensor }[];
}

/** The layout of a group of blocks: where each parameter's blocks sit in its batch. */
type Segments = Group['segments'];

/** Data-parallel mode: the blocks of every rank, and the buffers of the direction all-gather. */
interface Shard {
  rank: number;
  /** Per rank: its groups (layout only), in the order that rank builds them, which is the order of its payload. */
  groups: { extent: number[]; members: BlockGroup['members']; segments: Segments; elems: number }[][];
  /** Per rank: where its payload starts in `recv`. */
  offsets: number[];
  /** This rank's payload and every rank's (addon-owned: the all-gather runs in place). */
  send: FloatArray;
  recv: FloatArray;
  /** Per rank, per group: the tensor job 2 scatters from (null for this rank: its own groups' outputs). */
  inbox: (Tensor | null)[][];
  /** This step's preconditioned blocks of this rank's groups (recorded in job 1). */
  outs: (Tensor | null)[];
  /** The groups of all ranks' blocks in a single process's order: the order of checkpoints. */
  all: BlockGroup[];
  /** Parameters with at least one block of this rank. */
  ownsBlockOf: boolean[];
}

/** Where each parameter's blocks sit in the batch of a group, and their offsets. */
function segmentsOf(bg: BlockGroup, plans: ParamPlan[]): Segments {
  const segments: Segments = [];
  bg.members.forEach((m, j) => {
    const last = segments[segments.length - 1];
    const off = plans[m.param].blocks[m.block].offset;
    if (last && last.param === m.param) last.offsets.push(off);
    else segments.push({ param: m.param, first: j, offsets: [off] });
  });
  return segments;
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
  /** Momentum of raw gradients before startStep (AdaGrad graft with momentum, as the reference) and its spare. */
  rawMom?: [Tensor, Tensor];
}

export abstract class KroneckerOptimizer extends BaseOptimizer {
  protected readonly o: ResolvedPreconditioner;
  protected readonly groups: Group[];
  protected readonly k: KSlot[];
  protected readonly cdt: DType;
  protected readonly schedule: Schedule;
  protected readonly graft: Graft;
  protected readonly refresher: RootRefresher;
  /** Data-parallel mode: the shards of the blocks. */
  private readonly shard?: Shard;

  protected constructor(params: NamedParams, o: ResolvedPreconditioner, where: string, zeroBasedCount = false) {
    super(params, o, where);
    this.o = o;
    this.cdt = o.statisticsDtype;
    this.schedule = new Schedule(o, zeroBasedCount);
    const B = this.backend;
    const plans = this.slots.map((s) => planParam(s.name, s.shape, o.blockSize, o.mergeDims));
    const rawMom = o.grafting === 'adagrad' && o.momentum > 0 && o.startStep > 1;
    this.k = this.slots.map((s, i) => {
      const plan = plans[i];
      const gc = s.dtype === this.cdt ? s.g : B.tensor(this.cdt, [s.size]);
      const dc = B.tensor(this.cdt, [s.size]);
      const ks: KSlot = { plan, gc, dc, d: s.dtype === this.cdt ? dc : B.tensor(s.dtype, [s.size]) };
      if (plan.transformed.length) {
        ks.gT = gc.reshape(plan.transformed);
        ks.dT = dc.reshape(plan.transformed);
      }
      if (rawMom) ks.rawMom = [B.tensor(s.dtype, [s.size]), B.tensor(s.dtype, [s.size])];
      return ks;
    });
    const comm = o.distributed;
    if (comm) {
      // The same assignment on every rank: blocks in a fixed order (parameters, then their
      // blocks), each costing the n^3 of its factors. (Required here: a single process loads
      // nothing of kradagrad/distributed.)
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      const { assignBlocks } = require('../distributed/assign') as typeof import('../distributed/assign');
      const ids = plans.flatMap((p, pi) => p.blocks.map((b, bi) => ({ pi, bi, extent: b.extent })));
      const { owner } = assignBlocks(
        ids.map((x) => x.extent),
        comm.size,
      );
      const first = plans.map((_, pi) => ids.findIndex((x) => x.pi === pi));
      const ownerOf = (pi: number, bi: number): number => owner[first[pi] + bi];
      const groups = Array.from({ length: comm.size }, (_, r) =>
        groupBlocks(plans, (pi, bi) => ownerOf(pi, bi) === r).map((bg) => ({
          extent: bg.extent,
          members: bg.members,
          segments: segmentsOf(bg, plans),
          elems: bg.members.length * bg.extent.reduce((x, y) => x * y, 1),
        })),
      );
      const counts = groups.map((gs) => gs.reduce((x, g) => x + g.elems, 0));
      const offsets = counts.map((_, r) => counts.slice(0, r).reduce((x, y) => x + y, 0));
      this.shard = {
        rank: comm.rank,
        groups,
        offsets,
        // Host staging of the exchange; none on the NCCL path (exchangeDevice).
        send: comm.allocate(this.cdt, this.dp?.device ? 0 : counts[comm.rank]),
        recv: comm.allocate(this.cdt, this.dp?.device ? 0 : counts.reduce((x, y) => x + y, 0)),
        inbox: groups.map((gs, r) => gs.map((g) => (r === comm.rank ? null : B.tensor(this.cdt, g.extent, g.members.length)))),
        outs: [],
        all: groupBlocks(plans),
        ownsBlockOf: plans.map((p, pi) => p.blocks.some((_, bi) => ownerOf(pi, bi) === comm.rank)),
      };
      this.groups = groupBlocks(plans, (pi, bi) => ownerOf(pi, bi) === comm.rank).map((bg) => this.makeGroup(bg, plans));
    } else {
      this.groups = groupBlocks(plans).map((bg) => this.makeGroup(bg, plans));
    }
    this.graft = makeGraft(o, this.slots, B);
    const a = o.asyncRoots;
    this.refresher = new RootRefresher(B, o.rootMethod, o.maxRootFailures, a ? a.maxStaleness * o.rootFrequency : 0);
    // Background refreshes in flight at once: up to maxStaleness + 1 (one launches as the oldest applies).
    if (a) for (const g of this.groups) g.stats.forEach((st, i) => this.refresher.reserve([st, g.roots[i], g.roots[i]], a.maxStaleness + 1));
  }

  private makeGroup(bg: BlockGroup, plans: ParamPlan[]): Group {
    const B = this.backend;
    const batch = bg.members.length;
    const segments = segmentsOf(bg, plans);
    const t = (shape: number[]): Tensor => B.tensor(this.cdt, shape, batch);
    const G = t(bg.extent);
    const bufA = t(bg.extent);
    const bufB = t(bg.extent);
    // Step j of the rotating order views its input as [n_j, rest] and its output as
    // [rest, n_j]: G, then bufA and bufB in turn.
    const total = bg.extent.reduce((a, b) => a * b, 1);
    let cur = G;
    const rotation = bg.extent.map((n) => {
      const next = cur === bufA ? bufB : bufA;
      const v = { inp: cur.reshape([n, total / n], batch), out: next.reshape([total / n, n], batch) };
      cur = next;
      return v;
    });
    return {
      extent: bg.extent,
      k: bg.extent.length,
      batch,
      members: bg.members,
      segments,
      G,
      bufA,
      bufB,
      stats: bg.extent.map((n) => this.initStatistic(t([n, n]))),
      roots: bg.extent.map((n) => ops.addIdentity(t([n, n]), 1)),
      scratch: bg.extent.map((n) => [t([n, n]), t([n, n]), t([n, n])]),
      failures: bg.extent.map(() => new Int32Array(batch)),
      rotation,
    };
  }

  // ---- what the optimizers supply --------------------------------------------------------

  /** Initial factor statistic (eps I for Shampoo, I / eps for KrADagrad*, I for KrADagrad), written into `s`. */
  protected abstract initStatistic(s: Tensor): Tensor;
  /**
   * Records the new statistic of dim i of the group into `S[0]` from `g.stats[i]` (unchanged)
   * and the blocks `x` (statisticsInput); `S[1]`, `S[2]` are free scratch.
   */
  protected abstract updateStatistic(g: Group, i: number, x: Tensor, S: Tensor[]): void;
  /** Root exponent and eigenvalue floor for a block of rank k. */
  protected abstract rootSpec(k: number): { p: number; floor: number };
  /** The dims of group g that step count c works on (statistics, roots, final preconditioning). Default: all. */
  protected factorsOfStep(g: Group, _c: number): number[] {
    return g.extent.map((_, i) => i);
  }
  /** The blocks the statistics of `dims` see. Default: the gradient blocks. */
  protected statisticsInput(g: Group, _dims: number[], _roots: Tensor[]): Tensor {
    return g.G;
  }
  /** Adjusts the gathered blocks (KrADagrad rounds them to float32). */
  protected prepareBlocks(_g: Group): void {}

  // ---- the step --------------------------------------------------------------------------

  protected beforeRecordSync(tx: StepTx): void {
    this.refresher.waitSync(tx.t);
  }
  protected async beforeRecordAsync(tx: StepTx): Promise<void> {
    await this.refresher.ready(tx.t);
  }
  protected afterCommit(): void {
    this.refresher.startQueued(
      (g, i) => this.nativeSpec(g as Group, i),
      (p) => this.groupOfPending(p),
    );
  }

  private nativeSpec(g: Group, _i: number) {
    const { p, floor } = this.rootSpec(g.k);
    return nativeRootSpec(this.o.rootMethod, p, floor);
  }
  private groupOfPending(p: PendingRefresh): Group {
    return this.groups.find((g) => this.refresher.pending.get(g)?.includes(p))!;
  }
  private describer(g: Group) {
    return (_dim: number, item: number) => {
      const m = g.members[item];
      return { param: this.slots[m.param].name, block: m.block };
    };
  }

  /** Items of g whose parameter has no gradient this step (1 = steps), or null when all step. */
  private activeMask(tx: StepTx, g: Group): Uint8Array | null {
    if (tx.activeSlots.length === this.slots.length) return null;
    return Uint8Array.from(g.members, (m) => (tx.active[m.param] ? 1 : 0));
  }

  protected recordUpdate(tx: StepTx): void {
    const started = this.schedule.started(tx.t);
    this.gather(tx);
    this.recordGroups(tx).forEach((out, j) => {
      if (out) this.moveBoxes(this.groups[j], out, true, tx);
    });
    this.finishDirections(tx, started);
  }

  /**
   * Steps 1-5 for every group: gather its blocks, statistics and roots when due, and (once
   * preconditioning has started) the preconditioned blocks: per group, the buffer holding
   * them, else null. Statistics of every group, then one guard over all of them, then roots,
   * then the preconditioned blocks: each group's ops are independent of the others', so
   * this order only saves guards (one per step, not one per group).
   */
  private recordGroups(tx: StepTx): (Tensor | null)[] {
    const S = this.schedule;
    const c = S.count(tx.t);
    const news: { t: Tensor; what: string }[] = [];
    const steps = this.groups.map((g) => {
      this.moveBoxes(g, g.G, false);
      this.prepareBlocks(g);
      const mask = this.activeMask(tx, g);
      const dims = this.factorsOfStep(g, c);
      const stats = g.stats.slice();
      const roots = g.roots.slice();
      if (this.refresher.background) this.refresher.applyDue(tx, g, roots, mask, this.describer(g));
      const x = this.statisticsInput(g, dims, roots);
      if (S.statisticsDue(tx.t)) news.push(...this.recordStatistics(tx, g, dims, x, stats, mask));
      return { g, mask, dims, stats, roots, x };
    });
    if (news.length) {
      const tag = tx.guard({ kind: 'statistics', factors: news.map((n) => n.what) });
      this.backend.addon.guardFinite(
        news.map((n) => n.t.native),
        tag,
      );
    }
    if (S.rootsDue(tx.t)) {
      for (const { g, mask, dims, stats, roots } of steps) {
        if (this.refresher.background) this.refresher.launch(tx, g, dims, stats, roots);
        else this.recordRoots(tx, g, dims, stats, roots, mask);
      }
    }
    return steps.map(({ g, dims, roots, x }) => (S.started(tx.t) ? this.precondition(g, x, dims, roots) : null));
  }

  // ---- data-parallel steps (base.ts drives them) -------------------------------------------

  /** Job 1: this rank's groups, up to their preconditioned blocks (kept for the all-gather). */
  protected recordLocal(tx: StepTx): void {
    const sh = this.shard!;
    this.gather(tx, sh.ownsBlockOf);
    sh.outs = this.recordGroups(tx);
  }

  /** This rank's preconditioned blocks, group after group, into the payload (nothing before preconditioning starts). */
  protected exchangeLocal(tx: StepTx): { send: FloatArray; recv: FloatArray } | null {
    const sh = this.shard;
    if (!sh || !this.schedule.started(tx.t)) return null;
    let off = 0;
    sh.groups[sh.rank].forEach((g, j) => {
      sh.outs[j]!.read(sh.send.subarray(off, off + g.elems) as FloatArray);
      off += g.elems;
    });
    return { send: sh.send, recv: sh.recv };
  }

  /** NCCL: each rank's preconditioned blocks, group by group, broadcast from it into the others' inbox tensors. */
  protected exchangeDevice(tx: StepTx): { root: number; tensor: Tensor }[] | null {
    const sh = this.shard;
    if (!sh || !this.schedule.started(tx.t)) return null;
    return sh.groups.flatMap((gs, r) => gs.map((_, j) => ({ root: r, tensor: r === sh.rank ? sh.outs[j]! : sh.inbox[r][j]! })));
  }

  /** The other ranks' blocks, from the payload into their inbox tensors. */
  protected receiveExchanged(): void {
    const sh = this.shard!;
    sh.groups.forEach((gs, r) => {
      if (r === sh.rank) return;
      let off = sh.offsets[r];
      gs.forEach((g, j) => {
        sh.inbox[r][j]!.write(sh.recv.subarray(off, off + g.elems) as FloatArray);
        off += g.elems;
      });
    });
  }

  /** Job 2: every rank's blocks scattered into the directions, then grafting, momentum and the update. */
  protected recordReplicated(tx: StepTx): void {
    const sh = this.shard!;
    const started = this.schedule.started(tx.t);
    if (started) {
      sh.groups.forEach((gs, r) => gs.forEach((g, j) => this.moveBoxes(g, r === sh.rank ? sh.outs[j]! : sh.inbox[r][j]!, true, tx)));
    }
    this.finishDirections(tx, started);
  }

  /** Casts the active gradients to the compute dtype (distributed: of the parameters with blocks here). */
  private gather(tx: StepTx, only?: boolean[]): void {
    const cast = tx.activeSlots.filter((i) => this.k[i].gc !== this.slots[i].g && (!only || only[i]));
    ops.copyMany(
      cast.map((i) => this.slots[i].g),
      cast.map((i) => this.k[i].gc),
    );
  }

  /** Gathers the blocks of every parameter into `blocks`, or scatters them into the directions of the active ones. */
  private moveBoxes(g: { segments: Segments }, blocks: Tensor, scatter: boolean, tx?: StepTx): void {
    const segs = scatter ? g.segments.filter((s) => tx!.active[s.param]) : g.segments;
    ops.boxesMany(
      segs.map((seg) => (scatter ? this.k[seg.param].dT! : this.k[seg.param].gT!)),
      blocks,
      segs.map((seg) => seg.offsets),
      segs.map((seg) => seg.first),
      scatter,
    );
  }

  /** Records the new statistics of `dims` into spares (swapped in on commit); returns them for the guard. */
  private recordStatistics(tx: StepTx, g: Group, dims: number[], x: Tensor, stats: Tensor[], mask: Uint8Array | null): { t: Tensor; what: string }[] {
    return dims.map((i) => {
      const S = g.scratch[i];
      this.updateStatistic(g, i, x, S);
      // Blocks of parameters without a gradient keep their statistics exactly.
      if (mask) ops.axpby(g.stats[i], S[0], Array.from(mask, (a) => (a ? 0 : 1)), Array.from(mask, (a) => (a ? 1 : 0)));
      stats[i] = S[0];
      tx.onCommit(() => {
        [g.stats[i], g.scratch[i][0]] = [g.scratch[i][0], g.stats[i]];
      });
      return { t: S[0], what: `factor ${i} of the blocks of extent [${g.extent}] (${g.members.length} blocks: ${this.describeMembers(g)})` };
    });
  }

  private describeMembers(g: Group): string {
    const names = [...new Set(g.members.map((m) => `'${this.slots[m.param].name}'`))];
    return names.length > 4 ? `${names.slice(0, 4).join(', ')}, ...` : names.join(', ');
  }

  private recordRoots(tx: StepTx, g: Group, dims: number[], stats: Tensor[], roots: Tensor[], mask: Uint8Array | null): void {
    const outs = g.scratch.map((s) => s[2]);
    this.refresher.refresh(tx, g, dims, stats, outs, roots, mask, (i) => this.nativeSpec(g, i), this.describer(g));
    for (const i of dims) {
      tx.onCommit(() => {
        [g.roots[i], g.scratch[i][2]] = [g.scratch[i][2], g.roots[i]];
      });
    }
  }

  /**
   * x x_d P_d over `dims` (contracting each axis with the root's first axis); returns the
   * buffer holding the result. Every dim of G in order is done as the reference does it:
   * contract axis 0 with P_j, which appends the new axis at the end; after k steps the axes
   * are back in order, each step one batched GEMM on 2-D views.
   */
  protected precondition(g: Group, x: Tensor, dims: number[], roots: Tensor[]): Tensor {
    if (x === g.G && dims.length === g.k && dims.every((d, i) => d === i)) {
      g.rotation.forEach((v, j) => ops.gemm(v.inp, roots[j], v.out, { transA: true }));
      return g.k % 2 === 1 ? g.bufA : g.bufB;
    }
    let cur = x;
    for (const i of dims) {
      const out = cur === g.bufA ? g.bufB : g.bufA;
      ops.modeProduct(cur, i, roots[i], out, true);
      cur = out;
    }
    return cur;
  }

  /**
   * Grafting, momentum and the update of the active parameters (the reference): D is the
   * preconditioned direction once started (the raw gradient before, and for parameters
   * without blocks), rescaled to the graft's norm D *= ||A|| / (||D|| + 1e-16); then
   * base.recordUpdateStage. Before startStep, W instead moves along the graft's own
   * direction (g; the momentum of raw gradients for AdaGrad; Adam's), while m accumulates D.
   */
  private finishDirections(tx: StepTx, started: boolean): void {
    const idx = tx.activeSlots;
    const src: Tensor[] = [];
    const dst: Tensor[] = [];
    for (const i of idx) {
      const ks = this.k[i];
      if (!started || ks.plan.blocks.length === 0) {
        src.push(this.slots[i].g);
        dst.push(ks.d);
      } else if (ks.d !== ks.dc) {
        src.push(ks.dc);
        dst.push(ks.d);
      }
    }
    ops.copyMany(src, dst);
    const slots = idx.map((i) => this.slots[i]);
    const ds = idx.map((i) => this.k[i].d);
    if (this.graft.kind !== 'none') ops.scaleByNormRatioMany(ds, this.graft.directions(tx, idx), 1e-16);
    if (started) {
      this.recordUpdateStage(tx, slots, ds);
      return;
    }
    const us = idx.map((i) => this.graft.preStartDirection(i));
    const raw = idx.filter((i) => this.k[i].rawMom);
    if (raw.length) {
      // rawMom' = g + mu rawMom, the direction W follows.
      const pairs = raw.map((i) => this.k[i].rawMom!);
      this.backend.addon.axpbyOutMany(
        raw.map((i) => this.slots[i].g.native),
        pairs.map((p) => p[0].native),
        pairs.map((p) => p[1].native),
        1,
        this.o.momentum,
      );
      raw.forEach((i, j) => (us[idx.indexOf(i)] = pairs[j][1]));
      tx.onCommit(() => {
        for (const p of pairs) [p[0], p[1]] = [p[1], p[0]];
      });
    }
    this.recordUpdateStage(tx, slots, ds, us);
  }

  // ---- state -----------------------------------------------------------------------------

  /** `<param>/block/<j>/<kind>/<i>` for item b of group g. */
  private blockName(g: { members: BlockGroup['members'] }, b: number, kind: string, i: number): string {
    const m = g.members[b];
    return `${this.slots[m.param].name}/block/${m.block}/${kind}/${i}`;
  }

  protected stateTensors(): StateTensor[] {
    const out = super.stateTensors();
    out.push(...this.blockTensors());
    out.push(...this.graft.stateTensors());
    this.slots.forEach((s, i) => {
      const r = this.k[i].rawMom;
      if (r) out.push({ name: `${s.name}/raw_mom`, tensor: r[0], shape: s.shape });
    });
    for (const g of this.groups) for (const p of this.refresher.pending.get(g) ?? []) out.push(...this.pendingTensors(g, p));
    return out;
  }

  /** Statistics and roots of this optimizer's blocks (per group, dim, item). */
  private blockTensors(): StateTensor[] {
    const out: StateTensor[] = [];
    for (const g of this.groups) {
      g.extent.forEach((n, i) => {
        for (let b = 0; b < g.batch; b++) {
          out.push({ name: this.blockName(g, b, 'stat', i), tensor: g.stats[i], item: b, shape: [n, n] });
          out.push({ name: this.blockName(g, b, 'root', i), tensor: g.roots[i], item: b, shape: [n, n] });
        }
      });
    }
    return out;
  }

  /** The names of the blocks' tensors in group order (a single process's), for every block or those of other ranks. */
  private blockNames(groups: readonly BlockGroup[], keep: (g: BlockGroup, b: number) => boolean = () => true): string[] {
    const out: string[] = [];
    for (const g of groups) {
      g.extent.forEach((_, i) => {
        g.members.forEach((_m, b) => {
          if (keep(g, b)) out.push(this.blockName(g, b, 'stat', i), this.blockName(g, b, 'root', i));
        });
      });
    }
    return out;
  }

  /** Distributed: this rank's blocks are its shard; everything else is replicated. */
  protected shardTensors(): StateTensor[] {
    return this.blockTensors();
  }

  /**
   * Distributed: the checkpoint a single process writes, tensor for tensor and in its order
   * (its stateTensors and counters): the replicated state from here, every block from the
   * shard of the rank that owns it.
   */
  protected mergeShards(shards: DecodedCheckpoint[]): { entries: EncodedTensor[]; counters: Record<string, unknown> } {
    const sh = this.shard!;
    const byName = new Map<string, { dtype: DType; shape: number[]; data: FloatArray }>();
    const failures: Record<string, unknown> = {};
    for (const d of shards) {
      for (const [k, t] of d.tensors) byName.set(k, t);
      Object.assign(failures, (d.meta.counters as { failures?: Record<string, unknown> }).failures ?? {});
    }
    const blocks: EncodedTensor[] = this.blockNames(sh.all).map((name) => {
      const t = byName.get(name);
      if (!t) throw new KradagradError(`saving the distributed state: no rank sent '${name}'`, 'INTERNAL');
      return { name, dtype: t.dtype, shape: t.shape, bytes: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) };
    });
    const ordered: Record<string, unknown> = {};
    for (const g of sh.all) {
      g.members.forEach((_m, b) => {
        const key = this.blockKey(g, b);
        if (!(key in failures)) throw new KradagradError(`saving the distributed state: no rank sent the failure counts of '${key}'`, 'INTERNAL');
        ordered[key] = failures[key];
      });
    }
    const rest = readStateTensors([
      ...this.graft.stateTensors(),
      ...this.slots.flatMap((s, i) => (this.k[i].rawMom ? [{ name: `${s.name}/raw_mom`, tensor: this.k[i].rawMom![0], shape: s.shape }] : [])),
    ]);
    return {
      entries: [...readStateTensors(super.stateTensors()), ...blocks, ...rest],
      counters: { failures: ordered, pending: [] },
    };
  }

  /** Distributed: the other ranks' blocks, which a checkpoint holds and this rank skips. */
  protected foreignStateNames(): ReadonlySet<string> {
    const sh = this.shard;
    if (!sh) return new Set();
    const mine = new Set(this.groups.flatMap((g) => g.members.map((_, b) => this.blockKey(g, b))));
    return new Set(this.blockNames(sh.all, (g, b) => !mine.has(this.blockKey(g, b))));
  }

  /** A background refresh's snapshot, per block: `.../pending/<applyAt>/stat/<i>` and `/prev/<i>`. */
  private pendingTensors(g: Group, p: PendingRefresh): StateTensor[] {
    const out: StateTensor[] = [];
    p.dims.forEach((i, k) => {
      const n = g.extent[i];
      for (let b = 0; b < g.batch; b++) {
        out.push({ name: this.blockName(g, b, `pending/${p.applyAt}/stat`, i), tensor: p.stats[k], item: b, shape: [n, n] });
        out.push({ name: this.blockName(g, b, `pending/${p.applyAt}/prev`, i), tensor: p.prev[k], item: b, shape: [n, n] });
      }
    });
    return out;
  }

  protected v1Names(): Map<string, { v1: string; item?: number }> {
    const m = super.v1Names();
    this.groups.forEach((g, gi) =>
      g.extent.forEach((_, i) => {
        for (let b = 0; b < g.batch; b++) {
          m.set(this.blockName(g, b, 'stat', i), { v1: `group/${gi}/stat/${i}`, item: b });
          m.set(this.blockName(g, b, 'root', i), { v1: `group/${gi}/root/${i}`, item: b });
        }
      }),
    );
    this.graft.v1Names(m);
    this.slots.forEach((s, i) => {
      if (this.k[i].rawMom) m.set(`${s.name}/raw_mom`, { v1: `param/${s.name}/raw_mom` });
    });
    return m;
  }

  private blockKey(g: { members: BlockGroup['members'] }, b: number): string {
    const m = g.members[b];
    return `${this.slots[m.param].name}/block/${m.block}`;
  }

  /**
   * Root-failure counts by block, `{"<param>/block/<j>": [count per factor]}`, and the
   * background refreshes in flight: `[{launchedAt, applyAt, dims, blocks}]`, one per
   * group and launch (their snapshots are tensors).
   */
  protected counters(): Record<string, unknown> {
    const failures: Record<string, number[]> = {};
    const pending: Record<string, unknown>[] = [];
    for (const g of this.groups) {
      for (let b = 0; b < g.batch; b++) failures[this.blockKey(g, b)] = g.failures.map((f) => f[b]);
      for (const p of this.refresher.pending.get(g) ?? []) {
        pending.push({ launchedAt: p.launchedAt, applyAt: p.applyAt, dims: p.dims, blocks: g.members.map((_, b) => this.blockKey(g, b)) });
      }
    }
    return { failures, pending };
  }

  protected v1Counters(scalars: Record<string, unknown>): Record<string, unknown> {
    const f = scalars.failures;
    const failures: Record<string, unknown> = {};
    this.groups.forEach((g, gi) => {
      const fg = Array.isArray(f) ? (f[gi] as unknown) : undefined;
      for (let b = 0; b < g.batch; b++) {
        const m = g.members[b];
        failures[`${this.slots[m.param].name}/block/${m.block}`] = g.extent.map((_, i) =>
          Array.isArray(fg) && Array.isArray(fg[i]) ? (fg[i] as unknown[])[b] : f === undefined ? 0 : undefined,
        );
      }
    });
    return { failures };
  }

  protected restoreCounters(c: Record<string, unknown>): () => void {
    const f = c.failures as Record<string, unknown> | undefined;
    const bad = (msg: string): never => {
      throw new KradagradError(`Checkpoint does not fit this optimizer: ${msg}`, 'STATE_FORMAT');
    };
    if (!f || typeof f !== 'object' || Array.isArray(f)) bad('counters.failures is missing or not an object');
    // Every block's counts are checked (distributed: every rank's); this optimizer's are kept.
    const counts = new Map<string, number[]>();
    for (const g of this.shard?.all ?? this.groups) {
      const k = g.extent.length;
      for (let b = 0; b < g.members.length; b++) {
        const key = this.blockKey(g, b);
        const v = (f as Record<string, unknown>)[key];
        if (!Array.isArray(v) || v.length !== k || !v.every((x) => Number.isSafeInteger(x) && x >= 0 && x <= this.o.maxRootFailures)) {
          bad(`counters.failures['${key}'] is ${JSON.stringify(v)}, expected ${k} integers in [0, ${this.o.maxRootFailures}]`);
        }
        counts.set(key, v as number[]);
      }
    }
    if (Object.keys(f!).length !== counts.size) bad('counters.failures names blocks this optimizer does not have');
    const next = this.groups.map((g) => g.failures.map((_, i) => Int32Array.from(g.members, (_m, b) => counts.get(this.blockKey(g, b))![i])));
    return () => this.groups.forEach((g, gi) => g.failures.forEach((x, i) => x.set(next[gi][i])));
  }

  /**
   * Loading also restores the background refreshes the checkpoint had in flight: fresh
   * snapshot buffers are filled from it, and their jobs restart once the load committed
   * (the same op on the same snapshot gives the same roots, so the run continues exactly).
   */
  protected loadPlan(c: Record<string, unknown>, step: number): { tensors: StateTensor[]; commit: () => void; abandon: () => void } {
    const bad = (msg: string): never => {
      throw new KradagradError(`Checkpoint does not fit this optimizer: ${msg}`, 'STATE_FORMAT');
    };
    const unknown = Object.keys(c).filter((k) => k !== 'failures' && k !== 'pending');
    if (unknown.length) bad(`unknown counters ${unknown.map((k) => `'${k}'`).join(', ')}`);
    const counters = this.restoreCounters(c);
    const list = c.pending ?? [];
    if (!Array.isArray(list)) bad('counters.pending is not an array');
    if ((list as unknown[]).length && !this.refresher.background) {
      bad('it holds background root refreshes in flight; load it into an optimizer with the same asyncRoots');
    }
    const made: { g: Group; p: PendingRefresh }[] = [];
    const abandon = () => made.forEach(({ p }) => [...p.stats, ...p.prev, ...p.out].forEach((t) => t.dispose()));
    try {
      for (const e of list as unknown[]) {
        const o = e as Record<string, unknown>;
        const isInt = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
        if (!o || typeof o !== 'object' || !isInt(o.launchedAt) || !isInt(o.applyAt) || !Array.isArray(o.dims) || !Array.isArray(o.blocks)) {
          bad(`counters.pending entry ${JSON.stringify(e)} is malformed`);
        }
        const g = this.groups.find((x) => x.members.length === (o.blocks as unknown[]).length && x.members.every((_, b) => this.blockKey(x, b) === (o.blocks as unknown[])[b]));
        if (!g) bad(`counters.pending names blocks ${JSON.stringify(o.blocks)} that are not one group of this optimizer`);
        const dims = o.dims as unknown[];
        if (!dims.length || !dims.every((d) => Number.isInteger(d) && (d as number) >= 0 && (d as number) < g!.k) || new Set(dims).size !== dims.length) {
          bad(`counters.pending dims ${JSON.stringify(dims)} do not fit blocks of rank ${g!.k}`);
        }
        if ((o.launchedAt as number) > step || (o.applyAt as number) <= step) {
          bad(`a background refresh launched at step ${o.launchedAt} and applied at ${o.applyAt} cannot be in flight at step ${step}`);
        }
        if ((o.applyAt as number) - (o.launchedAt as number) !== this.refresher.lag) {
          bad(`a background refresh launched at step ${o.launchedAt} applies at ${o.applyAt}, but this optimizer's asyncRoots lag is ${this.refresher.lag} steps`);
        }
        const mk = (n: number) => this.backend.tensor(this.cdt, [n, n], g!.batch);
        const p: PendingRefresh = {
          launchedAt: o.launchedAt as number,
          applyAt: o.applyAt as number,
          dims: dims as number[],
          stats: (dims as number[]).map((i) => mk(g!.extent[i])),
          prev: (dims as number[]).map((i) => mk(g!.extent[i])),
          out: (dims as number[]).map((i) => mk(g!.extent[i])),
        };
        made.push({ g: g!, p });
      }
    } catch (e) {
      abandon();
      throw e;
    }
    // This optimizer's own in-flight refreshes are replaced, not loaded into.
    const own = new Set(this.groups.flatMap((g) => (this.refresher.pending.get(g) ?? []).flatMap((p) => [...p.stats, ...p.prev])));
    const tensors = [...this.stateTensors().filter((t) => !own.has(t.tensor)), ...made.flatMap(({ g, p }) => this.pendingTensors(g, p))];
    return {
      tensors,
      abandon,
      commit: () => {
        counters();
        this.refresher.clear(true);
        for (const { g, p } of made) {
          this.refresher.install(g, p);
          this.refresher.start(p, (i) => this.nativeSpec(g, i));
        }
      },
    };
  }

  protected disposeState(): void {
    this.refresher.clear();
    this.shard?.inbox.flat().forEach((t) => t?.dispose());
    for (const g of this.groups) {
      [g.G, g.bufA, g.bufB, ...g.stats, ...g.roots, ...g.scratch.flat(), ...g.rotation.flatMap((v) => [v.inp, v.out])].forEach((t) => t.dispose());
    }
    this.slots.forEach((s, i) => {
      const ks = this.k[i];
      if (ks.gc !== s.g) ks.gc.dispose();
      if (ks.d !== ks.dc) ks.d.dispose();
      ks.dc.dispose();
      ks.gT?.dispose();
      ks.dT?.dispose();
      ks.rawMom?.forEach((t) => t.dispose());
    });
    this.graft.dispose();
  }
}

export type { ParamSlot };
