/**
 * Stable error codes. Everything kradagrad rejects (bad arguments, shapes, dtypes,
 * non-finite values, disposed handles, solver failures, backend problems) is a
 * {@link KradagradError} with one of these codes.
 */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'INVALID_OPTION'
  | 'INVALID_HANDLE'
  | 'DISPOSED'
  | 'SHAPE_MISMATCH'
  | 'DTYPE_MISMATCH'
  | 'NONFINITE'
  | 'NONFINITE_FACTOR'
  | 'EIGH_FAILED'
  | 'OUT_OF_MEMORY'
  | 'BACKEND_MISMATCH'
  | 'BACKEND_UNAVAILABLE'
  | 'UNSUPPORTED'
  | 'CUDA_FAILED'
  | 'CUDA_OOM'
  | 'CUBLAS_FAILED'
  | 'CUSOLVER_FAILED'
  | 'STATE_FORMAT'
  | 'IO_ERROR'
  | 'BUSY'
  /** kradagrad/distributed: the MPI addon or the MPI library is missing (the message names the fix). */
  | 'DISTRIBUTED_UNAVAILABLE'
  /** An MPI call failed, or MPI could not be initialised; the communicator is unusable afterwards. */
  | 'COMM_FAILED'
  /** A peer rank failed during a collective (reported where the MPI library can detect it). */
  | 'RANK_FAILED'
  /** Ranks called different collectives, or the same one with different ops or roots, or are out of step. */
  | 'COLLECTIVE_MISMATCH'
  /** kradagrad/distributed: NCCL (kradagrad_nccl.so, libnccl) or the GPU it needs is not available here (the message names the fix). */
  | 'NCCL_UNAVAILABLE'
  | 'INTERNAL';

/** The one error class of kradagrad; `code` is stable across versions, the message is for people. */
export class KradagradError extends Error {
  readonly code: ErrorCode;
  /** Extra detail (e.g. solver info value, parameter name, factor index) when available. */
  details?: Record<string, unknown>;
  constructor(message: string, code: ErrorCode = 'INTERNAL', details?: Record<string, unknown>) {
    super(message);
    this.name = 'KradagradError';
    this.code = code;
    if (details) this.details = details;
  }
}

/** Throws an INVALID_OPTION error unless `ok`. */
export function expectOption(ok: boolean, what: string, expected: string, received: unknown): asserts ok {
  if (!ok) throw new KradagradError(`Expected ${expected} for ${what} but received ${describe(received)}`, 'INVALID_OPTION');
}

/** Short human description of a value, for error messages. */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return `${typeof v} ${String(v)}`;
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  if (typeof v === 'function') return 'a function';
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${(v as unknown as { length: number }).length})`;
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  return 'an object';
}

/** Rejects keys of `opts` that are not in `known`. */
export function rejectUnknownKeys(opts: object, known: readonly string[], where: string): void {
  for (const k of Object.keys(opts)) {
    if (!known.includes(k)) {
      throw new KradagradError(`Unknown option '${k}' for ${where}; known options: ${known.join(', ')}`, 'INVALID_OPTION');
    }
  }
}
