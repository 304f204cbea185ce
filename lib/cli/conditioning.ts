/**
 * `kradagrad bench conditioning`: the paper's synthetic experiment (Mei, Moreno, Walters,
 * UAI 2023, Section 5.1, Figure 1). Minimize f(X) = tr(X^T A X B) over X in R^(n x n),
 * gradient 2 A X B, with A and B symmetric positive definite of condition number `cond`
 * (eigenvalues 10^(-(s_j)^2), s_j evenly spaced from 0 to sqrt(log10 cond), scaled so the
 * largest is 10, rotated by the Q of a seeded Gaussian's QR; one for A, another for B),
 * built in float64; X0 standard normal. Each optimizer gets a learning-rate sweep on a
 * log grid and keeps the run with the lowest final loss; diverged runs count as failed.
 * As in the paper ("SGD includes momentum"; the authors' optimizers default to 0.9), SGD
 * and the Kronecker methods use heavy-ball momentum (`momentum`, default 0.9); Adam keeps
 * its own first moment (beta1 = 0.9).
 *
 * Loss and gradient are always computed in float64 (on the backend, from the optimizer's
 * own parameter array cast to float64); the gradient is handed over in the parameter
 * dtype. The loss curve holds f(X_t) for t = 0..steps (X_t after t updates).
 */
import * as fs from 'fs';
import * as path from 'path';
import { KradagradError } from '../errors';
import type { BackendRequest } from '../native';
import * as ops from '../ops';
import { Adam, Kradagrad, KradagradStar, Sgd, Shampoo } from '../optim';
import type { NamedParams, Optimizer } from '../optim';
import { Backend, FloatArray, Tensor, getBackend } from '../tensor';
import { Io, Opts, UsageError, logGrid, parseArgs, parseGrid, prepareOutDir } from './args';
import { Rng, householderQR, orthogonalityError, paperSpectrum, qdqt } from './linalg';
import { PALETTE, Series, logLinePlot, sideBySide, writeChart } from './plot';
import { packageVersion } from './info';
import { Progress } from './progress';
import { fmtLr, fmtNum, fmtSeconds, formatTable } from './table';

export const conditioningHelp = `Usage: kradagrad bench conditioning [options]

The paper's synthetic experiment (Section 5.1, Figure 1): minimize
f(X) = tr(X^T A X B) over X (size x size), gradient 2 A X B, where A and B are SPD
with condition number --cond (eigenvalues 10^(-s_j^2), s_j evenly spaced in
[0, sqrt(log10 cond)], largest 10, randomly rotated), X0 standard normal, all seeded.
Roots every 3 steps from step 3 on, epsilon 1e-8, one block per factor.
As in the paper, SGD and the Kronecker methods (Shampoo, KrADagrad*, KrADagrad)
use heavy-ball momentum 0.9 (--momentum); Adam keeps its first moment (beta1 0.9).
Each optimizer gets a learning-rate sweep on a log grid and keeps its best final
loss (diverged or non-finite runs count as failed). Loss and gradient are float64;
the gradient is handed to the optimizer in its parameter dtype.

Optimizers (ids): sgd, adam, shampoo64, shampoo32, kradstar32, krad32, kradstar64

Options:
  --size <n>              matrix size (default 128)
  --cond <c>              condition number of A and of B (default 1e10)
  --steps <n>             optimizer steps per run (default 250)
  --seed <n>              seed of A, B and X0 (default 1)
  --backend <b>           auto | cpu | cuda (default auto: CUDA when usable, else CPU)
  --out <dir>             output directory (default ./kradagrad-out)
  --optimizers <ids>      comma list of optimizer ids (default: all seven)
  --lrs <grid>            learning-rate grid for every optimizer: a comma list
                          (1e-3,1e-2) or a log range min:max:count (1e-4:1e-1:7)
  --lrs <id>=<grid>       the grid of one optimizer (repeatable)
  --momentum <m>          heavy-ball momentum of SGD and the Kronecker methods, in
                          [0, 1) (default 0.9, the paper's; 0 = none; Adam: beta1 0.9)
  --eps <e>               matrix epsilon (default 1e-8)
  --root-every <n>        root recomputation period (default 3)
  --start-step <n>        first preconditioned step (default 3)
  --normalization <n>     KrADagrad* t: paper (1 + ||HL||_F, default) or reference
                          (n (1 + tr(HL)), the authors' code)
  --blas-threads <n>      OpenBLAS threads when the addon loads here (default 1: the
                          128x128 problem runs faster on one thread)
  --quick                 a fast look: size 64, 100 steps, every other grid point
  --no-png                write the SVG only
  --quiet                 no progress on stderr
  -h, --help              this help

Default grids (log-spaced, a quarter decade apart): sgd 1e-4..1e-1 (13 points),
adam 1e-2..10 (13), the second-order methods 1e-3..1e-1 (9 each; their steps are
grafted to the SGD step norm, so their stable range is SGD's). A warning is printed
when an optimizer's best lr sits at the edge of its grid. A run fails when its loss
turns non-finite or does not end below f(X0).
--out is checked before the run: it must be a directory or a path that can be
created as one.
Writes <out>/conditioning.json (config, seed, every run's final loss, the best
curves), conditioning.svg/.png (two panels, as the paper's Figure 1: the loss
curves, and each curve divided by SGD's; log scales) and conditioning.md.
Exit codes: 0 ok, 1 failure, 2 usage error.`;

