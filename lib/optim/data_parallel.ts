/**
 * The collective parts of a data-parallel step (the `distributed` option), apart from the
 * optimizer math: the fused gradient buffers and their all-reduce, the per-rank verdict
 * that every rank all-gathers after its share of the work, and the one decision every rank
 * derives from those verdicts (so all ranks commit, skip or throw together, with the same
 * code). base.ts drives the step; kronecker.ts adds the all-gather of the directions.
 *
 * A step on every rank:
 *   1. the arguments are checked (locally; a failure is reported in the verdict, never
 *      thrown before the collectives, so that no rank is left waiting)
 *   2. one all-reduce ('mean') of all gradients, concatenated per dtype into addon-owned
 *      buffers (skipped with gradientsAveraged)
 *   3. job 1: staging, the gradient guard and this rank's share (its blocks' statistics,
 *      roots and directions)
 *   4. one all-gather of a small fixed-size verdict per rank: how its arguments and job 1
 *      fared, which parameters had gradients, a CRC-32C of the gradients it staged (of the
 *      parameters too, on the first step and after a load), and of its optimizer's
 *      configuration. Every rank decides from the same records, so identically.
 *   5. the all-gather of the directions (kronecker.ts), job 2 (grafting, momentum, the
 *      update: the same inputs on every rank, so the same bits), commit.
 */
import type { Communicator } from '../distributed/communicator';
import type { NcclChannel } from '../distributed/nccl';
import { KradagradError, type ErrorCode } from '../errors';
import type { DType, FloatArray } from '../tensor';

/** How this rank's part of a step went, before the collective decision. */
export interface LocalVerdict {
  /** ok; invalid: the arguments were rejected; error: job 1 failed; abort: a guard of job 1 fired. */
  status: 'ok' | 'invalid' | 'error' | 'abort';
  /** The local error (rethrown as is when the decision is this rank's). */
  error?: unknown;
  /** Which parameters had a gradient (null when the arguments were rejected). */
  active: boolean[] | null;
  /** CRC-32C of the staged gradients; -1 when not known (device tensors given as averaged). */
  gradCrc: number;
  /** CRC-32C of the parameters, on steps that check them; -1 otherwise. */
  paramCrc: number;
}

/** A rank's verdict as every rank sees it. */
interface Record_ {
  s: LocalVerdict['status'];
  c?: string;
  m?: string;
  d?: Record<string, unknown>;
  a?: string;
  g: number;
  p: number;
  k: number;
}

/** What every rank does after the verdicts. */
export type Decision = { kind: 'commit' } | { kind: 'skip'; error: KradagradError } | { kind: 'throw'; error: unknown };

/** Phase times of the last distributed step on this rank, in ms (for `kradagrad bench distributed`). */
export interface StepProfile {
  /** Packing the gradients and the all-reduce. */
  allReduceMs: number;
  /** Job 1: staging and this rank's share (statistics, roots, preconditioning). */
  localMs: number;
  /**
   * The process's CPU time meanwhile (user + system): job 1's own work, little affected by
   * other processes on a shared machine (no collective is in flight then; the gradient
   * fingerprint runs beside it and counts too).
   */
  localCpuMs: number;
  /** The verdict all-gather: mostly waiting for the slowest rank's job 1. */
  verdictMs: number;
  /** Reading the directions out, the all-gather, writing them back in. */
  allGatherMs: number;
  /** Job 2: grafting, momentum, the update (the same on every rank). */
  replicatedMs: number;
  totalMs: number;
  /** Bytes this rank put into the all-reduce and into the direction all-gather. */
  allReduceBytes: number;
  allGatherBytes: number;
}

type Crc = (bytes: Uint8Array, seed?: number) => number;
type CrcAsync = (bytes: Uint8Array, seed?: number) => Promise<number>;

const bytesOf = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** CRC-32C over several arrays in order; large ones off the main thread. */
export async function fingerprint(arrays: readonly ArrayBufferView[], crc: Crc, crcAsync: CrcAsync): Promise<number> {
  let c = 0;
  for (const a of arrays) {
    const b = bytesOf(a);
    c = b.byteLength >= 1 << 20 ? await crcAsync(b, c) : crc(b, c);
  }
  return c;
}

