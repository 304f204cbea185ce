/**
 * Versioned binary optimizer state:
 *   "KRADSTAT" (8 bytes) | u32 format version | u32 header length | header JSON (utf8) |
 *   tensor payloads, each 8-byte aligned, little-endian IEEE floats.
 * The header lists kind, step, parameters and, per tensor, name, dtype, length, offset.
 * Values are stored bit-exactly, so load(save()) restores the state exactly.
 */
import { KradagradError } from '../errors';
import type { DType, FloatArray, Tensor } from '../tensor';

export const STATE_MAGIC = 'KRADSTAT';
export const STATE_VERSION = 1;

export interface StateEntry {
  name: string;
  tensor: Tensor;
}
export interface StateHeaderParam {
  name: string;
  shape: number[];
  dtype: DType;
}

export function writeState(s: {
  kind: string;
  step: number;
  skipped: number;
  params: StateHeaderParam[];
  scalars: Record<string, unknown>;
  entries: StateEntry[];
}): Buffer {
  let offset = 0;
  const datas: FloatArray[] = [];
  const tensors = s.entries.map((e) => {
    const data = e.tensor.read();
    datas.push(data);
    const rec = { name: e.name, dtype: e.tensor.dtype, length: data.length, offset };
    offset += Math.ceil(data.byteLength / 8) * 8;
    return rec;
  });
  const header = Buffer.from(
    JSON.stringify({ kind: s.kind, step: s.step, skipped: s.skipped, params: s.params, scalars: s.scalars, tensors }),
    'utf8',
  );
  const headLen = 16 + Math.ceil(header.length / 8) * 8;
  const out = Buffer.alloc(headLen + offset);
  out.write(STATE_MAGIC, 0, 'latin1');
  out.writeUInt32LE(STATE_VERSION, 8);
  out.writeUInt32LE(header.length, 12);
  header.copy(out, 16);
  tensors.forEach((t, i) => {
    const d = datas[i];
    Buffer.from(d.buffer, d.byteOffset, d.byteLength).copy(out, headLen + t.offset);
  });
  return out;
}

export function readState(buf: Buffer): {
  kind: string;
  step: number;
  skipped: number;
  params: StateHeaderParam[];
  scalars: Record<string, unknown>;
  tensors: { name: string; dtype: DType; data: FloatArray }[];
} {
  if (!Buffer.isBuffer(buf) || buf.length < 16 || buf.toString('latin1', 0, 8) !== STATE_MAGIC) {
    throw new KradagradError('Not a kradagrad state buffer (bad magic)', 'STATE_FORMAT');
  }
  const version = buf.readUInt32LE(8);
  if (version !== STATE_VERSION) throw new KradagradError(`Unsupported state format version ${version} (this build reads ${STATE_VERSION})`, 'STATE_FORMAT');
  const hl = buf.readUInt32LE(12);
  if (16 + hl > buf.length) throw new KradagradError('Truncated state buffer (header)', 'STATE_FORMAT');
  let h: {
    kind: string;
    step: number;
    skipped: number;
    params: StateHeaderParam[];
    scalars: Record<string, unknown>;
    tensors: { name: string; dtype: DType; length: number; offset: number }[];
  };
  try {
    h = JSON.parse(buf.toString('utf8', 16, 16 + hl));
  } catch {
    throw new KradagradError('Corrupt state header', 'STATE_FORMAT');
  }
  const headLen = 16 + Math.ceil(hl / 8) * 8;
  const tensors = h.tensors.map((t) => {
    const es = t.dtype === 'float32' ? 4 : 8;
    const start = headLen + t.offset;
    if (start + t.length * es > buf.length) throw new KradagradError(`Truncated state buffer (tensor ${t.name})`, 'STATE_FORMAT');
    const bytes = new Uint8Array(t.length * es);
    buf.copy(bytes, 0, start, start + t.length * es);
    const data = t.dtype === 'float32' ? new Float32Array(bytes.buffer) : new Float64Array(bytes.buffer);
    return { name: t.name, dtype: t.dtype, data };
  });
  return { kind: h.kind, step: h.step, skipped: h.skipped, params: h.params, scalars: h.scalars, tensors };
}