export type OptId = 'sgd' | 'adam' | 'shampoo64' | 'shampoo32' | 'kradstar32' | 'krad32' | 'kradstar64';

interface OptDef {
  id: OptId;
  label: string;
  dtype: 'float32' | 'float64';
  /** The default grid (log10 range and count). */
  grid: [number, number, number];
  make(params: NamedParams, lr: number, c: ConditioningConfig, backend: Backend): Optimizer;
}

const pre = (c: ConditioningConfig, backend: Backend, lr: number, dtype: 'float32' | 'float64') => ({
  lr,
  epsilon: c.epsilon,
  rootFrequency: c.rootEvery,
  startStep: c.startStep,
  statisticsFrequency: 1,
  beta2: 1,
  blockSize: Math.max(c.size, 1),
  statisticsDtype: dtype,
  momentum: c.momentum,
  backend,
});

export const OPTIMIZERS: readonly OptDef[] = [
  { id: 'sgd', label: 'SGD', dtype: 'float32', grid: [1e-4, 1e-1, 13], make: (p, lr, c, b) => new Sgd(p, { lr, momentum: c.momentum, backend: b }) },
  { id: 'adam', label: 'Adam', dtype: 'float32', grid: [1e-2, 10, 13], make: (p, lr, _c, b) => new Adam(p, { lr, eps: 1e-8, backend: b }) },
  {
    id: 'shampoo64',
    label: 'Shampoo fp64',
    dtype: 'float64',
    grid: [1e-3, 1e-1, 9],
    make: (p, lr, c, b) => new Shampoo(p, { ...pre(c, b, lr, 'float64'), grafting: 'sgd' }),
  },
  {
    id: 'shampoo32',
    label: 'Shampoo fp32',
    dtype: 'float32',
    grid: [1e-3, 1e-1, 9],
    make: (p, lr, c, b) => new Shampoo(p, { ...pre(c, b, lr, 'float32'), grafting: 'sgd' }),
  },
  {
    id: 'kradstar32',
    label: 'KrADagrad* fp32',
    dtype: 'float32',
    grid: [1e-3, 1e-1, 9],
    make: (p, lr, c, b) => new KradagradStar(p, { ...pre(c, b, lr, 'float32'), grafting: 'sgd', normalization: c.normalization }),
  },
  {
    id: 'krad32',
    label: 'KrADagrad fp32',
    dtype: 'float32',
    grid: [1e-3, 1e-1, 9],
    make: (p, lr, c, b) => new Kradagrad(p, { ...pre(c, b, lr, 'float32') }),
  },
  {
    id: 'kradstar64',
    label: 'KrADagrad* fp64',
    dtype: 'float64',
    grid: [1e-3, 1e-1, 9],
    make: (p, lr, c, b) => new KradagradStar(p, { ...pre(c, b, lr, 'float64'), grafting: 'sgd', normalization: c.normalization }),
  },
];