/** The per-dtype gradient buffers of an optimizer and the verdict exchange. */
export class DataParallel {
  /** Addon-owned buffers, one per dtype present: the all-reduce runs on them in place. */
  private readonly bufs = new Map<DType, FloatArray>();
  /** Per slot: its buffer and offset. */
  private readonly at: { buf: FloatArray; offset: number; size: number }[];
  /** Fixed verdict length in bytes (the same on every rank for the same optimizer). */
  private readonly recordBytes: number;
  /** Parameters are checked for equality on the next step (the first one, and after a load). */
  checkParams = true;
  /** Phase times of the last step. */
  profile: StepProfile | null = null;
  /** CRC-32C of the optimizer's kind, parameters and options (set on the first step): ranks must agree on it. */
  configCrc = -1;

  /** Bytes of one all-reduce of all gradients. */
  readonly gradientBytes: number;

  /**
   * @param device the communicator's NCCL side when the optimizer runs on its CUDA backend:
   *   the gradients are then all-reduced on the GPU, in the optimizer's own staging tensors,
   *   and no host buffers are allocated here (base.ts `stepDistributed`).
   */
  constructor(
    readonly comm: Communicator,
    slots: readonly { dtype: DType; size: number }[],
    readonly device?: NcclChannel,
  ) {
    const totals = new Map<DType, number>();
    for (const s of slots) totals.set(s.dtype, (totals.get(s.dtype) ?? 0) + s.size);
    this.gradientBytes = [...totals].reduce((n, [dt, k]) => n + k * (dt === 'float64' ? 8 : 4), 0);
    for (const [dt, n] of totals) this.bufs.set(dt, comm.allocate(dt, device ? 0 : n));
    const next = new Map<DType, number>();
    this.at = slots.map((s) => {
      const offset = next.get(s.dtype) ?? 0;
      next.set(s.dtype, offset + s.size);
      return { buf: this.bufs.get(s.dtype)!, offset, size: s.size };
    });
    // Room for the JSON of a verdict: a message, details, one character per parameter.
    this.recordBytes = 2048 + slots.length;
  }

  /**
   * Copies the gradients of the active slots into the fused buffers (zeros elsewhere, and
   * everywhere when this rank's arguments were rejected: it still takes part).
   */
  pack(grads: readonly (FloatArray | { read(into: FloatArray): FloatArray } | undefined)[]): void {
    this.at.forEach((p, i) => {
      const view = p.buf.subarray(p.offset, p.offset + p.size) as FloatArray;
      const g = grads[i];
      if (g === undefined) view.fill(0);
      else if (g instanceof Float32Array || g instanceof Float64Array) view.set(g);
      else g.read(view);
    });
  }

  /** The all-reduce: every buffer becomes the mean over the ranks (in place, the same bits everywhere). */
  async average(): Promise<void> {
    for (const b of this.bufs.values()) await this.comm.allReduce(b, 'mean');
  }

  /** The averaged gradient of slot i (a view into the buffers). */
  averaged(i: number): FloatArray {
    const p = this.at[i];
    return p.buf.subarray(p.offset, p.offset + p.size) as FloatArray;
  }

  /** The fused buffers, for fingerprints. */
  buffers(): FloatArray[] {
    return [...this.bufs.values()];
  }

  private encode(v: LocalVerdict): Uint8Array {
    const e = v.error as { code?: unknown; message?: unknown; details?: unknown } | undefined;
    const rec: Record_ = { s: v.status, g: v.gradCrc, p: v.paramCrc, k: this.configCrc };
    if (v.active) rec.a = v.active.map((x) => (x ? '1' : '0')).join('');
    if (e) {
      rec.c = typeof e.code === 'string' ? e.code : 'INTERNAL';
      rec.m = String(e.message ?? e);
      if (e.details && typeof e.details === 'object') rec.d = e.details as Record<string, unknown>;
    }
    const out = new Uint8Array(this.recordBytes).fill(0x20);
    let json = Buffer.from(JSON.stringify(rec), 'utf8');
    if (json.length > out.length && rec.d) {
      delete rec.d;
      json = Buffer.from(JSON.stringify(rec), 'utf8');
    }
    while (json.length > out.length && rec.m) {
      rec.m = `${rec.m.slice(0, Math.max(0, rec.m.length - (json.length - out.length) - 8))}…`;
      json = Buffer.from(JSON.stringify(rec), 'utf8');
    }
    out.set(json);
    return out;
  }

  /** All-gathers every rank's verdict (rank order). */
  async exchange(v: LocalVerdict): Promise<Record_[]> {
    const all = await this.comm.allGather(this.encode(v));
    const n = this.recordBytes;
    const out: Record_[] = [];
    for (let r = 0; r < this.comm.size; r++) {
      out.push(JSON.parse(Buffer.from(all.buffer, all.byteOffset + r * n, n).toString('utf8')) as Record_);
    }
    return out;
  }

