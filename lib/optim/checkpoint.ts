/**
 * Checkpoint files.
 *
 * Format 2 is the safetensors layout, so Python can open it with `safetensors`:
 *   u64 little-endian header length N | N bytes of JSON header (space-padded so the data
 *   starts 8-byte aligned) | the tensors' raw little-endian bytes, back to back.
 * The header maps each tensor name to `{dtype: "F32" | "F64", shape, data_offsets: [begin,
 * end]}` (offsets into the data, contiguous from 0 to its end, no holes), plus
 * `__metadata__`, string to string: `checksum` (first, always), `format`
 * ("kradagrad-checkpoint"), `version` ("2"), `kind`, `step`, `skipped`, and JSON strings
 * `params`, `options` (resolved), `counters` (root-failure counts, pending refreshes).
 * `checksum` is `crc32c:` and 8 hex digits: the CRC-32C of the whole file with those 8
 * digits written as `00000000`, so it covers header and data.
 *
 * Tensors are named by what they belong to, `<param>/momentum`, `<param>/block/<j>/stat/<i>`,
 * ..., never by how blocks were batched. Float64 tensors come first so every tensor is
 * aligned to its element size.
 *
 * Format 1 (this project up to 0.1): "KRADSTAT" | u32 version | u32 header length | JSON |
 * 8-byte aligned payloads; no checksum. It still loads (decodeCheckpoint), hardened: every
 * header field is checked.
 */
import { KradagradError, describe } from '../errors';
import type { DType, FloatArray, Tensor } from '../tensor';

export const CHECKPOINT_FORMAT = 'kradagrad-checkpoint';
export const CHECKPOINT_VERSION = 2;
export const V1_MAGIC = 'KRADSTAT';

/** A parameter as recorded in a checkpoint. */
export interface SavedParam {
  name: string;
  shape: number[];
  dtype: DType;
}
/** A state tensor to save: a whole tensor, or one item of a batched one. */
export interface StateTensor {
  name: string;
  tensor: Tensor;
  /** Item of `tensor` (batched groups of blocks); whole tensor when undefined. */
  item?: number;
  /** Shape recorded in the file. */
  shape: number[];
}
export interface CheckpointMeta {
  kind: string;
  step: number;
  skipped: number;
  params: SavedParam[];
  options: Record<string, unknown>;
  counters: Record<string, unknown>;
}
/** A decoded checkpoint: metadata and host copies of its tensors, everything validated. */
export interface DecodedCheckpoint {
  version: 1 | 2;
  meta: CheckpointMeta;
  tensors: Map<string, { dtype: DType; shape: number[]; data: FloatArray }>;
}

const fail = (msg: string): never => {
  throw new KradagradError(`Invalid checkpoint: ${msg}`, 'STATE_FORMAT');
};
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const DT = { float32: 'F32', float64: 'F64' } as const;
const ES = { float32: 4, float64: 8 } as const;
const CHECKSUM_PREFIX = '{"__metadata__":{"checksum":"crc32c:';
const CHECKSUM_ZERO = '00000000';

/** CRC-32C (the native helper). */
export type Crc = (bytes: Uint8Array, seed?: number) => number;

/** A state tensor as host bytes, ready to encode. */
export interface EncodedTensor {
  name: string;
  dtype: DType;
  shape: number[];
  bytes: Uint8Array;
}

/** Host bytes of every state tensor, each group tensor read once. */
export function readStateTensors(tensors: StateTensor[]): EncodedTensor[] {
  const cache = new Map<Tensor, FloatArray>();
  return tensors.map((t) => {
    let all = cache.get(t.tensor);
    if (!all) cache.set(t.tensor, (all = t.tensor.read()));
    const n = t.item === undefined ? all.length : t.tensor.itemSize;
    const start = t.item === undefined ? 0 : t.item * n;
    const view = all.subarray(start, start + n);
    return { name: t.name, dtype: t.tensor.dtype, shape: t.shape, bytes: new Uint8Array(view.buffer, view.byteOffset, view.byteLength) };
  });
}

/**
 * The format 2 bytes of a state, and where its checksum goes: the CRC is filled in by
 * {@link sealCheckpoint} (split so the CRC of large files can run off the main thread).
 */
export function encodeCheckpoint(meta: CheckpointMeta, tensors: StateTensor[]): Buffer {
  return encodeEntries(meta, readStateTensors(tensors));
}

