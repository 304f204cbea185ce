/**
 * Golden replay: runs our optimizers on the recorded trajectories of the paper authors'
 * code (test/fixtures/golden-reference.json, format 1) under the reference settings and
 * reports each case's max relative error |ours - ref| / max|ref| over steps and entries.
 */
import * as fs from 'fs';
import { KradagradError } from './errors';
import type { BackendRequest } from './native';
import { Kradagrad, KradagradStar, Shampoo } from './optim';
import type { Optimizer, PreconditionerOptions } from './optim';
import type { Backend } from './tensor';

export interface GoldenCase {
  name: string;
  optimizer: 'shampoo' | 'kradagrad_star' | 'kradagrad';
  shape: number[];
  dtype: 'float32' | 'float64';
  double_statistics: boolean;
  steps: number;
  lr: number;
  momentum: number;
  hps: {
    matrix_eps: number;
    beta2: number;
    block_size: number;
    graft_type: number;
    nesterov: boolean;
    weight_decay: number;
    start_preconditioning_step: number;
    preconditioning_compute_steps: number;
    statistics_compute_steps: number;
  };
  transformed_shape: number[];
  initial: number[];
  grads: number[][];
  params: number[][];
}
export interface GoldenFile {
  format: number;
  source?: string;
  cases: GoldenCase[];
}

export interface GoldenResult {
  name: string;
  optimizer: string;
  dtype: string;
  maxRelError: number;
  tolerance: number;
  pass: boolean;
  /** First step (1-based) whose error exceeds the tolerance, if any. */
  firstBadStep?: number;
}

/** The pass tolerance of a case (float64 1e-9, float32 1e-4, KrADagrad 1e-6 for its float32 rounding). */
export function toleranceOf(c: GoldenCase): number {
  if (c.dtype === 'float32') return 1e-4;
  return c.optimizer === 'kradagrad' ? 1e-6 : 1e-9;
}

export function loadGolden(file: string): GoldenFile {
  let g: GoldenFile;
  try {
    g = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new KradagradError(`Cannot read golden file ${file}: ${(e as Error).message}`, 'INVALID_ARGUMENT');
  }
  if (g.format !== 1 || !Array.isArray(g.cases)) {
    throw new KradagradError(`${file}: expected {format: 1, cases: [...]} but got format ${String(g.format)}`, 'INVALID_ARGUMENT');
  }
  return g;
}

/** Our options reproducing the reference semantics of a case. */
export function referenceOptions(c: GoldenCase): PreconditionerOptions & Record<string, unknown> {
  const h = c.hps;
  if (h.graft_type !== 0 && h.graft_type !== 2) {
    throw new KradagradError(`${c.name}: graft_type ${h.graft_type} is not supported (0 = norm graft to the gradient, 2 = AdaGrad)`, 'INVALID_ARGUMENT');
  }
  const common: PreconditionerOptions & Record<string, unknown> = {
    lr: c.lr,
    momentum: c.momentum,
    nesterov: false,
    weightDecay: h.weight_decay,
    epsilon: h.matrix_eps,
    beta2: h.beta2,
    blockSize: h.block_size,
    mergeDims: true,
    startStep: h.start_preconditioning_step,
    rootFrequency: h.preconditioning_compute_steps,
    statisticsFrequency: h.statistics_compute_steps,
    statisticsDtype: c.double_statistics ? 'float64' : 'float32',
  };
  if (c.optimizer === 'kradagrad') return { ...common, grafting: 'none', damping: h.matrix_eps > 0 };
  const graft = h.graft_type === 2 ? 'adagrad' : 'sgd';
  if (c.optimizer === 'kradagrad_star') return { ...common, grafting: graft, normalization: 'reference' };
  return { ...common, grafting: graft, eigenvalueFloor: h.matrix_eps > 0 ? h.matrix_eps : 1e-30 };
}

export function makeOptimizer(c: GoldenCase, data: Float32Array | Float64Array, backend: BackendRequest | Backend): Optimizer {
  const params = { w: { data, shape: c.shape } };
  const opts = { ...referenceOptions(c), backend };
  switch (c.optimizer) {
    case 'shampoo':
      return new Shampoo(params, opts);
    case 'kradagrad_star':
      return new KradagradStar(params, opts);
    case 'kradagrad':
      return new Kradagrad(params, opts);
    default:
      throw new KradagradError(`Unknown optimizer '${String((c as GoldenCase).optimizer)}' in case ${(c as GoldenCase).name}`, 'INVALID_ARGUMENT');
  }
}

/** Replays one case and measures its error. */
export function replayCase(c: GoldenCase, backend: BackendRequest | Backend = 'cpu'): GoldenResult {
  const Arr = c.dtype === 'float32' ? Float32Array : Float64Array;
  const data = Arr.from(c.initial);
  const opt = makeOptimizer(c, data, backend);
  const tol = toleranceOf(c);
  let maxRel = 0;
  let firstBadStep: number | undefined;
  try {
    for (let s = 0; s < c.steps; s++) {
      opt.step({ w: Arr.from(c.grads[s]) });
      const ref = c.params[s];
      let scale = 0;
      for (const v of ref) scale = Math.max(scale, Math.abs(v));
      let err = 0;
      for (let j = 0; j < ref.length; j++) err = Math.max(err, Math.abs(data[j] - ref[j]));
      const rel = scale > 0 ? err / scale : err;
      if (!(rel <= tol) && firstBadStep === undefined) firstBadStep = s + 1;
      maxRel = Number.isNaN(rel) ? NaN : Math.max(maxRel, rel);
    }
  } finally {
    opt.dispose();
  }
  return { name: c.name, optimizer: c.optimizer, dtype: c.dtype, maxRelError: maxRel, tolerance: tol, pass: maxRel <= tol, firstBadStep };
}
