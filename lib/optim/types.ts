/**
 * The public optimizer API: parameters, gradients, options and the Optimizer interface
 * shared by KradagradStar, Kradagrad, Shampoo, Adam and Sgd.
 */
import type { BackendRequest } from '../native';
import type { Backend, FloatArray, Tensor } from '../tensor';

/** A host-mode parameter: updated in place in `data` (row-major, `shape`). */
export interface HostParam {
  data: FloatArray;
  shape: number[];
}
/** A parameter: host arrays with a shape, or a tensor handle (device mode, batch 1). */
export type ParamInput = HostParam | Tensor;
/** Parameters by name (the names key the state and the gradients). */
export type NamedParams = Record<string, ParamInput>;
/** Gradients by parameter name: same dtype and element count as the parameter. */
export type Grads = Record<string, FloatArray | Tensor>;
/** A number, or a function of the 1-based step number. */
export type Schedule = number | ((step: number) => number);

/** Options shared by every optimizer. */
export interface BaseOptions {
  /** Learning rate, or a schedule lr(step) with the step counted from 1; >= 0. Default 1e-3 (Sgd: 1e-2). */
  lr?: Schedule;
  /** Heavy-ball momentum coefficient in [0, 1). Default 0. */
  momentum?: number;
  /** Textbook Nesterov: W -= lr (D + momentum m) with m = momentum m + D. Default false. */
  nesterov?: boolean;
  /** Weight decay coefficient >= 0. Default 0. */
  weightDecay?: number;
  /** 'l2' adds weightDecay W to the direction; 'decoupled' does W -= lr weightDecay W. Default 'l2'. */
  weightDecayMode?: 'l2' | 'decoupled';
  /** Where state lives: 'auto' (CUDA if usable, else CPU), 'cpu', 'cuda' or a Backend. Default 'auto'. */
  backend?: BackendRequest | Backend;
  /** What a non-finite gradient does: 'throw' (NONFINITE, state unchanged) or 'skip' the step. Default 'throw'. */
  onNonFinite?: 'throw' | 'skip';
}

export type SgdOptions = BaseOptions;

export interface AdamOptions extends BaseOptions {
  /** Default 0.9. */
  beta1?: number;
  /** Default 0.999. */
  beta2?: number;
  /** Default 1e-8. */
  eps?: number;
}

/** Grafting: the preconditioned direction of each parameter takes the norm of this simpler method's direction for that parameter (as the reference). */
export type GraftType = 'none' | 'sgd' | 'adagrad' | 'adam';

/** Options of the Kronecker-factored optimizers (KradagradStar, Kradagrad, Shampoo). */
export interface PreconditionerOptions extends BaseOptions {
  /** matrix epsilon: Shampoo S0 = eps I; KrADagrad* L0 = I / eps; KrADagrad damping. Default 1e-6. */
  epsilon?: number;
  /** Statistics EMA: 1 = sum (AdaGrad-like). Default 1. */
  beta2?: number;
  /** Dims above this are cut into blocks of this size. Default 128. */
  blockSize?: number;
  /** Merge adjacent small dims while their product <= blockSize. Default true. */
  mergeDims?: boolean;
  /** Norm grafting source. Default 'sgd' (Shampoo, KradagradStar), 'none' (Kradagrad). */
  grafting?: GraftType;
  /** AdaGrad/Adam graft epsilon. Default 1e-6 (adagrad), 1e-8 (adam). */
  graftEpsilon?: number;
  /** Adam graft beta1/beta2. Default 0.9 / 0.999. */
  graftBeta1?: number;
  graftBeta2?: number;
  /** Update statistics every this many steps. Default 1. */
  statisticsFrequency?: number;
  /** Recompute roots every this many steps. Default 20. */
  rootFrequency?: number;
  /**
   * Precondition from this step on (before it the graft direction is used). Default 1.
   * Shampoo and KradagradStar count steps from 1; Kradagrad, like the authors' KradagradMM,
   * compares its 0-based counter s = step - 1 (so it preconditions from step startStep + 1
   * and refreshes roots at s % rootFrequency == 0).
   */
  startStep?: number;
  /** dtype of the factor statistics and roots. Default 'float32'. */
  statisticsDtype?: 'float32' | 'float64';
  /** Root method: LAPACK/cuSOLVER eigh, or GEMM-only coupled Newton warm-started from the last root. Default 'eigh'. */
  rootMethod?: 'eigh' | 'newton';
  /** Consecutive root failures of one factor (after a float64 retry) before throwing NONFINITE_FACTOR. Default 3. */
  maxRootFailures?: number;
  /** Refresh roots off the main thread; the step uses roots at most `maxStaleness` refreshes old. Default false. */
  asyncRoots?: boolean | { maxStaleness?: number };
}

export interface ShampooOptions extends PreconditionerOptions {
  /** Eigenvalue floor of the inverse root. Default = epsilon. */
  eigenvalueFloor?: number;
}

export interface KradagradStarOptions extends PreconditionerOptions {
  /**
   * 'paper': t = 1 + ||H L||_F (Algorithm 1); 'reference': t = n (1 + tr(H L)) (the authors'
   * code, which the golden trajectories use). Default 'paper'.
   */
  normalization?: 'paper' | 'reference';
  /** Damping d: L <- L - d L L^T before each update (first-order form of adding d I to the statistic). Default 0. */
  damping?: number;
}

export interface KradagradOptions extends PreconditionerOptions {
  /** Damping L' = L - epsilon L L^T before each update. Default true. */
  damping?: boolean;
}

/** What every optimizer offers. */
export interface Optimizer {
  /** 'kradagrad_star' | 'kradagrad' | 'shampoo' | 'adam' | 'sgd'. */
  readonly kind: string;
  readonly backend: Backend;
  /** Steps taken so far (0 before the first). */
  readonly stepCount: number;
  /** Parameter names in order. */
  readonly paramNames: readonly string[];
  /** Applies one update from `grads` (one entry per parameter); parameters change in place. */
  step(grads: Grads): void;
  /** Like step, but root refreshes run off the main thread (awaits them only when asyncRoots is off). */
  stepAsync(grads: Grads): Promise<void>;
  /** Optimizer state size in bytes (statistics, roots, moments, scratch excluded). */
  stateBytes(): number;
  /** Versioned binary state (exact round trip with loadState). */
  saveState(): Buffer;
  loadState(buf: Buffer): void;
  saveStateFile(path: string): void;
  loadStateFile(path: string): void;
  /** Frees all native state. */
  dispose(): void;
}
