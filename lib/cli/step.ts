/**
 * `kradagrad bench step`: amortized per-step time of each optimizer and precision on the
 * parameter sets of the optimizers issue (ResNet-32 conv shapes with block 128; an MLP
 * set with block 1024) and a single 4096x4096 matrix, on each available backend, with
 * random gradients; Adam is the ratio base, Shampoo fp32 and fp64 side by side.
 *
 * Amortized time with roots every N steps = t_plain + (t_root - t_plain) / N, where
 * t_plain is the median step time of an instance that never refreshes its roots after
 * the warm-up, and t_root the median step time of an instance that refreshes them every
 * step (both after --warmup untimed steps). This needs no N-step runs, which matters on
 * the CPU where one root refresh of the MLP set takes seconds.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { BackendRequest } from '../native';
import * as ops from '../ops';
import { Adam, Kradagrad, KradagradStar, Sgd, Shampoo, planParam, scheduleDim } from '../optim';
import type { Grads, NamedParams, Optimizer, PreconditionerOptions } from '../optim';
import { Backend, Tensor, getBackend } from '../tensor';
import { Io, Opts, UsageError, parseArgs, prepareOutDir } from './args';
import { packageVersion } from './info';
import { Rng } from './linalg';
import { BarGroup, groupedBarChart, writeChart } from './plot';
import { Progress } from './progress';
import { fmtMs, fmtSeconds, formatTable } from './table';

export const stepHelp = `Usage: kradagrad bench step [options]

Amortized per-step time (roots every --root-every steps) of each optimizer and
statistics precision on fixed parameter sets with random gradients, per backend.
Parameters are float32 tensors on the backend (device mode; --host for host arrays).

Parameter sets (ids):
  resnet32     ResNet-32 conv shapes: 16x3x3x3, 10 x 16x16x3x3, 32x16x3x3,
               9 x 32x32x3x3, 64x32x3x3, 9 x 64x64x3x3, 10x64, 10 (block 128)
  mlp          4 x 1024x1024, 4096x1024, 1024x4096 (block 1024)
  single4096   one 4096x4096 matrix (block 4096: two 4096x4096 factors)
  tiny         32x16, 16x8, 16 (block 16; a smoke test)
Optimizers (ids): adam, sgd, shampoo32, shampoo64, kradstar32, kradstar64, krad32

Options:
  --sets <ids>          comma list (default resnet32,mlp,single4096; single4096 is
                        left out on the CPU unless named: minutes per optimizer)
  --optimizers <ids>    comma list (default adam,shampoo32,shampoo64,kradstar32,
                        kradstar64,krad32)
  --backend <b>         cpu | cuda | auto | all (default all: each backend that loads)
  --root-every <n>      root refresh period N of the amortization (default 20)
  --root-method <m>     eigh | newton: the optimizers' rootMethod (default eigh;
                        newton = batched GEMM-only coupled Newton, eigh fallback)
  --warmup <n>          untimed steps per instance (default 1 on cpu, 2 on cuda)
  --steps <n>           timed steps per instance, median taken (default 5 on cuda;
                        on cpu 5 for resnet32/tiny, 1 for mlp/single4096)
  --host                host-mode parameters (Float32Array, copied each step)
  --out <dir>           output directory (default ./kradagrad-out; checked before
                        the run)
  --no-png              write the SVG only
  --quiet               no progress on stderr
  -h, --help            this help

amortized = t_plain + (t_root - t_plain) / N, with t_plain the median step without a
root refresh and t_root the median step with one (each from its own instance).
Writes <out>/step.json, step.md and step.svg/.png (bar chart, log scale).
Exit codes: 0 ok, 1 failure, 2 usage error.`;

interface ParamSet {
  id: string;
  label: string;
  shapes: number[][];
  blockSize: number;
}

const rep = (n: number, s: number[]): number[][] => Array.from({ length: n }, () => s.slice());

export const PARAM_SETS: readonly ParamSet[] = [
  {
    id: 'resnet32',
    label: 'ResNet-32 shapes',
    shapes: [[16, 3, 3, 3], ...rep(10, [16, 16, 3, 3]), [32, 16, 3, 3], ...rep(9, [32, 32, 3, 3]), [64, 32, 3, 3], ...rep(9, [64, 64, 3, 3]), [10, 64], [10]],
    blockSize: 128,
  },
  { id: 'mlp', label: 'MLP 4x1024^2+4096x1024+1024x4096', shapes: [...rep(4, [1024, 1024]), [4096, 1024], [1024, 4096]], blockSize: 1024 },
  { id: 'single4096', label: 'single 4096x4096', shapes: [[4096, 4096]], blockSize: 4096 },
  { id: 'tiny', label: 'tiny', shapes: [[32, 16], [16, 8], [16]], blockSize: 16 },
];

type StepOptId = 'adam' | 'sgd' | 'shampoo32' | 'shampoo64' | 'kradstar32' | 'kradstar64' | 'krad32';

interface StepOptDef {
  id: StepOptId;
  label: string;
  precision: 'float32' | 'float64' | null;
  make(p: NamedParams, b: Backend, blockSize: number, rootFrequency: number, rootMethod?: RootMethod): Optimizer;
}

type RootMethod = 'eigh' | 'newton';
const pre = (b: Backend, blockSize: number, rootFrequency: number, dt: 'float32' | 'float64', rootMethod: RootMethod = 'eigh'): PreconditionerOptions => ({
  lr: 1e-4,
  backend: b,
  blockSize,
  rootFrequency,
  rootMethod,
  startStep: 1,
  epsilon: 1e-6,
  statisticsDtype: dt,
});

export const STEP_OPTIMIZERS: readonly StepOptDef[] = [
  { id: 'adam', label: 'Adam', precision: null, make: (p, b) => new Adam(p, { lr: 1e-4, backend: b }) },
  { id: 'sgd', label: 'SGD', precision: null, make: (p, b) => new Sgd(p, { lr: 1e-4, backend: b }) },
  { id: 'shampoo32', label: 'Shampoo fp32', precision: 'float32', make: (p, b, bs, rf, rm) => new Shampoo(p, pre(b, bs, rf, 'float32', rm)) },
  { id: 'shampoo64', label: 'Shampoo fp64', precision: 'float64', make: (p, b, bs, rf, rm) => new Shampoo(p, pre(b, bs, rf, 'float64', rm)) },
  { id: 'kradstar32', label: 'KrADagrad* fp32', precision: 'float32', make: (p, b, bs, rf, rm) => new KradagradStar(p, pre(b, bs, rf, 'float32', rm)) },
  { id: 'kradstar64', label: 'KrADagrad* fp64', precision: 'float64', make: (p, b, bs, rf, rm) => new KradagradStar(p, pre(b, bs, rf, 'float64', rm)) },
  { id: 'krad32', label: 'KrADagrad fp32', precision: 'float32', make: (p, b, bs, rf, rm) => new Kradagrad(p, pre(b, bs, rf, 'float32', rm)) },
];
const DEFAULT_OPTS: StepOptId[] = ['adam', 'shampoo32', 'shampoo64', 'kradstar32', 'kradstar64', 'krad32'];

export interface StepRow {
  set: string;
  backend: string;
  optimizer: StepOptId;
  label: string;
  precision: string | null;
  /** Median ms of a step without a root refresh. */
  plainMs: number;
  /** Median ms of a step with a root refresh (equal to plainMs for Adam/SGD). */
  rootMs: number;
  amortizedMs: number;
  ratioToAdam: number | null;
  /** GEMM work of one step without a root refresh (statistics + preconditioning), GFLOP. */
  gemmGflop: number;
  /** That work at the backend's measured GEMM rate of the statistics dtype, ms: the floor. */
  floorMs: number | null;
  stateBytes: number;
  plainSamples: number[];
  rootSamples: number[];
  error?: string;
}

