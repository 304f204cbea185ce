/**
 * Which backends this process can use, for programs (what `kradagrad info` prints for
 * people). Runtime settings of the backends belong here too: a thread-count setter for
 * the CPU backend is planned and will be exported from this module (not implemented yet;
 * until then OPENBLAS_NUM_THREADS, read when the addon loads, sets the BLAS threads).
 */
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
