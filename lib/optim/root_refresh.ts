/**
 * Root refresh of the Kronecker optimizers: the solver chain (Newton if configured, eigh,
 * float64 retry, previous root kept: native `rootRefresh`, no host round trip), the
 * consecutive-failure counts with NONFINITE_FACTOR past `maxRootFailures`, and the
 * background refreshes of `asyncRoots`.
 *
 * Synchronous: the roots of a step's factors are computed inside its job into spare
 * buffers, swapped in when the step commits.
 *
 * Background (asyncRoots, maxStaleness k >= 1): a step where roots are due records copies of
 * its new statistics and current roots (a snapshot); once it has committed, a job computes
 * the roots of the snapshot on the libuv pool; at step t + k * rootFrequency that job's
 * roots are swapped in before the step uses them (the step waits for the job if needed:
 * stepAsync without blocking, step() by blocking). Which roots a step uses therefore never
 * depends on timing: runs are deterministic, and a checkpoint stores in-flight snapshots,
 * so a resumed run equals the uninterrupted one bit for bit.
 */
import { KradagradError } from '../errors';
import { record, type NativeJob, type NativeJobResult } from '../exec';
import type { NativeRootSpec } from '../native';
import * as ops from '../ops';
import type { Backend, Tensor } from '../tensor';
import type { ResolvedRootMethod } from './options';
import type { StepTx } from './step_tx';

/** Ridge added to every factor before its root (the reference's 1e-8 I). */
export const ROOT_RIDGE = 1e-8;

/** The native spec of a root method for exponent p and eigenvalue floor. */
export function nativeRootSpec(m: ResolvedRootMethod, p: number, floor: number): NativeRootSpec {
  const spec: NativeRootSpec = { p, floor, ridge: ROOT_RIDGE, retryFloat64: m.retryFloat64 };
  if (m.method === 'newton') {
    spec.newton = true;
    spec.maxIterations = m.maxIterations;
    if (m.tolerance !== undefined) spec.tolerance = m.tolerance;
  }
  return spec;
}

/** What the refresher needs to know of a group of same-shape blocks. */
export interface RootGroup {
  batch: number;
  stats: Tensor[];
  roots: Tensor[];
  failures: Int32Array[];
}

/** Names a factor item for messages and checkpoints. */
export type DescribeItem = (dim: number, item: number) => { param: string; block: number };

/** A background refresh of some dims of one group. */
export interface PendingRefresh {
  /** The step that launched it, and the step at whose start its roots are swapped in. */
  launchedAt: number;
  applyAt: number;
  dims: number[];
  /** Per dim of `dims`: snapshot of the statistics, the roots current at launch, the result. */
  stats: Tensor[];
  prev: Tensor[];
  out: Tensor[];
  job?: NativeJob;
  infoSlots?: number[];
  result?: NativeJobResult;
  error?: unknown;
  promise?: Promise<void>;
}

export class RootRefresher {
  /** Background refreshes per group, oldest first. */
  readonly pending = new Map<RootGroup, PendingRefresh[]>();
  /** Refreshes launched by the step being committed, started after it commits. */
  private queued: PendingRefresh[] = [];
  /**
   * Buffers of applied refreshes, reused by later launches (keyed by dtype, batch and shape):
   * allocating (and zero-filling) three factor-sized batches per launch would be main-thread
   * work on every refresh step.
   */
  private readonly spare = new Map<string, Tensor[]>();

  private take(like: Tensor): Tensor {
    const list = this.spare.get(`${like.dtype}:${like.batch}:${like.shape}`);
    return list?.pop() ?? this.B.tensor(like.dtype, like.shape, like.batch);
  }
  private recycle(ts: Tensor[]): void {
    for (const t of ts) {
      const key = `${t.dtype}:${t.batch}:${t.shape}`;
      let list = this.spare.get(key);
      if (!list) this.spare.set(key, (list = []));
      list.push(t);
    }
  }

