/**
 * Option defaults and validation. Every option is checked once, at construction, with a
 * message that says what was expected; unknown keys are rejected.
 */
import { KradagradError, describe, expectOption, rejectUnknownKeys } from '../errors';
import type { Communicator } from '../distributed/communicator';
import { Backend } from '../tensor';
import type {
  AdamOptions,
  BaseOptions,
  GraftType,
  KradagradOptions,
  KradagradStarOptions,
  Schedule,
  SgdOptions,
  ShampooOptions,
} from './types';

export interface ResolvedBase {
  lr: Schedule;
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
  weightDecayMode: 'l2' | 'decoupled';
  backend: BaseOptions['backend'];
  onNonFinite: 'throw' | 'skip';
  missingGradient: 'error' | 'skip';
  /** The communicator of data-parallel mode (validated), or undefined: one process. */
  distributed?: Communicator;
  /** With distributed: the gradients given are already averaged. */
  gradientsAveraged?: boolean;
}
/** A root method with every field resolved. */
export type ResolvedRootMethod =
  | { method: 'eigh'; retryFloat64: boolean }
  | { method: 'newton'; maxIterations: number; tolerance: number | undefined; retryFloat64: boolean };
export interface ResolvedAdam extends ResolvedBase {
  beta1: number;
  beta2: number;
  eps: number;
}
export interface ResolvedPreconditioner extends ResolvedBase {
  epsilon: number;
  beta2: number;
  blockSize: number;
  mergeDims: boolean;
  grafting: GraftType;
  graftEpsilon: number;
  graftBeta1: number;
  graftBeta2: number;
  statisticsFrequency: number;
  rootFrequency: number;
  startStep: number;
  statisticsDtype: 'float32' | 'float64';
  rootMethod: ResolvedRootMethod;
  maxRootFailures: number;
  asyncRoots: false | { maxStaleness: number };
}
export interface ResolvedShampoo extends ResolvedPreconditioner {
  eigenvalueFloor: number;
}
export interface ResolvedKradagradStar extends ResolvedPreconditioner {
  normalization: 'paper' | 'reference';
  damping: number;
}
export interface ResolvedKradagrad extends ResolvedPreconditioner {
  damping: boolean;
}

const baseKeys = [
  'lr',
  'momentum',
  'nesterov',
  'weightDecay',
  'weightDecayMode',
  'backend',
  'onNonFinite',
  'missingGradient',
  'distributed',
  'gradientsAveraged',
] as const;
const preKeys = [
  ...baseKeys,
  'epsilon',
  'beta2',
  'blockSize',
  'mergeDims',
  'grafting',
  'graftEpsilon',
  'graftBeta1',
  'graftBeta2',
  'statisticsFrequency',
  'rootFrequency',
  'startStep',
  'statisticsDtype',
  'rootMethod',
  'maxRootFailures',
  'asyncRoots',
] as const;

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
// Safe integers only: 1e300 is an integer to JavaScript, but counts and frequencies beyond
// 2^53 are not exact, and the addon rejects them at step time.
const isInt = (v: unknown): v is number => isNum(v) && Number.isSafeInteger(v);
const FLOAT32_MAX = 3.4028234663852886e38;
/** Root-failure counts are int32 natively. */
const MAX_ROOT_FAILURES = 0x7fffffff;
/**
 * KrADagrad*: L0 = I / epsilon, and the first statistics update forms L H L = H / epsilon^2
 * (H = G G^T of a gradient block) before normalizing it; the first preconditioned direction
 * is then about |G| / sqrt(epsilon), and it is cast to the parameter's dtype (float32 even
 * with float64 statistics). The smallest epsilon per statistics dtype keeps both finite for
 * ordinary gradients: float32, 1 / epsilon^2 = 1e32 (Gram entries up to ~3e6); float64,
 * 1 / sqrt(epsilon) = 1e32 (gradient blocks up to ~3e6 in a float32 parameter).
 */
export const KRADAGRAD_STAR_MIN_EPSILON = { float32: 1e-16, float64: 1e-64 } as const;

function num(v: unknown, dflt: number, what: string, range: string, ok: (x: number) => boolean): number {
  if (v === undefined) return dflt;
  expectOption(isNum(v) && ok(v), what, `a finite number ${range}`, v);
  return v;
}
function int(v: unknown, dflt: number, what: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (v === undefined) return dflt;
  expectOption(isInt(v) && v >= min && v <= max, what, max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer in [${min}, ${max}]`, v);
  return v;
}
function oneOf<T extends string>(v: unknown, dflt: T, what: string, allowed: readonly T[]): T {
  if (v === undefined) return dflt;
  expectOption(typeof v === 'string' && (allowed as readonly string[]).includes(v), what, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`, v);
  return v as T;
}
function bool(v: unknown, dflt: boolean, what: string): boolean {
  if (v === undefined) return dflt;
  expectOption(typeof v === 'boolean', what, 'a boolean', v);
  return v;
}

