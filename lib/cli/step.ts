/**
 * `kradagrad bench step`: amortized per-step time of each optimizer and precision on the
 * parameter sets of the optimizers issue (ResNet-32 conv shapes with block 128; an MLP
 * set with block 1024) and a single 4096x4096 matrix, on each available backend, with
 * random gradients and realistic settings (momentum 0.9, epsilon 1e-6, roots every 20
 * steps); Adam is the ratio base, Shampoo fp32 and fp64 side by side.
 *
 * Amortized time with roots every N steps = t_plain + (t_root - t_plain) / N, where
 * t_plain is the step time (min or median of the timed steps) of an instance that never
 * refreshes its roots after the warm-up, and t_root that of an instance that refreshes
 * them every step (both after --warmup untimed steps). This needs no N-step runs, which
 * matters on the CPU where one root refresh of the MLP set takes seconds.
 *
 * Next to each time, the floor it is compared against, measured in the same run: the GEMM
 * FLOPs of the step at the measured sgemm/dgemm rate (Kronecker optimizers), the bytes
 * Adam/SGD read and write at the measured memory bandwidth; on the CPU, where the step's
 * time went (eigh, GEMMs, elementwise kernels, copies, reductions, allocation, and the
 * rest: recording, N-API crossings, dispatch); with --threads a list, each count side by
 * side; with --torch, PyTorch's Adam and eigh on the same shapes (torch_peer.ts).
 */
import * as fs from 'fs';
import * as path from 'path';
import type { BackendRequest } from '../native';
import * as ops from '../ops';
import { getThreads, setThreads } from '../backends';
import type { NativeBandwidth } from '../native';
import { Adam, Kradagrad, KradagradStar, Sgd, Shampoo, planParam, scheduleDim } from '../optim';
import type { Grads, NamedParams, Optimizer, PreconditionerOptions } from '../optim';
import { Backend, Tensor, getBackend } from '../tensor';
import { Io, Opts, UsageError, parseArgs, prepareOutDir } from './args';
import { packageVersion } from './info';
import { Rng } from './linalg';
import { BarGroup, groupedBarChart, writeChart } from './plot';
import { Progress } from './progress';
import { fmtMs, fmtSeconds, formatTable } from './table';
import { TorchRun, TorchSetRequest, runTorchPeer } from './torch_peer';

