/**
 * Plain float64 TypeScript references for single steps of the optimizers on one matrix
 * parameter (no blocking, no merging): the formulas of lib/optim written out with dense
 * arrays and a Jacobi eigensolver, independent of the native code.
 */
export type Mat = number[][];

export const eye = (n: number, s = 1): Mat => Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => (i === j ? s : 0)));
export const mul = (a: Mat, b: Mat): Mat => a.map((r) => b[0].map((_, j) => r.reduce((s, v, k) => s + v * b[k][j], 0)));
export const tr = (a: Mat): Mat => a[0].map((_, j) => a.map((r) => r[j]));
export const add = (a: Mat, b: Mat, s = 1): Mat => a.map((r, i) => r.map((v, j) => v + s * b[i][j]));
export const scaleM = (a: Mat, s: number): Mat => a.map((r) => r.map((v) => v * s));
export const frob = (a: Mat): number => Math.sqrt(a.flat().reduce((s, v) => s + v * v, 0));
export const trace = (a: Mat): number => a.reduce((s, r, i) => s + r[i], 0);
export const toMat = (x: ArrayLike<number>, r: number, c: number): Mat => Array.from({ length: r }, (_, i) => Array.from({ length: c }, (_, j) => x[i * c + j]));

/** Cyclic Jacobi eigendecomposition of a symmetric matrix: A = V diag(w) V^T. */
export function jacobi(a0: Mat): { w: number[]; v: Mat } {
  const n = a0.length;
  const a = a0.map((r) => r.slice());
  const v = eye(n);
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += a[p][q] * a[p][q];
    if (off < 1e-30) break;
    for (let p = 0; p < n; p++)
      for (let q = p + 1; q < n; q++) {
        if (Math.abs(a[p][q]) < 1e-300) continue;
        const theta = (a[q][q] - a[p][p]) / (2 * a[p][q]);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k][p];
          const akq = a[k][q];
          a[k][p] = c * akp - s * akq;
          a[k][q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p][k];
          const aqk = a[q][k];
          a[p][k] = c * apk - s * aqk;
          a[q][k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k][p];
          const vkq = v[k][q];
          v[k][p] = c * vkp - s * vkq;
          v[k][q] = s * vkp + c * vkq;
        }
      }
  }
  return { w: a.map((r, i) => r[i]), v };
}

/** V diag(max(w, floor)^p) V^T of (A + ridge I). */
export function matpow(a: Mat, p: number, floor: number, ridge = 1e-8): Mat {
  const { w, v } = jacobi(add(a, eye(a.length, ridge)));
  const d = w.map((x) => Math.max(x, floor) ** p);
  return mul(
    v.map((r) => r.map((x, j) => x * d[j])),
    tr(v),
  );
}
