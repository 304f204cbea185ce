/**
 * Typed tensor operations. Each runs on the backend of its tensors (all must share one);
 * outputs are written in place into the tensors given, or allocated when omitted and
 * returned. Shapes are per item; a batch of 1 broadcasts where noted.
 *
 * Arguments are checked here for the messages (tensors made by a Backend, options objects
 * with known keys and typed values, per-item coefficient arrays that are not empty, offset
 * lists that are arrays of arrays) and again natively for everything that could overrun
 * memory; every rejection is a KradagradError with a code.
 */
import { KradagradError, describe, rejectUnknownKeys } from './errors';
import { NativeTensor } from './native';
import { Backend, Tensor, isTensor } from './tensor';

function be(...ts: unknown[]): Backend {
  if (ts.length === 0) throw new KradagradError('Expected kradagrad Tensor arguments but received none', 'INVALID_ARGUMENT');
  for (const t of ts) {
    if (!isTensor(t)) throw new KradagradError(`Expected kradagrad Tensor arguments but received ${describe(t)}`, 'INVALID_HANDLE');
  }
  const b = (ts[0] as Tensor).backend;
  for (const t of ts as Tensor[]) {
    if (t.backend.addon !== b.addon) {
      throw new KradagradError(`Tensors live on different backends (${b.name} and ${t.backend.name})`, 'BACKEND_MISMATCH');
    }
  }
  return b;
}
const n = (t: Tensor): NativeTensor => t.native;
type Coeff = number | number[] | Float64Array;

/** An optional output tensor: undefined or null means "allocate one"; anything else must be a Tensor. */
function optional(t: unknown, what: string): Tensor[] {
  if (t === undefined || t === null) return [];
  if (!isTensor(t)) throw new KradagradError(`Expected a kradagrad Tensor or undefined for ${what} but received ${describe(t)}`, 'INVALID_HANDLE');
  return [t];
}

/** An options object: undefined (no options) or an object with known keys only. */
function options<T extends object>(opts: unknown, known: string[], where: string): T {
  if (opts === undefined) return {} as T;
  if (opts === null || typeof opts !== 'object' || Array.isArray(opts)) {
    throw new KradagradError(`Expected an options object for ${where} but received ${describe(opts)}`, 'INVALID_OPTION');
  }
  rejectUnknownKeys(opts, known, where);
  return opts as T;
}

/** `allowFailures` is a boolean when given (a string such as 'no' would otherwise read as true). */
function allowFailures(opts: { allowFailures?: unknown }, where: string): boolean {
  const v = opts.allowFailures;
  if (v !== undefined && typeof v !== 'boolean') {
    throw new KradagradError(`Expected a boolean for ${where}.allowFailures but received ${describe(v)}`, 'INVALID_OPTION');
  }
  return v === true;
}

/**
 * A per-item coefficient: a number, or one value per item. An empty array (or a Float64Array
 * whose buffer was detached, which reads as empty) would silently mean the default for every
 * item, so it is refused.
 */
function coeff(c: unknown, what: string): Coeff {
  if ((Array.isArray(c) || ArrayBuffer.isView(c)) && (c as { length?: number }).length === 0) {
    throw new KradagradError(`Expected a number or one coefficient per item for ${what} but received an empty array (a detached buffer?)`, 'INVALID_OPTION');
  }
  return c as Coeff;
}

/**
 * Offsets of boxes (one array per box) flattened for the addon. Not Array.prototype.flat:
 * it skips holes, which would turn a malformed offset into fewer boxes silently; holes
 * stay `undefined` here and the addon rejects them.
 */
function flatOffsets(offsets: unknown, rank: number, where: string): unknown[] {
  if (!Array.isArray(offsets) || !offsets.every((o) => Array.isArray(o))) {
    throw new KradagradError(`${where}: expected an array of offset arrays (one per box) but received ${describe(offsets)}`, 'INVALID_ARGUMENT');
  }
  const flat: unknown[] = [];
  (offsets as unknown[][]).forEach((o, b) => {
    // Flattened, an offset of the wrong length would shift every later box (or make two).
    if (o.length !== rank) throw new KradagradError(`${where}: box ${b} has ${o.length} offsets but the tensor has rank ${rank}`, 'SHAPE_MISMATCH');
    for (let j = 0; j < o.length; j++) flat.push(o[j]);
  });
  return flat;
}

