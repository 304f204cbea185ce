/**
 * One optimizer step in the making. A step is recorded as a native job that computes into
 * spare buffers, with guards for what can go wrong after the argument checks (non-finite
 * gradients, statistics or new parameter values; roots failing too often). The state
 * changes only when the job ran to the end: then the commits run (swapping the spare
 * buffers in, failure counts, the step counter). An aborted job changes nothing.
 */
import type { NativeJobResult } from '../native';

/** What a guard checks, so that an aborted job becomes an error that names the culprit. */
export type Guard =
  /** guardFinite over the staged gradients of these parameters (index = entry). */
  | { kind: 'gradient'; params: string[] }
  /** The fused update's finiteness of the new values of these parameters (index = entry). */
  | { kind: 'update'; params: string[] }
  /** guardFinite over new statistics; `factors[index]` describes the tensor. */
  | { kind: 'statistics'; factors: string[] }
  /** A root refresh (index = batch item): NONFINITE_FACTOR. */
  | { kind: 'roots'; describe: (item: number, result: NativeJobResult) => { message: string; details: Record<string, unknown> } };

export class StepTx {
  private readonly commits: { job: number; f: (r: NativeJobResult) => void }[] = [];
  private readonly guards: Guard[] = [];
  /**
   * Which of the step's jobs is being recorded: 0, or 1 for the second job of a distributed
   * step (after the all-gather). A commit gets the result of the job it was recorded in.
   */
  job = 0;
  /** Indices of the slots that step (a gradient was given). */
  readonly activeSlots: number[];

  constructor(
    /** The 1-based number of this step. */
    readonly t: number,
    /** The learning rate of this step (validated). */
    readonly lr: number,
    /** Per slot: whether it has a gradient this step. */
    readonly active: boolean[],
    /** The gradients as given (validated). */
    readonly grads: Readonly<Record<string, unknown>>,
  ) {
    this.activeSlots = active.flatMap((a, i) => (a ? [i] : []));
  }

  /** Runs `f` (with the job's result) if and only if the step commits. */
  onCommit(f: (r: NativeJobResult) => void): void {
    this.commits.push({ job: this.job, f });
  }

  /** Registers a guard; the returned tag goes to the native guard op. */
  guard(g: Guard): number {
    this.guards.push(g);
    return this.guards.length - 1;
  }

  guardOf(tag: number): Guard | undefined {
    return this.guards[tag];
  }

  /** Runs the commits, each with the result of its job (`r`, or `r[job]` for a step of several jobs). */
  commit(r: NativeJobResult | NativeJobResult[]): void {
    for (const c of this.commits) c.f(Array.isArray(r) ? r[c.job] : r);
  }

  /** The same step with the gradients it stages replaced (distributed: the averaged ones). */
  withGrads(grads: Readonly<Record<string, unknown>>): StepTx {
    return new StepTx(this.t, this.lr, this.active, grads);
  }
}

/** Swaps two entries of (possibly different) arrays: a spare buffer taking a state buffer's place. */
export function swap<T>(a: T[], i: number, b: T[], j: number): void {
  const x = a[i];
  a[i] = b[j];
  b[j] = x;
}
