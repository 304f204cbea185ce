/**
 * Checkpoint files on disk: atomic writes (a crash at any moment leaves the old file or the
 * new one, never a torn one) and reads, with file-system errors turned into coded errors
 * that name the path.
 *
 * A write goes to a temporary file in the target's folder (same file system, so the rename
 * is atomic), which is flushed to disk, renamed over the target, and then the folder is
 * flushed so the rename itself survives a power loss.
 */
import * as fs from 'fs';
import * as path from 'path';
import { KradagradError } from '../errors';

function ioError(op: string, file: string, e: unknown): KradagradError {
  const err = e as NodeJS.ErrnoException;
  return new KradagradError(`Could not ${op} '${file}': ${err?.message ?? String(e)}`, 'IO_ERROR', { path: file, errno: err?.code });
}

const tempName = (file: string): string =>
  path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);

function checkPath(file: unknown): string {
  if (typeof file !== 'string' || file.length === 0) {
    throw new KradagradError(`Expected a file path (a non-empty string) but received ${file === null ? 'null' : typeof file}`, 'INVALID_ARGUMENT');
  }
  return file;
}

/** Flushes a folder's entries (the rename) to disk; folders that cannot be opened (some platforms) are skipped. */
function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    /* not supported here (e.g. Windows): the rename is still atomic */
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

export function writeFileAtomic(file: unknown, data: Uint8Array): void {
  const target = checkPath(file);
  const tmp = tempName(target);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'wx', 0o644);
    let off = 0;
    while (off < data.byteLength) off += fs.writeSync(fd, data, off, data.byteLength - off);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, target);
  } catch (e) {
    // Clean-up is best effort: on a path the system refuses (a NUL byte, a name too long,
    // a parent that is a file) it fails the same way, and must not replace the coded error.
    try {
      if (fd !== undefined) fs.closeSync(fd);
      fs.rmSync(tmp, { force: true });
    } catch {
      /* nothing was written there, or it cannot be removed */
    }
    throw ioError('write the checkpoint', target, e);
  }
  fsyncDir(path.dirname(target));
}

export async function writeFileAtomicAsync(file: unknown, data: Uint8Array): Promise<void> {
  const target = checkPath(file);
  const tmp = tempName(target);
  let h: fs.promises.FileHandle | undefined;
  try {
    h = await fs.promises.open(tmp, 'wx', 0o644);
    let off = 0;
    while (off < data.byteLength) off += (await h.write(data, off, data.byteLength - off)).bytesWritten;
    await h.sync();
    await h.close();
    h = undefined;
    await fs.promises.rename(tmp, target);
  } catch (e) {
    // As writeFileAtomic: the clean-up never replaces the coded error.
    if (h) await h.close().catch(() => undefined);
    await fs.promises.rm(tmp, { force: true }).catch(() => undefined);
    throw ioError('write the checkpoint', target, e);
  }
  try {
    const d = await fs.promises.open(path.dirname(target), 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    /* as fsyncDir */
  }
}

export function readFile(file: unknown): Buffer {
  const f = checkPath(file);
  try {
    return fs.readFileSync(f);
  } catch (e) {
    throw ioError('read the checkpoint', f, e);
  }
}

export async function readFileAsync(file: unknown): Promise<Buffer> {
  const f = checkPath(file);
  try {
    return await fs.promises.readFile(f);
  } catch (e) {
    throw ioError('read the checkpoint', f, e);
  }
}