export interface GemmOptions {
  transA?: boolean;
  transB?: boolean;
  /** Default 1. */
  alpha?: number;
  /** Default 0 (C is overwritten). */
  beta?: number;
}
/** C = alpha op(A) op(B) + beta C, batched; A or B may have batch 1 (broadcast). */
export function gemm(a: Tensor, b: Tensor, c?: Tensor, opts?: GemmOptions): Tensor {
  opts = options<GemmOptions>(opts, ['transA', 'transB', 'alpha', 'beta'], 'gemm');
  const B = be(a, b, ...optional(c, 'C'));
  if (!c) {
    const m = opts.transA ? a.shape[1] : a.shape[0];
    const nn = opts.transB ? b.shape[0] : b.shape[1];
    if (a.shape.length !== 2 || b.shape.length !== 2) {
      throw new KradagradError(`gemm: expected matrices but got shapes [${a.shape}] and [${b.shape}]`, 'SHAPE_MISMATCH');
    }
    c = B.tensor(a.dtype, [m, nn], Math.max(a.batch, b.batch));
  }
  B.addon.gemm(n(a), n(b), n(c), opts.transA ?? false, opts.transB ?? false, opts.alpha ?? 1, opts.beta ?? 0);
  return c;
}

/** H = alpha G_(mode) G_(mode)^T + beta H: contraction of G with itself over all axes but `mode`. */
export function gram(g: Tensor, mode: number, h?: Tensor, alpha = 1, beta = 0): Tensor {
  const B = be(g, ...optional(h, 'H'));
  if (!h) {
    const d = g.shape[mode];
    if (d === undefined) throw new KradagradError(`gram: mode ${mode} out of range for shape [${g.shape}]`, 'INVALID_ARGUMENT');
    h = B.tensor(g.dtype, [d, d], g.batch);
  }
  B.addon.gram(n(g), mode, n(h), alpha, beta);
  return h;
}

/**
 * Mode product: out_(mode) = op(M) G_(mode) (op(M) = M^T when `transM`). With
 * `transM = true` this contracts axis `mode` of G with axis 0 of M (tensordot).
 */
export function modeProduct(g: Tensor, mode: number, m: Tensor, out?: Tensor, transM = false): Tensor {
  const B = be(g, m, ...optional(out, 'out'));
  if (!out) {
    if (g.shape[mode] === undefined || m.shape.length !== 2) {
      throw new KradagradError(`modeProduct: mode ${mode} / matrix [${m.shape}] do not fit [${g.shape}]`, 'SHAPE_MISMATCH');
    }
    const shape = g.shape.slice();
    shape[mode] = transM ? m.shape[1] : m.shape[0];
    out = B.tensor(g.dtype, shape, g.batch);
  }
  B.addon.modeProduct(n(g), mode, n(m), n(out), transM);
  return out;
}

/**
 * Per-item outcome of a batched eigensolver call: 0 = ok, > 0 = the eigensolver failed on
 * that item, -1 (matpow) = the eigendecomposition worked but the power is not finite (p < 0
 * with an eigenvalue at a floor that is 0 in the dtype, or an overflow). Failed items of
 * matpow's output keep their previous contents.
 */
export type SolverInfo = Int32Array;
/** SolverInfo value of an item whose power is not finite (native/core/ops.h kNonFiniteResult). */
export const NONFINITE_RESULT = -1;

function throwOnFailure(info: SolverInfo, op: string, a: Tensor): void {
  const bad = info.findIndex((x) => x !== 0);
  if (bad < 0) return;
  const finite = a.backend.addon.allFinite(n(a));
  if (!finite[bad]) {
    throw new KradagradError(`${op}: item ${bad} of the input is not finite`, 'NONFINITE', { item: bad });
  }
  if (info[bad] === NONFINITE_RESULT) {
    throw new KradagradError(
      `${op}: the result of item ${bad} is not finite (a negative power of an eigenvalue at a floor that is 0 in ${a.dtype}, or an overflow); the output item keeps its previous contents`,
      'NONFINITE',
      { item: bad, info: info[bad] },
    );
  }
  throw new KradagradError(`${op}: the eigensolver failed on item ${bad} (info ${info[bad]})`, 'EIGH_FAILED', {
    item: bad,
    info: info[bad],
  });
}

export interface EighResult {
  /** Eigenvalues, ascending: batch of [n]. */
  w: Tensor;
  /** Eigenvectors in columns: batch of [n, n]. */
  v: Tensor;
  info: SolverInfo;
}
export interface EighOptions {
  /** Return per-item failures in `info` instead of throwing (default false). */
  allowFailures?: boolean;
}