export interface StepReport {
  benchmark: 'step';
  version: string;
  command: string;
  config: { sets: string[]; optimizers: string[]; rootEvery: number; rootMethod?: RootMethod; warmup: number | null; steps: number | null; host: boolean };
  backends: {
    name: string;
    device: string;
    warmup: number;
    steps: number;
    sets: string[];
    skipped: string[];
    /** Measured GEMM rate (n = 1024, same run), GFLOP/s. */
    gemmGflops: { float32: number; float64: number };
  }[];
  sets: { id: string; label: string; tensors: number; params: number; blockSize: number }[];
  rows: StepRow[];
  totalMs: number;
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const size = (s: number[]): number => s.reduce((a, b) => a * b, 1);

/** Random float32 parameters and gradients for a set, as backend tensors or host arrays. */
function makeData(set: ParamSet, b: Backend, host: boolean, seed: number): { params: () => NamedParams; grads: Grads; free: () => void } {
  const rng = new Rng(seed);
  const hostParams = set.shapes.map((s) => Float32Array.from(rng.normals(size(s)), (x) => 0.1 * x));
  const hostGrads = set.shapes.map((s) => Float32Array.from(rng.normals(size(s)), (x) => 1e-2 * x));
  const names = set.shapes.map((s, i) => `p${i}_${s.join('x')}`);
  const tensors: Tensor[] = [];
  const grads: Grads = {};
  names.forEach((n, i) => {
    if (host) grads[n] = hostGrads[i];
    else {
      const t = b.fromArray(hostGrads[i], [size(set.shapes[i])]);
      tensors.push(t);
      grads[n] = t;
    }
  });
  const params = (): NamedParams => {
    const p: NamedParams = {};
    names.forEach((n, i) => {
      if (host) p[n] = { data: Float32Array.from(hostParams[i]), shape: set.shapes[i] };
      else {
        const t = b.fromArray(hostParams[i], set.shapes[i]);
        tensors.push(t);
        p[n] = t;
      }
    });
    return p;
  };
  return { params, grads, free: () => tensors.forEach((t) => t.dispose()) };
}

function timeSteps(opt: Optimizer, grads: Grads, b: Backend, warmup: number, steps: number, tick: () => void): number[] {
  for (let i = 0; i < warmup; i++) {
    opt.step(grads);
    b.synchronize();
    tick();
  }
  const out: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    opt.step(grads);
    b.synchronize();
    out.push(performance.now() - t0);
    tick();
  }
  return out;
}