export const stepHelp = `Usage: kradagrad bench step [options]

Amortized per-step time (roots every --root-every steps) of each optimizer and
statistics precision on fixed parameter sets with random gradients, per backend,
next to the floors it is compared against (measured in the same run), with where
the time went on the CPU. Parameters are float32 tensors on the backend (device
mode; --host for host arrays). Settings: momentum 0.9 (--momentum), epsilon 1e-6,
Adam betas 0.9/0.999, lr 1e-4.

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
  --threads <list>      CPU thread counts to measure one after the other, e.g. 1,2
                        (setThreads: OpenBLAS and kradagrad's kernels; default: the
                        current count)
  --root-every <n>      root refresh period N of the amortization (default 20)
  --root-method <m>     eigh | newton: the optimizers' rootMethod (default eigh;
                        newton = batched GEMM-only coupled Newton, eigh fallback)
  --momentum <m>        momentum of SGD and the Kronecker optimizers (default 0.9)
  --warmup <n>          untimed steps per instance (default 1 on cpu, 2 on cuda)
  --steps <n>           timed steps per instance (default 5 on cuda; on cpu 5 for
                        resnet32/tiny, 1 for mlp/single4096)
  --stat <s>            min | median of the timed steps (default min: the least
                        disturbed step on a shared machine)
  --torch               also time torch.optim.Adam (default, foreach, fused) and
                        torch.linalg.eigh on the same shapes with PyTorch, at each
                        thread count, through --python (skipped, saying why, when
                        torch does not import)
  --python <cmd>        the Python for --torch (default python3)
  --host                host-mode parameters (Float32Array, copied each step)
  --out <dir>           output directory (default ./kradagrad-out; checked before
                        the run)
  --no-png              write the SVG only
  --quiet               no progress on stderr
  -h, --help            this help

amortized = t_plain + (t_root - t_plain) / N, with t_plain the step without a root
refresh and t_root the step with one (each from its own instance).
Floors: GEMM = the step's statistics + preconditioning GEMM FLOPs (Gram products as
symmetric, n^2 m) at the sgemm/dgemm rate measured at n = 1024; memory (Adam, SGD) =
bytes read + written per step at the best STREAM-like bandwidth measured.
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
  make(p: NamedParams, b: Backend, blockSize: number, rootFrequency: number, rootMethod: RootMethod, momentum: number): Optimizer;
}

type RootMethod = 'eigh' | 'newton';
const pre = (b: Backend, blockSize: number, rootFrequency: number, dt: 'float32' | 'float64', rootMethod: RootMethod, momentum: number): PreconditionerOptions => ({
  lr: 1e-4,
  backend: b,
  blockSize,
  rootFrequency,
  rootMethod,
  startStep: 1,
  epsilon: 1e-6,
  momentum,
  statisticsDtype: dt,
});

export const STEP_OPTIMIZERS: readonly StepOptDef[] = [
  { id: 'adam', label: 'Adam', precision: null, make: (p, b) => new Adam(p, { lr: 1e-4, backend: b }) },
  { id: 'sgd', label: 'SGD', precision: null, make: (p, b, _bs, _rf, _rm, mu) => new Sgd(p, { lr: 1e-4, backend: b, momentum: mu }) },
  { id: 'shampoo32', label: 'Shampoo fp32', precision: 'float32', make: (p, b, bs, rf, rm, mu) => new Shampoo(p, pre(b, bs, rf, 'float32', rm, mu)) },
  { id: 'shampoo64', label: 'Shampoo fp64', precision: 'float64', make: (p, b, bs, rf, rm, mu) => new Shampoo(p, pre(b, bs, rf, 'float64', rm, mu)) },
  { id: 'kradstar32', label: 'KrADagrad* fp32', precision: 'float32', make: (p, b, bs, rf, rm, mu) => new KradagradStar(p, pre(b, bs, rf, 'float32', rm, mu)) },
  { id: 'kradstar64', label: 'KrADagrad* fp64', precision: 'float64', make: (p, b, bs, rf, rm, mu) => new KradagradStar(p, pre(b, bs, rf, 'float64', rm, mu)) },
  { id: 'krad32', label: 'KrADagrad fp32', precision: 'float32', make: (p, b, bs, rf, rm, mu) => new Kradagrad(p, pre(b, bs, rf, 'float32', rm, mu)) },
];
const DEFAULT_OPTS: StepOptId[] = ['adam', 'shampoo32', 'shampoo64', 'kradstar32', 'kradstar64', 'krad32'];

/** Where one step's time went on the CPU backend (ms per step, mean over the timed steps). */
export interface StepBreakdown {
  /** Wall time of the step (mean of the timed steps). */
  wallMs: number;
  eighMs: number;
  /** gemm and syrk (BLAS). */
  gemmMs: number;
  /** Elementwise kernels: the fused stages, axpby, eig_scale, ... */
  elementwiseMs: number;
  /** copy, cast, fill, transposes, block gather/scatter. */
  copyMs: number;
  /** dot, norms, traces, finiteness. */
  reductionMs: number;
  allocMs: number;
  /** The rest: recording the job, N-API crossings, dispatch, host decisions. */
  otherMs: number;
  /** Native calls per step by kind. */
  calls: Record<string, number>;
}

export interface StepRow {
  set: string;
  backend: string;
  /** CPU thread count the row was measured at (null on CUDA). */
  threads: number | null;
  optimizer: StepOptId;
  label: string;
  precision: string | null;
  /** Step without a root refresh, ms (config.stat of the timed steps). */
  plainMs: number;
  /** Step with a root refresh, ms (equal to plainMs for Adam/SGD). */
  rootMs: number;
  amortizedMs: number;
  ratioToAdam: number | null;
  /** GEMM work of one step without a root refresh (statistics + preconditioning), GFLOP. */
  gemmGflop: number;
  /** The floor of this row, ms: the GEMM work at the measured GEMM rate (Kronecker), the bytes at the measured bandwidth (Adam, SGD). */
  floorMs: number | null;
  floorKind: 'gemm' | 'memory' | null;
  /** Bytes Adam/SGD read and write per step (the memory floor's numerator). */
  memoryBytes: number | null;
  stateBytes: number;
  plainSamples: number[];
  rootSamples: number[];
  /** CPU only: where the plain step's and the refresh step's time went. */
  plainBreakdown?: StepBreakdown;
  rootBreakdown?: StepBreakdown;
  error?: string;
}

export interface StepReport {
  benchmark: 'step';
  version: string;
  command: string;
  config: {
    sets: string[];
    optimizers: string[];
    rootEvery: number;
    rootMethod?: RootMethod;
    warmup: number | null;
    steps: number | null;
    host: boolean;
    momentum: number;
    stat: 'min' | 'median';
    threads: number[] | null;
  };
  backends: {
    name: string;
    device: string;
    /** CPU thread count of this entry (null on CUDA). */
    threads: number | null;
    warmup: number;
    steps: number;
    sets: string[];
    skipped: string[];
    /** Measured GEMM rate (n = 1024, same run), GFLOP/s. */
    gemmGflops: { float32: number; float64: number };
    /** Measured memory bandwidth (CPU, same run), GB/s. */
    bandwidth?: NativeBandwidth;
  }[];
  sets: { id: string; label: string; tensors: number; params: number; blockSize: number }[];
  rows: StepRow[];
  /** PyTorch on the same shapes (--torch), per thread count. */
  torch?: { python: string; runs: TorchRun[] };
  totalMs: number;
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
const statOf = (xs: number[], stat: 'min' | 'median'): number => (stat === 'min' ? Math.min(...xs) : median(xs));

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

/** Times `steps` steps after `warmup`; on the CPU also profiles the timed ones (the breakdown). */
function timeSteps(opt: Optimizer, grads: Grads, b: Backend, warmup: number, steps: number, tick: () => void): { samples: number[]; breakdown?: StepBreakdown } {
  for (let i = 0; i < warmup; i++) {
    opt.step(grads);
    b.synchronize();
    tick();
  }
  const profile = b.name === 'cpu';
  const out: number[] = [];
  if (profile) b.addon.profileStart();
  let kinds: Record<string, { ms: number; calls: number }> = {};
  try {
    for (let i = 0; i < steps; i++) {
      const t0 = performance.now();
      opt.step(grads);
      b.synchronize();
      out.push(performance.now() - t0);
      tick();
    }
  } finally {
    if (profile) kinds = b.addon.profileStop();
  }
  if (!profile) return { samples: out };
  const per = (k: string): number => (kinds[k]?.ms ?? 0) / steps;
  const wallMs = out.reduce((x, y) => x + y, 0) / steps;
  const bd: StepBreakdown = {
    wallMs,
    eighMs: per('eigh') + per('eigh_aux'),
    gemmMs: per('gemm') + per('syrk'),
    elementwiseMs: per('elementwise'),
    copyMs: per('copy'),
    reductionMs: per('reduction'),
    allocMs: per('alloc'),
    otherMs: 0,
    calls: Object.fromEntries(Object.entries(kinds).map(([k, v]) => [k, v.calls / steps])),
  };
  bd.otherMs = wallMs - (bd.eighMs + bd.gemmMs + bd.elementwiseMs + bd.copyMs + bd.reductionMs + bd.allocMs);
  return { samples: out, breakdown: bd };
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
  momentum: number;
  stat: 'min' | 'median';
  threads: number[] | null;
  torch: boolean;
  python: string;
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
      momentum: { kind: 'value' },
      stat: { kind: 'value' },
      threads: { kind: 'value' },
      torch: { kind: 'flag' },
      python: { kind: 'value' },
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
  let threads: number[] | null = null;
  const tv = o.str('threads');
  if (tv !== undefined) {
    const xs = tv.split(',').map((s) => s.trim());
    if (!xs.length || xs.some((x) => !/^\d+$/.test(x) || Number(x) < 1 || Number(x) > 4096)) {
      throw new UsageError(`--threads expects a comma list of integers between 1 and 4096, got '${tv}'`);
    }
    threads = [...new Set(xs.map(Number))];
  }
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
    momentum: o.posNum('momentum', 0.9, (x) => x >= 0 && x < 1, 'a number in [0, 1)'),
    stat: o.choice<'min' | 'median'>('stat', 'min', ['min', 'median']),
    threads,
    torch: o.flag('torch'),
    python: o.str('python') ?? 'python3',
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

/**
 * Bytes Adam or SGD reads and writes per step over float32 parameters: Adam reads g, m, v,
 * w and writes m, v, w (28 bytes per parameter); SGD reads g, w and writes w, plus m read
 * and written with momentum (12 or 20). The memory floor is this at the measured bandwidth.
 */
export function memoryBytesPerStep(id: StepOptId, set: ParamSet, momentum: number): number | null {
  const params = set.shapes.reduce((x, sh) => x + size(sh), 0);
  if (id === 'adam') return 28 * params;
  if (id === 'sgd') return (momentum > 0 ? 20 : 12) * params;
  return null;
}

/** The factor sizes one root refresh of a set solves: [n, how many], largest first. */
export function refreshFactors(set: ParamSet): [number, number][] {
  const count = new Map<number, number>();
  for (const shape of set.shapes) {
    const plan = planParam('p', shape, set.blockSize, true);
    for (const b of plan.blocks) for (const n of b.extent) count.set(n, (count.get(n) ?? 0) + 1);
  }
  return [...count.entries()].sort((a, b) => b[0] - a[0]);
}

/** Measured GEMM rate of a backend at n = 1024 (median of a few runs), GFLOP/s. */
function gemmRate(b: Backend, dt: 'float32' | 'float64'): number {
  const n = 1024;
  const x = b.tensor(dt, [n, n]);
  const c = b.tensor(dt, [n, n]);
  try {
    ops.fill(x, 0.5);
    const times: number[] = [];
    for (let i = 0; i < 7; i++) {
      const t0 = performance.now();
      ops.gemm(x, x, c);
      b.synchronize();
      if (i > 0) times.push(performance.now() - t0);
    }
    return (2 * n ** 3) / (Math.min(...times) * 1e6);
  } finally {
    x.dispose();
    c.dispose();
  }
}

/** The best STREAM-like bandwidth of a measurement, GB/s (the memory floor's denominator). */
export function bestBandwidth(bw: NativeBandwidth): number {
  return Math.max(bw.copy, bw.copyStream, bw.triad, bw.triadStream);
}

export function runStepBench(a: StepArgs, io: Io, command = 'kradagrad bench step'): StepReport {
  const t0 = performance.now();
  const notes: string[] = [];
  const backends = backendsFor(a.backend, (s) => notes.push(s));
  const defs = STEP_OPTIMIZERS.filter((d) => a.optimizers.includes(d.id));
  // Adam first: it is the ratio base.
  defs.sort((x, y) => (x.id === 'adam' ? -1 : y.id === 'adam' ? 1 : 0));
  const threadsBefore = getThreads();
  // One plan entry per backend, and on the CPU per thread count (measured in turn).
  const plan = backends.flatMap((b) => {
    const cpu = b.name === 'cpu';
    const wanted = a.sets ?? ['resnet32', 'mlp', 'single4096'];
    const skipped = a.sets === null && cpu ? ['single4096'] : [];
    const base = {
      b,
      warmup: a.warmup ?? (cpu ? 1 : 2),
      steps: a.steps ?? (cpu ? 1 : 5),
      sets: PARAM_SETS.filter((s) => wanted.includes(s.id) && !skipped.includes(s.id)),
      skipped,
    };
    return (cpu ? (a.threads ?? [threadsBefore]) : [null]).map((threads) => ({ ...base, threads }));
  });
  type PlanEntry = (typeof plan)[number] & { gemmGflops: { float32: number; float64: number }; bandwidth?: NativeBandwidth; device: string };
  // Small sets are cheap: more timed steps on the CPU unless --steps says otherwise.
  const stepsFor = (p: (typeof plan)[number], set: ParamSet): number =>
    a.steps ?? (p.b.name === 'cpu' && (set.id === 'resnet32' || set.id === 'tiny') ? 5 : p.steps);
  // Progress in units of parameter-steps (a step of the MLP set weighs 27 of ResNet-32's).
  const w = (set: ParamSet): number => Math.max(1, Math.round(set.shapes.reduce((x, sh) => x + size(sh), 0) / 1e4));
  const per = (p: (typeof plan)[number], set: ParamSet, d: StepOptDef): number => w(set) * (p.warmup + stepsFor(p, set)) * (d.precision ? 2 : 1);
  const total = plan.reduce((acc, p) => acc + p.sets.reduce((y, set) => y + defs.reduce((x, d) => x + per(p, set, d), 0), 0), 0);
  const progress = new Progress(io, total, 'parameter-steps', a.quiet);
  for (const n of notes) progress.note(n);
  const skippedNoted = new Set<Backend>();
  for (const p of plan) {
    if (p.skipped.length && !skippedNoted.has(p.b)) {
      skippedNoted.add(p.b);
      progress.note(`${p.b.name}: skipping ${p.skipped.join(', ')} by default (slow on the CPU; name it in --sets to run it)`);
    }
  }
  const rows: StepRow[] = [];
  const done_: PlanEntry[] = [];
  const torchRuns: TorchRun[] = [];
  let done = 0;
  try {
    for (const p0 of plan) {
      if (p0.threads !== null) setThreads(p0.threads);
      const p: PlanEntry = {
        ...p0,
        gemmGflops: { float32: gemmRate(p0.b, 'float32'), float64: gemmRate(p0.b, 'float64') },
        bandwidth: p0.b.name === 'cpu' ? p0.b.addon.measureBandwidth(1 << 24, 5) : undefined,
        device: p0.b.addon.backends().find((x) => x.name === p0.b.name)?.device ?? p0.b.device,
      };
      done_.push(p);
      for (const set of p.sets) {
        const data = makeData(set, p.b, a.host, 7);
        let adamMs: number | null = null;
        try {
          for (const d of defs) {
            const label = `${p.b.name}${p.threads !== null ? ` ${p.threads}t` : ''} ${set.id} ${d.label}`;
            const tick = (): void => progress.update((done += w(set)), label);
            progress.update(done, label);
            const mem = memoryBytesPerStep(d.id, set, a.momentum);
            const row: StepRow = {
              set: set.id,
              backend: p.b.name,
              threads: p.threads,
              optimizer: d.id,
              label: d.label,
              precision: d.precision,
              plainMs: NaN,
              rootMs: NaN,
              amortizedMs: NaN,
              ratioToAdam: null,
              gemmGflop: gemmFlopsPerStep(d.id, set) / 1e9,
              floorMs: null,
              floorKind: d.precision ? 'gemm' : p.bandwidth ? 'memory' : null,
              memoryBytes: mem,
              stateBytes: 0,
              plainSamples: [],
              rootSamples: [],
            };
            const start = done;
            try {
              // Never refreshes after the warm-up (KrADagrad refreshes at its step 0: keep >= 1 warm-up step).
              const plain = d.make(data.params(), p.b, set.blockSize, d.precision ? 1e9 : 1, a.rootMethod, a.momentum);
              try {
                const t = timeSteps(plain, data.grads, p.b, Math.max(p.warmup, d.precision ? 1 : 0), stepsFor(p, set), tick);
                row.plainSamples = t.samples;
                row.plainBreakdown = t.breakdown;
                row.stateBytes = plain.stateBytes();
              } finally {
                plain.dispose();
              }
              row.plainMs = statOf(row.plainSamples, a.stat);
              if (d.precision) {
                const rooted = d.make(data.params(), p.b, set.blockSize, 1, a.rootMethod, a.momentum);
                try {
                  const t = timeSteps(rooted, data.grads, p.b, p.warmup, stepsFor(p, set), tick);
                  row.rootSamples = t.samples;
                  row.rootBreakdown = t.breakdown;
                } finally {
                  rooted.dispose();
                }
                row.rootMs = statOf(row.rootSamples, a.stat);
              } else {
                row.rootMs = row.plainMs;
                row.rootSamples = row.plainSamples;
              }
              row.amortizedMs = row.plainMs + (row.rootMs - row.plainMs) / a.rootEvery;
              if (d.id === 'adam') adamMs = row.amortizedMs;
              row.ratioToAdam = adamMs ? row.amortizedMs / adamMs : null;
              if (d.precision) row.floorMs = (row.gemmGflop / p.gemmGflops[d.precision]) * 1e3;
              else if (mem !== null && p.bandwidth) row.floorMs = (mem / (bestBandwidth(p.bandwidth) * 1e9)) * 1e3;
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
      if (a.torch && p.b.name === 'cpu') {
        progress.update(done, `torch ${p.threads}t`);
        const req: TorchSetRequest[] = p.sets.map((s) => ({ id: s.id, shapes: s.shapes, factors: refreshFactors(s) }));
        const r = runTorchPeer(a.python, p.threads ?? getThreads(), req, { warmup: p.warmup + 1, adamSteps: Math.max(5, stepsFor(p, p.sets[0])) });
        if (r.error) progress.note(`torch (${p.threads} threads): not measured: ${r.error}`);
        torchRuns.push(r);
      }
    }
  } finally {
    progress.finish();
    if (a.threads !== null) setThreads(threadsBefore);
  }
  return {
    benchmark: 'step',
    version: packageVersion(),
    command,
    config: {
      sets: a.sets ?? ['resnet32', 'mlp', 'single4096'],
      optimizers: a.optimizers,
      rootEvery: a.rootEvery,
      rootMethod: a.rootMethod,
      warmup: a.warmup,
      steps: a.steps,
      host: a.host,
      momentum: a.momentum,
      stat: a.stat,
      threads: a.threads,
    },
    backends: done_.map((p) => ({
      name: p.b.name,
      device: p.device,
      threads: p.threads,
      warmup: p.warmup,
      steps: p.steps,
      sets: p.sets.map((s) => s.id),
      skipped: p.skipped,
      gemmGflops: p.gemmGflops,
      bandwidth: p.bandwidth,
    })),
    sets: PARAM_SETS.filter((s) => plan.some((p) => p.sets.includes(s))).map((s) => ({
      id: s.id,
      label: s.label,
      tensors: s.shapes.length,
      params: s.shapes.reduce((x, sh) => x + size(sh), 0),
      blockSize: s.blockSize,
    })),
    rows,
    torch: a.torch ? { python: a.python, runs: torchRuns } : undefined,
    totalMs: Math.round(performance.now() - t0),
  };
}

const thr = (x: { threads: number | null }): string => (x.threads === null ? '-' : String(x.threads));

/** The PyTorch comparison rows of a report (--torch): Adam side by side, and the refresh bound. */
export function torchTables(r: StepReport): { adam: string[][]; refresh: string[][] } {
  const adam: string[][] = [];
  const refresh: string[][] = [];
  if (!r.torch) return { adam, refresh };
  for (const run of r.torch.runs) {
    for (const ts of run.sets) {
      const ours = r.rows.find((x) => x.backend === 'cpu' && x.threads === run.threads && x.set === ts.set && x.optimizer === 'adam' && !x.error);
      const vs = (['default', 'foreach', 'fused'] as const).map((k) => ts.adam[k]?.minMs).filter((x): x is number => x !== undefined);
      const best = vs.length ? Math.min(...vs) : NaN;
      if (ours) {
        adam.push([
          ts.set,
          String(run.threads),
          fmtMs(ours.amortizedMs),
          fmtMs(ts.adam.default?.minMs ?? NaN),
          fmtMs(ts.adam.foreach?.minMs ?? NaN),
          fmtMs(ts.adam.fused?.minMs ?? NaN),
          (ours.amortizedMs / best).toFixed(2),
          ours.floorMs === null ? '-' : fmtMs(ours.floorMs),
          ours.floorMs === null ? '-' : (ours.amortizedMs / ours.floorMs).toFixed(2),
        ]);
      }
      for (const x of r.rows) {
        if (x.backend !== 'cpu' || x.threads !== run.threads || x.set !== ts.set || !x.precision || x.error || !x.rootBreakdown) continue;
        if (x.optimizer === 'krad32') continue; // one factor per step: not the refresh of every factor
        const dt = x.precision as 'float32' | 'float64';
        const eighTorch = ts.eigh.reduce((acc, e) => acc + e.count * e[dt], 0);
        const bound = eighTorch + x.rootBreakdown.gemmMs;
        refresh.push([
          ts.set,
          String(run.threads),
          x.label,
          fmtMs(x.rootMs),
          fmtMs(x.rootBreakdown.eighMs),
          fmtMs(eighTorch),
          fmtMs(x.rootBreakdown.gemmMs),
          fmtMs(bound),
          (x.rootMs / bound).toFixed(2),
        ]);
      }
    }
  }
  return { adam, refresh };
}

export function stepTables(r: StepReport): { text: string; markdown: string } {
  const main = formatTable(
    [
      { header: 'set', align: 'left' },
      { header: 'backend', align: 'left' },
      { header: 'threads' },
      { header: 'optimizer', align: 'left' },
      { header: 'step ms' },
      { header: 'root step ms' },
      { header: `amortized ms (N=${r.config.rootEvery})` },
      { header: 'x Adam' },
      { header: 'floor ms' },
      { header: 'x floor' },
      { header: 'state MB' },
    ],
    r.rows.map((x) => [
      x.set,
      x.backend,
      thr(x),
      x.label,
      x.error ? 'failed' : fmtMs(x.plainMs),
      x.error ? '-' : x.precision ? fmtMs(x.rootMs) : '-',
      x.error ? '-' : fmtMs(x.amortizedMs),
      x.ratioToAdam === null ? '-' : x.ratioToAdam.toFixed(1),
      x.floorMs === null ? '-' : `${x.floorKind === 'memory' ? 'mem ' : ''}${fmtMs(x.floorMs)}`,
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
  const keys = [...new Set(r.rows.map((x) => `${x.set}\u0000${x.backend}\u0000${thr(x)}`))];
  for (const k of keys) {
    const [set, backend, t] = k.split('\u0000');
    const at = (id: StepOptId): StepRow | undefined => r.rows.find((y) => y.set === set && y.backend === backend && thr(y) === t && y.optimizer === id && !y.error);
    for (const [name, a32, a64] of pairs) {
      const x = at(a32);
      const y = at(a64);
      if (!x || !y) continue;
      sideRows.push([set, backend, t, name, fmtMs(x.amortizedMs), fmtMs(y.amortizedMs), (y.amortizedMs / x.amortizedMs).toFixed(2), fmtMs(x.rootMs - x.plainMs), fmtMs(y.rootMs - y.plainMs)]);
    }
  }
  const side = formatTable(
    [
      { header: 'set', align: 'left' },
      { header: 'backend', align: 'left' },
      { header: 'threads' },
      { header: 'method', align: 'left' },
      { header: 'fp32 amortized ms' },
      { header: 'fp64 amortized ms' },
      { header: 'fp64/fp32' },
      { header: 'fp32 root ms' },
      { header: 'fp64 root ms' },
    ],
    sideRows,
  );
  // Where the time went (CPU).
  const bdRows: string[][] = [];
  for (const x of r.rows) {
    for (const [kind, bd] of [
      ['step', x.plainBreakdown],
      ['root step', x.precision ? x.rootBreakdown : undefined],
    ] as const) {
      if (!bd || x.error) continue;
      bdRows.push([x.set, thr(x), x.label, kind, fmtMs(bd.wallMs), fmtMs(bd.eighMs), fmtMs(bd.gemmMs), fmtMs(bd.elementwiseMs), fmtMs(bd.copyMs), fmtMs(bd.reductionMs), fmtMs(bd.allocMs), fmtMs(bd.otherMs)]);
    }
  }
  const bd = formatTable(
    [
      { header: 'set', align: 'left' },
      { header: 'threads' },
      { header: 'optimizer', align: 'left' },
      { header: 'step', align: 'left' },
      { header: 'ms' },
      { header: 'eigh' },
      { header: 'GEMM' },
      { header: 'elementwise' },
      { header: 'copies' },
      { header: 'reductions' },
      { header: 'alloc' },
      { header: 'call overhead' },
    ],
    bdRows,
  );
  const rates = r.backends
    .map((b) => {
      const t = b.threads === null ? '' : ` at ${b.threads} thread${b.threads === 1 ? '' : 's'}`;
      const bw = b.bandwidth ? `, memory ${bestBandwidth(b.bandwidth).toFixed(1)} GB/s (copy ${b.bandwidth.copy.toFixed(1)}, copy nt ${b.bandwidth.copyStream.toFixed(1)}, triad ${b.bandwidth.triad.toFixed(1)}, triad nt ${b.bandwidth.triadStream.toFixed(1)})` : '';
      return `${b.name}${t}: sgemm ${b.gemmGflops.float32.toFixed(0)} GFLOP/s, dgemm ${b.gemmGflops.float64.toFixed(0)} GFLOP/s${bw}`;
    })
    .join('; ');
  const floorNote =
    `Times: ${r.config.stat} of the timed steps; momentum ${r.config.momentum}. Floors: GEMM = the step's statistics + preconditioning GEMM FLOPs ` +
    `(Gram products counted as symmetric, n^2 m) at the measured rate (n = 1024), roots excluded; mem = the bytes Adam/SGD read and write ` +
    `per step (Adam 28 per float32 parameter) at the best measured bandwidth (this run: ${rates}).`;
  const bdNote =
    'Breakdown (CPU): ms per step, mean of the timed steps: eigh = LAPACK syevd with its copies; GEMM = gemm + syrk; elementwise = the ' +
    'fused stages and other elementwise kernels; copies = copy/cast/fill/transposes/block gather and scatter; reductions = dots, norms, ' +
    'finiteness; call overhead = the rest of the wall time (recording the job, N-API crossings, dispatch).';
  const t = torchTables(r);
  let torchText = '';
  let torchMd = '';
  if (r.torch) {
    const runs = r.torch.runs;
    const ver = runs.find((x) => x.torch)?.torch;
    const errs = runs.filter((x) => x.error).map((x) => `${x.threads} threads: ${x.error}`);
    const head = `PyTorch (${r.torch.python}${ver ? `, torch ${ver}${runs.find((x) => x.torch)?.mkl ? ' with MKL' : ''}` : ''}) on the same shapes, min of its timed steps${errs.length ? `; not measured: ${errs.join('; ')}` : ''}.`;
    const adamT = formatTable(
      [
        { header: 'set', align: 'left' },
        { header: 'threads' },
        { header: 'ours Adam ms' },
        { header: 'torch default' },
        { header: 'torch foreach' },
        { header: 'torch fused' },
        { header: 'ours / best torch' },
        { header: 'mem floor ms' },
        { header: 'ours / floor' },
      ],
      t.adam,
    );
    const refT = formatTable(
      [
        { header: 'set', align: 'left' },
        { header: 'threads' },
        { header: 'optimizer', align: 'left' },
        { header: 'ours root step ms' },
        { header: 'ours eigh ms' },
        { header: 'torch eigh ms (sum)' },
        { header: 'ours GEMM ms' },
        { header: 'bound ms' },
        { header: 'ours / bound' },
      ],
      t.refresh,
    );
    const refNote = 'bound = the refresh step as torch.linalg.eigh would make it: the sum over the factors of one refresh of torch eigh time (same size and dtype) plus our GEMM time in that step.';
    torchText = `\n\n${head}\nAdam:\n${adamT.text}\nRoot refresh step:\n${refT.text}\n${refNote}`;
    torchMd = `\n\n${head}\n\nAdam:\n\n${adamT.markdown}\n\nRoot refresh step:\n\n${refT.markdown}\n\n${refNote}`;
  }
  const bdText = bdRows.length ? `\n\nWhere the time went:\n${bd.text}\n${bdNote}` : '';
  const bdMd = bdRows.length ? `\n\nWhere the time went:\n\n${bd.markdown}\n\n${bdNote}` : '';
  return {
    text: `${main.text}\n${floorNote}\n\nfloat32 vs float64 statistics and roots:\n${side.text}${bdText}${torchText}`,
    markdown: `${main.markdown}\n\n${floorNote}\n\nfloat32 vs float64 statistics and roots:\n\n${side.markdown}${bdMd}${torchMd}`,
  };
}

