/**
 * KrADagrad (the paper's alternating variant, the authors' `KradagradMM`): one factor per
 * step on the dimension schedule; its statistics come from the gradient preconditioned in
 * the other dims, with damping and square-root preconditioners:
 *   ix = c mod k for c < k^2, else e = c - floor(sqrt c)^2, ix = e (< k) or the largest dim;
 *   G~ = G x_j P_j (j != ix) from the float32-rounded gradient; H = G~_(ix) G~_(ix)^T;
 *   L' = L - eps L L^T (damping); L <- L' - L' H L'^T / (1 + ||L' H||_F);  P_ix = L^(1/2);
 *   direction G~ x_ix P_ix (no grafting by default).
 * Its step count c starts at 0 (c = step - 1; schedule.ts). L0 = I.
 */
import { KradagradError, describe } from '../errors';
import * as ops from '../ops';
import type { Tensor } from '../tensor';
import { Group, KroneckerOptimizer } from './kronecker';
import { ResolvedKradagrad, resolveKradagrad } from './options';
import type { KradagradOptions, NamedParams } from './types';

/** The dimension updated at 0-based step c for a block of extents `dims`. */
export function scheduleDim(c: number, dims: readonly number[]): number {
  if (!Number.isSafeInteger(c) || c < 0) throw new KradagradError(`scheduleDim: expected a step count (an integer >= 0) but received ${describe(c)}`, 'INVALID_ARGUMENT');
  if (!Array.isArray(dims) || dims.length === 0 || !dims.every((d) => Number.isSafeInteger(d) && d >= 1)) {
    throw new KradagradError(`scheduleDim: expected a non-empty array of positive integer dims but received ${describe(dims)}`, 'INVALID_ARGUMENT');
  }
  const k = dims.length;
  if (c < k * k) return c % k;
  const r = Math.floor(Math.sqrt(c));
  const e = c - r * r;
  if (e < k) return e;
  let best = 0;
  dims.forEach((d, i) => {
    if (d > dims[best]) best = i;
  });
  return best;
}

export class Kradagrad extends KroneckerOptimizer {
  readonly kind = 'kradagrad';
  private readonly mo: ResolvedKradagrad;
  /** float32 scratch for rounding float64 gradient blocks, per group. */
  private readonly round32: Map<Group, Tensor>;
  /**
   * KrADagrad (the alternating variant): one factor per step on the dimension schedule,
   * damped statistics, square-root preconditioners, no grafting by default.
   * @param params Parameters by name: host arrays with a shape (`{ data, shape }`, updated
   *   in place) or tensor handles of one backend (device mode). Names key the gradients
   *   and the saved state; float32 and float64 may be mixed.
   * @param opts {@link KradagradOptions}: lr 1e-3, epsilon 1e-6 (damping), damping true,
   *   blockSize 128, rootFrequency 20, grafting 'none', momentum 0, statisticsDtype
   *   'float32', backend 'auto', ...
   * @throws KradagradError INVALID_OPTION for an unknown key or a value out of range,
   *   INVALID_ARGUMENT / SHAPE_MISMATCH for bad parameters (BACKEND_MISMATCH,
   *   DISPOSED for tensor handles),
   *   BACKEND_UNAVAILABLE when the requested backend does not load.
   */
  constructor(params: NamedParams, opts?: KradagradOptions) {
    const o = resolveKradagrad(opts);
    super(params, o, 'Kradagrad', true);
    this.mo = o;
    this.round32 = new Map(this.cdt === 'float64' ? this.groups.map((g) => [g, this.backend.tensor('float32', g.extent, g.batch)]) : []);
  }
  protected initStatistic(s: Tensor): Tensor {
    return ops.addIdentity(s, 1);
  }
  protected rootSpec(): { p: number; floor: number } {
    return { p: 0.5, floor: 0 };
  }
  protected factorsOfStep(g: Group, c: number): number[] {
    return [scheduleDim(c, g.extent)];
  }
  /** The reference rounds the gradient to float32 before preconditioning. */
  protected prepareBlocks(g: Group): void {
    const r32 = this.round32.get(g);
    if (r32) {
      ops.copy(g.G, r32);
      ops.copy(r32, g.G);
    }
  }
  /** G~: the blocks preconditioned in every dim but the one this step updates. */
  protected statisticsInput(g: Group, dims: number[], roots: Tensor[]): Tensor {
    return this.precondition(
      g,
      g.G,
      g.extent.map((_, i) => i).filter((i) => !dims.includes(i)),
      roots,
    );
  }
  protected updateStatistic(g: Group, ix: number, x: Tensor, S: Tensor[]): void {
    const { beta2, epsilon, damping } = this.mo;
    const [L, A, M] = S;
    ops.copy(g.stats[ix], L);
    if (beta2 < 1) ops.scale(L, 1 / beta2);
    if (damping && epsilon > 0) {
      ops.gemm(L, L, A, { transB: true });
      ops.axpby(A, L, -epsilon, 1); // L' = L - eps L L^T
    }
    ops.gram(x, ix, A); // H
    ops.gemm(L, A, M); // L' H
    ops.gemm(M, L, A, { transB: true }); // L' H L'^T
    ops.inverseUpdate(L, A, M, 'frobenius'); // L = L' - L' H L'^T / (1 + ||L' H||_F)
  }
  protected disposeState(): void {
    super.disposeState();
    this.round32.forEach((x) => x.dispose());
  }
}
