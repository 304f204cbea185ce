/**
 * Op overhead benchmark (npm run bench:ops): kradagrad's gemm and eigh on the CPU backend
 * next to OpenBLAS sgemm/dgemm and LAPACKE ssyevd/dsyevd called directly from C++
 * (bench/direct/direct.cc, compiled here with g++ against the same libraries), on the same
 * inputs, in the same run.
 *
 *   node dist/bench/ops.js [--n=128,256,512,1024] [--ops=gemm,eigh] [--dtypes=float32,float64]
 *                          [--mode=interleaved|process] [--threads=k] [--clock=wall|cpu]
 *                          [--samples=1] [--out=bench/results/ops-cpu]
 *
 * mode=interleaved (default): direct.cc is loaded as a tiny addon and, after warm-up, each
 *   sample is one kradagrad call and one direct call back to back (alternating which goes
 *   first), in the same process: same OpenBLAS thread pool, same allocator, same load
 *   from neighbours on a shared machine. The direct call is timed inside C++ around the
 *   library call only; ours is timed in JS around the public call.
 * mode=process: direct.cc as a separate program per case and round, `rounds` rounds
 *   alternating which side runs first (a cross-check; noisier on a shared machine).
 * Reported: median (and min) per call; overhead = median(ours) / median(direct) - 1 (the
 * target's measure), "paired" = median over samples of ours_i / direct_i - 1 (interleaved
 * mode), "of mins" = min(ours) / min(direct) - 1 (the least disturbed calls).
 * What "ours" includes: gemm = ops.gemm(A, B, C) into a preallocated C (option and
 * argument checks, N-API call, cblas); eigh = ops.eigh(A), the public call: allocation of
 * W and V, finiteness check, copy, syevd, eigenvector transpose to row-major columns, and
 * dispose(). Direct eigh = memcpy + LAPACKE_?syevd (syevd overwrites its input).
 * --samples scales the number of samples per case (default 1 = the table in REPS).
 * --threads=k sets OpenBLAS's thread count for both sides (interleaved mode; default: the
 *   library's). --clock=cpu times both sides with the process CPU clock instead of the wall
 *   clock (interleaved mode): time spent descheduled by neighbours does not count, which is
 *   what makes --threads=1 --clock=cpu usable on a busy shared machine.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { getBackend, ops } from '../lib';
import type { DType } from '../lib';
import { packageRoot } from '../lib/native';
import { fastFill } from '../test/support/rand';

type Op = 'gemm' | 'eigh';
interface Case {
  op: Op;
  dtype: DType;
  n: number;
  warmup: number;
  reps: number;
  seed: number;
}

const args = new Map(
  process.argv.slice(2).map((a) => {
    const m = /^--([^=]+)=(.*)$/.exec(a);
    if (!m) {
      console.error(`unknown argument ${a}; see the header of bench/ops.ts`);
      process.exit(2);
    }
    return [m[1], m[2]] as [string, string];
  }),
);
const list = (k: string, d: string): string[] => (args.get(k) ?? d).split(',').filter(Boolean);
const sizes = list('n', '128,256,512,1024').map(Number);
const opsList = list('ops', 'gemm,eigh') as Op[];
const dtypes = list('dtypes', 'float32,float64') as DType[];
const mode = args.get('mode') ?? 'interleaved';
const rounds = Number(args.get('rounds') ?? 5);
const scale = Number(args.get('samples') ?? 1);
const threads = args.get('threads') ? Number(args.get('threads')) : undefined;
const clock = (args.get('clock') ?? 'wall') as 'wall' | 'cpu';
if (clock !== 'wall' && clock !== 'cpu') throw new Error(`--clock must be wall or cpu, got ${clock}`);
if (mode === 'process' && (threads !== undefined || clock !== 'wall')) throw new Error('--threads and --clock need --mode=interleaved');
if (mode !== 'interleaved' && mode !== 'process') throw new Error(`--mode must be interleaved or process, got ${mode}`);
const outBase = path.resolve(packageRoot, args.get('out') ?? 'bench/results/ops-cpu');

// Samples per case (interleaved: in total; process: per round), about 0.5-3 s per case.
const REPS: Record<Op, (n: number) => { warmup: number; reps: number }> = {
  gemm: (n) => ({ warmup: 3, reps: Math.ceil(scale * (n <= 128 ? 400 : n <= 256 ? 150 : n <= 512 ? 40 : 12)) }),
  eigh: (n) => ({ warmup: 1, reps: Math.ceil(scale * (n <= 128 ? 80 : n <= 256 ? 30 : n <= 512 ? 12 : 6)) }),
};

function symmetrize(a: Float64Array, n: number): Float64Array {
  for (let i = 0; i < n; i++)
    for (let j = i + 1; j < n; j++) {
      const s = (a[i * n + j] + a[j * n + i]) / 2;
      a[i * n + j] = s;
      a[j * n + i] = s;
    }
  return a;
}
const typed = (dt: DType, x: Float64Array): Float32Array | Float64Array => (dt === 'float32' ? Float32Array.from(x) : x);

// ---- the direct baseline ------------------------------------------------------------------

function includeDir(): string[] {
  const dirs = ['/usr/include/x86_64-linux-gnu/openblas-pthread', '/usr/include/openblas', '/usr/include/aarch64-linux-gnu/openblas-pthread'];
  return dirs.filter((d) => fs.existsSync(path.join(d, 'cblas.h'))).map((d) => `-I${d}`);
}

function build(kind: 'program' | 'addon'): { bin: string; command: string } {
  const src = path.join(packageRoot, 'bench', 'direct', 'direct.cc');
  const dir = path.join(packageRoot, 'build', 'bench');
  const bin = path.join(dir, kind === 'addon' ? 'direct.node' : 'direct');
  const nodeInc = path.resolve(process.execPath, '../../include/node');
  const argv =
    kind === 'addon'
      ? ['-O3', '-std=c++17', '-shared', '-fPIC', '-DDIRECT_ADDON', '-DNODE_GYP_MODULE_NAME=direct', `-I${nodeInc}`, ...includeDir(), src, '-o', bin, '-llapacke', '-lopenblas']
      : ['-O3', '-std=c++17', ...includeDir(), src, '-o', bin, '-llapacke', '-lopenblas'];
  const command = `g++ ${argv.join(' ')}`;
  if (!fs.existsSync(bin) || fs.statSync(bin).mtimeMs < fs.statSync(src).mtimeMs) {
    fs.mkdirSync(dir, { recursive: true });
    const r = spawnSync('g++', argv, { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`building the direct baseline failed: ${command}`);
  }
  return { bin, command };
}

interface DirectAddon {
  prepare(op: Op, dtype: DType, n: number, seed: number): number;
  call(id: number): number;
  release(id: number): void;
  config(): string;
  setThreads(k: number): void;
  setClock(c: 'wall' | 'cpu'): void;
}

interface DirectOut {
  threads: number;
  config: string;
  results: { op: Op; dtype: DType; n: number; times_ms: number[] }[];
}
function runDirect(bin: string, cases: Case[]): DirectOut {
  const r = spawnSync(bin, cases.map((c) => `${c.op}:${c.dtype}:${c.n}:${c.warmup}:${c.reps}:${c.seed}`), {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  if (r.status !== 0) throw new Error(`direct baseline failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as DirectOut;
}

// ---- ours -------------------------------------------------------------------------------------

const backend = getBackend('cpu');
const nowMs = (): number => {
  if (clock === 'cpu') {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e3;
  }
  return Number(process.hrtime.bigint()) / 1e6;
};

/** Our side of a case: call() runs and times one public call (ms). */
function prepareOurs(c: Case): { call: () => number; release: () => void } {
  const nn = c.n * c.n;
  if (c.op === 'gemm') {
    const A = backend.fromArray(typed(c.dtype, fastFill(nn, c.seed)), [c.n, c.n]);
    const B = backend.fromArray(typed(c.dtype, fastFill(nn, c.seed + 1)), [c.n, c.n]);
    const C = backend.tensor(c.dtype, [c.n, c.n]);
    return {
      call: () => {
        const t0 = nowMs();
        ops.gemm(A, B, C);
        return nowMs() - t0;
      },
      release: () => [A, B, C].forEach((t) => t.dispose()),
    };
  }
  const A = backend.fromArray(typed(c.dtype, symmetrize(fastFill(nn, c.seed), c.n)), [c.n, c.n]);
  return {
    call: () => {
      const t0 = nowMs();
      const { w, v } = ops.eigh(A);
      w.dispose();
      v.dispose();
      return nowMs() - t0;
    },
    release: () => A.dispose(),
  };
}

