/**
 * Test helpers for checkpoint files: read a format 2 header, and rewrite one with a valid
 * checksum (to show that what the checksum cannot catch, validation does).
 */
import { getBackend } from '../../lib';
import { checksumOf, sealCheckpoint } from '../../lib/optim/checkpoint';

export interface Header {
  __metadata__: Record<string, string>;
  [name: string]: unknown;
}

/** The JSON header and where the data starts. */
export function readHeader(buf: Buffer): { header: Header; dataStart: number } {
  const n = Number(buf.readBigUInt64LE(0));
  return { header: JSON.parse(buf.toString('utf8', 8, 8 + n)), dataStart: 8 + n };
}

/** A tensor's bytes by name. */
export function tensorBytes(buf: Buffer, name: string): Buffer {
  const { header, dataStart } = readHeader(buf);
  const [b, e] = (header[name] as { data_offsets: number[] }).data_offsets;
  return buf.subarray(dataStart + b, dataStart + e);
}

/** Rebuilds a checkpoint with `mutate` applied to its header (and data), resealed with a valid checksum. */
export function rewrite(buf: Buffer, mutate: (h: Header, data: Buffer) => Buffer | void): Buffer {
  const { header, dataStart } = readHeader(buf);
  let data: Buffer = Buffer.from(buf.subarray(dataStart));
  const changed = mutate(header, data);
  if (Buffer.isBuffer(changed)) data = changed;
  header.__metadata__ = { checksum: 'crc32c:00000000', ...header.__metadata__ };
  header.__metadata__.checksum = 'crc32c:00000000';
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const n = Math.ceil((8 + json.length) / 8) * 8 - 8;
  const out = Buffer.alloc(8 + n + data.length, 0x20);
  out.writeBigUInt64LE(BigInt(n), 0);
  json.copy(out, 8);
  data.copy(out, 8 + n);
  return sealCheckpoint(out, checksumOf(out, getBackend('cpu').addon.crc32c));
}
