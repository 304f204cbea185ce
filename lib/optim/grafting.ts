/**
 * Norm grafting for the Kronecker optimizers: the preconditioned direction D of each
 * parameter is rescaled to the norm of a simpler method's direction A,
 * D <- D ||A|| / (||D|| + 1e-16), as the reference does. One interface, four kinds:
 *   none     no grafting
 *   sgd      A = g
 *   adagrad  acc += g^2;  A = g / (sqrt(acc) + eps)
 *   adam     mom = b1 mom + (1 - b1) g;  acc = b2 acc + (1 - b2) g^2;
 *            A = (mom / (1 - b1^t)) / (sqrt(acc / (1 - b2^t)) + eps)
 * Buffers are made up front (state and its spare, swapped in when the step commits).
 */
import type { Backend, Tensor } from '../tensor';
import type { StateTensor } from './checkpoint';
import type { ParamSlot } from './base';
import type { ResolvedPreconditioner } from './options';
import type { StepTx } from './step_tx';

export interface Graft {
  readonly kind: ResolvedPreconditioner['grafting'];
  /**
   * Records the graft directions A of the slots `idx` at step tx.t (their state goes to
   * spares, swapped in on commit). `none` has none.
   */
  directions(tx: StepTx, idx: number[]): Tensor[];
  /** The direction W follows before startStep (the reference): g, or Adam's graft direction. */
  preStartDirection(i: number): Tensor;
  stateTensors(): StateTensor[];
  /** Format 1 names of the state tensors. */
  v1Names(into: Map<string, { v1: string; item?: number }>): void;
  dispose(): void;
}

type Pair = [Tensor, Tensor];
const swapPairs = (ps: Pair[]): void => {
  for (const p of ps) [p[0], p[1]] = [p[1], p[0]];
};

class PlainGraft implements Graft {
  constructor(
    readonly kind: 'none' | 'sgd',
    private readonly slots: ParamSlot[],
  ) {}
  directions(_tx: StepTx, idx: number[]): Tensor[] {
    return idx.map((i) => this.slots[i].g);
  }
  preStartDirection(i: number): Tensor {
    return this.slots[i].g;
  }
  stateTensors(): StateTensor[] {
    return [];
  }
  v1Names(): void {}
  dispose(): void {}
}

class MomentGraft implements Graft {
  private readonly acc: Pair[];
  private readonly mom: Pair[];
  private readonly dir: Tensor[];
  constructor(
    readonly kind: 'adagrad' | 'adam',
    private readonly slots: ParamSlot[],
    private readonly o: ResolvedPreconditioner,
    B: Backend,
  ) {
    const t = (s: ParamSlot): Tensor => B.tensor(s.dtype, [s.size]);
    this.acc = slots.map((s) => [t(s), t(s)]);
    this.mom = kind === 'adam' ? slots.map((s) => [t(s), t(s)]) : [];
    this.dir = slots.map(t);
  }
  directions(tx: StepTx, idx: number[]): Tensor[] {
    const B = this.slots[0].g.backend;
    const n = (xs: Tensor[]) => xs.map((x) => x.native);
    const adam = this.kind === 'adam';
    const { graftEpsilon: eps, graftBeta1: b1, graftBeta2: b2 } = this.o;
    const acc = idx.map((i) => this.acc[i]);
    const mom = adam ? idx.map((i) => this.mom[i]) : [];
    const dirs = idx.map((i) => this.dir[i]);
    B.addon.graftMany(
      this.kind,
      n(idx.map((i) => this.slots[i].g)),
      n(acc.map((p) => p[0])),
      adam ? n(mom.map((p) => p[0])) : null,
      n(acc.map((p) => p[1])),
      adam ? n(mom.map((p) => p[1])) : null,
      n(dirs),
      adam ? { eps, beta1: b1, beta2: b2, bc1: 1 - b1 ** tx.t, bc2: 1 - b2 ** tx.t } : { eps },
    );
    // The new accumulators are state: a gradient too large for the dtype overflows acc
    // (g^2) while the direction g / sqrt(acc) stays finite, so they get a guard of their own.
    const names = idx.map((i) => this.slots[i].name);
    const factors = [...names.map((p) => `the ${this.kind} graft accumulator of '${p}'`), ...(adam ? names.map((p) => `the adam graft moment of '${p}'`) : [])];
    const tag = tx.guard({ kind: 'statistics', factors });
    B.addon.guardFinite([...n(acc.map((p) => p[1])), ...(adam ? n(mom.map((p) => p[1])) : [])], tag);
    tx.onCommit(() => swapPairs([...acc, ...mom]));
    return dirs;
  }
  preStartDirection(i: number): Tensor {
    return this.kind === 'adam' ? this.dir[i] : this.slots[i].g;
  }
  stateTensors(): StateTensor[] {
    return this.slots.flatMap((s, i) => [
      { name: `${s.name}/graft_acc`, tensor: this.acc[i][0], shape: s.shape },
      ...(this.kind === 'adam' ? [{ name: `${s.name}/graft_mom`, tensor: this.mom[i][0], shape: s.shape }] : []),
    ]);
  }
  v1Names(into: Map<string, { v1: string; item?: number }>): void {
    for (const s of this.slots) {
      into.set(`${s.name}/graft_acc`, { v1: `param/${s.name}/graft_acc` });
      if (this.kind === 'adam') into.set(`${s.name}/graft_mom`, { v1: `param/${s.name}/graft_mom` });
    }
  }
  dispose(): void {
    for (const t of [...this.acc.flat(), ...this.mom.flat(), ...this.dir]) t.dispose();
  }
}

export function makeGraft(o: ResolvedPreconditioner, slots: ParamSlot[], B: Backend): Graft {
  return o.grafting === 'adagrad' || o.grafting === 'adam' ? new MomentGraft(o.grafting, slots, o, B) : new PlainGraft(o.grafting, slots);
}
