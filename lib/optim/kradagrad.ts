/**
 * KrADagrad (the paper's alternating variant, the authors' `KradagradMM`): one factor per
 * step on the dimension schedule; its statistics come from the gradient preconditioned in
 * the other dims, with damping and square-root preconditioners:
 *   ix = s mod k for s < k^2, else e = s - floor(sqrt s)^2, ix = e (< k) or the largest dim;
 *   G~ = G x_j P_j (j != ix) from the float32-rounded gradient; H = G~_(ix) G~_(ix)^T;
 *   L' = L - eps L L^T (damping); L <- L' - L' H L'^T / (1 + ||L' H||_F);  P_ix = L^(1/2);
 *   direction G~ x_ix P_ix (no grafting).
 * s counts from 0 (s = step - 1). L0 = I.
 */
import * as ops from '../ops';
import type { Tensor } from '../tensor';
import { Group, KroneckerOptimizer } from './kronecker';
import { ResolvedKradagrad, resolveKradagrad } from './options';
import type { KradagradOptions, NamedParams } from './types';

/** The dimension updated at 0-based step s for a block of extents `dims`. */
export function scheduleDim(s: number, dims: readonly number[]): number {
  const k = dims.length;
  if (s < k * k) return s % k;
  const r = Math.floor(Math.sqrt(s));
  const e = s - r * r;
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
  /** float32 scratch for rounding float64 gradients, per group. */
  private readonly round32: (Tensor | undefined)[];
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
    super(params, o, 'Kradagrad');
    this.mo = o;
    this.round32 = this.groups.map((g) => (this.cdt === 'float64' ? this.backend.tensor('float32', g.extent, g.batch) : undefined));
  }
  protected initStatistic(s: Tensor): Tensor {
    return ops.addIdentity(s, 1);
  }
  protected rootSpec(): { p: number; floor: number } {
    return { p: 0.5, floor: 0 };
  }
  /** Unused: the alternating update lives in update(). */
  protected updateStatistics(): void {}

  private updateFactor(g: Group, ix: number, gt: Tensor): void {
    const { beta2, epsilon } = this.mo;
    const L = g.stats[ix];
    const [H, LH, T] = g.scratch[ix];
    if (beta2 < 1) ops.scale(L, 1 / beta2);
    if (this.mo.damping && epsilon > 0) {
      ops.gemm(L, L, T, { transB: true });
      ops.axpby(T, L, -epsilon, 1); // L' = L - eps L L^T
    }
    ops.gram(gt, ix, H);
    ops.gemm(L, H, LH);
    ops.gemm(LH, L, T, { transB: true }); // L' H L'^T
    ops.inverseUpdate(L, T, LH, 'frobenius'); // L = L' - L' H L'^T / (1 + ||L' H||_F)
  }

  protected update(t: number): void {
    const o = this.mo;
    const s = t - 1;
    const lr = this.lr(t);
    const started = s >= o.startStep;
    this.gather();
    this.groups.forEach((g, gi) => {
      const ix = scheduleDim(s, g.extent);
      // The reference rounds the gradient to float32 before preconditioning.
      const r32 = this.round32[gi];
      if (r32) {
        ops.copy(g.G, r32);
        ops.copy(r32, g.G);
      }
      const others = g.extent.map((_, i) => i).filter((i) => i !== ix);
      let gt = this.precondition(g, g.G, others);
      if (s % o.statisticsFrequency === 0) this.updateFactor(g, ix, gt);
      if (s % o.rootFrequency === 0) this.refreshRoots(g, [ix]);
      if (started) {
        gt = this.precondition(g, gt, [ix]);
        this.scatter(g, gt);
      }
    });
    this.finishAll(t, lr, started);
  }

  protected disposeScratch(): void {
    super.disposeScratch();
    this.round32.forEach((x) => x?.dispose());
  }
}