/** encodeCheckpoint from host bytes (the distributed save merges the ranks' shards this way). */
export function encodeEntries(meta: CheckpointMeta, parts: EncodedTensor[]): Buffer {
  const names = new Set<string>();
  for (const p of parts) {
    if (names.has(p.name) || p.name === '__metadata__') fail(`duplicate tensor name '${p.name}'`);
    names.add(p.name);
  }
  // float64 first: every tensor then starts at a multiple of its element size.
  const ordered = [...parts.filter((p) => p.dtype === 'float64'), ...parts.filter((p) => p.dtype === 'float32')];
  const header: Record<string, unknown> = {
    __metadata__: {
      checksum: `crc32c:${CHECKSUM_ZERO}`,
      format: CHECKPOINT_FORMAT,
      version: String(CHECKPOINT_VERSION),
      kind: meta.kind,
      step: String(meta.step),
      skipped: String(meta.skipped),
      params: JSON.stringify(meta.params),
      options: JSON.stringify(meta.options),
      counters: JSON.stringify(meta.counters),
    },
  };
  let off = 0;
  for (const p of ordered) {
    header[p.name] = { dtype: DT[p.dtype], shape: p.shape, data_offsets: [off, off + p.bytes.byteLength] };
    off += p.bytes.byteLength;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const n = Math.ceil((8 + json.length) / 8) * 8 - 8;
  const out = Buffer.alloc(8 + n + off, 0x20);
  out.writeBigUInt64LE(BigInt(n), 0);
  json.copy(out, 8);
  let pos = 8 + n;
  for (const p of ordered) {
    out.set(p.bytes, pos);
    pos += p.bytes.byteLength;
  }
  return out;
}

/** Writes the CRC-32C (computed by `crc`, with the 8 digits as zeros) into an encoded checkpoint. */
export function sealCheckpoint(buf: Buffer, crc: number): Buffer {
  buf.write(crc.toString(16).padStart(8, '0'), 8 + CHECKSUM_PREFIX.length, 'latin1');
  return buf;
}

/** The checksum recorded in a format 2 buffer, and the buffer with its digits zeroed (a copy of the header only). */
function checksumParts(buf: Buffer): { recorded: string; headerZeroed: Buffer; headerEnd: number } {
  if (buf.length < 8) fail(`${buf.length} bytes is too short for a header`);
  const n = buf.readBigUInt64LE(0);
  if (n > BigInt(buf.length - 8) || n > 100_000_000n) fail(`header length ${n} does not fit a file of ${buf.length} bytes`);
  const headerEnd = 8 + Number(n);
  const prefix = buf.toString('latin1', 8, 8 + CHECKSUM_PREFIX.length);
  if (prefix !== CHECKSUM_PREFIX) fail('the header does not start with its checksum (not a kradagrad checkpoint, or damaged)');
  const at = 8 + CHECKSUM_PREFIX.length;
  const recorded = buf.toString('latin1', at, at + 8);
  const headerZeroed = Buffer.from(buf.subarray(0, headerEnd));
  headerZeroed.write(CHECKSUM_ZERO, at, 'latin1');
  return { recorded, headerZeroed, headerEnd };
}

/** CRC-32C of the file with the checksum digits zeroed. */
export function checksumOf(buf: Buffer, crc: Crc): number {
  const { headerZeroed, headerEnd } = checksumParts(buf);
  return crc(buf.subarray(headerEnd), crc(headerZeroed));
}
/** As checksumOf, with the data part's CRC computed by `crcAsync` (off the main thread). */
export async function checksumOfAsync(buf: Buffer, crc: Crc, crcAsync: (b: Uint8Array, seed?: number) => Promise<number>): Promise<number> {
  const { headerZeroed, headerEnd } = checksumParts(buf);
  return crcAsync(buf.subarray(headerEnd), crc(headerZeroed));
}

/** Is this a format 1 buffer? */
export const isV1 = (buf: Buffer): boolean => buf.length >= 8 && buf.toString('latin1', 0, 8) === V1_MAGIC;

/**
 * Decodes and validates a checkpoint of either format. `crc` is the checksum of a format 2
 * buffer computed by the caller (checksumOf / checksumOfAsync); ignored for format 1.
 */
export function decodeCheckpoint(buf: Buffer, crc?: number): DecodedCheckpoint {
  if (!Buffer.isBuffer(buf)) fail(`expected a Buffer but received ${describe(buf)}`);
  if (isV1(buf)) return decodeV1(buf);
  const { recorded, headerEnd } = checksumParts(buf);
  if (!/^[0-9a-f]{8}$/.test(recorded)) fail('the checksum field is damaged');
  if (crc === undefined || parseInt(recorded, 16) !== crc) {
    fail(`checksum mismatch (recorded ${recorded}, computed ${crc === undefined ? '?' : crc.toString(16).padStart(8, '0')}): the file is damaged or was modified`);
  }
  let h: unknown;
  try {
    h = JSON.parse(buf.toString('utf8', 8, headerEnd));
  } catch (e) {
    fail(`the header is not valid JSON (${(e as Error).message})`);
  }
  if (!h || typeof h !== 'object' || Array.isArray(h)) fail('the header is not a JSON object');
  const header = h as Record<string, unknown>;
  const md = header.__metadata__;
  if (!md || typeof md !== 'object' || Array.isArray(md)) fail('__metadata__ is missing');
  const m = md as Record<string, unknown>;
  for (const [k, v] of Object.entries(m)) if (typeof v !== 'string') fail(`__metadata__.${k} is not a string`);
  if (m.format !== CHECKPOINT_FORMAT) fail(`__metadata__.format is ${describe(m.format)}, expected '${CHECKPOINT_FORMAT}'`);
  if (m.version !== String(CHECKPOINT_VERSION)) fail(`unsupported version ${describe(m.version)} (this build reads 1 and ${CHECKPOINT_VERSION})`);
  const meta: CheckpointMeta = {
    kind: m.kind as string,
    step: intString(m.step, 'step'),
    skipped: intString(m.skipped, 'skipped'),
    params: validParams(jsonString(m.params, 'params')),
    options: jsonObject(jsonString(m.options, 'options'), 'options'),
    counters: jsonObject(jsonString(m.counters, 'counters'), 'counters'),
  };
  const dataLen = buf.length - headerEnd;
  const spans: { name: string; begin: number; end: number; dtype: DType; shape: number[] }[] = [];
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (!v || typeof v !== 'object' || Array.isArray(v)) fail(`entry '${name}' is not an object`);
    const e = v as Record<string, unknown>;
    const dtype = e.dtype === 'F32' ? 'float32' : e.dtype === 'F64' ? 'float64' : fail(`tensor '${name}' has dtype ${describe(e.dtype)} (F32 or F64 expected)`);
    const shape = validShape(e.shape, `tensor '${name}'`);
    const o = e.data_offsets;
    if (!Array.isArray(o) || o.length !== 2 || !isCount(o[0]) || !isCount(o[1]) || o[0] > o[1] || o[1] > dataLen) {
      fail(`tensor '${name}' has data_offsets ${JSON.stringify(o)} outside the ${dataLen} data bytes`);
    }
    const [begin, end] = o as number[];
    if (end - begin !== shape.reduce((a, b) => a * b, 1) * ES[dtype]) fail(`tensor '${name}' spans ${end - begin} bytes for shape [${shape}] ${dtype}`);
    spans.push({ name, begin, end, dtype, shape });
  }
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  for (const s of spans) {
    if (s.begin !== at) fail(s.begin < at ? `tensor '${s.name}' overlaps another` : `a hole before tensor '${s.name}'`);
    at = s.end;
  }
  if (at !== dataLen) fail(`${dataLen - at} bytes of data belong to no tensor`);
  const tensors = new Map<string, { dtype: DType; shape: number[]; data: FloatArray }>();
  for (const s of spans) {
    const bytes = new Uint8Array(s.end - s.begin);
    buf.copy(bytes, 0, headerEnd + s.begin, headerEnd + s.end);
    tensors.set(s.name, { dtype: s.dtype, shape: s.shape, data: s.dtype === 'float32' ? new Float32Array(bytes.buffer) : new Float64Array(bytes.buffer) });
  }
  return { version: 2, meta, tensors };
}

