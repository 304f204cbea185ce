/**
 * NCCL on device buffers: the collectives of a {@link Communicator} on CUDA tensors, run by
 * NCCL on the CUDA backend's stream, so that gradients and directions never leave the GPU.
 *
 * Where it lives: the NCCL calls are in `kradagrad_nccl.so` (native/cuda/nccl_lib.cc, the
 * one piece linked against libnccl), which the CUDA addon loads with dlopen only when
 * {@link Communicator.initNccl} asks for it; the CUDA addon enqueues its collectives on the
 * backend's stream (in order with every other op) and waits for them on a libuv pool
 * thread. MPI (the MPI addon) only bootstraps it: rank 0's `ncclGetUniqueId` token goes to
 * every rank with an MPI broadcast, then every rank calls `ncclCommInitRank` on its device.
 * Single-process users, the CPU addon and MPI-only users never load any of it.
 *
 * NCCL checks nothing across ranks (mismatched calls hang or corrupt memory), so every
 * device collective first exchanges a small header over MPI, as the MPI collectives do, and
 * ranks that disagree all get the same coded error instead.
 *
 * Verified where this was written: it compiles, links libnccl and loads (NCCL 2.27.7's
 * version and a unique id come back) on a machine without a GPU; the collectives themselves
 * have not run yet (scripts/gpu-check-nccl.sh is the prepared GPU check).
 */
import { KradagradError, describe, rejectUnknownKeys, type ErrorCode } from '../errors';
import { loadCudaAddon } from '../native';
import { Backend, Tensor, getBackend, type DType } from '../tensor';
import type { Communicator } from './communicator';
import type { ReduceOp } from './native';

/** Options of {@link Communicator.initNccl}. */
export interface NcclOptions {
  /**
   * The GPU of this rank (an index among the visible devices). Default: 0 when
   * CUDA_VISIBLE_DEVICES names exactly one device (one GPU per rank set by the launcher),
   * else KRADAGRAD_CUDA_DEVICE when set, else the rank's index on its node (`localRank`):
   * one rank per GPU. The CUDA backend of the process is created on it, so initNccl must
   * come before any other CUDA use.
   */
  device?: number;
}

/** What {@link Communicator.initNccl} set up (also `comm.nccl`). */
export interface NcclInfo {
  /** NCCL's version of the libnccl loaded, e.g. '2.27.7'. */
  version: string;
  /** The CUDA device of this rank. */
  device: number;
  /** The CUDA backend whose tensors the device collectives take. */
  backend: Backend;
  /** kradagrad_nccl.so, as loaded. */
  library: string;
}

/** The NCCL functions of the CUDA addon (native/napi/nccl_binding.cc). */
export interface NativeNccl {
  ncclStatus(): { available: boolean; path: string; version?: number; reason?: string };
  ncclUniqueId(): Uint8Array;
  ncclCommInit(token: Uint8Array, size: number, rank: number, device: number): Promise<object>;
  ncclRun(comm: object, ops: NativeNcclOp[]): Promise<void>;
  ncclFree(comm: object, abort?: boolean): Promise<void>;
  cudaSelectDevice(device: number): void;
  cudaDevice(): number;
}

/** One collective of an NCCL group, as the addon takes it. */
export interface NativeNcclOp {
  kind: 'allReduce' | 'broadcast' | 'allGather';
  recv: unknown;
  send?: unknown;
  op?: ReduceOp;
  root?: number;
  /** broadcast: where in recv (elements) and how many. */
  offset?: number;
  count?: number;
}

/** How to get NCCL working; part of every NCCL_UNAVAILABLE message. */
export const NCCL_FIX =
  'NCCL needs the CUDA addon with kradagrad_nccl.so beside it (`npm run build:cuda`, which pins the nvidia-nccl-cu13 ' +
  'wheel; or KRAD_NCCL_ROOT / Python\'s nvidia-nccl-cu13 for a system toolkit), an NVIDIA GPU per rank, and ' +
  'libnccl.so.2 at run time; without them leave initNccl out: the communicator then moves CUDA tensors through host memory';

const unavailable = (why: string): KradagradError => new KradagradError(`NCCL is not available: ${why}. ${NCCL_FIX}`, 'NCCL_UNAVAILABLE');

/** Validates {@link NcclOptions}; throws INVALID_OPTION. */
export function checkNcclOptions(opts: unknown, where: string): NcclOptions {
  if (opts === undefined || opts === true) return {};
  if (opts === null || typeof opts !== 'object' || Array.isArray(opts)) {
    throw new KradagradError(`Expected an object (or true) for ${where} but received ${describe(opts)}`, 'INVALID_OPTION');
  }
  rejectUnknownKeys(opts, ['device'], where);
  const d = (opts as NcclOptions).device;
  if (d !== undefined && (typeof d !== 'number' || !Number.isInteger(d) || d < 0 || d > 65535)) {
    throw new KradagradError(`Expected an integer in [0, 65535] for ${where}.device but received ${describe(d)}`, 'INVALID_OPTION');
  }
  return opts as NcclOptions;
}