export interface ConditioningConfig {
  size: number;
  cond: number;
  maxEig: number;
  steps: number;
  seed: number;
  epsilon: number;
  /** Heavy-ball momentum of SGD and the Kronecker methods (Adam keeps its beta1). */
  momentum: number;
  rootEvery: number;
  startStep: number;
  normalization: 'paper' | 'reference';
  backend: BackendRequest;
  optimizers: OptId[];
  grids: Record<string, number[]>;
  /**
   * A run is stopped early when its loss turns non-finite or exceeds this factor times
   * f(X0); a run counts as failed ('diverged') when stopped or when its final loss is
   * not below f(X0).
   */
  stopFactor: number;
}

export interface RunResult {
  lr: number;
  status: 'ok' | 'diverged' | 'error';
  finalLoss: number | null;
  /** Losses at the table's checkpoints (null when the run stopped before). */
  at: Record<string, number | null>;
  divergedAtStep?: number;
  error?: string;
  ms: number;
}

export interface OptimizerResult {
  id: OptId;
  label: string;
  paramDtype: string;
  statisticsDtype: string | null;
  options: Record<string, unknown>;
  runs: RunResult[];
  best: { lr: number; finalLoss: number; at: Record<string, number | null>; ms: number; curve: number[] } | null;
  bestAtGridEdge: boolean;
  sweepMs: number;
}

export interface ConditioningReport {
  benchmark: 'conditioning';
  version: string;
  command: string;
  config: ConditioningConfig & { device: string; backendUsed: string; checkpoints: number[]; blasThreads: number | null };
  problem: {
    f0: number;
    eigenvaluesA: { min: number; max: number; condition: number };
    eigenvaluesB: { min: number; max: number; condition: number };
    measured?: { conditionA: number; conditionB: number };
    qOrthogonalityError: number;
  };
  optimizers: OptimizerResult[];
  findings: {
    lowest: string | null;
    shampoo64Lowest: boolean | null;
    kradstar32BelowShampoo32: boolean | null;
    notes: string[];
  };
  totalMs: number;
}

/** The seeded problem: A, B (float64, n x n), X0 and the spectrum. */
export interface Problem {
  n: number;
  a: Float64Array;
  b: Float64Array;
  x0: Float64Array;
  spectrum: Float64Array;
  qError: number;
}

export function buildProblem(n: number, cond: number, seed: number, maxEig = 10): Problem {
  const rng = new Rng(seed);
  const spectrum = paperSpectrum(n, cond, maxEig);
  const qa = householderQR(rng.normals(n * n), n).q;
  const qb = householderQR(rng.normals(n * n), n).q;
  const x0 = rng.normals(n * n);
  const qError = Math.max(orthogonalityError(qa, n), orthogonalityError(qb, n));
  return { n, a: qdqt(qa, spectrum, n), b: qdqt(qb, spectrum, n), x0, spectrum, qError };
}

/** f(X) and 2 A X B in float64 on the backend. */
export class Quadratic {
  private readonly A: Tensor;
  private readonly B: Tensor;
  private readonly X: Tensor;
  private readonly T1: Tensor;
  private readonly T2: Tensor;
  private readonly host: Float64Array;
  private readonly axb: Float64Array;
  constructor(readonly p: Problem, backend: Backend) {
    const n = p.n;
    this.A = backend.fromArray(p.a, [n, n]);
    this.B = backend.fromArray(p.b, [n, n]);
    this.X = backend.tensor('float64', [n, n]);
    this.T1 = backend.tensor('float64', [n, n]);
    this.T2 = backend.tensor('float64', [n, n]);
    this.host = new Float64Array(n * n);
    this.axb = new Float64Array(n * n);
  }
  /** Returns f(x) and writes the gradient 2 A x B into `grad` (any float dtype; cast on store). */
  eval(x: FloatArray, grad?: FloatArray): number {
    const h = this.host;
    for (let i = 0; i < h.length; i++) h[i] = x[i];
    this.X.write(h);
    ops.gemm(this.A, this.X, this.T1);
    ops.gemm(this.T1, this.B, this.T2);
    this.T2.read(this.axb);
    const m = this.axb;
    let f = 0;
    for (let i = 0; i < h.length; i++) f += h[i] * m[i];
    if (grad) for (let i = 0; i < m.length; i++) grad[i] = 2 * m[i];
    return f;
  }
  dispose(): void {
    [this.A, this.B, this.X, this.T1, this.T2].forEach((t) => t.dispose());
  }
}

