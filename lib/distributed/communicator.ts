/**
 * The communicator: MPI collectives on typed arrays and kradagrad tensors, as promises.
 *
 * Every collective runs on the MPI addon's communication thread (the one thread that makes
 * MPI calls, initialised at MPI_THREAD_FUNNELED), so the event loop keeps running while a
 * collective waits for the other ranks. Every collective also exchanges a small header
 * first, so ranks that disagree (different collectives, lengths, dtypes, ops or roots, or
 * out of step) all get the same coded error instead of hanging.
 */
import * as fs from 'fs';
import { inspect } from 'util';
import { isMainThread } from 'worker_threads';
import { KradagradError, describe, rejectUnknownKeys } from '../errors';
import { FloatArray, Tensor } from '../tensor';
import { CommArray, CommDType, NativeMpi, ReduceOp, WorldInfo, loadMpiAddon } from './native';
import { NcclChannel, NcclInfo, NcclOptions, bootstrapNccl, checkNcclOptions } from './nccl';

/** Options of {@link init}. */
export interface InitOptions {
  /**
   * On the main thread: an uncaught exception or unhandled rejection prints the error,
   * naming this rank, and ends the whole MPI job with MPI_Abort (exit code 1); exiting
   * with a non-zero code before {@link Communicator.finalize} ends the job the same way
   * with that code. Without it, a rank that dies leaves the others to the launcher
   * (`mpirun` ends the job; other launchers may not). Default true. Worker threads never
   * install process handlers. Independent of this, a main thread that exits with code 0
   * before finalize() finalizes MPI on the way out.
   */
  abortOnError?: boolean;
  /**
   * Also set up NCCL for CUDA tensors ({@link Communicator.initNccl}): `true` or its
   * options. Default off.
   */
  nccl?: boolean | NcclOptions;
}

/** The typed array type of each {@link CommDType}. */
export type ArrayFor<D extends CommDType> = D extends 'float32'
  ? Float32Array
  : D extends 'float64'
    ? Float64Array
    : D extends 'int32'
      ? Int32Array
      : Uint8Array;

const OPS: readonly ReduceOp[] = ['sum', 'mean', 'max', 'min'];

function isCommArray(x: unknown): x is CommArray {
  return x instanceof Float32Array || x instanceof Float64Array || x instanceof Int32Array || x instanceof Uint8Array;
}

function badArgument(what: string, expected: string, received: unknown): KradagradError {
  return new KradagradError(`Expected ${expected} for ${what} but received ${describe(received)}`, 'INVALID_ARGUMENT');
}

/**
 * A group of ranks that run collectives together (MPI_COMM_WORLD, through a private
 * duplicate). Obtain it with {@link init}. Every rank must call the same collectives in
 * the same order with matching arguments; arguments that are invalid on their own
 * (wrong types) reject on the rank that passes them, before any communication.
 */
export class Communicator {
  /** This process's rank in the world, 0 ≤ rank < size. */
  readonly rank: number;
  /** Number of ranks in the world (1 outside a launcher: MPI singleton). */
  readonly size: number;
  /** Rank among the ranks on this node (MPI_COMM_TYPE_SHARED): the GPU to use, one per rank. */
  readonly localRank: number;
  /** Number of ranks on this node. */
  readonly localSize: number;
  /** The MPI thread level provided (the communication thread requests 'funneled'). */
  readonly threadLevel: WorldInfo['threadLevel'];
  /** MPI library version string. */
  readonly library: string;
  /** MPI processor (host) name. */
  readonly processor: string;
  /** @internal */ readonly native: NativeMpi;
  #finalized = false;
  #finalizing: Promise<void> | undefined;
  #uninstall: (() => void) | undefined;
  #nccl: NcclChannel | undefined;
  #ncclInit: Promise<NcclInfo> | undefined;

  /** @internal Use {@link init}. */
  constructor(native: NativeMpi, info: WorldInfo) {
    this.native = native;
    this.rank = info.rank;
    this.size = info.size;
    this.localRank = info.localRank;
    this.localSize = info.localSize;
    this.threadLevel = info.threadLevel;
    this.library = info.library;
    this.processor = info.processor;
  }

