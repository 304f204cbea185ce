'use strict';
// The child process of test/worker_exit.test.ts:
//   node test/support/worker_exit_child.js <exit|terminate> <delay ms>
// Its worker thread starts async work of kradagrad (stepAsync, eighAsync, matpowAsync,
// crc32cAsync), then keeps calling into the addon synchronously (steps, small ops, more
// async work) until it exits (process.exit inside it, after `delay`) or is terminated by this
// thread (after `delay`), so that the end lands inside addon calls and while pool work is
// still running. This thread then waits for the pool work to drain and exits 0; the test
// counts the exit codes.
const path = require('path');
const { Worker } = require('worker_threads');

const root = path.resolve(__dirname, '..', '..');
const [mode, delay] = [process.argv[2], Number(process.argv[3])];

const src = `
  require(${JSON.stringify(path.join(root, 'test', 'fuzz', 'register.js'))});
  const k = require(${JSON.stringify(path.join(root, 'lib', 'index.ts'))});
  const { parentPort, workerData } = require('worker_threads');
  const B = k.getBackend('cpu');
  const keep = (p) => p.catch(() => {});
  const n = 160;
  const a = B.fromArray(Float64Array.from({ length: 4 * n * n }, (_, i) => Math.sin(i)), [n, n], 4);
  k.ops.symmetrize(a);
  const m = 256;
  const big = new k.KradagradStar({ w: { data: new Float32Array(m * m).fill(0.1), shape: [m, m] } }, { backend: B, blockSize: m, rootFrequency: 1 });
  keep(big.stepAsync({ w: Float32Array.from({ length: m * m }, (_, i) => Math.cos(i)) }));
  keep(k.ops.eighAsync(a));
  keep(k.ops.matpowAsync(a, 0.5, { allowFailures: true }));
  keep(B.addon.crc32cAsync(new Uint8Array(8 << 20)));
  const small = new k.Shampoo({ v: { data: new Float32Array(64).fill(0.5), shape: [8, 8] } }, { backend: B, blockSize: 8, rootFrequency: 1 });
  const x = B.fromArray(new Float32Array(64).fill(1), [8, 8]);
  const y = B.fromArray(new Float32Array(64).fill(2), [8, 8]);
  const deadline = Date.now() + workerData.delay;
  parentPort.postMessage('started');
  // Synchronous from here on: the worker spends its time inside addon calls (a step is a
  // few dozen of them, most reading arrays of handles), and never runs the completions of
  // its async work, which therefore finish after its environment is gone.
  const grad = { v: new Float32Array(64).fill(0.01) };
  for (let i = 0; ; i++) {
    small.step(grad);
    k.ops.gemm(x, y).dispose();
    if (i % 16 === 0) keep(k.ops.matpowAsync(x, 0.5, { allowFailures: true }));
    if (workerData.mode === 'exit' && Date.now() >= deadline) process.exit(0);
  }
`;

const w = new Worker(src, { eval: true, workerData: { mode, delay } });
w.on('message', () => {
  if (mode === 'terminate') setTimeout(() => w.terminate(), delay);
});
w.on('error', (e) => {
  console.error('worker error:', e && e.message);
  process.exitCode = 2;
});
// Long enough for the pool work (a few hundred ms) to finish after the worker is gone.
w.on('exit', () => setTimeout(() => process.exit(process.exitCode || 0), 800));