  /**
   * Makes `sets` buffer sets like `likes` (a launch's snapshot of statistics, roots and
   * result) into the spare pool now: the first launches then allocate nothing on the
   * main thread (a fresh 4 MiB tensor costs several ms of page faults and zero-filling).
   */
  reserve(likes: Tensor[], sets: number): void {
    for (let k = 0; k < sets; k++) this.recycle(likes.map((x) => this.B.tensor(x.dtype, x.shape, x.batch)));
  }

  constructor(
    private readonly B: Backend,
    private readonly method: ResolvedRootMethod,
    private readonly maxFailures: number,
    /** Steps between launch and swap-in (maxStaleness * rootFrequency); 0: synchronous. */
    readonly lag: number,
  ) {}

  get background(): boolean {
    return this.lag > 0;
  }

  private error(g: RootGroup, dim: number, item: number, failures: number, describe: DescribeItem): { message: string; details: Record<string, unknown> } {
    const { param, block } = describe(dim, item);
    return {
      message:
        `Root of factor ${dim} of block ${block} of parameter '${param}' failed ${failures} times in a row ` +
        `(non-finite or ill-posed statistics; float64 retry included). Previous roots were kept until now`,
      details: { param, block, factor: dim, failures },
    };
  }

  /**
   * Records a synchronous refresh of `dims` from `stats` (per dim) into the spares `outs`
   * (per dim), keeping `g.roots` for items that fail; on commit the spares are swapped in
   * (the caller's swap) and the failure counts updated. `rootsNow` gets the new roots.
   */
  refresh(
    tx: StepTx,
    g: RootGroup,
    dims: number[],
    stats: Tensor[],
    outs: Tensor[],
    rootsNow: Tensor[],
    mask: Uint8Array | null,
    spec: (dim: number) => NativeRootSpec,
    describe: DescribeItem,
  ): void {
    for (const i of dims) {
      const tag = tx.guard({
        kind: 'roots',
        describe: (item, r) => this.error(g, i, item, r.slots[slots.failures][item], describe),
      });
      const slots = this.B.addon.rootRefresh(stats[i].native, g.roots[i].native, outs[i].native, spec(i), g.failures[i], this.maxFailures, tag, mask);
      rootsNow[i] = outs[i];
      tx.onCommit((r) => g.failures[i].set(r.slots[slots.failures]));
    }
  }

  /** Pending refreshes of `g` due at step t (in launch order). */
  dueAt(g: RootGroup, t: number): PendingRefresh[] {
    return (this.pending.get(g) ?? []).filter((p) => p.applyAt === t);
  }

  /**
   * Swaps in (on commit) the background refreshes of `g` due at tx.t: `rootsNow` gets their
   * roots. Throws NONFINITE_FACTOR, before anything changed, when the failure counts would
   * pass the maximum. The refreshes must have finished (see ready / waitSync).
   */
  applyDue(tx: StepTx, g: RootGroup, rootsNow: Tensor[], mask: Uint8Array | null, describe: DescribeItem): void {
    for (const p of this.dueAt(g, tx.t)) {
      if (p.error) throw p.error;
      if (!p.result) throw new KradagradError('a background root refresh was applied before it finished', 'INTERNAL');
      // Items whose parameter has no gradient at this step keep their roots and counts (the
      // refresh's result for them is dropped; they take the next one).
      const next = p.dims.map((i, k) => {
        const info = p.result!.slots[p.infoSlots![k]];
        return Int32Array.from(g.failures[i], (f, b) => (mask && !mask[b] ? f : info[b] === 0 ? 0 : f + 1));
      });
      if (mask) {
        p.dims.forEach((i, k) =>
          ops.axpby(
            g.roots[i],
            p.out[k],
            Array.from(mask, (a) => (a ? 0 : 1)),
            Array.from(mask, (a) => (a ? 1 : 0)),
          ),
        );
      }
      p.dims.forEach((i, k) => {
        const bad = next[k].findIndex((f) => f > this.maxFailures);
        if (bad >= 0) {
          const e = this.error(g, i, bad, next[k][bad], describe);
          throw new KradagradError(`${e.message}; the step was rejected and the state is unchanged`, 'NONFINITE_FACTOR', e.details);
        }
        rootsNow[i] = p.out[k];
      });
      tx.onCommit(() => {
        p.dims.forEach((i, k) => {
          [g.roots[i], p.out[k]] = [p.out[k], g.roots[i]];
          g.failures[i].set(next[k]);
        });
        const list = this.pending.get(g)!;
        list.splice(list.indexOf(p), 1);
        // The job is done with them (it finished before this step was recorded).
        this.recycle([...p.stats, ...p.prev, ...p.out]);
      });
    }
  }

