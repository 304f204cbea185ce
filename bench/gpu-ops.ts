/**
 * The GPU machine's op check and eigensolver timings, as a plain node script (no npm there):
 * `node dist/bench/gpu-ops.js` (see scripts/gpu-check.sh) runs every op case of
 * test/support/gpu_op_cases.ts on the device backend against the CPU backend, prints a
 * table and writes JSON with the device names; `--bench-eigh` adds the cuSOLVER timings.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Backend, KradagradError, getBackend, ops } from '../lib';
import type { DType } from '../lib';
import { CaseResult, DTYPES, hash, opCases, runCase, typed, withEnv } from '../test/support/gpu_op_cases';
import { Rng } from '../test/support/rand';
// ---- eigensolver timing (which cuSOLVER path for which sizes) -----------------------------

export interface EighTiming {
  dtype: DType;
  n: number;
  batch: number;
  /** Median ms per call over the repetitions, per KRADAGRAD_CUDA_EIGH setting (NaN: it threw). */
  ms: Record<string, number>;
  errors?: Record<string, string>;
}

/** One timed eigensolver setting: the environment each call runs under (undefined: unset). */
export interface EighMethod {
  name: string;
  env: Record<string, string | undefined>;
}
/** The solver paths side by side ('syevd x1': the looped syevd one matrix at a time, no lanes). */
export const EIGH_METHODS: EighMethod[] = [
  { name: 'syevd', env: { KRADAGRAD_CUDA_EIGH: 'syevd', KRADAGRAD_CUDA_EIGH_STREAMS: undefined } },
  { name: 'syevd x1', env: { KRADAGRAD_CUDA_EIGH: 'syevd', KRADAGRAD_CUDA_EIGH_STREAMS: '1' } },
  { name: 'syevj', env: { KRADAGRAD_CUDA_EIGH: 'syevj', KRADAGRAD_CUDA_EIGH_STREAMS: undefined } },
  { name: 'auto', env: { KRADAGRAD_CUDA_EIGH: undefined, KRADAGRAD_CUDA_EIGH_STREAMS: undefined } },
];
/** The looped syevd with 1, 4 and 12 solver lanes (KRADAGRAD_CUDA_EIGH_STREAMS). */
export const LANE_COUNTS = [1, 4, 12];
export const LANE_METHODS: EighMethod[] = LANE_COUNTS.map((l) => ({
  name: `lanes ${l}`,
  env: { KRADAGRAD_CUDA_EIGH: 'syevd', KRADAGRAD_CUDA_EIGH_STREAMS: String(l) },
}));

function withEnvs<T>(env: Record<string, string | undefined>, fn: () => T): T {
  return Object.entries(env).reduceRight<() => T>((inner, [k, v]) => () => withEnv(k, v, inner), fn)();
}

export function benchEigh(dev: Backend, configs: { n: number; batch: number }[], reps = 3, methods = EIGH_METHODS): EighTiming[] {
  const out: EighTiming[] = [];
  for (const dt of DTYPES)
    for (const { n, batch } of configs) {
      const rng = new Rng(hash(`bench ${dt} ${n} ${batch}`));
      const a = rng.normals(batch * n * n);
      const A = dev.fromArray(typed(dt, a), [n, n], batch);
      const row: EighTiming = { dtype: dt, n, batch, ms: {} };
      for (const method of methods) {
        const times: number[] = [];
        try {
          withEnvs(method.env, () => {
            for (let r = 0; r <= reps; r++) {
              const t0 = process.hrtime.bigint();
              const e = ops.eigh(A, { allowFailures: true }); // returns info: synchronized
              const t = Number(process.hrtime.bigint() - t0) / 1e6;
              e.w.dispose();
              e.v.dispose();
              if (r > 0 || t > 1000) times.push(t); // the first call warms up (workspace, pool)
              if (t > 1000) break; // slow path: one timing is enough
            }
          });
          times.sort((x, y) => x - y);
          row.ms[method.name] = times[Math.floor(times.length / 2)];
        } catch (e) {
          row.ms[method.name] = NaN;
          row.errors = { ...row.errors, [method.name]: (e as Error).message };
        }
      }
      A.dispose();
      out.push(row);
    }
  return out;
}