/** The device a rank uses when none is given (see {@link NcclOptions.device}). */
export function defaultDevice(localRank: number, env: NodeJS.ProcessEnv = process.env): number {
  const visible = env.CUDA_VISIBLE_DEVICES;
  if (visible !== undefined && visible.trim() !== '' && visible.split(',').filter((x) => x.trim() !== '').length === 1) return 0;
  const fixed = env.KRADAGRAD_CUDA_DEVICE;
  if (fixed !== undefined && /^\d+$/.test(fixed.trim())) return Number(fixed.trim());
  return localRank;
}

const versionString = (v: number): string =>
  v >= 10000 ? `${Math.floor(v / 10000)}.${Math.floor((v % 10000) / 100)}.${v % 100}` : `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 100)}.${v % 100}`;

/**
 * This rank's part of the set-up that needs no other rank: the CUDA addon with NCCL, the
 * device chosen, the CUDA backend on it, kradagrad_nccl.so loaded. Throws NCCL_UNAVAILABLE
 * (or INVALID_ARGUMENT for a device the backend cannot move to) with the reason.
 */
export function probeNccl(device: number): { native: NativeNccl; backend: Backend; version: string; library: string } {
  const c = loadCudaAddon();
  if (!c.addon) throw unavailable(`the CUDA addon does not load (${c.reason})`);
  const native = c.addon as unknown as NativeNccl;
  if (typeof native.ncclStatus !== 'function') {
    throw unavailable(`the CUDA addon ${c.path} was built without NCCL support (an older build); rebuild it with \`npm run build:cuda\``);
  }
  const st = native.ncclStatus();
  if (!st.available) throw new KradagradError(st.reason ?? `NCCL is not available (${st.path})`, 'NCCL_UNAVAILABLE', { path: st.path });
  native.cudaSelectDevice(device); // before the backend exists; INVALID_ARGUMENT if it already runs elsewhere
  let backend: Backend;
  try {
    backend = getBackend('cuda');
  } catch (e) {
    throw unavailable(`NCCL runs on GPUs and this rank has no usable CUDA device: ${(e as Error).message}`);
  }
  return { native, backend, version: versionString(st.version ?? 0), library: st.path };
}

// Kinds of the device header (agreed by every rank before NCCL runs; never renumber).
const enum H {
  AllReduce = 1,
  AllGather = 2,
  Broadcast = 3,
  AllReduceMany = 4,
  BroadcastMany = 5,
}
const KIND_NAME: Record<number, string> = { 1: 'allReduce', 2: 'allGather', 3: 'broadcast', 4: 'allReduce (gradients)', 5: 'broadcast (directions)' };
const DTYPE_CODE: Record<DType, number> = { float32: 1, float64: 2 };
const OP_CODE: Record<ReduceOp, number> = { sum: 1, mean: 2, max: 3, min: 4 };

/** The NCCL side of a communicator, after {@link bootstrapNccl}. @internal */
export class NcclChannel {
  #handle: object | undefined;

  constructor(
    readonly comm: Communicator,
    readonly native: NativeNccl,
    handle: object,
    readonly info: NcclInfo,
  ) {
    this.#handle = handle;
  }

  /** Whether `b` is this channel's (CUDA) backend, whose tensors the device collectives take. */
  serves(b: Backend): boolean {
    return b.addon === this.info.backend.addon && b.name === this.info.backend.name;
  }

  /** Whether `t` is a tensor of this channel's backend (the device path applies). */
  owns(t: Tensor): boolean {
    return this.serves(t.backend);
  }

  get freed(): boolean {
    return this.#handle === undefined;
  }

  #live(): object {
    if (!this.#handle) throw new KradagradError('The NCCL communicator has been freed (finalize())', 'DISPOSED');
    return this.#handle;
  }