  /**
   * Records the snapshot of a background refresh of `dims` launched by step tx.t (from
   * `stats` and the roots current for this step, `rootsNow`); it is queued on commit and
   * started by startQueued().
   */
  launch(tx: StepTx, g: RootGroup, dims: number[], stats: Tensor[], rootsNow: Tensor[]): void {
    const mk = (x: Tensor) => this.take(x);
    const p: PendingRefresh = {
      launchedAt: tx.t,
      applyAt: tx.t + this.lag,
      dims: dims.slice(),
      stats: dims.map((i) => ops.copy(stats[i], mk(stats[i]))),
      prev: dims.map((i) => ops.copy(rootsNow[i], mk(rootsNow[i]))),
      out: dims.map((i) => mk(rootsNow[i])),
    };
    tx.onCommit(() => {
      let list = this.pending.get(g);
      if (!list) this.pending.set(g, (list = []));
      list.push(p);
      this.queued.push(p);
    });
  }

  /** Starts the background jobs of refreshes queued by the last commit. */
  startQueued(spec: (g: RootGroup, dim: number) => NativeRootSpec, groupOf: (p: PendingRefresh) => RootGroup): void {
    const q = this.queued;
    this.queued = [];
    for (const p of q) this.start(p, (i) => spec(groupOf(p), i));
  }

  /** Adds a pending refresh of `g` (restored from a checkpoint; start() runs it). */
  install(g: RootGroup, p: PendingRefresh): void {
    let list = this.pending.get(g);
    if (!list) this.pending.set(g, (list = []));
    list.push(p);
  }

  /** Starts (or restarts, after a checkpoint load) the job of a pending refresh. */
  start(p: PendingRefresh, spec: (dim: number) => NativeRootSpec): void {
    const slots: number[] = [];
    p.job = record(this.B, () => {
      p.dims.forEach((i, k) => {
        const zeros = new Int32Array(p.stats[k].batch);
        slots.push(this.B.addon.rootRefresh(p.stats[k].native, p.prev[k].native, p.out[k].native, spec(i), zeros, 0x7fffffff, -1).info);
      });
    });
    p.infoSlots = slots;
    p.promise = p.job.runAsync().then(
      (r) => {
        p.result = r;
      },
      (e) => {
        p.error = e;
      },
    );
  }

  /** Resolves when every refresh due at step t has finished. */
  async ready(t: number): Promise<void> {
    const due = [...this.pending.values()].flat().filter((p) => p.applyAt === t && !p.result && !p.error);
    await Promise.all(due.map((p) => p.promise));
  }

  /** Blocks until every refresh due at step t has finished (step(), which must not return early). */
  waitSync(t: number): void {
    for (const p of [...this.pending.values()].flat()) {
      if (p.applyAt !== t || p.result || p.error || !p.job) continue;
      try {
        p.result = p.job.wait();
      } catch (e) {
        p.error = e;
      }
    }
  }

  /** Drops every pending refresh (their jobs keep their own buffers alive until done). */
  /** Drops every pending refresh (their buffers are disposed) and, unless `keepSpare`, the spare pool. */
  clear(keepSpare = false): void {
    for (const p of [...this.pending.values()].flat()) for (const t of [...p.stats, ...p.prev, ...p.out]) t.dispose();
    if (!keepSpare) {
      for (const list of this.spare.values()) for (const t of list) t.dispose();
      this.spare.clear();
    }
    this.pending.clear();
    this.queued = [];
  }
}