export function writeStep(r: StepReport, out: string, png: boolean): { json: string; md: string; svg: string; png?: string; note?: string } {
  fs.mkdirSync(out, { recursive: true });
  const json = path.join(out, 'step.json');
  fs.writeFileSync(json, JSON.stringify(r, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 1));
  const labels = [...new Set(r.rows.map((x) => x.label))];
  const keys = [...new Set(r.rows.map((x) => `${x.set}\u0000${x.backend}\u0000${thr(x)}`))];
  const groups: BarGroup[] = keys.map((k) => {
    const [set, backend, t] = k.split('\u0000');
    const rs = labels.map((l) => r.rows.find((x) => x.set === set && x.backend === backend && thr(x) === t && x.label === l));
    return {
      label: `${set}\n${backend}${t === '-' ? '' : ` ${t}t`}`,
      values: rs.map((x) => (x && !x.error ? x.amortizedMs : NaN)),
      notes: rs.map((x) => (x && x.ratioToAdam !== null && x.optimizer !== 'adam' ? `${x.ratioToAdam.toFixed(1)}x` : '')),
    };
  });
  const svg = groupedBarChart(groups, labels, {
    title: 'Amortized time per optimizer step',
    subtitle: `roots every ${r.config.rootEvery} steps (${r.config.rootMethod ?? 'eigh'}); ratio to Adam above the bars; float32 parameters; ${[...new Set(r.backends.map((b) => b.name))].join(', ')}`,
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
    [
      `Command: \`${r.command}\``,
      '',
      ...r.backends.map((b) => `- ${b.name}${b.threads === null ? '' : ` (${b.threads} threads)`}: ${b.device} (warm-up ${b.warmup}, timed ${b.steps})`),
      '',
      t.markdown,
      '',
    ].join('\n'),
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
  for (const b of r.backends) io.out(`${b.name}${b.threads === null ? '' : ` (${b.threads} threads)`}: ${b.device} (warm-up ${b.warmup}, timed ${b.steps} per instance)`);
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