export function checkpointsFor(steps: number): number[] {
  return [...new Set([10, 50, 100, steps].filter((s) => s <= steps))].sort((a, b) => a - b);
}

/** One run: returns the result and its loss curve (f(X_t), t = 0..steps; NaN after a divergence). */
export function runOne(
  def: OptDef,
  lr: number,
  q: Quadratic,
  c: ConditioningConfig,
  backend: Backend,
  onStep?: (t: number) => void,
): { result: RunResult; curve: Float64Array } {
  const n = c.size;
  const x = def.dtype === 'float32' ? Float32Array.from(q.p.x0) : Float64Array.from(q.p.x0);
  const g = def.dtype === 'float32' ? new Float32Array(n * n) : new Float64Array(n * n);
  const curve = new Float64Array(c.steps + 1).fill(NaN);
  const cps = checkpointsFor(c.steps);
  const t0 = performance.now();
  let opt: Optimizer | undefined;
  let status: RunResult['status'] = 'ok';
  let error: string | undefined;
  let divergedAtStep: number | undefined;
  try {
    opt = def.make({ X: { data: x, shape: [n, n] } }, lr, c, backend);
    const f0 = q.eval(x, g);
    curve[0] = f0;
    const limit = c.stopFactor * f0;
    for (let t = 1; t <= c.steps; t++) {
      opt.step({ X: g });
      const f = q.eval(x, g);
      curve[t] = f;
      if (!Number.isFinite(f) || f > limit) {
        status = 'diverged';
        divergedAtStep = t;
        break;
      }
      onStep?.(t);
    }
  } catch (e) {
    // A non-finite gradient or a factor the optimizer gave up on: the run failed.
    status = e instanceof KradagradError && (e.code === 'NONFINITE' || e.code === 'NONFINITE_FACTOR') ? 'diverged' : 'error';
    error = e instanceof Error ? `${e instanceof KradagradError ? e.code + ': ' : ''}${e.message}` : String(e);
    if (status === 'error' && !(e instanceof KradagradError)) throw e;
  } finally {
    opt?.dispose();
  }
  const ms = performance.now() - t0;
  const at: Record<string, number | null> = {};
  for (const s of cps) at[s] = Number.isFinite(curve[s]) ? curve[s] : null;
  const final = curve[c.steps];
  const result: RunResult = {
    lr,
    status: status === 'ok' && !(Number.isFinite(final) && final < curve[0]) ? 'diverged' : status,
    finalLoss: Number.isFinite(final) ? final : null,
    at,
    ms: Math.round(ms * 10) / 10,
  };
  if (divergedAtStep !== undefined) result.divergedAtStep = divergedAtStep;
  if (error) result.error = error;
  return { result, curve };
}

function defaultGrid(def: OptDef, quick: boolean): number[] {
  const [lo, hi, n] = def.grid;
  const full = logGrid(lo, hi, n);
  return quick ? full.filter((_, i) => i % 2 === 0) : full;
}