/** An eighAsync and main-thread work on the same backend, alone and together (float32). */
export interface OverlapTiming {
  n: number;
  batch: number;
  /** gram products of n x n by the main thread, then a synchronize. */
  mainOps: number;
  eighMs: number;
  mainMs: number;
  /** Together: when the main thread's work was done, and when the eigh resolved. */
  mainDuringMs: number;
  eighDuringMs: number;
}

/**
 * Whether an asynchronous eigh lets the main thread's work go on (CUDA: the backend lock is
 * released while the solver lanes run). Medians of `reps` after a warm-up. Overlap shows
 * as mainDuringMs well below eighMs + mainMs; none as mainDuringMs >= eighMs.
 */
export async function benchOverlap(dev: Backend, n: number, batch: number, mainOps = 100, reps = 3): Promise<OverlapTiming> {
  const rng = new Rng(hash(`overlap ${n} ${batch}`));
  const A = dev.fromArray(typed('float32', rng.normals(batch * n * n)), [n, n], batch);
  const G = dev.fromArray(typed('float32', rng.normals(n * n)), [n, n]);
  const H = ops.gram(G, 0);
  const now = () => Number(process.hrtime.bigint()) / 1e6;
  const main = () => {
    for (let i = 0; i < mainOps; i++) ops.gram(G, 0, H);
    dev.synchronize();
  };
  const eigh = async () => {
    const e = await ops.eighAsync(A, { allowFailures: true });
    e.w.dispose();
    e.v.dispose();
  };
  const med = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const e: number[] = [], m: number[] = [], md: number[] = [], ed: number[] = [];
  try {
    await eigh();
    main();
    for (let r = 0; r < reps; r++) {
      let t0 = now();
      await eigh();
      e.push(now() - t0);
      t0 = now();
      main();
      m.push(now() - t0);
      t0 = now();
      const done = eigh().then(() => now() - t0);
      main();
      md.push(now() - t0);
      ed.push(await done);
    }
  } finally {
    A.dispose();
    G.dispose();
    H.dispose();
  }
  return { n, batch, mainOps, eighMs: med(e), mainMs: med(m), mainDuringMs: med(md), eighDuringMs: med(ed) };
}

/** A timing table, one line per row: dtype n batch | ms per method. */
function printEigh(title: string, rows: EighTiming[], methods: EighMethod[]): void {
  console.log(`\n${title}: dtype n batch | ${methods.map((m) => m.name).join(' | ')}`);
  for (const r of rows) {
    const cells = methods.map((m) => r.ms[m.name].toFixed(2).padStart(9)).join(' | ');
    console.log(`${r.dtype} ${String(r.n).padStart(5)} ${String(r.batch).padStart(5)} | ${cells}${r.errors ? `  errors: ${JSON.stringify(r.errors)}` : ''}`);
  }
}

// ---- command line --------------------------------------------------------------------------

