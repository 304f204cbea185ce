/**
 * The public optimizer API: parameters, gradients, options and the Optimizer interface
 * shared by KradagradStar, Kradagrad, Shampoo, Adam and Sgd.
 */
import type { Communicator } from '../distributed/communicator';
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
  /**
   * What a non-finite step does: a gradient with NaN/Inf, or an update whose statistics or
   * new parameter values are not finite (a learning rate or weight decay too large, a
   * gradient too large for float32 statistics). 'throw': a KradagradError with code
   * NONFINITE and the state unchanged; 'skip': the step is skipped (`skippedSteps` counts
   * it), the state unchanged. Default 'throw'.
   */
  onNonFinite?: 'throw' | 'skip';
  /**
   * A parameter without a gradient in a step (its key missing, or `undefined` / `null`):
   * 'error' rejects the step (INVALID_ARGUMENT); 'skip' leaves that parameter, its
   * statistics, roots, momentum and other state exactly as they are for this step (frozen
   * layers, heads unused by a batch; as tfjs and PyTorch skip a missing gradient). The
   * step counter is shared: it advances when any parameter steps. Default 'error' (the
   * tfjs adapter defaults to 'skip').
   */
  missingGradient?: 'error' | 'skip';
  /**
   * Data-parallel training over MPI: the communicator of `kradagrad/distributed`
   * (`await init()`), the same on every rank. Every rank then builds the same optimizer over
   * the same parameters, and steps with `stepAsync` only (`step()` throws UNSUPPORTED: a
   * collective must never block the event loop). A step averages the ranks' gradients with
   * one all-reduce, computes the statistics, roots and preconditioned directions of this
   * rank's blocks only (blocks assigned to ranks by cost, n^3 per factor), all-gathers the
   * directions, and runs grafting, momentum and the update identically everywhere, so the
   * parameters stay bitwise identical on every rank. Non-finite values and root failures are
   * decided together: every rank skips or rejects the same steps. Checkpoints are collective
   * (`saveStateFileAsync` on every rank writes one file from rank 0) and load at any world
   * size. Not with `asyncRoots` (UNSUPPORTED). Default: none (one process; MPI is never loaded).
   */
  distributed?: Communicator;
  /**
   * With `distributed`: the gradients handed to `stepAsync` are already the same on every
   * rank (the caller averaged them), so the all-reduce is skipped. Every step still checks
   * that the ranks' gradients agree (a CRC-32C of them), and rejects the step on every rank
   * with INVALID_ARGUMENT when they do not. Default false.
   */
  gradientsAveraged?: boolean;
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
  /**
   * matrix epsilon: Shampoo S0 = eps I; KrADagrad* L0 = I / eps; KrADagrad damping.
   * Default 1e-6. Ranges: >= 0 (Shampoo with eps 0 needs an explicit eigenvalueFloor);
   * KrADagrad* >= 1e-16 with float32 statistics, >= 1e-64 with float64, because its first
   * update forms L H L = H / eps^2 and its first direction is about |G| / sqrt(eps) in the
   * parameter's dtype (a gradient block whose Gram entries exceed eps^2 * 3.4e38 with
   * float32 statistics overflows them: that step is rejected with NONFINITE and changes
   * nothing); KrADagrad with damping < 1.
   */
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
  /**
   * How factor roots are computed: `'eigh'` (LAPACK / cuSOLVER eigendecomposition, the
   * default) or `'newton'` (GEMM-only coupled Newton iteration, falling back to eigh for
   * factors it does not converge on), or a config object for either (see
   * {@link EighRootConfig}, {@link NewtonRootConfig}). Every method keeps the previous root
   * of a factor it cannot compute and counts the failure.
   */
  rootMethod?: 'eigh' | 'newton' | RootMethodConfig;
  /** Consecutive root failures of one factor (after a float64 retry) before throwing NONFINITE_FACTOR, in [0, 2^31 - 1]. Default 3. */
  maxRootFailures?: number;
  /**
   * Root refreshes in the background: a refresh due at step t runs off the main thread on
   * a snapshot of the statistics of step t, and its roots are swapped in at step
   * t + maxStaleness * rootFrequency (the step waits for it if it has not finished then),
   * so the run is deterministic, and a checkpoint taken meanwhile resumes exactly. `true`
   * means `{ maxStaleness: 1 }`; `maxStaleness: 0` is the synchronous refresh. Default false.
   */
  asyncRoots?: boolean | { maxStaleness?: number };
}