/** Parses argv into a config (usage errors for bad values). */
export function parseConditioning(argv: readonly string[]): { config: ConditioningConfig; help: boolean; out: string; png: boolean; quiet: boolean; blasThreads: number | null } {
  const p = parseArgs(
    argv,
    {
      size: { kind: 'value' },
      cond: { kind: 'value' },
      steps: { kind: 'value' },
      seed: { kind: 'value' },
      backend: { kind: 'value' },
      out: { kind: 'value' },
      optimizers: { kind: 'value' },
      lrs: { kind: 'list' },
      eps: { kind: 'value' },
      momentum: { kind: 'value' },
      'root-every': { kind: 'value' },
      'start-step': { kind: 'value' },
      normalization: { kind: 'value' },
      'blas-threads': { kind: 'value' },
      quick: { kind: 'flag' },
      'no-png': { kind: 'flag' },
      quiet: { kind: 'flag' },
    },
    'bench conditioning',
  );
  const o = new Opts(p);
  if (p.positionals.length) throw new UsageError(`bench conditioning takes no positional arguments, got '${p.positionals[0]}'`);
  const quick = o.flag('quick');
  const ids = OPTIMIZERS.map((d) => d.id);
  let optimizers = ids.slice();
  const sel = o.str('optimizers');
  if (sel !== undefined) {
    const want = sel.split(',').map((s) => s.trim()).filter(Boolean);
    const bad = want.filter((w) => !(ids as string[]).includes(w));
    if (!want.length || bad.length) {
      throw new UsageError(`--optimizers expects a comma list of ${ids.join(', ')}, got '${sel}'`);
    }
    optimizers = ids.filter((id) => want.includes(id));
  }
  const grids: Record<string, number[]> = {};
  for (const d of OPTIMIZERS) grids[d.id] = defaultGrid(d, quick);
  for (const spec of o.list('lrs')) {
    const eq = spec.indexOf('=');
    if (eq >= 0) {
      const id = spec.slice(0, eq);
      if (!(ids as string[]).includes(id)) throw new UsageError(`--lrs ${spec}: unknown optimizer '${id}'; expected one of ${ids.join(', ')}`);
      grids[id] = parseGrid(spec.slice(eq + 1), `--lrs ${id}=`);
    } else {
      const g = parseGrid(spec, '--lrs');
      for (const d of OPTIMIZERS) grids[d.id] = g;
    }
  }
  const backend = o.choice<BackendRequest>('backend', 'auto', ['auto', 'cpu', 'cuda']);
  const config: ConditioningConfig = {
    size: o.posInt('size', quick ? 64 : 128, 2, 4096),
    cond: o.posNum('cond', 1e10, (x) => x >= 1, 'a number >= 1'),
    maxEig: 10,
    steps: o.posInt('steps', quick ? 100 : 250, 1, 1e6),
    seed: o.posInt('seed', 1, 0, 2 ** 32 - 1),
    epsilon: o.posNum('eps', 1e-8),
    momentum: o.posNum('momentum', 0.9, (x) => x >= 0 && x < 1, 'a number in [0, 1)'),
    rootEvery: o.posInt('root-every', 3),
    startStep: o.posInt('start-step', 3, 0),
    normalization: o.choice('normalization', 'paper', ['paper', 'reference'] as const),
    backend,
    optimizers,
    grids: Object.fromEntries(optimizers.map((id) => [id, grids[id]])),
    stopFactor: 1e20,
  };
  const bt = o.has('blas-threads') ? o.posInt('blas-threads', 1, 1, 1024) : 1;
  return {
    config,
    help: o.flag('help'),
    out: o.str('out') ?? 'kradagrad-out',
    png: !o.flag('no-png'),
    quiet: o.flag('quiet'),
    blasThreads: process.env.OPENBLAS_NUM_THREADS !== undefined && !o.has('blas-threads') ? null : bt,
  };
}