  /**
   * Sets up NCCL for the CUDA tensors of this process (a collective: every rank calls it,
   * before any other CUDA use). Afterwards the collectives on tensors of the CUDA backend
   * run on the GPU (NCCL on the backend's stream; no host copies), and optimizers given
   * this communicator and the CUDA backend all-reduce their gradients and all-gather their
   * directions there. One rank per GPU: the device is `opts.device`, by default the rank's
   * index on its node (see {@link NcclOptions.device}); the process's CUDA backend is
   * created on it. Bootstrapped over MPI (rank 0's ncclGetUniqueId token, broadcast).
   *
   * Rejects on every rank alike: NCCL_UNAVAILABLE (with the fix) when a rank has no CUDA
   * addon with NCCL, no libnccl or no usable GPU; INVALID_ARGUMENT when two ranks of a node
   * would share a GPU or the CUDA backend already runs on another device; INVALID_OPTION
   * for bad options. Resolves to the same info on later calls.
   */
  initNccl(opts?: NcclOptions): Promise<NcclInfo> {
    if (this.#ncclInit) return this.#ncclInit;
    const p = (async () => {
      this.#usable();
      const o = checkNcclOptions(opts, 'initNccl options');
      const channel = await bootstrapNccl(this, o);
      this.#nccl = channel;
      return channel.info;
    })();
    this.#ncclInit = p;
    p.catch(() => {
      if (this.#ncclInit === p) this.#ncclInit = undefined; // a failed set-up may be retried
    });
    return p;
  }

  /** What {@link initNccl} set up, or null without NCCL. */
  get nccl(): NcclInfo | null {
    return this.#nccl && !this.#nccl.freed ? this.#nccl.info : null;
  }

  /** @internal The NCCL side, when set up and `t` (if given) is one of its CUDA tensors. */
  ncclFor(t?: Tensor): NcclChannel | undefined {
    const c = this.#nccl;
    return c && !c.freed && (!t || c.owns(t)) ? c : undefined;
  }

  /** Whether {@link finalize} has been called on this communicator. */
  get finalized(): boolean {
    return this.#finalized;
  }

  /**
   * Element-wise reduction over all ranks. The result goes to `into` (default: `x`
   * itself, in place) and is the same on every rank; resolves to `into`.
   * `mean` divides the sum by {@link size} (Float32Array/Float64Array and float tensors only).
   * Arrays and tensors alike: a CUDA tensor is reduced by NCCL on the GPU after
   * {@link initNccl}; other tensors go through host memory (see `viaHost`).
   * @param op 'sum' (default), 'mean', 'max' or 'min'.
   */
  async allReduce<T extends CommArray | Tensor>(x: T, op: ReduceOp = 'sum', into?: T): Promise<T> {
    this.#usable();
    if (!OPS.includes(op)) throw badArgument('op', "'sum', 'mean', 'max' or 'min'", op);
    if (x instanceof Tensor) {
      const out = this.#tensorInto(x, into, 'allReduce');
      const dev = this.ncclFor(x);
      if (dev && dev.owns(out)) return (await dev.allReduce(x, op, into as Tensor | undefined)) as T;
      return (await viaHost(this, x, true, (h) => this.native.allReduce(h, op), (r) => out.write(r))) as T;
    }
    this.#array(x, 'x');
    if (into !== undefined) this.#array(into, 'into');
    return this.native.allReduce(x as CommArray, op, into as CommArray | undefined) as Promise<T>;
  }

  /**
   * Concatenates every rank's `x` in rank order. Ranks may contribute different lengths
   * (zero included). Resolves to `into` when given (its length must be the total on every
   * rank that passes one), else to a new array (addon-owned memory, so passing it to
   * another collective costs no copy) or, for a tensor, a new 1-D tensor on its backend.
   */
  async allGather<T extends CommArray | Tensor>(x: T, into?: T): Promise<T> {
    this.#usable();
    if (x instanceof Tensor) {
      if (into !== undefined && !(into instanceof Tensor)) throw badArgument('into', 'a Tensor (as x)', into);
      const target = into as Tensor | undefined;
      if (target) this.#sameDtype(x, target);
      const dev = this.ncclFor(x);
      if (dev && (!target || dev.owns(target))) return (await dev.allGather(x, target)) as T;
      return (await viaHost(
        this,
        x,
        true,
        (h) => this.native.allGather(h, target ? this.native.allocate(target.dtype, target.size) : undefined),
        (r) => (target ? target.write(r) : x.backend.fromArray(r, [r.length])),
      )) as T;
    }
    this.#array(x, 'x');
    if (into !== undefined) this.#array(into, 'into');
    return this.native.allGather(x as CommArray, into as CommArray | undefined) as Promise<T>;
  }

  /**
   * Copies `x` from rank `root` to every other rank (in place there; lengths and dtypes
   * must match on every rank). Resolves to `x`.
   * @param root the sending rank, 0 ≤ root < size; default 0.
   */
  async broadcast<T extends CommArray | Tensor>(x: T, root = 0): Promise<T> {
    this.#usable();
    if (!Number.isInteger(root) || root < 0 || root >= this.size) {
      throw badArgument('root', `an integer rank in [0, ${this.size - 1}]`, root);
    }
    if (x instanceof Tensor) {
      const dev = this.ncclFor(x);
      if (dev) return (await dev.broadcast(x, root)) as T;
      const isRoot = this.rank === root;
      return (await viaHost(this, x, isRoot, (h) => this.native.broadcast(h, root), (r) => (isRoot ? x : x.write(r)))) as T;
    }
    this.#array(x, 'x');
    return this.native.broadcast(x as CommArray, root) as Promise<T>;
  }

  /** Resolves once every rank has called it. */
  async barrier(): Promise<void> {
    this.#usable();
    return this.native.barrier();
  }

  /**
   * A zeroed array whose memory the addon owns. Collectives on it (and on views into it)
   * run in place with no staging copy; ordinary arrays are copied to and from a staging
   * buffer around each collective, so that no garbage collection, detached buffer or
   * ending worker can pull memory out from under MPI. Do not touch an array while a
   * collective on it is pending.
   * @param length elements, 0 ≤ length (up to 4 GiB in bytes).
   */
  allocate<D extends CommDType>(dtype: D, length: number): ArrayFor<D> {
    return this.native.allocate(dtype, length) as ArrayFor<D>;
  }

  /**
   * Ends MPI use: waits for this environment's pending collectives to be queued ahead of
   * it, then (main thread) MPI_Finalize, which waits for every rank to finalize too. Later
   * calls on any communicator reject with DISPOSED, and MPI cannot be initialised again in
   * this process (an MPI rule). In a worker thread it only retires this worker's
   * communicator: MPI belongs to the process, and the main thread finalizes it.
   * Idempotent.
   */
  finalize(): Promise<void> {
    if (this.#finalizing) return this.#finalizing;
    this.#finalized = true;
    this.#uninstall?.();
    forget(this);
    // NCCL first (its communicator is destroyed locally), then MPI.
    const nccl = this.#nccl;
    this.#nccl = undefined;
    const ncclDone = nccl ? nccl.free().catch(() => undefined) : Promise.resolve();
    this.#finalizing = ncclDone.then(() => (isMainThread ? this.native.finalize() : undefined));
    return this.#finalizing;
  }

  /**
   * Ends the whole MPI job now (MPI_Abort on the world, exit status `code` from the
   * launcher), after printing `message` naming this rank. Never returns.
   * @param code exit status, 0..255; default 1.
   */
  abort(code = 1, message?: string): never {
    if (!Number.isInteger(code) || code < 0 || code > 255) throw badArgument('code', 'an integer in [0, 255]', code);
    writeErr(`[kradagrad] rank ${this.rank} of ${this.size}: aborting the MPI job${message ? `: ${message}` : ''}\n`);
    this.native.abort(code);
    process.exit(code); // reached only when MPI is no longer active
  }

  /** @internal */
  setUninstall(f: () => void): void {
    this.#uninstall = f;
  }

  #usable(): void {
    if (this.#finalized) {
      throw new KradagradError('This communicator has been finalized; MPI cannot be used again in this process', 'DISPOSED');
    }
  }

  #array(x: unknown, what: string): void {
    if (!isCommArray(x)) throw badArgument(what, 'a Float32Array, Float64Array, Int32Array, Uint8Array or Tensor', x);
  }

  #sameDtype(x: Tensor, into: Tensor): void {
    if (into.dtype !== x.dtype) {
      throw new KradagradError(`Expected a ${x.dtype} tensor for into (the dtype of x) but received ${into.dtype}`, 'DTYPE_MISMATCH');
    }
  }

