/** SGD (with heavy-ball or Nesterov momentum) and Adam/AdamW on the same backend. */
import type { Tensor } from '../tensor';
import { BaseOptimizer } from './base';
import type { StateTensor } from './checkpoint';
import { ResolvedAdam, resolveAdam, resolveSgd } from './options';
import type { StepTx } from './step_tx';
import type { AdamOptions, NamedParams, SgdOptions } from './types';

/** Stochastic gradient descent: W -= lr (m = mu m + g (+ wd W)). */
export class Sgd extends BaseOptimizer {
  readonly kind = 'sgd';
  /**
   * SGD with optional heavy-ball or Nesterov momentum and weight decay.
   * @param params Parameters by name: host arrays with a shape (`{ data, shape }`, updated
   *   in place) or tensor handles of one backend (device mode). Names key the gradients
   *   and the saved state; float32 and float64 may be mixed.
   * @param opts {@link SgdOptions}: lr 1e-2, momentum 0, nesterov false, weightDecay 0,
   *   backend 'auto', onNonFinite 'throw'.
   * @throws KradagradError INVALID_OPTION for an unknown key or a value out of range,
   *   INVALID_ARGUMENT / SHAPE_MISMATCH for bad parameters (BACKEND_MISMATCH,
   *   DISPOSED for tensor handles).
   */
  constructor(params: NamedParams, opts?: SgdOptions) {
    super(params, resolveSgd(opts), 'Sgd');
  }
  protected recordUpdate(tx: StepTx): void {
    const slots = tx.activeSlots.map((i) => this.slots[i]);
    this.recordUpdateStage(
      tx,
      slots,
      slots.map((s) => s.g),
    );
  }
}

/**
 * Adam (Kingma & Ba) with bias correction; weightDecayMode 'decoupled' gives AdamW.
 * m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; W -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
 * One fused native stage (Backend::adam_many), out of place: m, v and their spares.
 */
export class Adam extends BaseOptimizer {
  readonly kind = 'adam';
  private readonly o: ResolvedAdam;
  /** First and second moments, each with its spare (swapped in when a step commits). */
  private readonly mom: [Tensor, Tensor][];
  private readonly vel: [Tensor, Tensor][];
  /**
   * Adam with bias correction (AdamW with weightDecayMode 'decoupled').
   * @param params Parameters by name: host arrays with a shape (`{ data, shape }`, updated
   *   in place) or tensor handles of one backend (device mode). Names key the gradients
   *   and the saved state; float32 and float64 may be mixed.
   * @param opts {@link AdamOptions}: lr 1e-3, beta1 0.9, beta2 0.999, eps 1e-8,
   *   weightDecay 0, backend 'auto'. `momentum` and `nesterov` are not used (beta1 is
   *   Adam's momentum).
   * @throws KradagradError INVALID_OPTION for an unknown key or a value out of range,
   *   INVALID_ARGUMENT / SHAPE_MISMATCH for bad parameters (BACKEND_MISMATCH,
   *   DISPOSED for tensor handles).
   */
  constructor(params: NamedParams, opts?: AdamOptions) {
    const o = resolveAdam(opts);
    super(params, { ...o, momentum: 0, nesterov: false }, 'Adam');
    this.o = o;
    const t = (i: number): Tensor => this.backend.tensor(this.slots[i].dtype, [this.slots[i].size]);
    this.mom = this.slots.map((_, i) => [t(i), t(i)]);
    this.vel = this.slots.map((_, i) => [t(i), t(i)]);
  }
  protected recordUpdate(tx: StepTx): void {
    const { beta1, beta2, eps, weightDecay, weightDecayMode } = this.o;
    const idx = tx.activeSlots;
    if (idx.length === 0) return;
    const n = (xs: Tensor[]) => xs.map((x) => x.native);
    const mom = idx.map((i) => this.mom[i]);
    const vel = idx.map((i) => this.vel[i]);
    const slots = idx.map((i) => this.slots[i]);
    const tag = tx.guard({ kind: 'update', params: slots.map((s) => s.name) });
    this.backend.addon.adamMany(
      n(slots.map((s) => s.g)),
      n(mom.map((p) => p[0])),
      n(vel.map((p) => p[0])),
      n(slots.map((s) => s.w)),
      n(mom.map((p) => p[1])),
      n(vel.map((p) => p[1])),
      n(slots.map((s) => s.wOut)),
      {
        lr: tx.lr,
        beta1,
        beta2,
        eps,
        weightDecay,
        bc1: 1 - beta1 ** tx.t,
        bc2: 1 - beta2 ** tx.t,
        l2: weightDecay > 0 && weightDecayMode === 'l2',
        decoupled: weightDecay > 0 && weightDecayMode === 'decoupled',
      },
      tag,
    );
    tx.onCommit(() => {
      for (const p of [...mom, ...vel]) [p[0], p[1]] = [p[1], p[0]];
    });
  }
  protected stateTensors(): StateTensor[] {
    return this.slots.flatMap((s, i) => [
      { name: `${s.name}/adam_m`, tensor: this.mom[i][0], shape: s.shape },
      { name: `${s.name}/adam_v`, tensor: this.vel[i][0], shape: s.shape },
    ]);
  }
  protected v1Names(): Map<string, { v1: string; item?: number }> {
    return new Map(
      this.slots.flatMap((s) => [
        [`${s.name}/adam_m`, { v1: `param/${s.name}/adam_m` }],
        [`${s.name}/adam_v`, { v1: `param/${s.name}/adam_v` }],
      ]),
    );
  }
  protected disposeState(): void {
    for (const p of [...this.mom, ...this.vel]) p.forEach((t) => t.dispose());
  }
}
