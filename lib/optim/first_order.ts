/** SGD (with heavy-ball or Nesterov momentum) and Adam/AdamW on the same backend. */
import * as ops from '../ops';
import type { Tensor } from '../tensor';
import { BaseOptimizer } from './base';
import { ResolvedAdam, resolveAdam, resolveSgd } from './options';
import type { StateEntry } from './state';
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
  protected update(t: number): void {
    const lr = this.lr(t);
    this.applyDirections(this.slots, this.slots.map((s) => s.g), lr);
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
    this.mom = this.slots.map((s) => this.backend.tensor(s.dtype, [s.size]));
    this.vel = this.slots.map((s) => this.backend.tensor(s.dtype, [s.size]));
    this.dir = this.slots.map((s) => this.backend.tensor(s.dtype, [s.size]));
  }
  protected update(t: number): void {
    const { beta1, beta2, eps, weightDecay, weightDecayMode } = this.o;
    const lr = this.lr(t);
    const bc1 = 1 - beta1 ** t;
    const bc2 = 1 - beta2 ** t;
    const ws = this.slots.map((s) => s.w);
    const gs = this.slots.map((s) => s.g);
    if (weightDecay > 0 && weightDecayMode === 'l2') ops.axpbyMany(ws, gs, weightDecay, 1);
    if (weightDecay > 0 && weightDecayMode === 'decoupled') ops.axpbyMany(ws, ws, 0, 1 - lr * weightDecay);
    ops.axpbyMany(gs, this.mom, 1 - beta1, beta1);
    ops.mulAccMany(gs, gs, this.vel, beta2, 1 - beta2);
    ops.divSqrtMany(this.mom, this.vel, this.dir, 1 / bc2, eps);
    ops.axpbyMany(this.dir, ws, -lr / bc1, 1);
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