/** The CPU backend inside the CUDA addon: lets the whole script run without a GPU (--self). */
function cpuInsideCudaAddon(): Backend {
  const p = process.env.KRADAGRAD_CUDA_ADDON ?? path.resolve(__dirname, '..', '..', 'build-cuda', 'Release', 'kradagrad_cuda.node');
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const addon = require(p);
  addon.setErrorClass(KradagradError);
  const entry = addon.backends().find((b: { name: string }) => b.name === 'cpu');
  return new Backend(addon, { backend: 'cpu', addonPath: p, device: `${entry.device} [inside the CUDA addon]` });
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const opt = (k: string) => argv.find((a) => a.startsWith(`--${k}=`))?.slice(k.length + 3);
  const outDir = opt('out');
  const filter = opt('filter') ? new RegExp(opt('filter')!) : undefined;
  const self = argv.includes('--self');
  const ref = getBackend('cpu');
  let dev: Backend;
  try {
    dev = self ? cpuInsideCudaAddon() : getBackend((opt('dev') as 'cuda' | 'cpu') ?? 'cuda');
  } catch (e) {
    console.error(`gpu-ops: no device backend: ${(e as Error).message}`);
    process.exit(2);
  }
  console.log(`reference: ${ref.name} — ${ref.device}`);
  console.log(`device:    ${dev.name} — ${dev.device}`);
  const onDevice = dev.name === 'cuda';
  const cases = opCases().filter((c) => (!filter || filter.test(c.name)) && (onDevice || !c.deviceOnly));
  const results: CaseResult[] = [];
  const t0 = Date.now();
  for (const c of cases) {
    const r = await runCase(c, ref, dev);
    results.push(r);
    const mark = r.ok ? (r.exact ? 'ok (exact)' : 'ok') : 'FAIL';
    console.log(`${mark.padEnd(10)} ${r.worst.toExponential(2).padStart(9)} ${r.ms.toFixed(0).padStart(6)} ms  ${r.name}${r.ok ? '' : `\n           ${r.detail}`}`);
  }
  const failed = results.filter((r) => !r.ok);
  console.log(`\n${results.length - failed.length}/${results.length} cases pass (${results.filter((r) => r.exact).length} bit-exact) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  let eigh: EighTiming[] | undefined;
  let lanes: EighTiming[] | undefined;
  let overlap: OverlapTiming | undefined;
  if (argv.includes('--bench-eigh')) {
    // --self (the CPU backend, which ignores the solver settings): the same tables at an
    // eighth of the sizes, so the script's self-test stays short.
    const scale = (c: { n: number; batch: number }) => (self ? { n: Math.max(1, c.n >> 3), batch: c.batch } : c);
    const configs = [
      { n: 16, batch: 256 },
      { n: 32, batch: 256 },
      { n: 64, batch: 256 },
      { n: 128, batch: 256 },
      { n: 256, batch: 64 },
      { n: 128, batch: 1 },
      { n: 512, batch: 4 },
      { n: 1024, batch: 1 },
      { n: 1024, batch: 12 }, // the MLP set's factors: one group of 12 blocks per dim
    ].map(scale);
    if (self) console.log('\n(self-test: eigh timing sizes divided by 8)');
    eigh = benchEigh(dev, configs);
    printEigh('eigh ms/call (median of 3 after a warm-up)', eigh, EIGH_METHODS);
    // The MLP's factors with 1, 4 and 12 concurrent syevd lanes.
    lanes = benchEigh(dev, [{ n: 1024, batch: 12 }].map(scale), 3, LANE_METHODS);
    printEigh('eigh lanes ms/call (syevd, median of 3 after a warm-up)', lanes, LANE_METHODS);
    const c = scale({ n: 1024, batch: 12 });
    overlap = await benchOverlap(dev, c.n, c.batch);
    const o = overlap;
    console.log(
      `\neigh overlap (float32 ${o.n} x ${o.batch}, eighAsync vs ${o.mainOps} gram products + synchronize on the main thread, ms): ` +
        `eigh alone ${o.eighMs.toFixed(2)}, main alone ${o.mainMs.toFixed(2)}; together: main done after ${o.mainDuringMs.toFixed(2)}, ` +
        `eigh after ${o.eighDuringMs.toFixed(2)}`,
    );
  }
  if (outDir) {
    fs.mkdirSync(outDir, { recursive: true });
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const file = path.join(outDir, `gpu-ops-${dev.name}-${stamp}.json`);
    const summary = {
      command: `node ${path.relative(process.cwd(), process.argv[1])} ${argv.join(' ')}`.trim(),
      date: new Date().toISOString(),
      node: process.version,
      reference: { backend: ref.name, device: ref.device },
      device: { backend: dev.name, device: dev.device },
      passed: results.length - failed.length,
      total: results.length,
      bitExact: results.filter((r) => r.exact).length,
      results,
      eigh,
      lanes,
      overlap,
    };
    fs.writeFileSync(file, JSON.stringify(summary, null, 1));
    console.log(`results: ${file}`);
  }
  process.exitCode = failed.length ? 1 : 0;
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
