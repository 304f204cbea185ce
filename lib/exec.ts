/**
 * Jobs: a step recorded as one ordered list of native ops and run as a unit, like work
 * queued on a CUDA stream. `record` runs `body`, during which every mutating op on the
 * backend is recorded instead of run (ops that return values to JavaScript refuse); the
 * job then runs on the main thread (`run()`) or on the libuv pool (`runAsync()`), so a
 * whole optimizer step can run without blocking the event loop. Guards recorded into the
 * job (non-finite gradients or parameters, roots failing too often) stop it before the
 * ops after them, and JavaScript reads their verdict once, in the result.
 */
import type { NativeJob, NativeJobResult } from './native';
import type { Backend } from './tensor';

export type { NativeJob, NativeJobResult };

/** Records the ops that `body` issues on `backend` into a job (nothing runs yet). */
export function record(backend: Backend, body: () => void): NativeJob {
  const a = backend.addon;
  a.beginJob();
  try {
    body();
  } catch (e) {
    a.discardJob();
    throw e;
  }
  return a.endJob();
}