function runOurs(c: Case): number[] {
  const side = prepareOurs(c);
  const times: number[] = [];
  for (let r = 0; r < c.warmup + c.reps; r++) {
    const t = side.call();
    if (r >= c.warmup) times.push(t);
  }
  side.release();
  return times;
}

/** Interleaved: one call of each side per sample, order alternating; returns both series. */
function runInterleaved(direct: DirectAddon, c: Case): { ours: number[]; direct: number[] } {
  const side = prepareOurs(c);
  const id = direct.prepare(c.op, c.dtype, c.n, c.seed);
  const o: number[] = [];
  const d: number[] = [];
  for (let r = 0; r < c.warmup + c.reps; r++) {
    let to: number;
    let td: number;
    if (r % 2) {
      to = side.call();
      td = direct.call(id);
    } else {
      td = direct.call(id);
      to = side.call();
    }
    if (r >= c.warmup) {
      o.push(to);
      d.push(td);
    }
  }
  direct.release(id);
  side.release();
  return { ours: o, direct: d };
}

// ---- statistics and report ------------------------------------------------------------------

const median = (x: number[]): number => {
  const s = x.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const gflops = (n: number, ms: number): number => (2 * n ** 3) / (ms * 1e6);

function main(): void {
  const built = build(mode === 'interleaved' ? 'addon' : 'program');
  const cases: Case[] = [];
  for (const op of opsList)
    for (const dtype of dtypes)
      for (const n of sizes) cases.push({ op, dtype, n, ...REPS[op](n), seed: 1000 + n });
  const key = (c: { op: string; dtype: string; n: number }): string => `${c.op}:${c.dtype}:${c.n}`;
  const ours = new Map<string, number[]>(cases.map((c) => [key(c), []]));
  const direct = new Map<string, number[]>(cases.map((c) => [key(c), []]));
  let directConfig = '?';
  const loadBefore = os.loadavg()[0];
  const started = Date.now();
  const progress = (what: string): void => {
    process.stderr.write(`${what} (${((Date.now() - started) / 1000).toFixed(0)} s)\n`);
  };
  if (mode === 'interleaved') {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const addon = require(built.bin) as DirectAddon;
    if (threads !== undefined) addon.setThreads(threads);
    addon.setClock(clock);
    directConfig = addon.config();
    for (const c of cases) {
      const r = runInterleaved(addon, c);
      ours.get(key(c))!.push(...r.ours);
      direct.get(key(c))!.push(...r.direct);
      progress(`${key(c)} done`);
    }
  } else {
    for (let round = 0; round < rounds; round++) {
      for (const [i, c] of cases.entries()) {
        const sides = [
          () => {
            const info = runDirect(built.bin, [c]);
            directConfig = `${info.config}, ${info.threads} threads`;
            direct.get(key(c))!.push(...info.results[0].times_ms);
          },
          () => ours.get(key(c))!.push(...runOurs(c)),
        ];
        if ((round + i) % 2) sides.reverse();
        sides.forEach((f) => f());
      }
      progress(`round ${round + 1}/${rounds} done`);
    }
  }

  const rows = cases.map((c) => {
    const o = ours.get(key(c))!;
    const d = direct.get(key(c))!;
    const om = median(o);
    const dm = median(d);
    return {
      op: c.op,
      dtype: c.dtype,
      n: c.n,
      samples: o.length,
      ours_median_ms: om,
      ours_min_ms: Math.min(...o),
      direct_median_ms: dm,
      direct_min_ms: Math.min(...d),
      overhead_pct: (om / dm - 1) * 100,
      min_overhead_pct: (Math.min(...o) / Math.min(...d) - 1) * 100,
      paired_overhead_pct: mode === 'interleaved' ? (median(o.map((x, i) => x / d[i])) - 1) * 100 : undefined,
      ours_gflops: c.op === 'gemm' ? gflops(c.n, om) : undefined,
      direct_gflops: c.op === 'gemm' ? gflops(c.n, dm) : undefined,
    };
  });

  const cpu = os.cpus();
  const env = {
    date: new Date().toISOString(),
    host_cpu: `${cpu[0]?.model ?? '?'} x ${cpu.length}`,
    load_average_1min_before_after: [loadBefore, os.loadavg()[0]].map((x) => Number(x.toFixed(2))),
    cores: os.cpus().length,
    node: process.version,
    backend_device: backend.device,
    openblas_threads_set: threads ?? 'library default',
    direct_openblas: directConfig,
    direct_build: built.command,
    mode,
    clock,
    scheme:
      mode === 'interleaved'
        ? 'per case: warm-up, then samples of one kradagrad call and one direct call back to back in one process, order alternating; medians'
        : `per case and round (${rounds}): warm-up + timed calls on each side back to back (direct in a fresh process), order alternating; medians over all rounds`,
  };

  const f = (x: number | undefined, d = 2): string => (x === undefined ? '' : x.toFixed(d));
  const pct = (x: number | undefined): string => (x === undefined ? '' : `${x >= 0 ? '+' : ''}${x.toFixed(1)}%`);
  const header = ['op', 'dtype', 'n', 'ours ms', 'direct ms', 'overhead', 'paired', 'of mins', 'ours GFLOP/s', 'direct GFLOP/s', 'ours min', 'direct min', 'samples'];
  const body = rows.map((r) => [
    r.op,
    r.dtype,
    String(r.n),
    f(r.ours_median_ms, 3),
    f(r.direct_median_ms, 3),
    pct(r.overhead_pct),
    pct(r.paired_overhead_pct),
    pct(r.min_overhead_pct),
    f(r.ours_gflops, 1),
    f(r.direct_gflops, 1),
    f(r.ours_min_ms, 3),
    f(r.direct_min_ms, 3),
    String(r.samples),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  const table = [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');

  const big = rows.filter((r) => r.n >= 256);
  const worst = big.reduce((m, r) => Math.max(m, r.overhead_pct), -Infinity);
  const verdict = big.length
    ? `worst overhead at n >= 256 (medians): ${worst.toFixed(1)}% (target < 10%): ${worst < 10 ? 'met' : 'NOT met'}`
    : 'no case with n >= 256';

  const cmd = `node dist/bench/ops.js ${process.argv.slice(2).join(' ')}`.trim();
  const text = [
    `kradagrad op overhead vs OpenBLAS/LAPACKE called directly`,
    `command: ${cmd}   (npm run bench:ops after npx tsc -p tsconfig.build.json)`,
    ...Object.entries(env).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(' ') : v}`),
    '',
    table,
    '',
    verdict,
    '',
  ].join('\n');
  console.log(text);
  fs.mkdirSync(path.dirname(outBase), { recursive: true });
  fs.writeFileSync(`${outBase}.txt`, text);
  fs.writeFileSync(`${outBase}.json`, JSON.stringify({ command: cmd, env, rows, raw: { ours: Object.fromEntries(ours), direct: Object.fromEntries(direct) } }, null, 1) + '\n');
  console.log(`wrote ${path.relative(process.cwd(), outBase)}.txt and .json`);
}

main();