/** Runs the benchmark and returns the report (no files written). */
export function runConditioning(c: ConditioningConfig, io: Io, opts: { quiet?: boolean; command?: string; blasThreads?: number | null } = {}): ConditioningReport {
  const tStart = performance.now();
  // The BLAS thread count applies when the addon loads here (OpenBLAS reads the variable
  // once); restored afterwards so child processes keep their own.
  const prevThreads = process.env.OPENBLAS_NUM_THREADS;
  if (opts.blasThreads) process.env.OPENBLAS_NUM_THREADS = String(opts.blasThreads);
  let backend: Backend;
  try {
    backend = getBackend(c.backend);
  } finally {
    if (prevThreads === undefined) delete process.env.OPENBLAS_NUM_THREADS;
    else process.env.OPENBLAS_NUM_THREADS = prevThreads;
  }
  const problem = buildProblem(c.size, c.cond, c.seed, c.maxEig);
  const spec = problem.spectrum;
  const specInfo = { min: Math.min(...spec), max: Math.max(...spec), condition: Math.max(...spec) / Math.min(...spec) };
  // Sanity check of the construction: the condition numbers as float64 eigh sees them.
  let measured: ConditioningReport['problem']['measured'];
  try {
    const conds = [problem.a, problem.b].map((m) => {
      const t = backend.fromArray(m, [c.size, c.size]);
      const e = ops.eigh(t);
      const w = e.w.read();
      [t, e.w, e.v].forEach((x) => x.dispose());
      return Math.max(...w) / Math.min(...w);
    });
    measured = { conditionA: conds[0], conditionB: conds[1] };
  } catch {
    measured = undefined;
  }
  const q = new Quadratic(problem, backend);
  const f0 = q.eval(problem.x0);
  const defs = c.optimizers.map((id) => OPTIMIZERS.find((d) => d.id === id)!);
  const totalRuns = defs.reduce((a, d) => a + c.grids[d.id].length, 0);
  const progress = new Progress(io, totalRuns * c.steps, 'steps', opts.quiet);
  progress.note(
    `conditioning benchmark: n=${c.size}, cond=${c.cond.toExponential(0)}, ${c.steps} steps, seed ${c.seed}, ${totalRuns} runs on ${backend.name} (${backend.device})`,
  );
  const results: OptimizerResult[] = [];
  let runsDone = 0;
  try {
    for (const d of defs) {
      const tSweep = performance.now();
      const runs: RunResult[] = [];
      let best: OptimizerResult['best'] = null;
      for (const lr of c.grids[d.id]) {
        const base = runsDone * c.steps;
        const label = `${d.label} lr=${fmtLr(lr)}`;
        progress.update(base, label);
        const { result, curve } = runOne(d, lr, q, c, backend, (t) => progress.update(base + t, label));
        runs.push(result);
        runsDone++;
        progress.update(runsDone * c.steps, label);
        if (result.status === 'ok' && result.finalLoss !== null && (best === null || result.finalLoss < best.finalLoss)) {
          best = { lr, finalLoss: result.finalLoss, at: result.at, ms: result.ms, curve: Array.from(curve) };
        }
      }
      const grid = c.grids[d.id];
      const edge = best !== null && grid.length > 2 && (best.lr === Math.min(...grid) || best.lr === Math.max(...grid));
      results.push({
        id: d.id,
        label: d.label,
        paramDtype: d.dtype,
        statisticsDtype: d.id === 'sgd' || d.id === 'adam' ? null : d.dtype,
        options: optionsOf(d, c),
        runs,
        best,
        bestAtGridEdge: edge,
        sweepMs: Math.round(performance.now() - tSweep),
      });
    }
  } finally {
    q.dispose();
    progress.finish();
  }
  return {
    benchmark: 'conditioning',
    version: packageVersion(),
    command: opts.command ?? 'kradagrad bench conditioning',
    config: {
      ...c,
      device: backend.device,
      backendUsed: backend.name,
      checkpoints: checkpointsFor(c.steps),
      blasThreads: /(\d+) threads?\b/.exec(backend.device) ? Number(/(\d+) threads?\b/.exec(backend.device)![1]) : null,
    },
    problem: { f0, eigenvaluesA: specInfo, eigenvaluesB: specInfo, measured, qOrthogonalityError: problem.qError },
    optimizers: results,
    findings: findings(results),
    totalMs: Math.round(performance.now() - tStart),
  };
}

function optionsOf(d: OptDef, c: ConditioningConfig): Record<string, unknown> {
  if (d.id === 'sgd') return { momentum: c.momentum };
  if (d.id === 'adam') return { beta1: 0.9, beta2: 0.999, eps: 1e-8 };
  const o: Record<string, unknown> = {
    momentum: c.momentum,
    epsilon: c.epsilon,
    rootFrequency: c.rootEvery,
    startStep: c.startStep,
    beta2: 1,
    blockSize: c.size,
    statisticsDtype: d.dtype,
    grafting: d.id === 'krad32' ? 'none' : 'sgd',
  };
  if (d.id === 'kradstar32' || d.id === 'kradstar64') o.normalization = c.normalization;
  if (d.id === 'krad32') o.damping = true;
  return o;
}

