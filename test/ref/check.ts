/**
 * Shared helpers of the op tests: tensors from float64 data in either dtype, the unit
 * roundoffs, and an elementwise "within tolerance" check that names the worst element.
 */
import type { Backend, DType, Tensor } from '../../lib';

/** Unit roundoff u (half an ulp of 1): the relative error of one correctly rounded operation. */
export const U: Record<DType, number> = { float32: 2 ** -24, float64: 2 ** -53 };
/** LAPACK's "precision" eps*base (slamch/dlamch('P')), the ulp its test ratios are scaled by. */
export const ULP: Record<DType, number> = { float32: 2 ** -23, float64: 2 ** -52 };
/** Threshold LAPACK's own test suite (xDRVST / xCHKST) applies to its scaled residual ratios. */
export const LAPACK_THRESH = 30;
export const DTYPES: DType[] = ['float32', 'float64'];

export function typed(dt: DType, data: ArrayLike<number>): Float32Array | Float64Array {
  return dt === 'float32' ? Float32Array.from(data) : Float64Array.from(data);
}

/** Creates tensors and remembers them so a test can free them all at the end. */
export class Pool {
  private readonly live: Tensor[] = [];
  constructor(readonly backend: Backend) {}
  /** Tensor of `batch` items of `shape` holding `data` rounded to `dt`. */
  from(dt: DType, data: ArrayLike<number>, shape: number[], batch = 1): Tensor {
    return this.keep(this.backend.fromArray(typed(dt, data), shape, batch));
  }
  zeros(dt: DType, shape: number[], batch = 1): Tensor {
    return this.keep(this.backend.tensor(dt, shape, batch));
  }
  keep<T extends Tensor>(t: T): T {
    this.live.push(t);
    return t;
  }
  disposeAll(): void {
    for (const t of this.live.splice(0)) t.dispose();
  }
}

/** Values as a tensor of dtype `dt` stores them (float32 rounds). */
export function stored(dt: DType, data: ArrayLike<number>): Float64Array {
  return Float64Array.from(typed(dt, data));
}

/**
 * Asserts |got[i] - want[i]| <= tol[i] (tol a number or one bound per element), and
 * reports the worst element (ratio error / tolerance) when it fails. Returns that ratio.
 */
export function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, tol: number | ArrayLike<number>, what: string): number {
  if (got.length !== want.length) throw new Error(`${what}: length ${got.length}, expected ${want.length}`);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < want.length; i++) {
    const t = typeof tol === 'number' ? tol : tol[i];
    const e = Math.abs(got[i] - want[i]);
    const r = e === 0 ? 0 : e / t;
    if (!(r <= worst)) {
      worst = r;
      at = i;
    }
  }
  if (!(worst <= 1)) {
    const t = typeof tol === 'number' ? tol : tol[at];
    throw new Error(`${what}: element ${at} is ${got[at]}, expected ${want[at]} within ${t.toExponential(3)} (error/tolerance = ${worst.toPrecision(3)})`);
  }
  return worst;
}

/** Elementwise bound `factor * u * scale[i]` plus a tiny floor for exact zeros. */
export function boundOf(scale: ArrayLike<number>, factor: number, u: number): Float64Array {
  return Float64Array.from(scale, (s) => factor * u * s + 1e-300);
}