export interface StepArgs {
  help: boolean;
  sets: string[] | null;
  optimizers: StepOptId[];
  backend: BackendRequest | 'all';
  rootEvery: number;
  rootMethod: RootMethod;
  warmup: number | null;
  steps: number | null;
  host: boolean;
  out: string;
  png: boolean;
  quiet: boolean;
}

export function parseStep(argv: readonly string[]): StepArgs {
  const p = parseArgs(
    argv,
    {
      sets: { kind: 'value' },
      optimizers: { kind: 'value' },
      backend: { kind: 'value' },
      'root-every': { kind: 'value' },
      'root-method': { kind: 'value' },
      warmup: { kind: 'value' },
      steps: { kind: 'value' },
      host: { kind: 'flag' },
      out: { kind: 'value' },
      'no-png': { kind: 'flag' },
      quiet: { kind: 'flag' },
    },
    'bench step',
  );
  const o = new Opts(p);
  if (p.positionals.length) throw new UsageError(`bench step takes no positional arguments, got '${p.positionals[0]}'`);
  const list = <T extends string>(name: string, allowed: readonly T[]): T[] | null => {
    const v = o.str(name);
    if (v === undefined) return null;
    const xs = v.split(',').map((s) => s.trim()).filter(Boolean);
    const bad = xs.filter((x) => !(allowed as readonly string[]).includes(x));
    if (!xs.length || bad.length) throw new UsageError(`--${name} expects a comma list of ${allowed.join(', ')}, got '${v}'`);
    return [...new Set(xs)] as T[];
  };
  const opts = list('optimizers', STEP_OPTIMIZERS.map((d) => d.id));
  return {
    help: o.flag('help'),
    sets: list('sets', PARAM_SETS.map((s) => s.id)),
    optimizers: opts ?? DEFAULT_OPTS,
    backend: o.choice<BackendRequest | 'all'>('backend', 'all', ['all', 'auto', 'cpu', 'cuda']),
    rootEvery: o.posInt('root-every', 20),
    rootMethod: o.choice<RootMethod>('root-method', 'eigh', ['eigh', 'newton']),
    warmup: o.has('warmup') ? o.posInt('warmup', 1, 0) : null,
    steps: o.has('steps') ? o.posInt('steps', 1) : null,
    host: o.flag('host'),
    out: o.str('out') ?? 'kradagrad-out',
    png: !o.flag('no-png'),
    quiet: o.flag('quiet'),
  };
}