  #tensorInto(x: Tensor, into: unknown, what: string): Tensor {
    if (into === undefined) return x;
    if (!(into instanceof Tensor)) throw badArgument('into', 'a Tensor (as x)', into);
    this.#sameDtype(x, into);
    if (into.size !== x.size) {
      throw new KradagradError(`${what}: into has ${into.size} elements but x has ${x.size}`, 'SHAPE_MISMATCH');
    }
    return into;
  }
}

/**
 * Runs a collective on a tensor through host memory: `tensor.read()` into an addon-owned
 * buffer (so the collective itself needs no further copy), the collective, and `store`
 * of the result (a `tensor.write()`). The one place to replace with a device path
 * (NCCL on CUDA buffers) or a zero-copy view of CPU tensors later.
 */
async function viaHost(
  comm: Communicator,
  x: Tensor,
  readInput: boolean,
  run: (host: FloatArray) => Promise<CommArray>,
  store: (result: FloatArray) => Tensor,
): Promise<Tensor> {
  if (x.disposed) throw new KradagradError('The tensor has been disposed', 'DISPOSED');
  const host = comm.allocate(x.dtype, x.size);
  if (readInput) x.read(host);
  const result = (await run(host)) as FloatArray;
  return store(result);
}

function writeErr(s: string): void {
  try {
    fs.writeSync(2, s); // synchronous: the process may end right after
  } catch {
    /* stderr closed: nothing to tell */
  }
}