  /**
   * Every rank's [kind, dtype, count, arg, extra], over MPI: the same verdict everywhere
   * (COLLECTIVE_MISMATCH, DTYPE_MISMATCH, SHAPE_MISMATCH) before NCCL runs. Returns each
   * rank's count.
   */
  async agree(kind: H, dtype: DType, count: number, arg: number, extra = 0): Promise<number[]> {
    const P = this.comm.size;
    const mine = Float64Array.of(kind, DTYPE_CODE[dtype], count, arg, extra);
    const all = P === 1 ? mine : await this.comm.native.allGather(mine);
    const h = (r: number) => all.subarray(r * 5, r * 5 + 5);
    const call = (r: number) => {
      const x = h(r);
      return `rank ${r} called ${KIND_NAME[x[0]] ?? `kind ${x[0]}`}(${x[1] === 1 ? 'float32' : x[1] === 2 ? 'float64' : `dtype ${x[1]}`}[${x[2]}])`;
    };
    const fail = (code: ErrorCode, what: string, r: number): never => {
      throw new KradagradError(`NCCL ${what}: ${call(0)}, ${call(r)}; nothing was sent`, code, { rank: r });
    };
    for (let r = 1; r < P; r++) {
      const [k, d, n, a, e] = h(r);
      const [k0, d0, n0, a0, e0] = h(0);
      if (k !== k0) fail('COLLECTIVE_MISMATCH', 'ranks called different collectives', r);
      if (d !== d0) fail('DTYPE_MISMATCH', 'ranks passed different element types', r);
      if (k !== H.AllGather && n !== n0) fail('SHAPE_MISMATCH', 'ranks passed different lengths', r);
      if (a !== a0) fail('COLLECTIVE_MISMATCH', `ranks passed different ${k === H.Broadcast ? 'roots' : 'ops'}`, r);
      if (e !== e0) fail('SHAPE_MISMATCH', 'ranks passed different layouts (tensor counts and sizes)', r);
    }
    return Array.from({ length: P }, (_, r) => h(r)[2]);
  }

  /** In-place (or into `into`) all-reduce of one tensor. */
  async allReduce(x: Tensor, op: ReduceOp, into?: Tensor): Promise<Tensor> {
    const handle = this.#live();
    await this.agree(H.AllReduce, x.dtype, x.size, OP_CODE[op]);
    const out = into ?? x;
    await this.native.ncclRun(handle, [{ kind: 'allReduce', send: x.native, recv: out.native, op }]);
    return out;
  }

  /**
   * One NCCL group of in-place all-reduces (the optimizers' gradients: one launch for all of
   * them). `layout` must be the same on every rank (it is checked, with the tensor sizes).
   */
  async allReduceMany(xs: Tensor[], op: ReduceOp, layout: number): Promise<void> {
    const handle = this.#live();
    const total = xs.reduce((n, t) => n + t.size, 0);
    const dtype = xs.some((t) => t.dtype === 'float64') ? 'float64' : 'float32';
    await this.agree(H.AllReduceMany, dtype, total, OP_CODE[op], layoutCode(xs, layout));
    await this.native.ncclRun(handle, xs.map((t) => ({ kind: 'allReduce' as const, recv: t.native, op })));
  }

  /**
   * Concatenation of every rank's `x` in rank order. Equal lengths: ncclAllGather; unequal:
   * one group of broadcasts, rank r's part from rank r into its place.
   */
  async allGather(x: Tensor, into?: Tensor): Promise<Tensor> {
    const handle = this.#live();
    const counts = await this.agree(H.AllGather, x.dtype, x.size, 0);
    const total = counts.reduce((a, b) => a + b, 0);
    if (into && into.size !== total) {
      throw new KradagradError(`allGather: into has ${into.size} elements but the ranks contribute ${total} in all (per rank: ${counts.join(', ')})`, 'SHAPE_MISMATCH');
    }
    const out = into ?? this.info.backend.tensor(x.dtype, [Math.max(1, total)]);
    if (total === 0) return out;
    if (counts.every((c) => c === counts[0])) {
      await this.native.ncclRun(handle, [{ kind: 'allGather', send: x.native, recv: out.native }]);
      return out;
    }
    let offset = 0;
    const ops: NativeNcclOp[] = [];
    counts.forEach((count, r) => {
      if (count > 0) ops.push({ kind: 'broadcast', root: r, send: r === this.comm.rank ? x.native : undefined, recv: out.native, offset, count });
      offset += count;
    });
    await this.native.ncclRun(handle, ops);
    return out;
  }

  /** In-place broadcast from `root`. */
  async broadcast(x: Tensor, root: number): Promise<Tensor> {
    const handle = this.#live();
    await this.agree(H.Broadcast, x.dtype, x.size, root);
    await this.native.ncclRun(handle, [{ kind: 'broadcast', root, recv: x.native }]);
    return x;
  }