/** The backends to measure: 'all' = CPU plus CUDA when it loads (with the reason when not). */
function backendsFor(req: StepArgs['backend'], note: (s: string) => void): Backend[] {
  if (req !== 'all') return [getBackend(req)];
  const out = [getBackend('cpu')];
  try {
    out.push(getBackend('cuda'));
  } catch (e) {
    note(`cuda: not measured (${(e as Error).message})`);
  }
  return out;
}

/**
 * GEMM FLOPs of one step without a root refresh, from the blocking plan: per block of
 * extents n_i (m_i = block size / n_i) Shampoo does a Gram (n_i^2 m_i: a symmetric
 * product, what syrk computes) and a mode product (2 n_i^2 m_i) per dim; KrADagrad* adds
 * H L and L (H L) (4 n_i^3); KrADagrad preconditions every dim once and updates one
 * factor (Gram + damping L L^T + L' H + L' H L'^T). Adam and SGD do none.
 */
export function gemmFlopsPerStep(id: StepOptId, set: ParamSet): number {
  if (id === 'adam' || id === 'sgd') return 0;
  let flops = 0;
  for (const shape of set.shapes) {
    const plan = planParam('p', shape, set.blockSize, true);
    for (const b of plan.blocks) {
      const total = b.extent.reduce((x, y) => x * y, 1);
      const dims = b.extent.map((n) => ({ n, m: total / n }));
      if (id === 'krad32') {
        const ix = scheduleDim(1, b.extent);
        flops += dims.reduce((x, { n, m }) => x + 2 * n * n * m, 0);
        const { n, m } = dims[ix];
        flops += n * n * m + 6 * n ** 3;
        continue;
      }
      for (const { n, m } of dims) flops += 3 * n * n * m + (id.startsWith('kradstar') ? 4 * n ** 3 : 0);
    }
  }
  return flops;
}

/** Measured GEMM rate of a backend at n = 1024 (median of a few runs), GFLOP/s. */
function gemmRate(b: Backend, dt: 'float32' | 'float64'): number {
  const n = 1024;
  const x = b.tensor(dt, [n, n]);
  const c = b.tensor(dt, [n, n]);
  try {
    ops.fill(x, 0.5);
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      ops.gemm(x, x, c);
      b.synchronize();
      if (i > 0) times.push(performance.now() - t0);
    }
    return (2 * n ** 3) / (median(times) * 1e6);
  } finally {
    x.dispose();
    c.dispose();
  }
}

