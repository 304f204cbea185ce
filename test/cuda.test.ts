/**
 * The CUDA backend against the CPU backend: every op of lib/ops.ts on seeded random
 * inputs, float32 and float64 (the cases and their tolerances live in bench/gpu-ops.ts,
 * which the GPU machine runs as a plain node script: scripts/gpu-check.sh).
 *
 * Where no CUDA device is usable (CI, laptops), the device comparisons are skipped with
 * the reason printed. What still runs there, when the CUDA addon has been built
 * (npm run build:cuda): the addon loads, reports why CUDA is unavailable instead of
 * crashing, `auto` falls back to the CPU, and the CPU backend compiled into the CUDA
 * addon agrees with the CPU addon on every case (same sources, other build system).
 */
import * as fs from 'fs';
import * as path from 'path';
import { Backend, KradagradError, getBackend } from '../lib';
import { opCases, runCase } from './support/gpu_op_cases';

const cudaAddonPath = process.env.KRADAGRAD_CUDA_ADDON ?? path.resolve(__dirname, '..', 'build-cuda', 'Release', 'kradagrad_cuda.node');

let cuda: Backend | undefined;
let whyNot = '';
try {
  cuda = getBackend('cuda');
} catch (e) {
  whyNot = getBackend('auto').report.cudaReason ?? (e as Error).message;
}

const cpu = getBackend('cpu');

if (cuda) {
  const dev = cuda;
  describe(`CUDA vs CPU on ${dev.device}`, () => {
    test.each(opCases().map((c) => [c.name, c] as const))('%s', async (_name, c) => {
      const r = await runCase(c, cpu, dev);
      expect(r.ok ? '' : r.detail).toBe('');
    });
  });
} else {
  // eslint-disable-next-line no-console
  console.log(`CUDA tests skipped: ${whyNot}`);
  describe.skip(`CUDA vs CPU (skipped: ${whyNot})`, () => {
    test('needs a CUDA device', () => undefined);
  });
}

const built = fs.existsSync(cudaAddonPath);
(built && !cuda ? describe : describe.skip)('the CUDA addon on a machine without a usable device', () => {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const addon = built ? require(cudaAddonPath) : undefined;

  test('loads, lists a cuda backend that is unavailable, and says why', () => {
    expect(addon.flavor).toBe('cuda');
    const list = addon.backends() as { name: string; available: boolean; reason: string }[];
    expect(list.map((b) => b.name)).toEqual(['cpu', 'cuda']);
    const entry = list.find((b) => b.name === 'cuda')!;
    expect(entry.available).toBe(false);
    expect(entry.reason.length).toBeGreaterThan(10);
    // Asking again gives the same answer (the first outcome is kept, nothing re-initialised).
    expect(addon.backends()[1].reason).toBe(entry.reason);
  });

  test("'auto' falls back to the CPU with the reason; 'cuda' throws BACKEND_UNAVAILABLE", () => {
    const auto = getBackend('auto');
    expect(auto.name).toBe('cpu');
    expect(auto.report.cudaReason).toBeTruthy();
    let err: unknown;
    try {
      getBackend('cuda');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KradagradError);
    expect((err as KradagradError).code).toBe('BACKEND_UNAVAILABLE');
  });

  test("tensors on 'cuda' are refused with BACKEND_UNAVAILABLE, not a crash", () => {
    expect(() => addon.tensor('cuda', 'float32', 1, [2])).toThrow(/driver|device|CUDA/i);
  });

  // The CPU backend compiled into the CUDA addon (CMake build) vs the CPU addon (node-gyp).
  const self = (): Backend => {
    addon.setErrorClass(KradagradError);
    const entry = addon.backends().find((b: { name: string }) => b.name === 'cpu');
    return new Backend(addon, { backend: 'cpu', addonPath: cudaAddonPath, device: entry.device });
  };
  // Without the large-batch cases (those exist for the GPU's grid and chunk limits): this
  // part runs in every CI job and should stay quick.
  const big = /70000|70001|200003|100000|300001|n:300|n:130/;
  const cases = built ? opCases().filter((c) => !c.deviceOnly && !big.test(c.name)) : [];
  test.each(cases.map((c) => [c.name, c] as const))('CPU inside the CUDA addon: %s', async (_name, c) => {
    const r = await runCase(c, cpu, self());
    expect(r.ok ? '' : r.detail).toBe('');
  });
});

if (!built) {
  // eslint-disable-next-line no-console
  console.log(`CUDA addon not built (${cudaAddonPath} missing): run npm run build:cuda to compile it`);
}
