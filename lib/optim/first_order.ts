/** SGD (with heavy-ball or Nesterov momentum) and Adam/AdamW on the same backend. */
import * as ops from '../ops';
import type { Tensor } from '../tensor';
import { BaseOptimizer, ParamSlot } from './base';
import { ResolvedAdam, resolveAdam, resolveSgd } from './options';
import type { StateEntry } from './state';
import type { AdamOptions, NamedParams, SgdOptions } from './types';

/** Stochastic gradient descent: W -= lr (m = mu m + g (+ wd W)). */
export class Sgd extends BaseOptimizer {
  readonly kind = 'sgd';
  constructor(params: NamedParams, opts?: SgdOptions) {
    super(params, resolveSgd(opts), 'Sgd');
  }
  protected update(t: number): void {
    const lr = this.lr(t);
    for (const s of this.slots) this.applyDirection(s, s.g, lr);
  }
}

/**
 * Adam (Kingma & Ba) with bias correction; weightDecayMode 'decoupled' gives AdamW.
 * m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; W -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
 */
export class Adam extends BaseOptimizer {
  readonly kind = 'adam';
  private readonly o: ResolvedAdam;
  private readonly mom: Tensor[];
  private readonly vel: Tensor[];
  private readonly dir: Tensor[];
  constructor(params: NamedParams, opts?: AdamOptions) {
    const o = resolveAdam(opts);
    super(params, { ...o, momentum: 0, nesterov: false }, 'Adam');
    this.o = o;
    this.mom = this.slots.map((s) => this.backend.tensor(s.dtype, [s.size]));
    this.vel = this.slots.map((s) => this.backend.tensor(s.dtype, [s.size]));
    this.dir = this.slots.map((s) => this.backend.tensor(s.dtype, [s.size]));
  }
  protected update(t: number): void {
    const { beta1, beta2, eps, weightDecay, weightDecayMode } = this.o;
    const lr = this.lr(t);
    const bc1 = 1 - beta1 ** t;
    const bc2 = 1 - beta2 ** t;
    this.slots.forEach((s: ParamSlot, i) => {
      const g = s.g;
      if (weightDecay > 0 && weightDecayMode === 'l2') ops.axpby(s.w, g, weightDecay, 1);
      if (weightDecay > 0 && weightDecayMode === 'decoupled') ops.scale(s.w, 1 - lr * weightDecay);
      ops.axpby(g, this.mom[i], 1 - beta1, beta1);
      ops.mulAcc(g, g, this.vel[i], beta2, 1 - beta2);
      ops.divSqrt(this.mom[i], this.vel[i], this.dir[i], 1 / bc2, eps);
      ops.axpby(this.dir[i], s.w, -lr / bc1, 1);
    });
  }
  protected stateEntries(): StateEntry[] {
    return this.slots.flatMap((s, i) => [
      { name: `param/${s.name}/adam_m`, tensor: this.mom[i] },
      { name: `param/${s.name}/adam_v`, tensor: this.vel[i] },
    ]);
  }
  protected disposeScratch(): void {
    this.dir.forEach((d) => d.dispose());
  }
}