function checkObject(o: unknown, where: string): Record<string, unknown> {
  if (o === undefined) return {};
  if (o === null || typeof o !== 'object' || Array.isArray(o)) {
    throw new KradagradError(`Expected an options object for ${where} but received ${describe(o)}`, 'INVALID_OPTION');
  }
  return o as Record<string, unknown>;
}

function resolveBase(o: Record<string, unknown>, where: string, lrDefault: number): ResolvedBase {
  const lr = o.lr === undefined ? lrDefault : o.lr;
  expectOption(typeof lr === 'function' || (isNum(lr) && lr >= 0), `${where}.lr`, 'a number >= 0 or a function of the step', lr);
  const b = o.backend;
  expectOption(
    b === undefined || b === 'auto' || b === 'cpu' || b === 'cuda' || b instanceof Backend,
    `${where}.backend`,
    "'auto', 'cpu', 'cuda' or a Backend",
    b,
  );
  const dist = resolveDistributed(o, where);
  return {
    lr: lr as Schedule,
    momentum: num(o.momentum, 0, `${where}.momentum`, 'in [0, 1)', (x) => x >= 0 && x < 1),
    nesterov: bool(o.nesterov, false, `${where}.nesterov`),
    weightDecay: num(o.weightDecay, 0, `${where}.weightDecay`, '>= 0', (x) => x >= 0),
    weightDecayMode: oneOf(o.weightDecayMode, 'l2', `${where}.weightDecayMode`, ['l2', 'decoupled'] as const),
    backend: (b ?? 'auto') as BaseOptions['backend'],
    onNonFinite: oneOf(o.onNonFinite, 'throw', `${where}.onNonFinite`, ['throw', 'skip'] as const),
    missingGradient: oneOf(o.missingGradient, 'error', `${where}.missingGradient`, ['error', 'skip'] as const),
    // Only present in data-parallel mode, so that a single process's resolved options (and
    // the options its checkpoints record) are exactly what they were before.
    ...dist,
  };
}

/**
 * `distributed` and `gradientsAveraged`. The communicator class is required lazily, only
 * when the option is given: a single process never loads kradagrad/distributed (which
 * itself loads MPI only in init()).
 */
function resolveDistributed(o: Record<string, unknown>, where: string): { distributed?: Communicator; gradientsAveraged?: boolean } {
  const d = o.distributed;
  if (d === undefined) {
    expectOption(o.gradientsAveraged === undefined, `${where}.gradientsAveraged`, 'no value without the distributed option', o.gradientsAveraged);
    return {};
  }
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { Communicator: Comm } = require('../distributed/communicator') as typeof import('../distributed/communicator');
  expectOption(d instanceof Comm, `${where}.distributed`, "a communicator from kradagrad/distributed's init()", d);
  if ((d as Communicator).finalized) {
    throw new KradagradError(`${where}.distributed: the communicator has been finalized; MPI cannot be used again in this process`, 'DISPOSED');
  }
  return { distributed: d as Communicator, gradientsAveraged: bool(o.gradientsAveraged, false, `${where}.gradientsAveraged`) };
}

function resolveRootMethod(v: unknown, where: string): ResolvedRootMethod {
  if (v === undefined || v === 'eigh') return { method: 'eigh', retryFloat64: true };
  if (v === 'newton') return { method: 'newton', maxIterations: 40, tolerance: undefined, retryFloat64: true };
  const o = checkObject(v, `${where}.rootMethod`);
  expectOption(o.method === 'eigh' || o.method === 'newton', `${where}.rootMethod.method`, "'eigh' or 'newton'", o.method);
  if (o.method === 'eigh') {
    rejectUnknownKeys(o, ['method', 'retryFloat64'], `${where}.rootMethod`);
    return { method: 'eigh', retryFloat64: bool(o.retryFloat64, true, `${where}.rootMethod.retryFloat64`) };
  }
  rejectUnknownKeys(o, ['method', 'maxIterations', 'tolerance', 'retryFloat64'], `${where}.rootMethod`);
  const maxIterations = int(o.maxIterations, 40, `${where}.rootMethod.maxIterations`, 1);
  expectOption(maxIterations <= 10000, `${where}.rootMethod.maxIterations`, 'an integer in [1, 10000]', maxIterations);
  return {
    method: 'newton',
    maxIterations,
    tolerance: o.tolerance === undefined ? undefined : num(o.tolerance, 0, `${where}.rootMethod.tolerance`, 'in (0, 1)', (x) => x > 0 && x < 1),
    retryFloat64: bool(o.retryFloat64, true, `${where}.rootMethod.retryFloat64`),
  };
}