  /**
   * One NCCL group of in-place broadcasts (the optimizers' direction exchange: each rank's
   * preconditioned blocks from that rank into the others' inbox tensors). The list (roots
   * and sizes, in order) must be the same on every rank; it is checked.
   */
  async broadcastMany(entries: { root: number; tensor: Tensor }[], layout: number): Promise<void> {
    const handle = this.#live();
    const total = entries.reduce((n, e) => n + e.tensor.size, 0);
    const dtype = entries.some((e) => e.tensor.dtype === 'float64') ? 'float64' : 'float32';
    const tensors = entries.map((e) => e.tensor);
    await this.agree(H.BroadcastMany, dtype, total, entries.reduce((h, e) => (h * 31 + e.root + 1) % 2147483647, 7), layoutCode(tensors, layout));
    await this.native.ncclRun(
      handle,
      entries.map((e) => ({ kind: 'broadcast' as const, root: e.root, recv: e.tensor.native })),
    );
  }

  /** Destroys the NCCL communicator (abort: drop pending work). Idempotent. */
  async free(abort = false): Promise<void> {
    const h = this.#handle;
    this.#handle = undefined;
    if (h) await this.native.ncclFree(h, abort);
  }
}

/** A number that differs when the tensors' count, sizes or dtypes (or the caller's `layout`) differ. */
function layoutCode(xs: Tensor[], layout: number): number {
  let h = (layout >>> 0) % 2147483647;
  h = (h * 31 + xs.length) % 2147483647;
  for (const t of xs) h = (h * 31 + t.size * 2 + (t.dtype === 'float64' ? 1 : 0)) % 2147483647;
  return h;
}

/**
 * The collective set-up (every rank calls it): each rank's local checks, one all-gather of
 * the outcomes over MPI (so a rank without NCCL or a GPU makes every rank reject with the
 * same code instead of leaving them waiting), rank 0's token broadcast over MPI, and
 * ncclCommInitRank on every rank, off the main thread.
 */
export async function bootstrapNccl(comm: Communicator, opts: NcclOptions): Promise<NcclChannel> {
  const device = opts.device ?? defaultDevice(comm.localRank);
  let local: ReturnType<typeof probeNccl> | undefined;
  let err: KradagradError | undefined;
  try {
    local = probeNccl(device);
  } catch (e) {
    err = e instanceof KradagradError ? e : new KradagradError(String((e as Error)?.message ?? e), 'INTERNAL');
  }
  const rec = JSON.stringify({ ok: !err, code: err?.code, m: err?.message, host: comm.processor, device });
  const all = comm.size === 1 ? [rec] : await gatherStrings(comm, rec);
  const recs = all.map((s) => JSON.parse(s) as { ok: boolean; code?: ErrorCode; m?: string; host: string; device: number });
  const bad = recs.findIndex((r) => !r.ok);
  if (bad >= 0) {
    if (bad === comm.rank || err) throw err!;
    throw new KradagradError(`Rank ${bad} of ${comm.size}: ${recs[bad].m}`, recs[bad].code ?? 'NCCL_UNAVAILABLE', { rank: bad });
  }
  const seen = new Map<string, number>();
  for (let r = 0; r < recs.length; r++) {
    const key = `${recs[r].host}\u0000${recs[r].device}`;
    const other = seen.get(key);
    if (other !== undefined) {
      throw new KradagradError(
        `Ranks ${other} and ${r} would both use CUDA device ${recs[r].device} of ${recs[r].host}: NCCL needs one GPU per rank ` +
          '(pass initNccl({ device }) or set CUDA_VISIBLE_DEVICES per rank)',
        'INVALID_ARGUMENT',
        { rank: r },
      );
    }
    seen.set(key, r);
  }
  const { native, backend, version, library } = local!;
  // Rank 0's token, with a status byte in front: a failure there reaches every rank.
  const msg = comm.native.allocate('uint8', 129) as Uint8Array;
  let tokenError = '';
  if (comm.rank === 0) {
    try {
      msg.set(native.ncclUniqueId(), 1);
      msg[0] = 1;
    } catch (e) {
      tokenError = (e as Error).message;
    }
  }
  if (comm.size > 1) await comm.native.broadcast(msg, 0);
  if (msg[0] !== 1) {
    throw new KradagradError(`Rank 0 could not create the NCCL token (ncclGetUniqueId)${tokenError ? `: ${tokenError}` : ''}`, 'COMM_FAILED');
  }
  const handle = await native.ncclCommInit(msg.slice(1), comm.size, comm.rank, device);
  return new NcclChannel(comm, native, handle, { version, device, backend, library });
}

async function gatherStrings(comm: Communicator, s: string): Promise<string[]> {
  const bytes = new Uint8Array(Buffer.from(s, 'utf8'));
  const lens = await comm.native.allGather(Float64Array.of(bytes.length));
  const all = await comm.native.allGather(bytes);
  const out: string[] = [];
  let off = 0;
  for (let r = 0; r < comm.size; r++) {
    out.push(Buffer.from(all.buffer, all.byteOffset + off, lens[r]).toString('utf8'));
    off += lens[r];
  }
  return out;
}