function eighOut(a: Tensor): { w: Tensor; v: Tensor } {
  if (a.shape.length !== 2 || a.shape[0] !== a.shape[1]) {
    throw new KradagradError(`eigh: expected square matrices but got shape [${a.shape}]`, 'SHAPE_MISMATCH');
  }
  return { w: a.backend.tensor(a.dtype, [a.shape[0]], a.batch), v: a.backend.tensor(a.dtype, a.shape, a.batch) };
}

/** Batched symmetric eigendecomposition (the lower triangle is read). */
export function eigh(a: Tensor, opts?: EighOptions): EighResult {
  const allow = allowFailures(options<EighOptions>(opts, ['allowFailures'], 'eigh'), 'eigh');
  const B = be(a);
  const { w, v } = eighOut(a);
  const info = B.addon.eigh(n(a), n(w), n(v));
  if (!allow) throwOnFailure(info, 'eigh', a);
  return { w, v, info };
}

/** {@link eigh} off the main thread (libuv pool); the event loop stays free meanwhile. */
export async function eighAsync(a: Tensor, opts?: EighOptions): Promise<EighResult> {
  const allow = allowFailures(options<EighOptions>(opts, ['allowFailures'], 'eighAsync'), 'eighAsync');
  const B = be(a);
  const { w, v } = eighOut(a);
  const info = await B.addon.eighAsync(n(a), n(w), n(v));
  if (!allow) throwOnFailure(info, 'eighAsync', a);
  return { w, v, info };
}

export interface MatpowOptions {
  /** Eigenvalues are clamped below at this value before the power (default 0; must be > 0 for p < 0). */
  floor?: number;
  /** Added to the diagonal before the eigendecomposition (default 0). */
  ridge?: number;
  /** Output; items whose eigh fails keep their previous contents. */
  out?: Tensor;
  /** Return failures in `info` instead of throwing (default false). */
  allowFailures?: boolean;
}
const matpowKeys = ['floor', 'ridge', 'out', 'allowFailures'];

/** A^p = V diag(max(w, floor)^p) V^T of symmetric PSD matrices, (w, V) = eigh(A + ridge I). */
export function matpow(a: Tensor, p: number, opts?: MatpowOptions): { out: Tensor; info: SolverInfo } {
  const o = options<MatpowOptions>(opts, matpowKeys, 'matpow');
  const allow = allowFailures(o, 'matpow');
  const B = be(a, ...optional(o.out, 'matpow out'));
  const out = o.out ?? B.tensor(a.dtype, a.shape, a.batch);
  const info = B.addon.matpow(n(a), p, o.floor ?? 0, o.ridge ?? 0, n(out));
  if (!allow) throwOnFailure(info, 'matpow', a);
  return { out, info };
}

/** {@link matpow} off the main thread. */
export async function matpowAsync(a: Tensor, p: number, opts?: MatpowOptions): Promise<{ out: Tensor; info: SolverInfo }> {
  const o = options<MatpowOptions>(opts, matpowKeys, 'matpowAsync');
  const allow = allowFailures(o, 'matpowAsync');
  const B = be(a, ...optional(o.out, 'matpowAsync out'));
  const out = o.out ?? B.tensor(a.dtype, a.shape, a.batch);
  const info = await B.addon.matpowAsync(n(a), p, o.floor ?? 0, o.ridge ?? 0, n(out));
  if (!allow) throwOnFailure(info, 'matpowAsync', a);
  return { out, info };
}