export function resolveSgd(opts: SgdOptions | undefined): ResolvedBase {
  const o = checkObject(opts, 'Sgd options');
  rejectUnknownKeys(o, baseKeys, 'Sgd');
  return resolveBase(o, 'Sgd', 1e-2);
}

export function resolveAdam(opts: AdamOptions | undefined): ResolvedAdam {
  const o = checkObject(opts, 'Adam options');
  rejectUnknownKeys(o, [...baseKeys, 'beta1', 'beta2', 'eps'], 'Adam');
  return {
    ...resolveBase(o, 'Adam', 1e-3),
    beta1: num(o.beta1, 0.9, 'Adam.beta1', 'in [0, 1)', (x) => x >= 0 && x < 1),
    beta2: num(o.beta2, 0.999, 'Adam.beta2', 'in [0, 1)', (x) => x >= 0 && x < 1),
    eps: num(o.eps, 1e-8, 'Adam.eps', '> 0', (x) => x > 0),
  };
}

function resolvePre(o: Record<string, unknown>, where: string, graftDefault: GraftType): ResolvedPreconditioner {
  const grafting = oneOf(o.grafting, graftDefault, `${where}.grafting`, ['none', 'sgd', 'adagrad', 'adam'] as const);
  let asyncRoots: ResolvedPreconditioner['asyncRoots'] = false;
  if (o.asyncRoots === true) asyncRoots = { maxStaleness: 1 };
  else if (o.asyncRoots !== undefined && o.asyncRoots !== false) {
    const a = checkObject(o.asyncRoots, `${where}.asyncRoots`);
    rejectUnknownKeys(a, ['maxStaleness'], `${where}.asyncRoots`);
    asyncRoots = { maxStaleness: int(a.maxStaleness, 1, `${where}.asyncRoots.maxStaleness`, 0) };
  }
  if (asyncRoots && asyncRoots.maxStaleness > 0 && o.distributed !== undefined) {
    // Sharding already divides the root work by the world size; background refreshes would
    // add per-rank pending state to the collective decisions and checkpoints. Not yet.
    throw new KradagradError(
      `${where}: asyncRoots is not supported with distributed (each rank already computes only its share of the roots); leave asyncRoots off`,
      'UNSUPPORTED',
    );
  }
  return {
    ...resolveBase(o, where, 1e-3),
    epsilon: num(o.epsilon, 1e-6, `${where}.epsilon`, '>= 0', (x) => x >= 0),
    beta2: num(o.beta2, 1, `${where}.beta2`, 'in (0, 1]', (x) => x > 0 && x <= 1),
    blockSize: int(o.blockSize, 128, `${where}.blockSize`, 1),
    mergeDims: bool(o.mergeDims, true, `${where}.mergeDims`),
    grafting,
    graftEpsilon: num(o.graftEpsilon, grafting === 'adam' ? 1e-8 : 1e-6, `${where}.graftEpsilon`, '>= 0', (x) => x >= 0),
    graftBeta1: num(o.graftBeta1, 0.9, `${where}.graftBeta1`, 'in [0, 1)', (x) => x >= 0 && x < 1),
    graftBeta2: num(o.graftBeta2, 0.999, `${where}.graftBeta2`, 'in [0, 1)', (x) => x >= 0 && x < 1),
    statisticsFrequency: int(o.statisticsFrequency, 1, `${where}.statisticsFrequency`, 1),
    rootFrequency: int(o.rootFrequency, 20, `${where}.rootFrequency`, 1),
    startStep: int(o.startStep, 1, `${where}.startStep`, 0),
    statisticsDtype: oneOf(o.statisticsDtype, 'float32', `${where}.statisticsDtype`, ['float32', 'float64'] as const),
    rootMethod: resolveRootMethod(o.rootMethod, where),
    maxRootFailures: int(o.maxRootFailures, 3, `${where}.maxRootFailures`, 0, MAX_ROOT_FAILURES),
    asyncRoots,
  };
}

