/**
 * Shampoo (Gupta, Koren, Singer 2018) as the baseline: per block and dim,
 * S = beta2 S + w G_(i) G_(i)^T (w = 1 when beta2 = 1, else 1 - beta2), S0 = eps I;
 * root P = S^(-1/(2k)) with eigenvalue floor; direction G x_0 P_0 ... x_{k-1} P_{k-1}.
 * Statistics and roots in float32 or float64 (`statisticsDtype`).
 */
import * as ops from '../ops';
import type { Tensor } from '../tensor';
import { Group, KroneckerOptimizer } from './kronecker';
import { ResolvedShampoo, resolveShampoo } from './options';
import type { NamedParams, ShampooOptions } from './types';

export class Shampoo extends KroneckerOptimizer {
  readonly kind = 'shampoo';
  private readonly so: ResolvedShampoo;
  /**
   * Shampoo with per-dimension statistics S = eps I + sum G G^T and inverse roots
   * S^(-1/(2k)) (eigh), in float32 or float64 (`statisticsDtype`).
   * @param params Parameters by name: host arrays with a shape (`{ data, shape }`, updated
   *   in place) or tensor handles of one backend (device mode). Names key the gradients
   *   and the saved state; float32 and float64 may be mixed.
   * @param opts {@link ShampooOptions}: lr 1e-3, epsilon 1e-6, blockSize 128, rootFrequency 20,
   *   grafting 'sgd', beta2 1, momentum 0, statisticsDtype 'float32', backend 'auto', ...
   * @throws KradagradError INVALID_OPTION for an unknown key or a value out of range,
   *   INVALID_ARGUMENT / SHAPE_MISMATCH for bad parameters (BACKEND_MISMATCH,
   *   DISPOSED for tensor handles),
   *   BACKEND_UNAVAILABLE when the requested backend does not load.
   */
  constructor(params: NamedParams, opts?: ShampooOptions) {
    const o = resolveShampoo(opts);
    super(params, o, 'Shampoo');
    this.so = o;
  }
  protected initStatistic(s: Tensor): Tensor {
    return ops.addIdentity(s, this.o.epsilon);
  }
  protected updateStatistic(g: Group, i: number, x: Tensor, S: Tensor[]): void {
    const beta2 = this.o.beta2;
    ops.copy(g.stats[i], S[0]);
    ops.gram(x, i, S[0], beta2 === 1 ? 1 : 1 - beta2, beta2);
  }
  protected rootSpec(k: number): { p: number; floor: number } {
    return { p: -1 / (2 * k), floor: this.so.eigenvalueFloor };
  }
}