/** The eigendecomposition root: V diag(max(w, floor)^p) V^T of the factor plus a tiny ridge. */
export interface EighRootConfig {
  method: 'eigh';
  /** Retry float32 factors whose eigendecomposition fails in float64 before counting a failure. Default true. */
  retryFloat64?: boolean;
}
/**
 * The GEMM-only coupled Newton iteration (Guo & Higham 2006) for A^(+-1/r). Factors it does
 * not converge on fall back to eigh. It cannot clamp eigenvalues, so it is refused where an
 * eigenvalue floor could bind (Shampoo with `eigenvalueFloor > epsilon` or `beta2 < 1`).
 */
export interface NewtonRootConfig {
  method: 'newton';
  /** Iteration cap. Default 40. */
  maxIterations?: number;
  /** Stop when ||M - I||_F <= tolerance * sqrt(n). Default 1e-5 (float32), 1e-12 (float64). */
  tolerance?: number;
  /** As for eigh, for the fallback. Default true. */
  retryFloat64?: boolean;
}
export type RootMethodConfig = EighRootConfig | NewtonRootConfig;

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
  /** Damping d: L <- L - d L L^T before each update (first-order form of adding d I to the statistic), in [0, epsilon). Default 0. */
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
  /**
   * Applies one update from `grads` (one entry per parameter); parameters change in place.
   * With the `distributed` option it throws UNSUPPORTED: use {@link Optimizer.stepAsync}.
   */
  step(grads: Grads): void;
  /**
   * The same step as {@link Optimizer.step}, run entirely off the main thread (the argument
   * checks and the recording of the step's native ops are all that run on it), so the event
   * loop stays free. Parameter arrays are updated in place when the promise resolves; do
   * not read or write them, or reuse device-mode gradient tensors, until then. While it is
   * in flight every other call on this optimizer (step, stepAsync, save, load, dispose)
   * throws a KradagradError with code BUSY. Results are bitwise those of step().
   *
   * With the `distributed` option it is a collective: every rank calls it once per step,
   * with its own gradients (or, with `gradientsAveraged`, the same ones), and every rank
   * resolves or rejects with the same outcome and code.
   */
  stepAsync(grads: Grads): Promise<void>;
  /** Optimizer state size in bytes (statistics, roots, moments, scratch excluded). */
  stateBytes(): number;
  /**
   * The state as a checkpoint (format 2: the safetensors layout with a checksum; exact round
   * trip with loadState). Format 1 buffers from earlier versions load too. With the
   * `distributed` option it throws UNSUPPORTED (gathering the shards is a collective): use
   * {@link Optimizer.saveStateAsync}.
   */
  saveState(): Buffer;
  /**
   * The checkpoint of {@link Optimizer.saveState}, with the checksum computed off the main
   * thread. With `distributed`: a collective that resolves on every rank to the whole
   * state (every rank's blocks gathered), the same file a single process would write.
   */
  saveStateAsync(): Promise<Buffer>;
  /**
   * Restores a checkpoint; all or nothing (STATE_FORMAT and the state unchanged when anything is wrong).
   * With `distributed`, each rank keeps its own blocks of it (a checkpoint saved at any world
   * size, or by one process, loads); this synchronous form is local to the rank that calls
   * it, {@link Optimizer.loadStateAsync} is the collective, all-or-nothing on every rank.
   */
  loadState(buf: Buffer): void;
  /**
   * loadState with the checksum computed off the main thread. With `distributed`: a
   * collective; every rank loads, or (when any rank cannot, or the ranks were given
   * different checkpoints) every rank rejects with its state unchanged.
   */
  loadStateAsync(buf: Buffer): Promise<void>;
  /**
   * Writes the checkpoint atomically (temporary file, flush, rename, flush the folder): a
   * crash leaves the old file or the new one. With `distributed`: UNSUPPORTED, use
   * {@link Optimizer.saveStateFileAsync}.
   */
  saveStateFile(path: string): void;
  /** loadState from a file (with `distributed`: local to this rank, as loadState). */
  loadStateFile(path: string): void;
  /**
   * saveStateFile without blocking the event loop for the file writes and the checksum.
   * With `distributed`: a collective; rank 0 writes the whole state to `path` (the other
   * ranks' `path` is not used), and every rank resolves once the file is complete (or
   * rejects with rank 0's error).
   */
  saveStateFileAsync(path: string): Promise<void>;
  /**
   * loadStateFile without blocking the event loop for the file read and the checksum.
   * With `distributed`: a collective over the file each rank reads at `path` (the same
   * file, on a shared or copied folder), all or nothing as {@link Optimizer.loadStateAsync}.
   */
  loadStateFileAsync(path: string): Promise<void>;
  /** Frees all native state. */
  dispose(): void;
}