/** y = alpha x + beta y; alpha/beta are numbers or one value per item. */
export function axpby(x: Tensor, y: Tensor, alpha: Coeff, beta: Coeff = 1): Tensor {
  be(x, y).addon.axpby(n(x), n(y), coeff(alpha, 'alpha'), coeff(beta, 'beta'));
  return y;
}
/** x *= alpha (number or per item). */
export function scale(x: Tensor, alpha: Coeff): Tensor {
  be(x).addon.scale(n(x), coeff(alpha, 'alpha'));
  return x;
}
/** A += alpha I (number or per item). */
export function addIdentity(a: Tensor, alpha: Coeff): Tensor {
  be(a).addon.addIdentity(n(a), coeff(alpha, 'alpha'));
  return a;
}
/** A = (A + A^T) / 2. */
export function symmetrize(a: Tensor): Tensor {
  be(a).addon.symmetrize(n(a));
  return a;
}
/** dst = src (same element count; casts between float32 and float64). */
export function copy(src: Tensor, dst: Tensor): Tensor {
  be(src, dst).addon.copy(n(src), n(dst));
  return dst;
}
export function fill(x: Tensor, value: number): Tensor {
  be(x).addon.fill(n(x), value);
  return x;
}
/** acc = a acc + b x y (elementwise). */
export function mulAcc(x: Tensor, y: Tensor, acc: Tensor, a: number, b: number): Tensor {
  be(x, y, acc).addon.mulAcc(n(x), n(y), n(acc), a, b);
  return acc;
}
/** out = x / (sqrt(acc scale) + eps) (elementwise). */
export function divSqrt(x: Tensor, acc: Tensor, out: Tensor, scale: number, eps: number): Tensor {
  be(x, acc, out).addon.divSqrt(n(x), n(acc), n(out), scale, eps);
  return out;
}
/** Per-item dot products. */
export function dot(x: Tensor, y: Tensor): Float64Array {
  return be(x, y).addon.dot(n(x), n(y));
}
/** Per-item Frobenius norms. */
export function frobNorm(x: Tensor): Float64Array {
  return be(x).addon.frobNorm(n(x));
}
/** Per-item traces of square items. */
export function trace(a: Tensor): Float64Array {
  return be(a).addon.trace(n(a));
}
/** Per-item finiteness (true = no NaN/Inf). */
export function allFinite(x: Tensor): boolean[] {
  return Array.from(be(x).addon.allFinite(n(x)), (v) => v === 1);
}
/**
 * Copies the boxes of `full` (batch 1) at `offsets` (one offset array per box) into
 * items first, first+1, ... of `blocks` (item shape = box extents), or back when `scatter`.
 */
export function boxes(full: Tensor, blocks: Tensor, offsets: number[][], scatter = false, first = 0): void {
  const B = be(full, blocks);
  B.addon.boxes(n(full), n(blocks), flatOffsets(offsets, full.shape.length, 'boxes') as number[], scatter, first);
}

/** Norm grafting, per item: d *= ||a||_F / (||d||_F + eps), computed on the backend (no host round trip on GPUs). */
export function scaleByNormRatio(d: Tensor, a: Tensor, eps: number): Tensor {
  be(d, a).addon.scaleByNormRatio(n(d), n(a), eps);
  return d;
}
/**
 * KrADagrad's inverse-statistics update, per item: L -= T / s with s = n (1 + tr M)
 * ('trace', the authors' code) or 1 + ||M||_F ('frobenius', the paper), M = H L, T = L H L.
 */
export function inverseUpdate(l: Tensor, t: Tensor, m: Tensor, kind: 'trace' | 'frobenius'): Tensor {
  be(l, t, m).addon.inverseUpdate(n(l), n(t), n(m), kind);
  return l;
}
/** Finiteness of many tensors at once (one synchronization): true = no NaN/Inf. */
export function allFiniteMany(xs: Tensor[]): boolean[] {
  if (!Array.isArray(xs)) throw new KradagradError(`allFiniteMany: expected an array of tensors but received ${describe(xs)}`, 'INVALID_ARGUMENT');
  if (xs.length === 0) return [];
  return Array.from(be(...xs).addon.allFiniteMany(xs.map(n)), (v) => v === 1);
}

// ---- multi-tensor forms ("foreach"): one native call for a list of same-role tensors.
// Entry i of each list pairs up; entries may differ in dtype and size but must not overlap
// one another (a backend may run them fused, in any order). Every entry is checked before
// any is touched, so a bad entry (its index is in the error) changes nothing.

function beMany(where: string, ...lists: Tensor[][]): Backend | undefined {
  for (const l of lists) {
    if (!Array.isArray(l)) throw new KradagradError(`${where}: expected arrays of tensors but received ${describe(l)}`, 'INVALID_ARGUMENT');
  }
  const n = lists[0].length;
  for (const l of lists) {
    if (l.length !== n) throw new KradagradError(`${where}: the tensor lists have different lengths (${n} and ${l.length})`, 'SHAPE_MISMATCH');
  }
  // Array.from, not flat(): a hole in a list is an entry (undefined) to reject, not one to skip.
  return n === 0 ? undefined : be(...lists.flatMap((l) => Array.from(l)));
}