export function runStepBench(a: StepArgs, io: Io, command = 'kradagrad bench step'): StepReport {
  const t0 = performance.now();
  const notes: string[] = [];
  const backends = backendsFor(a.backend, (s) => notes.push(s));
  const defs = STEP_OPTIMIZERS.filter((d) => a.optimizers.includes(d.id));
  // Adam first: it is the ratio base.
  defs.sort((x, y) => (x.id === 'adam' ? -1 : y.id === 'adam' ? 1 : 0));
  const plan = backends.map((b) => {
    const cpu = b.name === 'cpu';
    const wanted = a.sets ?? ['resnet32', 'mlp', 'single4096'];
    const skipped = a.sets === null && cpu ? ['single4096'] : [];
    return {
      b,
      warmup: a.warmup ?? (cpu ? 1 : 2),
      steps: a.steps ?? (cpu ? 1 : 5),
      sets: PARAM_SETS.filter((s) => wanted.includes(s.id) && !skipped.includes(s.id)),
      skipped,
      gemmGflops: { float32: gemmRate(b, 'float32'), float64: gemmRate(b, 'float64') },
    };
  });
  // Small sets are cheap: more timed steps on the CPU unless --steps says otherwise.
  const stepsFor = (p: (typeof plan)[number], set: ParamSet): number =>
    a.steps ?? (p.b.name === 'cpu' && (set.id === 'resnet32' || set.id === 'tiny') ? 5 : p.steps);
  // Progress in units of parameter-steps (a step of the MLP set weighs 27 of ResNet-32's).
  const w = (set: ParamSet): number => Math.max(1, Math.round(set.shapes.reduce((x, sh) => x + size(sh), 0) / 1e4));
  const per = (p: (typeof plan)[number], set: ParamSet, d: StepOptDef): number => w(set) * (p.warmup + stepsFor(p, set)) * (d.precision ? 2 : 1);
  const total = plan.reduce((acc, p) => acc + p.sets.reduce((y, set) => y + defs.reduce((x, d) => x + per(p, set, d), 0), 0), 0);
  const progress = new Progress(io, total, 'parameter-steps', a.quiet);
  for (const n of notes) progress.note(n);
  for (const p of plan) if (p.skipped.length) progress.note(`${p.b.name}: skipping ${p.skipped.join(', ')} by default (slow on the CPU; name it in --sets to run it)`);
  const rows: StepRow[] = [];
  let done = 0;
  try {
    for (const p of plan) {
      for (const set of p.sets) {
        const data = makeData(set, p.b, a.host, 7);
        let adamMs: number | null = null;
        try {
          for (const d of defs) {
            const label = `${p.b.name} ${set.id} ${d.label}`;
            const tick = (): void => progress.update((done += w(set)), label);
            progress.update(done, label);
            const row: StepRow = {
              set: set.id,
              backend: p.b.name,
              optimizer: d.id,
              label: d.label,
              precision: d.precision,
              plainMs: NaN,
              rootMs: NaN,
              amortizedMs: NaN,
              ratioToAdam: null,
              gemmGflop: gemmFlopsPerStep(d.id, set) / 1e9,
              floorMs: null,
              stateBytes: 0,
              plainSamples: [],
              rootSamples: [],
            };
            const start = done;
            try {
              // Never refreshes after the warm-up (KrADagrad refreshes at its step 0: keep >= 1 warm-up step).
              const plain = d.make(data.params(), p.b, set.blockSize, d.precision ? 1e9 : 1, a.rootMethod);
              try {
                row.plainSamples = timeSteps(plain, data.grads, p.b, Math.max(p.warmup, d.precision ? 1 : 0), stepsFor(p, set), tick);
                row.stateBytes = plain.stateBytes();
              } finally {
                plain.dispose();
              }
              row.plainMs = median(row.plainSamples);
              if (d.precision) {
                const rooted = d.make(data.params(), p.b, set.blockSize, 1, a.rootMethod);
                try {
                  row.rootSamples = timeSteps(rooted, data.grads, p.b, p.warmup, stepsFor(p, set), tick);
                } finally {
                  rooted.dispose();
                }
                row.rootMs = median(row.rootSamples);
              } else {
                row.rootMs = row.plainMs;
                row.rootSamples = row.plainSamples;
              }
              row.amortizedMs = row.plainMs + (row.rootMs - row.plainMs) / a.rootEvery;
              if (d.id === 'adam') adamMs = row.amortizedMs;
              row.ratioToAdam = adamMs ? row.amortizedMs / adamMs : null;
              if (d.precision) row.floorMs = (row.gemmGflop / p.gemmGflops[d.precision]) * 1e3;
            } catch (e) {
              row.error = `${(e as { code?: string }).code ? (e as { code: string }).code + ': ' : ''}${(e as Error).message}`;
              progress.note(`${label}: failed: ${row.error}`);
            }
            done = start + per(p, set, d);
            progress.update(done, label);
            rows.push(row);
          }
        } finally {
          data.free();
        }
      }
    }
  } finally {
    progress.finish();
  }
  return {
    benchmark: 'step',
    version: packageVersion(),
    command,
    config: { sets: a.sets ?? ['resnet32', 'mlp', 'single4096'], optimizers: a.optimizers, rootEvery: a.rootEvery, rootMethod: a.rootMethod, warmup: a.warmup, steps: a.steps, host: a.host },
    backends: plan.map((p) => ({
      name: p.b.name,
      device: p.b.device,
      warmup: p.warmup,
      steps: p.steps,
      sets: p.sets.map((s) => s.id),
      skipped: p.skipped,
      gemmGflops: p.gemmGflops,
    })),
    sets: PARAM_SETS.filter((s) => plan.some((p) => p.sets.includes(s))).map((s) => ({
      id: s.id,
      label: s.label,
      tensors: s.shapes.length,
      params: s.shapes.reduce((x, sh) => x + size(sh), 0),
      blockSize: s.blockSize,
    })),
    rows,
    totalMs: Math.round(performance.now() - t0),
  };
}

