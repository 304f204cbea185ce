/**
 * The one owner of "is it due now?" for the Kronecker optimizers: statistics updates, root
 * refreshes and the start of preconditioning, from the 1-based step number t.
 *
 * Shampoo and KrADagrad* count steps from 1 (c = t), as the reference's Shampoo; KrADagrad
 * counts from 0 (c = t - 1), as the authors' `KradagradMM` (its counter starts at 0 and
 * increments after the step). With that count c:
 *   statistics due:  c % statisticsFrequency == 0
 *   roots due:       c % rootFrequency == 0   (after the statistics of the same step)
 *   preconditioned:  c >= startStep           (before it, the graft direction is used)
 */
export class Schedule {
  constructor(
    private readonly o: { statisticsFrequency: number; rootFrequency: number; startStep: number },
    /** KrADagrad's 0-based count. */
    readonly zeroBased: boolean,
  ) {}
  /** The count c of 1-based step t. */
  count(t: number): number {
    return this.zeroBased ? t - 1 : t;
  }
  statisticsDue(t: number): boolean {
    return this.count(t) % this.o.statisticsFrequency === 0;
  }
  rootsDue(t: number): boolean {
    return this.count(t) % this.o.rootFrequency === 0;
  }
  started(t: number): boolean {
    return this.count(t) >= this.o.startStep;
  }
}