function intString(v: unknown, what: string): number {
  if (typeof v !== 'string' || !/^(0|[1-9][0-9]{0,15})$/.test(v) || !Number.isSafeInteger(Number(v))) fail(`__metadata__.${what} is ${describe(v)}, expected a non-negative integer`);
  return Number(v);
}
function jsonString(v: unknown, what: string): unknown {
  if (typeof v !== 'string') fail(`__metadata__.${what} is missing`);
  try {
    return JSON.parse(v as string);
  } catch {
    return fail(`__metadata__.${what} is not valid JSON`);
  }
}
function jsonObject(v: unknown, what: string): Record<string, unknown> {
  if (!v || typeof v !== 'object' || Array.isArray(v)) fail(`${what} is not an object`);
  return v as Record<string, unknown>;
}
function validShape(v: unknown, what: string): number[] {
  if (!Array.isArray(v) || v.length > 64 || !v.every(isCount)) fail(`${what} has shape ${JSON.stringify(v)}`);
  return v as number[];
}
function validParams(v: unknown): SavedParam[] {
  if (!Array.isArray(v)) fail('params is not an array');
  return (v as unknown[]).map((p, i) => {
    const o = p as Record<string, unknown> | null;
    if (!o || typeof o !== 'object' || typeof o.name !== 'string' || (o.dtype !== 'float32' && o.dtype !== 'float64')) fail(`params[${i}] is malformed`);
    return { name: o!.name as string, shape: validShape(o!.shape, `params[${i}]`), dtype: o!.dtype as DType };
  });
}

