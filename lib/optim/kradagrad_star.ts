/**
 * KrADagrad* (Mei, Moreno, Walters 2023, Algorithm 1): keeps the inverse statistics
 * L ~ B^(-1) per block and dim and updates them without any inversion,
 *   L <- L / beta2 (beta2 < 1);  L <- L - d L L^T (damping d > 0);
 *   H = G_(i) G_(i)^T;  L <- L - L H L / t,
 *   t = 1 + ||H L||_F ('paper') or n_i (1 + tr(H L)) ('reference', the authors' code),
 * with L0 = I / eps. Roots are positive, P = L^(1/(2k)), which stay accurate in float32.
 */
import * as ops from '../ops';
import type { Tensor } from '../tensor';
import { Group, KroneckerOptimizer } from './kronecker';
import { ResolvedKradagradStar, resolveKradagradStar } from './options';
import type { KradagradStarOptions, NamedParams } from './types';

export class KradagradStar extends KroneckerOptimizer {
  readonly kind = 'kradagrad_star';
  private readonly ko: ResolvedKradagradStar;
  /**
   * KrADagrad* (the paper's Algorithm 1): inverse statistics L ~ B^(-1) updated without
   * inversion, positive roots L^(1/(2k)); accurate in float32.
   * @param params Parameters by name: host arrays with a shape (`{ data, shape }`, updated
   *   in place) or tensor handles of one backend (device mode). Names key the gradients
   *   and the saved state; float32 and float64 may be mixed.
   * @param opts {@link KradagradStarOptions}: lr 1e-3, epsilon 1e-6 (L0 = I / epsilon),
   *   normalization 'paper', blockSize 128, rootFrequency 20, grafting 'sgd', beta2 1,
   *   momentum 0, statisticsDtype 'float32', asyncRoots false, backend 'auto', ...
   * @throws KradagradError INVALID_OPTION for an unknown key or a value out of range,
   *   INVALID_ARGUMENT / SHAPE_MISMATCH for bad parameters (BACKEND_MISMATCH,
   *   DISPOSED for tensor handles),
   *   BACKEND_UNAVAILABLE when the requested backend does not load.
   */
  constructor(params: NamedParams, opts?: KradagradStarOptions) {
    const o = resolveKradagradStar(opts);
    super(params, o, 'KradagradStar');
    this.ko = o;
  }
  protected initStatistic(s: Tensor): Tensor {
    return ops.addIdentity(s, 1 / this.o.epsilon);
  }
  protected updateStatistic(g: Group, i: number, x: Tensor, S: Tensor[]): void {
    const { beta2, damping, normalization } = this.ko;
    const [L, A, HL] = S;
    ops.copy(g.stats[i], L);
    if (beta2 < 1) ops.scale(L, 1 / beta2);
    if (damping > 0) {
      ops.gemm(L, L, A, { transB: true });
      ops.axpby(A, L, -damping, 1);
    }
    ops.gram(x, i, A); // H
    ops.gemm(A, L, HL); // H L
    ops.gemm(L, HL, A); // L H L
    // L -= L H L / t with t from H L, computed on the backend.
    ops.inverseUpdate(L, A, HL, normalization === 'reference' ? 'trace' : 'frobenius');
  }
  protected rootSpec(k: number): { p: number; floor: number } {
    return { p: 1 / (2 * k), floor: 0 };
  }
}
