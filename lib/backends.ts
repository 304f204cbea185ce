/**
 * Which backends this process can use, for programs (what `kradagrad info` prints for
 * people), and the CPU backend's runtime setting: its thread count.
 */
import { KradagradError } from './errors';
import { addonThreadSetting, setAddonThreads } from './native';
import type { BackendName } from './native';
import { getBackend } from './tensor';

/** One backend as the loader sees it. */
export interface BackendInfo {
  name: BackendName;
  /** Whether `getBackend(name)` succeeds here. */
  available: boolean;
  /** The device, e.g. `CPU (OpenBLAS ..., 2 threads)` or the GPU's name (when available). */
  device?: string;
  /** The addon file that provides it (when available). */
  addonPath?: string;
  /** Why it is not available (when not): the loader's reason, naming what was tried. */
  reason?: string;
}

/**
 * The backends, CPU first, each loaded on demand (a backend that loads stays loaded, as
 * with {@link getBackend}). Never throws: an unavailable backend is reported with the
 * reason. `getBackend('auto')` picks CUDA when its entry is available, else CPU.
 *
 * ```ts
 * import { listBackends } from 'kradagrad';
 * for (const b of listBackends()) console.log(b.name, b.available ? b.device : b.reason);
 * ```
 */
export function listBackends(): BackendInfo[] {
  return (['cpu', 'cuda'] as const).map((name) => {
    try {
      const b = getBackend(name);
      return { name, available: true, device: b.device, addonPath: b.report.addonPath };
    } catch (e) {
      return { name, available: false, reason: (e as Error).message };
    }
  });
}

/** The most threads {@link setThreads} accepts. */
export const MAX_THREADS = 4096;

/**
 * Sets how many threads the CPU backend uses: OpenBLAS's (GEMMs, eigensolvers) and
 * kradagrad's own elementwise kernels (Adam, momentum, grafting, the update, copies and
 * casts) together. Applies to every loaded addon (the CUDA addon's host work included)
 * and to addons loaded later. Results do not depend on it, with one exception inherited
 * from OpenBLAS: an eigendecomposition of a single matrix (or a small batch: batch x
 * size^3 under 10^6) runs with this many threads, and OpenBLAS 0.3.21 rounds it
 * differently for different counts (larger batches are solved one matrix per thread,
 * single-threaded, whatever the count).
 *
 * Default: the environment variable `KRADAGRAD_NUM_THREADS` when set (a positive integer),
 * else OpenBLAS's own default (`OPENBLAS_NUM_THREADS`, or the number of cores).
 *
 * The kernels may run on libuv's pool (`stepAsync`, background root refreshes) while the
 * main thread works: each call uses up to `n` threads from one shared pool, the calling
 * thread included, so concurrent steps share the cores instead of multiplying threads. A
 * change made while an eigendecomposition runs in the background reaches OpenBLAS when it
 * has finished (the ones started after this call use the new count).
 *
 * ```ts
 * import { setThreads, getThreads } from 'kradagrad';
 * setThreads(1); // e.g. one optimizer per core in a worker pool
 * ```
 * @param n an integer in [1, 4096]
 * @throws KradagradError INVALID_OPTION for anything else; BACKEND_UNAVAILABLE when the
 *   CPU addon does not load.
 */
export function setThreads(n: number): void {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_THREADS) {
    const shown = typeof n === 'number' ? String(n) : typeof n === 'string' ? JSON.stringify(n) : typeof n;
    throw new KradagradError(`Expected an integer between 1 and ${MAX_THREADS} for the thread count but received ${shown}`, 'INVALID_OPTION');
  }
  getBackend('cpu'); // the CPU addon is always there to take it
  setAddonThreads(n);
}

/**
 * The CPU backend's thread count (see {@link setThreads}): the value set last, else the
 * default (`KRADAGRAD_NUM_THREADS`, else OpenBLAS's).
 * @throws KradagradError BACKEND_UNAVAILABLE when the CPU addon does not load.
 */
export function getThreads(): number {
  return addonThreadSetting() ?? getBackend('cpu').addon.getThreads();
}