/** Format 1: every field checked; tensors keep their format 1 names (group/<g>/stat/<i>, param/<p>/momentum, ...). */
function decodeV1(buf: Buffer): DecodedCheckpoint {
  if (buf.length < 16) fail('truncated format 1 header');
  const version = buf.readUInt32LE(8);
  if (version !== 1) fail(`unsupported version ${version} (this build reads 1 and ${CHECKPOINT_VERSION})`);
  const hl = buf.readUInt32LE(12);
  if (16 + hl > buf.length) fail('truncated format 1 header');
  let h: unknown;
  try {
    h = JSON.parse(buf.toString('utf8', 16, 16 + hl));
  } catch {
    fail('the format 1 header is not valid JSON');
  }
  const o = jsonObject(h, 'the format 1 header');
  if (typeof o.kind !== 'string') fail('kind is missing');
  if (!isCount(o.step)) fail(`step is ${describe(o.step)}, expected a non-negative integer`);
  if (o.skipped !== undefined && !isCount(o.skipped)) fail(`skipped is ${describe(o.skipped)}, expected a non-negative integer`);
  const params = validParams(o.params);
  const scalars = o.scalars === undefined ? {} : jsonObject(o.scalars, 'scalars');
  if (!Array.isArray(o.tensors)) fail('tensors is not an array');
  const headLen = 16 + Math.ceil(hl / 8) * 8;
  const payload = buf.length - headLen;
  const spans: { name: string; dtype: DType; begin: number; end: number }[] = [];
  (o.tensors as unknown[]).forEach((t, i) => {
    const e = t as Record<string, unknown> | null;
    if (!e || typeof e !== 'object' || typeof e.name !== 'string') fail(`tensors[${i}] is malformed`);
    const dtype = e!.dtype === 'float32' || e!.dtype === 'float64' ? (e!.dtype as DType) : fail(`tensor '${e!.name}' has dtype ${describe(e!.dtype)}`);
    if (!isCount(e!.length) || !isCount(e!.offset) || e!.offset % 8 !== 0) fail(`tensor '${e!.name}' has a bad length or offset`);
    const begin = e!.offset as number;
    const end = begin + (e!.length as number) * ES[dtype];
    if (end > payload) fail(`tensor '${e!.name}' runs past the end of the data (truncated?)`);
    spans.push({ name: e!.name as string, dtype, begin, end });
  });
  const sorted = [...spans].sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < sorted.length; i++) if (sorted[i].begin < sorted[i - 1].end) fail(`tensor '${sorted[i].name}' overlaps '${sorted[i - 1].name}'`);
  const tensors = new Map<string, { dtype: DType; shape: number[]; data: FloatArray }>();
  for (const s of spans) {
    if (tensors.has(s.name)) fail(`duplicate tensor '${s.name}'`);
    const bytes = new Uint8Array(s.end - s.begin);
    buf.copy(bytes, 0, headLen + s.begin, headLen + s.end);
    const data = s.dtype === 'float32' ? new Float32Array(bytes.buffer) : new Float64Array(bytes.buffer);
    tensors.set(s.name, { dtype: s.dtype, shape: [data.length], data });
  }
  return {
    version: 1,
    meta: { kind: o.kind as string, step: o.step as number, skipped: (o.skipped as number | undefined) ?? 0, params, options: {}, counters: scalars },
    tensors,
  };
}

/**
 * The kind, step and parameters a checkpoint records, from its header alone (the header is
 * validated; the data and checksum are checked when the checkpoint is loaded).
 */
export function checkpointSummary(buf: Buffer): { version: 1 | 2; kind: string; step: number; params: SavedParam[] } {
  if (!Buffer.isBuffer(buf)) fail(`expected a Buffer but received ${describe(buf)}`);
  if (isV1(buf)) {
    const d = decodeV1(buf);
    return { version: 1, kind: d.meta.kind, step: d.meta.step, params: d.meta.params };
  }
  const { headerEnd } = checksumParts(buf);
  let h: Record<string, unknown>;
  try {
    h = JSON.parse(buf.toString('utf8', 8, headerEnd));
  } catch {
    return fail('the header is not valid JSON');
  }
  const m = (h?.__metadata__ ?? {}) as Record<string, unknown>;
  if (m.format !== CHECKPOINT_FORMAT || m.version !== String(CHECKPOINT_VERSION)) fail('not a format 2 kradagrad checkpoint');
  if (typeof m.kind !== 'string') fail('__metadata__.kind is missing');
  return { version: 2, kind: m.kind as string, step: intString(m.step, 'step'), params: validParams(jsonString(m.params, 'params')) };
}
