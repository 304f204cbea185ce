/**
 * All-reduce and all-gather bandwidth at one message size, for `kradagrad bench
 * distributed` and the scaling projection. Every rank must call it with the same options.
 */
import { KradagradError, describe, rejectUnknownKeys } from '../errors';
import type { Communicator } from './communicator';
import type { CommArray } from './native';

/** Options of {@link measureBandwidth}. */
export interface BandwidthOptions {
  /** Message size in bytes: the all-reduced array, and the all-gathered total (each rank sends bytes / size). At least one element per rank. */
  bytes: number;
  /** Element type; default 'float32'. */
  dtype?: 'float32' | 'float64';
  /** Timed repetitions of each collective; default 10, at least 1. */
  iterations?: number;
  /** Untimed repetitions first; default 2. */
  warmup?: number;
  /**
   * false (default): addon-owned buffers, so the figures are MPI's own. true: ordinary
   * typed arrays, including the staging copies on the JS thread that such arrays cost.
   */
  staged?: boolean;
}

/** Timing of one collective over the iterations (each iteration: the slowest rank's time). */
export interface CollectiveTiming {
  /** Bytes moved per call: the all-reduced array, or the gathered total. */
  bytes: number;
  /** Median seconds per call. */
  seconds: number;
  minSeconds: number;
  maxSeconds: number;
  /** bytes / seconds (median). */
  algBandwidth: number;
  /**
   * The algorithm bandwidth scaled to what each link carries in a ring (the nccl-tests
   * convention): all-reduce x 2(p-1)/p, all-gather x (p-1)/p; 0 for one rank.
   */
  busBandwidth: number;
}

/** The result of {@link measureBandwidth}; the same on every rank. */
export interface BandwidthReport {
  size: number;
  dtype: 'float32' | 'float64';
  iterations: number;
  staged: boolean;
  allReduce: CollectiveTiming;
  allGather: CollectiveTiming;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function timeCollective(comm: Communicator, iterations: number, warmup: number, once: () => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await once();
  const times = new Float64Array(iterations);
  for (let i = 0; i < iterations; i++) {
    await comm.barrier(); // start together, so each time is the collective's, not a straggler's
    const t0 = process.hrtime.bigint();
    await once();
    times[i] = Number(process.hrtime.bigint() - t0) / 1e9;
  }
  // The slowest rank decides when a collective is done; every rank reports the same.
  await comm.allReduce(times, 'max');
  return Array.from(times);
}

function timing(times: number[], bytes: number, factor: number): CollectiveTiming {
  const seconds = median(times);
  const alg = seconds > 0 ? bytes / seconds : 0;
  return {
    bytes,
    seconds,
    minSeconds: Math.min(...times),
    maxSeconds: Math.max(...times),
    algBandwidth: alg,
    busBandwidth: alg * factor,
  };
}

function positiveInt(v: unknown, what: string, min: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw new KradagradError(`Expected an integer >= ${min} for ${what} but received ${describe(v)}`, 'INVALID_OPTION');
  }
  return v;
}

/**
 * Measures all-reduce (sum) and all-gather time and bandwidth at `bytes` on `comm`. A
 * collective: every rank calls it with the same options, and gets the same report.
 */
export async function measureBandwidth(comm: Communicator, opts: BandwidthOptions): Promise<BandwidthReport> {
  if (opts === null || typeof opts !== 'object') {
    throw new KradagradError(`Expected an options object but received ${describe(opts)}`, 'INVALID_OPTION');
  }
  rejectUnknownKeys(opts, ['bytes', 'dtype', 'iterations', 'warmup', 'staged'], 'measureBandwidth()');
  const dtype = opts.dtype ?? 'float32';
  if (dtype !== 'float32' && dtype !== 'float64') {
    throw new KradagradError(`Expected 'float32' or 'float64' for dtype but received ${describe(dtype)}`, 'INVALID_OPTION');
  }
  const eb = dtype === 'float32' ? 4 : 8;
  const bytes = positiveInt(opts.bytes, 'bytes', eb * comm.size);
  const iterations = positiveInt(opts.iterations ?? 10, 'iterations', 1);
  const warmup = positiveInt(opts.warmup ?? 2, 'warmup', 0);
  const staged = opts.staged ?? false;
  if (typeof staged !== 'boolean') {
    throw new KradagradError(`Expected a boolean for staged but received ${describe(staged)}`, 'INVALID_OPTION');
  }
  const make = (n: number): CommArray => {
    const a = staged ? (dtype === 'float32' ? new Float32Array(n) : new Float64Array(n)) : comm.allocate(dtype, n);
    for (let i = 0; i < n; i++) a[i] = ((i * 7 + comm.rank) % 13) / 13; // finite values; their sum does not matter
    return a;
  };
  const n = Math.floor(bytes / eb);
  const reduce = make(n);
  const perRank = Math.floor(n / comm.size);
  const piece = make(perRank);
  const gathered = make(perRank * comm.size);
  const p = comm.size;
  const ar = await timeCollective(comm, iterations, warmup, () => comm.allReduce(reduce, 'sum'));
  const ag = await timeCollective(comm, iterations, warmup, () => comm.allGather(piece, gathered));
  return {
    size: p,
    dtype,
    iterations,
    staged,
    allReduce: timing(ar, n * eb, p > 1 ? (2 * (p - 1)) / p : 0),
    allGather: timing(ag, perRank * p * eb, p > 1 ? (p - 1) / p : 0),
  };
}