function findings(rs: OptimizerResult[]): ConditioningReport['findings'] {
  const notes: string[] = [];
  const ok = rs.filter((r) => r.best);
  const lowest = ok.length ? ok.reduce((a, b) => (b.best!.finalLoss < a.best!.finalLoss ? b : a)) : null;
  const get = (id: OptId): OptimizerResult | undefined => rs.find((r) => r.id === id);
  const s64 = get('shampoo64');
  const s32 = get('shampoo32');
  const k32 = get('kradstar32');
  let shampoo64Lowest: boolean | null = null;
  if (s64 && rs.length > 1) {
    shampoo64Lowest = lowest !== null && lowest.id === 'shampoo64';
    notes.push(
      shampoo64Lowest
        ? 'Shampoo fp64 reaches the lowest final loss (as in the paper).'
        : `Shampoo fp64 does NOT reach the lowest final loss: ${lowest ? `${lowest.label} does (${fmtNum(lowest.best!.finalLoss)})` : 'every run failed'}${s64.best ? `, Shampoo fp64 ends at ${fmtNum(s64.best.finalLoss)}` : ', and Shampoo fp64 failed at every lr'} (the paper finds Shampoo fp64 lowest).`,
    );
  }
  let kradstar32BelowShampoo32: boolean | null = null;
  if (k32 && s32) {
    const a = k32.best?.finalLoss ?? Infinity;
    const b = s32.best?.finalLoss ?? Infinity;
    kradstar32BelowShampoo32 = a < b;
    notes.push(
      kradstar32BelowShampoo32
        ? `KrADagrad* fp32 ends below Shampoo fp32 (${fmtNum(a)} vs ${fmtNum(b)}), as in the paper.`
        : `KrADagrad* fp32 does NOT end below Shampoo fp32 (${fmtNum(a)} vs ${fmtNum(b)}); the paper finds it does.`,
    );
  }
  for (const r of rs) {
    if (!r.best) notes.push(`${r.label}: every learning rate failed (diverged or non-finite).`);
    else if (r.bestAtGridEdge) notes.push(`${r.label}: the best lr ${fmtLr(r.best.lr)} is at the edge of its grid; widen it with --lrs ${r.id}=min:max:count.`);
  }
  return { lowest: lowest?.id ?? null, shampoo64Lowest, kradstar32BelowShampoo32, notes };
}

/** The result table (text and Markdown). */
export function conditioningTable(rep: ConditioningReport): { text: string; markdown: string } {
  const cps = rep.config.checkpoints;
  const cols = [
    { header: 'optimizer', align: 'left' as const },
    { header: 'best lr' },
    ...cps.map((s) => ({ header: `loss@${s}` })),
    { header: 'failed lrs' },
    { header: 'time (best run)' },
    { header: 'sweep' },
  ];
  const rows = rep.optimizers.map((r) => {
    const failed = r.runs.filter((x) => x.status !== 'ok').length;
    return [
      r.label,
      r.best ? fmtLr(r.best.lr) : 'all failed',
      ...cps.map((s) => fmtNum(r.best ? r.best.at[s] : null)),
      `${failed}/${r.runs.length}`,
      r.best ? fmtSeconds(r.best.ms) : '-',
      fmtSeconds(r.sweepMs),
    ];
  });
  return formatTable(cols, rows);
}

/**
 * The view of the paper's Figure 1: every best curve divided by SGD's best curve, step by
 * step (SGD itself is the constant 1). Null when SGD is not in the run or failed.
 */
export function ratioToSgd(rep: ConditioningReport): Series[] | null {
  const sgd = rep.optimizers.find((r) => r.id === 'sgd')?.best?.curve;
  if (!sgd) return null;
  return rep.optimizers
    .filter((r) => r.best)
    .map((r) => ({
      label: r.label,
      y: r.best!.curve.map((v, t) => v / sgd[t]),
      color: PALETTE[OPTIMIZERS.findIndex((d) => d.id === r.id) % PALETTE.length],
      dashed: r.paramDtype === 'float64' && r.id !== 'shampoo64' ? true : undefined,
    }));
}