/** ys[i] = alpha xs[i] + beta ys[i] for every i. */
export function axpbyMany(xs: Tensor[], ys: Tensor[], alpha: number, beta = 1): void {
  beMany('axpbyMany', xs, ys)?.addon.axpbyMany(xs.map(n), ys.map(n), alpha, beta);
}
/** dsts[i] = srcs[i] (casting between float32 and float64). */
export function copyMany(srcs: Tensor[], dsts: Tensor[]): void {
  beMany('copyMany', srcs, dsts)?.addon.copyMany(srcs.map(n), dsts.map(n));
}
/** accs[i] = a accs[i] + b xs[i] ys[i] (elementwise). */
export function mulAccMany(xs: Tensor[], ys: Tensor[], accs: Tensor[], a: number, b: number): void {
  beMany('mulAccMany', xs, ys, accs)?.addon.mulAccMany(xs.map(n), ys.map(n), accs.map(n), a, b);
}
/** outs[i] = xs[i] / (sqrt(accs[i] scale) + eps) (elementwise). */
export function divSqrtMany(xs: Tensor[], accs: Tensor[], outs: Tensor[], scale: number, eps: number): void {
  beMany('divSqrtMany', xs, accs, outs)?.addon.divSqrtMany(xs.map(n), accs.map(n), outs.map(n), scale, eps);
}
/** Norm grafting of many tensors: ds[i] *= ||as[i]|| / (||ds[i]|| + eps), per item. */
export function scaleByNormRatioMany(ds: Tensor[], as: Tensor[], eps: number): void {
  beMany('scaleByNormRatioMany', ds, as)?.addon.scaleByNormRatioMany(ds.map(n), as.map(n), eps);
}
/** {@link boxes} for several full tensors and one blocks tensor: entry i moves the boxes at offsets[i] of fulls[i] to items firsts[i].. */
export function boxesMany(fulls: Tensor[], blocks: Tensor, offsets: number[][][], firsts: number[], scatter = false): void {
  if (!Array.isArray(fulls) || !Array.isArray(offsets) || !Array.isArray(firsts) || !offsets.every((o) => Array.isArray(o) && o.every(Array.isArray))) {
    throw new KradagradError('boxesMany: expected an array of tensors, one array of offset arrays per tensor, and an array of first items', 'INVALID_ARGUMENT');
  }
  if (offsets.length !== fulls.length || firsts.length !== fulls.length) {
    throw new KradagradError(`boxesMany: ${fulls.length} tensors but ${offsets.length} offset lists and ${firsts.length} first items`, 'SHAPE_MISMATCH');
  }
  if (fulls.length === 0) return;
  const B = be(...fulls, blocks);
  B.addon.boxesMany(fulls.map(n), n(blocks), offsets.map((o, i) => flatOffsets(o, fulls[i].shape.length, `boxesMany entry ${i}`) as number[]), firsts, scatter);
}

export interface RootOptions {
  /** Exponent: the root is A^p (e.g. 0.25, -0.25). */
  p: number;
  /** Eigenvalue floor of the eigh path (default 0; must be > 0 for p < 0). */
  floor?: number;
  /** Added to the diagonal first (default 0). */
  ridge?: number;
  /** Try the GEMM-only coupled Newton iteration first (p = +-1/r only). Default false. */
  newton?: boolean;
  /** Newton's iteration cap (default 40) and tolerance on ||M - I||_F / sqrt(n) (default 1e-5 float32, 1e-12 float64). */
  maxIterations?: number;
  tolerance?: number;
  /** Retry float32 items that fail in float64. Default true. */
  retryFloat64?: boolean;
}

/**
 * Roots of a batch of symmetric PSD matrices, with the optimizers' solver chain: Newton
 * (when asked), eigh for what it leaves, a float64 retry of failed float32 items, and for
 * items where everything failed, `prev`'s item (the previous root) copied to `out`.
 * Returns per-item info (0 = computed, else the item kept `prev`).
 */
export function root(a: Tensor, prev: Tensor, out: Tensor, opts: RootOptions): SolverInfo {
  if (opts === null || typeof opts !== 'object') {
    throw new KradagradError(`root: expected options with an exponent p but received ${describe(opts)}`, 'INVALID_OPTION');
  }
  rejectUnknownKeys(opts, ['p', 'floor', 'ridge', 'newton', 'maxIterations', 'tolerance', 'retryFloat64'], 'root');
  return be(a, prev, out).addon.root(n(a), n(prev), n(out), opts);
}