export function resolveShampoo(opts: ShampooOptions | undefined): ResolvedShampoo {
  const o = checkObject(opts, 'Shampoo options');
  rejectUnknownKeys(o, [...preKeys, 'eigenvalueFloor'], 'Shampoo');
  const r = resolvePre(o, 'Shampoo', 'sgd');
  // S0 = epsilon I is state from the start: it must be finite in the statistics dtype.
  if (r.statisticsDtype === 'float32') expectOption(r.epsilon <= FLOAT32_MAX, 'Shampoo.epsilon', `a number in [0, ${FLOAT32_MAX}] with float32 statistics (S0 = epsilon I)`, r.epsilon);
  const floorWhat = '> 0 (the inverse root needs it; with epsilon 0 give one explicitly)';
  // With epsilon 0 there is no default floor: an absent one is an error (not NaN).
  if (o.eigenvalueFloor === undefined && r.epsilon === 0) expectOption(false, 'Shampoo.eigenvalueFloor', `a finite number ${floorWhat}`, undefined);
  const eigenvalueFloor = o.eigenvalueFloor === undefined ? r.epsilon : num(o.eigenvalueFloor, NaN, 'Shampoo.eigenvalueFloor', floorWhat, (x) => x > 0);
  if (r.rootMethod.method === 'newton') {
    // Newton cannot clamp eigenvalues. With beta2 = 1 the statistics are eps I plus PSD
    // terms, so no eigenvalue falls below eps and a floor <= eps never binds; otherwise it may.
    expectOption(
      eigenvalueFloor <= r.epsilon && r.beta2 === 1,
      'Shampoo.rootMethod',
      "'eigh' when the eigenvalue floor can bind (eigenvalueFloor > epsilon or beta2 < 1; Newton roots cannot clamp eigenvalues)",
      'newton',
    );
  }
  return { ...r, eigenvalueFloor };
}

export function resolveKradagradStar(opts: KradagradStarOptions | undefined): ResolvedKradagradStar {
  const o = checkObject(opts, 'KradagradStar options');
  rejectUnknownKeys(o, [...preKeys, 'normalization', 'damping'], 'KradagradStar');
  const r = resolvePre(o, 'KradagradStar', 'sgd');
  // L0 = I / epsilon and the first update's L H L = H / epsilon^2 must be finite in the
  // statistics dtype for ordinary gradients (see KRADAGRAD_STAR_MIN_EPSILON); below that,
  // every step would be rejected as NONFINITE.
  const minEps = KRADAGRAD_STAR_MIN_EPSILON[r.statisticsDtype];
  expectOption(
    r.epsilon >= minEps,
    'KradagradStar.epsilon',
    `a number >= ${minEps} with ${r.statisticsDtype} statistics (L0 = I / epsilon: the first update forms H / epsilon^2, the first direction is about |G| / sqrt(epsilon))`,
    r.epsilon,
  );
  const damping = num(o.damping, 0, 'KradagradStar.damping', '>= 0', (x) => x >= 0);
  // L - d L L^T with L0 = I / eps is (1 - d / eps) / eps I: it stays positive only for d < eps.
  expectOption(damping < r.epsilon, 'KradagradStar.damping', `a number in [0, epsilon = ${r.epsilon}) (damping >= epsilon makes L0 - d L0^2 <= 0)`, damping);
  return {
    ...r,
    normalization: oneOf(o.normalization, 'paper', 'KradagradStar.normalization', ['paper', 'reference'] as const),
    damping,
  };
}

export function resolveKradagrad(opts: KradagradOptions | undefined): ResolvedKradagrad {
  const o = checkObject(opts, 'Kradagrad options');
  rejectUnknownKeys(o, [...preKeys, 'damping'], 'Kradagrad');
  const r = resolvePre(o, 'Kradagrad', 'none');
  const damping = bool(o.damping, true, 'Kradagrad.damping');
  // Damping L' = L - eps L L^T with L0 = I gives (1 - eps) I: positive only for eps < 1.
  if (damping) expectOption(r.epsilon < 1, 'Kradagrad.epsilon', 'a number in [0, 1) with damping on (L0 - eps L0^2 = (1 - eps) I)', r.epsilon);
  return { ...r, damping };
}

/** lr at 1-based step t, validated. */
export function lrAt(lr: Schedule, t: number): number {
  const v = typeof lr === 'function' ? lr(t) : lr;
  if (!isNum(v) || v < 0) {
    throw new KradagradError(`The learning-rate schedule returned ${describe(v)} at step ${t}; expected a finite number >= 0`, 'INVALID_OPTION');
  }
  return v;
}