/** Writes conditioning.json/.svg/.png/.md into `out`; returns the paths. */
export function writeConditioning(rep: ConditioningReport, out: string, png: boolean): { json: string; svg: string; png?: string; md: string; note?: string } {
  fs.mkdirSync(out, { recursive: true });
  const json = path.join(out, 'conditioning.json');
  fs.writeFileSync(json, JSON.stringify(rep, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 1));
  const c = rep.config;
  const series: Series[] = rep.optimizers
    .filter((r) => r.best)
    .map((r) => ({
      label: `${r.label} (lr ${fmtLr(r.best!.lr)})`,
      y: r.best!.curve,
      color: PALETTE[OPTIMIZERS.findIndex((d) => d.id === r.id) % PALETTE.length],
      dashed: r.paramDtype === 'float64' && r.id !== 'shampoo64' ? true : undefined,
    }));
  const momentum = c.momentum > 0 ? `momentum ${c.momentum} (SGD, Kronecker methods)` : 'no momentum';
  const absolute = logLinePlot(series, {
    title: `f(X) = tr(XᵀAXB), X ${c.size}×${c.size}, cond(A) = cond(B) = ${c.cond.toExponential(0).replace('e+', 'e')}`,
    subtitle: `best learning rate per optimizer; ${momentum}; roots every ${c.rootEvery} steps from step ${c.startStep}, ε = ${c.epsilon}, seed ${c.seed}, ${c.backendUsed}`,
    xLabel: 'step',
    yLabel: 'loss f(X) (log scale)',
    idPrefix: 'abs-',
  });
  const ratio = ratioToSgd(rep);
  const svg = ratio
    ? sideBySide([
        absolute,
        logLinePlot(ratio, {
          title: 'Each loss curve divided by SGD’s (the paper’s Figure 1)',
          subtitle: 'f(X_t) / f_SGD(X_t) at the same step t; below 1 = ahead of SGD',
          xLabel: 'step',
          yLabel: 'loss / SGD loss (log scale)',
          idPrefix: 'ratio-',
          refLine: 1,
        }),
      ])
    : absolute;
  const base = path.join(out, 'conditioning');
  let chart: { svg: string; png?: string; note?: string };
  if (png) chart = writeChart(svg, base);
  else {
    fs.writeFileSync(`${base}.svg`, svg);
    chart = { svg: `${base}.svg` };
  }
  const md = path.join(out, 'conditioning.md');
  const t = conditioningTable(rep);
  fs.writeFileSync(
    md,
    [
      `Command: \`${rep.command}\``,
      '',
      `Device: ${c.device}; total ${fmtSeconds(rep.totalMs)}; f(X0) = ${fmtNum(rep.problem.f0)}`,
      '',
      `${momentumLine(c.momentum)}.`,
      '',
      t.markdown,
      '',
      ...rep.findings.notes.map((n) => `- ${n}`),
      '',
    ].join('\n'),
  );
  return { json, svg: chart.svg, png: chart.png, md, note: chart.note };
}

/** The momentum setting in words. */
function momentumLine(m: number): string {
  return m > 0
    ? `heavy-ball momentum ${m} for SGD and the Kronecker methods (the paper's setting); Adam: beta1 0.9`
    : 'no momentum for SGD and the Kronecker methods (--momentum 0); Adam: beta1 0.9';
}

/** The CLI command. */
export async function benchConditioning(argv: readonly string[], io: Io): Promise<number> {
  const a = parseConditioning(argv);
  if (a.help) {
    io.out(conditioningHelp);
    return 0;
  }
  prepareOutDir(a.out);
  const command = ['kradagrad bench conditioning', ...argv].join(' ');
  const rep = runConditioning(a.config, io, { quiet: a.quiet, command, blasThreads: a.blasThreads });
  const files = writeConditioning(rep, a.out, a.png);
  const t = conditioningTable(rep);
  io.out('');
  io.out(`f(X) = tr(X^T A X B), n = ${rep.config.size}, cond = ${rep.config.cond.toExponential(0)}, f(X0) = ${fmtNum(rep.problem.f0)}, ${rep.config.steps} steps, seed ${rep.config.seed}`);
  io.out(momentumLine(rep.config.momentum));
  io.out(`backend ${rep.config.backendUsed}: ${rep.config.device}`);
  io.out('');
  io.out(t.text);
  io.out('');
  for (const n of rep.findings.notes) io.out(`* ${n}`);
  io.out('');
  io.out(`total time ${fmtSeconds(rep.totalMs)}`);
  if (files.note) io.out(`note: ${files.note}`);
  io.out(`results: ${files.json}`);
  io.out(`table:   ${files.md}`);
  io.out(`plot:    ${files.svg}`);
  if (files.png) io.out(`plot:    ${files.png}`);
  return 0;
}
