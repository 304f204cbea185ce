/**
 * Event-loop stalls of a training step (issue 11): one 1024 x 1024 KrADagrad* parameter
 * (blockSize 1024, rootFrequency 4, float32), `step()` against `stepAsync()`, with and without
 * asyncRoots; and a tfjs model (a dense 1024 -> 1024 layer) whose gradients are applied with
 * `applyGradients` against `applyGradientsAsync`.
 *
 * The stall is the longest gap between ticks of a 1 ms interval timer while steps run (also
 * reported: perf_hooks' monitorEventLoopDelay maximum). For tfjs only the optimizer's part is
 * watched: gradients are computed (by tfjs, on the main thread) before the window opens.
 * Throughput: steps per second over the same steps.
 *
 *   node dist/bench/eventloop.js [--steps 50] [--n 1024] [--json out.json]
 * Run with OPENBLAS_NUM_THREADS=1 (one BLAS thread, as the issue measured).
 */
import * as fs from 'fs';
import { monitorEventLoopDelay, performance } from 'perf_hooks';
import { KradagradStar, getBackend } from '../lib';

interface Row {
  what: string;
  steps: number;
  maxStallMs: number;
  p99StallMs: number;
  loopDelayMaxMs: number;
  stepsPerSecond: number;
}

/** Watches the event loop while `body` runs: the longest gap between 1 ms timer ticks. */
async function watch(body: () => Promise<number>): Promise<{ gaps: number[]; delayMax: number; steps: number; ms: number }> {
  const h = monitorEventLoopDelay({ resolution: 1 });
  const gaps: number[] = [];
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    gaps.push(now - last);
    last = now;
  }, 1);
  h.enable();
  await new Promise((r) => setTimeout(r, 5));
  const t0 = performance.now();
  last = t0;
  const steps = await body();
  const ms = performance.now() - t0;
  const now = performance.now();
  gaps.push(now - last);
  clearInterval(timer);
  h.disable();
  return { gaps, delayMax: h.max / 1e6, steps, ms };
}

function row(what: string, w: { gaps: number[]; delayMax: number; steps: number; ms: number }): Row {
  const sorted = [...w.gaps].sort((a, b) => a - b);
  return {
    what,
    steps: w.steps,
    maxStallMs: sorted[sorted.length - 1],
    p99StallMs: sorted[Math.floor(0.99 * (sorted.length - 1))],
    loopDelayMaxMs: w.delayMax,
    stepsPerSecond: (1000 * w.steps) / w.ms,
  };
}

async function kradagrad(n: number, steps: number, mode: 'step' | 'stepAsync', asyncRoots: boolean): Promise<Row> {
  const w = Float32Array.from({ length: n * n }, (_, i) => Math.sin(i) * 0.01);
  const g = Float32Array.from({ length: n * n }, (_, i) => Math.cos(1.3 * i) * 0.01);
  const opt = new KradagradStar({ w: { data: w, shape: [n, n] } }, { backend: getBackend('cpu'), blockSize: n, rootFrequency: 4, asyncRoots });
  opt.step({ w: g }); // warm-up outside the window
  const r = await watch(async () => {
    for (let s = 0; s < steps; s++) {
      if (mode === 'step') {
        opt.step({ w: g });
        await new Promise((res) => setImmediate(res)); // let the timer run between steps
      } else {
        await opt.stepAsync({ w: g });
      }
    }
    return steps;
  });
  opt.dispose();
  return row(`KrADagrad* ${n}x${n}, ${mode}${asyncRoots ? ', asyncRoots' : ''}`, r);
}

async function tfjs(n: number, steps: number, mode: 'applyGradients' | 'applyGradientsAsync'): Promise<Row> {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const tf = require('@tensorflow/tfjs') as typeof import('@tensorflow/tfjs');
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { KradagradStarOptimizer } = require('../lib/tfjs') as typeof import('../lib/tfjs');
  await tf.setBackend('cpu');
  const tag = `${mode}${Date.now()}`;
  const w = tf.variable(tf.randomNormal([n, n], 0, 0.01, 'float32', 1), true, `${tag}/w`);
  const x = tf.randomNormal([8, n], 0, 1, 'float32', 2);
  const opt = new KradagradStarOptimizer({ backend: 'cpu', blockSize: n, rootFrequency: 4, lr: 1e-3 });
  const grads = () => tf.variableGrads(() => tf.mean(tf.square(tf.matMul(x, w))) as import('@tensorflow/tfjs').Scalar, [w]).grads;
  let g = grads();
  opt.applyGradients(g); // warm-up
  tf.dispose(g);
  let busy = 0;
  const gaps: number[] = [];
  let delayMax = 0;
  for (let s = 0; s < steps; s++) {
    g = grads(); // tfjs' own work, outside the window
    const r = await watch(async () => {
      if (mode === 'applyGradients') {
        opt.applyGradients(g);
        await new Promise((res) => setImmediate(res));
      } else {
        await opt.applyGradientsAsync(g);
      }
      return 1;
    });
    tf.dispose(g);
    busy += r.ms;
    gaps.push(...r.gaps);
    delayMax = Math.max(delayMax, r.delayMax);
  }
  opt.dispose();
  tf.dispose([w, x]);
  return row(`tfjs dense ${n}x${n}, ${mode} (optimizer part)`, { gaps, delayMax, steps, ms: busy });
}

async function main(): Promise<void> {
  const arg = (k: string, d: number) => {
    const i = process.argv.indexOf(`--${k}`);
    return i > 0 ? Number(process.argv[i + 1]) : d;
  };
  const steps = arg('steps', 50);
  const n = arg('n', 1024);
  const rows: Row[] = [];
  for (const [mode, ar] of [
    ['step', false],
    ['stepAsync', false],
    ['step', true],
    ['stepAsync', true],
  ] as const) {
    rows.push(await kradagrad(n, steps, mode, ar));
    console.error(`done: ${rows[rows.length - 1].what}`);
  }
  for (const mode of ['applyGradients', 'applyGradientsAsync'] as const) {
    rows.push(await tfjs(n, steps, mode));
    console.error(`done: ${rows[rows.length - 1].what}`);
  }
  const env = `OPENBLAS_NUM_THREADS=${process.env.OPENBLAS_NUM_THREADS ?? '(unset)'}; ${getBackend('cpu').device}; node ${process.version}`;
  const lines = [
    `| run | steps | longest stall (ms) | p99 timer gap (ms) | loop delay max (ms) | steps/s |`,
    `|---|---:|---:|---:|---:|---:|`,
    ...rows.map((r) => `| ${r.what} | ${r.steps} | ${r.maxStallMs.toFixed(1)} | ${r.p99StallMs.toFixed(1)} | ${r.loopDelayMaxMs.toFixed(1)} | ${r.stepsPerSecond.toFixed(2)} |`),
  ];
  console.log(`${env}\n\n${lines.join('\n')}`);
  const i = process.argv.indexOf('--json');
  if (i > 0) fs.writeFileSync(process.argv[i + 1], JSON.stringify({ env, rows }, null, 2) + '\n');
}

void main();