  /**
   * The decision every rank takes from the same records. In order: a rank's rejected
   * arguments; optimizers that differ; parameters with a gradient on some ranks only;
   * parameters that differ (checked steps); gradients that differ (gradientsAveraged: the
   * caller's; otherwise the all-reduce's); a failure or guard of some rank's job 1 (the
   * lowest such rank's). A non-finite guard with onNonFinite 'skip' skips everywhere.
   */
  decide(records: Record_[], v: LocalVerdict, names: readonly string[], skipNonFinite: boolean, gradientsAveraged: boolean): Decision {
    const me = this.comm.rank;
    const P = records.length;
    const unchanged = 'no rank stepped and the state is unchanged everywhere';
    const err = (message: string, code: ErrorCode, details?: Record<string, unknown>): Decision => ({
      kind: 'throw',
      error: new KradagradError(message, code, details),
    });
    const fromRank = (r: number): KradagradError => {
      const x = records[r];
      return new KradagradError(`Rank ${r} of ${P}: ${x.m ?? x.c}`, (x.c ?? 'INTERNAL') as ErrorCode, { ...(x.d ?? {}), rank: r });
    };
    let r = records.findIndex((x) => x.s === 'invalid');
    if (r >= 0) return { kind: 'throw', error: r === me ? v.error : fromRank(r) };
    r = records.findIndex((x) => x.k !== records[0].k);
    if (r >= 0) {
      return err(
        `The optimizers of rank 0 and rank ${r} differ (kind, parameter names, shapes, dtypes or options): every rank must build the same optimizer; ${unchanged}`,
        'INVALID_ARGUMENT',
        { rank: r },
      );
    }
    r = records.findIndex((x) => x.a !== records[0].a);
    if (r >= 0) {
      const which = (a: string | undefined) => names.filter((_, i) => a?.[i] === '1').join(', ') || 'none';
      return err(
        `Ranks gave gradients for different parameters (rank 0: ${which(records[0].a)}; rank ${r}: ${which(records[r].a)}): ` +
          `every rank must step the same parameters; ${unchanged}`,
        'INVALID_ARGUMENT',
        { rank: r },
      );
    }
    const pc = records.map((x, i) => [x.p, i]).filter(([p]) => p >= 0);
    r = pc.find(([p]) => p !== pc[0][0])?.[1] ?? -1;
    if (r >= 0) {
      return err(
        `The parameters of rank ${pc[0][1]} and rank ${r} differ: every rank must start from the same values ` +
          `(broadcast them from rank 0 first: comm.broadcast, or broadcastWeights of kradagrad/tfjs); ${unchanged}`,
        'INVALID_ARGUMENT',
        { rank: r },
      );
    }
    const gc = records.map((x, i) => [x.g, i]).filter(([g]) => g >= 0);
    r = gc.find(([g]) => g !== gc[0][0])?.[1] ?? -1;
    if (r >= 0) {
      return gradientsAveraged
        ? err(
            `gradientsAveraged is set but the gradients of rank ${gc[0][1]} and rank ${r} differ: average them first (or leave the option off); ${unchanged}`,
            'INVALID_ARGUMENT',
            { rank: r },
          )
        : err(`The gradient all-reduce gave different results on rank ${gc[0][1]} and rank ${r}; ${unchanged}`, 'COMM_FAILED', { rank: r });
    }
    r = records.findIndex((x) => x.s === 'error' || x.s === 'abort');
    if (r >= 0) {
      const e = r === me ? (v.error as KradagradError) : fromRank(r);
      if (records[r].s === 'abort' && records[r].c === 'NONFINITE' && skipNonFinite) return { kind: 'skip', error: e };
      return { kind: 'throw', error: e };
    }
    return { kind: 'commit' };
  }
}

/** All-gathers byte strings of any lengths: every rank gets every rank's, in rank order. */
export async function allGatherBytes(comm: Communicator, bytes: Uint8Array): Promise<Uint8Array[]> {
  const lens = await comm.allGather(Float64Array.of(bytes.length));
  const all = await comm.allGather(bytes);
  const out: Uint8Array[] = [];
  let off = 0;
  for (let r = 0; r < comm.size; r++) {
    out.push(all.subarray(off, off + lens[r]));
    off += lens[r];
  }
  return out;
}