/**
 * The process handlers of {@link InitOptions.abortOnError} and the finalize-on-exit,
 * installed on the main thread only. Returns the function that removes them.
 */
function installExitHandlers(comm: Communicator, abortOnError: boolean): () => void {
  const who = `[kradagrad] rank ${comm.rank} of ${comm.size}`;
  const onUncaught = (err: unknown, origin: string): void => {
    const what = origin === 'unhandledRejection' ? 'unhandled promise rejection' : 'uncaught exception';
    writeErr(`${who}: ${what}; aborting the MPI job (MPI_Abort, exit code 1):\n${inspect(err)}\n`);
    comm.native.abort(1);
    process.exit(1); // reached only when MPI is no longer active
  };
  const onExit = (code: number): void => {
    if (!comm.native.state().active) return;
    if (code !== 0) {
      if (abortOnError) {
        writeErr(`${who}: exiting with code ${code} before finalize(); aborting the MPI job (MPI_Abort, exit code ${code})\n`);
        comm.native.abort(Math.min(255, Math.max(1, code | 0)));
      }
      // Never MPI_Finalize on a failing exit: it waits for every rank, and the others may
      // be waiting for this one. The launcher sees the status and ends the job.
      return;
    }
    // A clean exit without finalize(): finalize on the way out, or OpenMPI's launcher
    // treats the rank as failed and kills the job.
    try {
      comm.native.finalizeSync();
    } catch (e) {
      writeErr(`${who}: MPI_Finalize at exit failed: ${(e as Error).message}\n`);
    }
  };
  if (abortOnError) process.on('uncaughtException', onUncaught);
  process.on('exit', onExit);
  return () => {
    process.off('uncaughtException', onUncaught);
    process.off('exit', onExit);
  };
}

let current: Promise<Communicator> | undefined;
let currentComm: Communicator | undefined;

/** After finalize(), init() asks the addon again: DISPOSED on the main thread, a fresh communicator in a worker. */
function forget(comm: Communicator): void {
  if (currentComm === comm) {
    current = undefined;
    currentComm = undefined;
  }
}

/**
 * Initialises MPI (once per process, on the addon's communication thread) and returns the
 * world communicator. Under `mpirun`/`srun` every rank calls it; outside a launcher it
 * works as a world of size 1 (MPI singleton). Later calls in the same JS environment
 * return the same communicator; worker threads get their own communicator over the
 * same MPI.
 *
 * Throws DISTRIBUTED_UNAVAILABLE (with the fix: install `openmpi-bin libopenmpi-dev`, run
 * `npm run build:mpi`) when the MPI addon or libmpi is missing, COMM_FAILED when MPI does
 * not initialise, DISPOSED after finalize().
 */
export function init(opts: InitOptions = {}): Promise<Communicator> {
  if (current) return current;
  const p = (async () => {
    if (opts === null || typeof opts !== 'object') throw badArgument('init options', 'an object', opts);
    rejectUnknownKeys(opts, ['abortOnError', 'nccl'], 'init()');
    if (opts.abortOnError !== undefined && typeof opts.abortOnError !== 'boolean') {
      throw new KradagradError(`Expected a boolean for abortOnError but received ${describe(opts.abortOnError)}`, 'INVALID_OPTION');
    }
    const ncclOpts = opts.nccl === undefined || opts.nccl === false ? undefined : checkNcclOptions(opts.nccl, 'init() option nccl');
    const native = loadMpiAddon();
    const info = await native.init();
    const comm = new Communicator(native, info);
    if (isMainThread) comm.setUninstall(installExitHandlers(comm, opts.abortOnError !== false));
    if (ncclOpts) await comm.initNccl(ncclOpts);
    return comm;
  })();
  current = p;
  // Registered before any caller's: currentComm is set by the time a caller sees the
  // communicator. A failed init may be retried (e.g. after building the addon), so it is
  // not cached.
  p.then(
    (comm) => {
      if (current === p) currentComm = comm;
    },
    () => {
      if (current === p) current = undefined;
    },
  );
  return p;
}