export function stepTables(r: StepReport): { text: string; markdown: string } {
  const main = formatTable(
    [
      { header: 'set', align: 'left' },
      { header: 'backend', align: 'left' },
      { header: 'optimizer', align: 'left' },
      { header: 'step ms' },
      { header: 'root step ms' },
      { header: `amortized ms (N=${r.config.rootEvery})` },
      { header: 'x Adam' },
      { header: 'GEMM floor ms' },
      { header: 'x floor' },
      { header: 'state MB' },
    ],
    r.rows.map((x) => [
      x.set,
      x.backend,
      x.label,
      x.error ? 'failed' : fmtMs(x.plainMs),
      x.error ? '-' : x.precision ? fmtMs(x.rootMs) : '-',
      x.error ? '-' : fmtMs(x.amortizedMs),
      x.ratioToAdam === null ? '-' : x.ratioToAdam.toFixed(1),
      x.floorMs === null ? '-' : fmtMs(x.floorMs),
      x.floorMs === null || x.error ? '-' : (x.amortizedMs / x.floorMs).toFixed(2),
      (x.stateBytes / 2 ** 20).toFixed(1),
    ]),
  );
  // fp32 vs fp64 side by side.
  const pairs: [string, StepOptId, StepOptId][] = [
    ['Shampoo', 'shampoo32', 'shampoo64'],
    ['KrADagrad*', 'kradstar32', 'kradstar64'],
  ];
  const sideRows: string[][] = [];
  const keys = [...new Set(r.rows.map((x) => `${x.set}\u0000${x.backend}`))];
  for (const k of keys) {
    const [set, backend] = k.split('\u0000');
    for (const [name, a32, a64] of pairs) {
      const x = r.rows.find((y) => y.set === set && y.backend === backend && y.optimizer === a32 && !y.error);
      const y = r.rows.find((z) => z.set === set && z.backend === backend && z.optimizer === a64 && !z.error);
      if (!x || !y) continue;
      sideRows.push([set, backend, name, fmtMs(x.amortizedMs), fmtMs(y.amortizedMs), (y.amortizedMs / x.amortizedMs).toFixed(2), fmtMs(x.rootMs - x.plainMs), fmtMs(y.rootMs - y.plainMs)]);
    }
  }
  const side = formatTable(
    [
      { header: 'set', align: 'left' },
      { header: 'backend', align: 'left' },
      { header: 'method', align: 'left' },
      { header: 'fp32 amortized ms' },
      { header: 'fp64 amortized ms' },
      { header: 'fp64/fp32' },
      { header: 'fp32 root ms' },
      { header: 'fp64 root ms' },
    ],
    sideRows,
  );
  const rates = r.backends.map((b) => `${b.name}: sgemm ${b.gemmGflops.float32.toFixed(0)} GFLOP/s, dgemm ${b.gemmGflops.float64.toFixed(0)} GFLOP/s (n = 1024, this run)`).join('; ');
  const floorNote = `GEMM floor = the step's statistics + preconditioning GEMM FLOPs (Gram products counted as symmetric, n^2 m) at the measured rate (${rates}); roots excluded.`;
  return {
    text: `${main.text}\n${floorNote}\n\nfloat32 vs float64 statistics and roots:\n${side.text}`,
    markdown: `${main.markdown}\n\n${floorNote}\n\nfloat32 vs float64 statistics and roots:\n\n${side.markdown}`,
  };
}

