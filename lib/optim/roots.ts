/**
 * GEMM-only matrix roots (the `rootMethod: 'newton'` option): the coupled Newton
 * iteration for inverse r-th roots (Guo & Higham 2006), batched over a group of factors,
 * warm-started from the previous root when that root is an inverse root.
 *
 *   X_0 = z^(1/r) I, M_0 = z A            (cold start, z = (1 + r) / (2 ||A||_F))
 *   X_0 = P_prev,    M_0 = X_0^r A        (warm start, for p = -1/r)
 *   T = ((r + 1) I - M) / r;  X <- X T;  M <- T^r M      until ||M - I||_F <= tol
 *
 * X converges to A^(-1/r); the positive root is A^(1/r) = A X^(r-1) (all commute).
 * Items that do not converge report info = 1 and fall back to eigh in the caller.
 */
import * as ops from '../ops';
import type { Tensor } from '../tensor';

const MAX_ITERS = 40;

/** out = a b (batched), with `out` distinct from a and b. */
function mm(a: Tensor, b: Tensor, out: Tensor): Tensor {
  return ops.gemm(a, b, out);
}

/**
 * Root A^p (p = +-1/r, r a positive integer) of each item of `a` (+ ridge I) into `out`.
 * `scratch` holds three tensors of a's shape. Returns per-item info (0 = converged).
 * Items that fail leave `out` unchanged.
 */
export function newtonRoot(a: Tensor, out: Tensor, p: number, _floor: number, ridge: number, scratch: Tensor[]): Int32Array {
  const r = Math.round(1 / Math.abs(p));
  const info = new Int32Array(a.batch).fill(1);
  if (!(r >= 1 && Math.abs(Math.abs(p) * r - 1) < 1e-12)) return info; // not 1/r: eigh handles it
  const B = a.backend;
  const n = a.shape[0];
  const tol = (a.dtype === 'float32' ? 1e-5 : 1e-12) * Math.sqrt(n);
  const A = ops.addIdentity(ops.copy(a, B.tensor(a.dtype, a.shape, a.batch)), ridge);
  const X = B.tensor(a.dtype, a.shape, a.batch);
  const M = B.tensor(a.dtype, a.shape, a.batch);
  const [T, U, V] = scratch;
  try {
    const norms = ops.frobNorm(A);
    if (norms.some((x) => !Number.isFinite(x) || x <= 0)) return info;
    const warm = p < 0 && warmStartable(out, A, X, M, T, U, r);
    if (!warm) {
      const z = Array.from(norms, (x) => (1 + r) / (2 * x));
      ops.fill(X, 0);
      ops.addIdentity(X, z.map((v) => v ** (1 / r)));
      ops.copy(A, M);
      ops.scale(M, z);
    }
    let err = residual(M, T);
    for (let it = 0; it < MAX_ITERS && err.some((e) => !(e <= tol)); it++) {
      // T = ((r + 1) I - M) / r
      ops.copy(M, T);
      ops.scale(T, -1 / r);
      ops.addIdentity(T, (r + 1) / r);
      mm(X, T, U);
      ops.copy(U, X);
      // M = T^r M
      for (let j = 0; j < r; j++) {
        mm(T, M, U);
        ops.copy(U, M);
      }
      const next = residual(M, T);
      if (next.some((e, b) => !Number.isFinite(e) || (it > 8 && e > err[b] && e > tol))) {
        err = next;
        break;
      }
      err = next;
    }
    let result = X;
    if (p > 0) {
      // A^(1/r) = A X^(r-1)
      ops.copy(A, U);
      for (let j = 0; j < r - 1; j++) {
        mm(U, X, V);
        ops.copy(V, U);
      }
      result = U;
    }
    ops.symmetrize(result);
    const nn = n * n;
    const ok = err.map((e) => (e <= tol ? 1 : 0));
    if (ok.every((x) => x === 1)) {
      ops.copy(result, out);
      info.fill(0);
    } else {
      const res = result.read();
      const cur = out.read();
      ok.forEach((x, b) => {
        if (x) {
          info[b] = 0;
          for (let j = 0; j < nn; j++) cur[b * nn + j] = res[b * nn + j];
        }
      });
      out.write(cur);
    }
    return info;
  } finally {
    A.dispose();
    X.dispose();
    M.dispose();
  }
}

/** ||M - I||_F per item (T is scratch). */
function residual(M: Tensor, T: Tensor): number[] {
  ops.copy(M, T);
  ops.addIdentity(T, -1);
  return Array.from(ops.frobNorm(T));
}

/** Warm start X = prev, M = X^r A when the previous root is already close (||M - I|| < 0.5). */
function warmStartable(prev: Tensor, A: Tensor, X: Tensor, M: Tensor, T: Tensor, U: Tensor, r: number): boolean {
  ops.copy(prev, X);
  ops.copy(A, M);
  for (let j = 0; j < r; j++) {
    mm(X, M, U);
    ops.copy(U, M);
  }
  return residual(M, T).every((e) => e < 0.5);
}