export function writeStep(r: StepReport, out: string, png: boolean): { json: string; md: string; svg: string; png?: string; note?: string } {
  fs.mkdirSync(out, { recursive: true });
  const json = path.join(out, 'step.json');
  fs.writeFileSync(json, JSON.stringify(r, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 1));
  const labels = [...new Set(r.rows.map((x) => x.label))];
  const keys = [...new Set(r.rows.map((x) => `${x.set}\u0000${x.backend}`))];
  const groups: BarGroup[] = keys.map((k) => {
    const [set, backend] = k.split('\u0000');
    const rs = labels.map((l) => r.rows.find((x) => x.set === set && x.backend === backend && x.label === l));
    return {
      label: `${set}\n${backend}`,
      values: rs.map((x) => (x && !x.error ? x.amortizedMs : NaN)),
      notes: rs.map((x) => (x && x.ratioToAdam !== null && x.optimizer !== 'adam' ? `${x.ratioToAdam.toFixed(1)}x` : '')),
    };
  });
  const svg = groupedBarChart(groups, labels, {
    title: 'Amortized time per optimizer step',
    subtitle: `roots every ${r.config.rootEvery} steps (${r.config.rootMethod ?? 'eigh'}); ratio to Adam above the bars; float32 parameters; ${r.backends.map((b) => b.name).join(', ')}`,
    xLabel: 'parameter set / backend',
    yLabel: 'ms per step (log scale)',
  });
  const base = path.join(out, 'step');
  let chart: { svg: string; png?: string; note?: string };
  if (png) chart = writeChart(svg, base);
  else {
    fs.writeFileSync(`${base}.svg`, svg);
    chart = { svg: `${base}.svg` };
  }
  const md = path.join(out, 'step.md');
  const t = stepTables(r);
  fs.writeFileSync(
    md,
    [`Command: \`${r.command}\``, '', ...r.backends.map((b) => `- ${b.name}: ${b.device} (warm-up ${b.warmup}, timed ${b.steps})`), '', t.markdown, ''].join('\n'),
  );
  return { json, md, svg: chart.svg, png: chart.png, note: chart.note };
}

export async function benchStep(argv: string[], io: Io): Promise<number> {
  const a = parseStep(argv);
  if (a.help) {
    io.out(stepHelp);
    return 0;
  }
  prepareOutDir(a.out);
  const command = ['kradagrad bench step', ...argv].join(' ');
  const r = runStepBench(a, io, command);
  const files = writeStep(r, a.out, a.png);
  io.out('');
  for (const s of r.sets) io.out(`${s.id}: ${s.label}, ${s.tensors} tensors, ${(s.params / 1e6).toFixed(2)}M params, block ${s.blockSize}`);
  for (const b of r.backends) io.out(`${b.name}: ${b.device} (warm-up ${b.warmup}, timed ${b.steps} per instance)`);
  io.out('');
  io.out(stepTables(r).text);
  io.out('');
  io.out(`total time ${fmtSeconds(r.totalMs)}`);
  if (files.note) io.out(`note: ${files.note}`);
  io.out(`results: ${files.json}`);
  io.out(`table:   ${files.md}`);
  io.out(`chart:   ${files.svg}`);
  if (files.png) io.out(`chart:   ${files.png}`);
  return r.rows.some((x) => x.error) ? 1 : 0;
}
