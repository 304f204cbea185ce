#!/usr/bin/env node
// @ts-check
'use strict';
// The program every rank runs under `mpirun` for the distributed tests
// (test/distributed/mpi.test.ts, test/distributed/run.sh). Plain JS on the compiled
// library (dist/lib), because mpirun starts plain node processes.
//
//   node ranks.js <scenario>
//
// Scenarios: suite (all collective checks; prints `ok <check>` per passed check and
// `done rank <r> of <n>` at the end), clean-exit, throw, reject, exit-code, kill-target,
// throw-no-abort (the fault scenarios, see faultScenario below), singleton.
//
// Every expectation is computed here from the seeded inputs of all ranks (each rank can
// regenerate any rank's data), never written in by hand. A failed check aborts the whole
// job (comm.abort) naming the check, so a failure can never leave the other ranks waiting.
const path = require('path');
const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');

const libDir = process.env.KRADAGRAD_LIB_DIR || path.resolve(__dirname, '..', '..', 'dist', 'lib');
const dist = require(path.join(libDir, 'distributed'));
const krad = require(libDir);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** mulberry32: a small seeded generator, the same sequence on every rank. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Rank r's input for case `name`: `kind` 'dyadic' (multiples of 2^-6 in [-16, 16], exact sums), 'uniform' in [-1, 1), 'int', 'byte'. */
function data(Ctor, name, r, n, kind) {
  let seed = 17 + r * 1000003;
  for (const c of name) seed = (seed * 31 + c.charCodeAt(0)) >>> 0;
  const next = rng(seed);
  const a = new Ctor(n);
  for (let i = 0; i < n; i++) {
    const u = next();
    if (kind === 'dyadic') a[i] = Math.floor(u * 2049 - 1024) / 64;
    else if (kind === 'uniform') a[i] = 2 * u - 1;
    else if (kind === 'int') a[i] = Math.floor(u * 2000001) - 1000000;
    else a[i] = Math.floor(u * 60); // 'byte': sums of 3 stay below 256
  }
  return a;
}

class CheckFailed extends Error {}
function expect(cond, msg) {
  if (!cond) throw new CheckFailed(msg);
}
function expectEqualArrays(got, want, what) {
  expect(got.constructor === want.constructor, `${what}: got a ${got.constructor.name}, expected ${want.constructor.name}`);
  expect(got.length === want.length, `${what}: length ${got.length}, expected ${want.length}`);
  for (let i = 0; i < want.length; i++) {
    if (!Object.is(got[i], want[i])) throw new CheckFailed(`${what}: [${i}] = ${got[i]}, expected ${want[i]}`);
  }
}
async function expectReject(p, code, re, what) {
  try {
    await p;
  } catch (e) {
    const err = /** @type {any} */ (e);
    expect(err instanceof krad.KradagradError, `${what}: rejected with ${err && err.constructor && err.constructor.name}, not a KradagradError: ${err}`);
    expect(err.code === code, `${what}: code ${err.code}, expected ${code} (${err.message})`);
    if (re) expect(re.test(err.message), `${what}: message ${JSON.stringify(err.message)} does not match ${re}`);
    return err;
  }
  throw new CheckFailed(`${what}: resolved, expected a ${code} rejection`);
}

/** Neumaier-compensated sum of the values of every rank at element i (a reference far more exact than float32/64 arithmetic). */
function refSum(arrays, i) {
  let s = 0;
  let c = 0;
  for (const a of arrays) {
    const v = a[i];
    const t = s + v;
    c += Math.abs(s) >= Math.abs(v) ? s - t + v : v - t + s;
    s = t;
  }
  return s + c;
}

/** The bytes of a typed array, for bitwise comparisons. */
const bytesOf = (a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

async function suite(comm) {
  const P = comm.size;
  const R = comm.rank;
  const ranks = [...Array(P).keys()];
  const checks = [];
  const check = (name, fn) => checks.push([name, fn]);

  check('world', async () => {
    expect(P >= 1 && R >= 0 && R < P, `rank ${R} of ${P}`);
    expect(comm.threadLevel === 'funneled' || comm.threadLevel === 'serialized' || comm.threadLevel === 'multiple', `thread level ${comm.threadLevel}`);
    expect(/Open MPI|MPICH/.test(comm.library), `library ${comm.library}`);
    const all = await comm.allGather(new Int32Array([R, comm.localRank, comm.localSize]));
    // One node: local ranks are the world ranks, and every rank sees the same local size.
    for (const r of ranks) {
      expect(all[3 * r] === r, `allGather of ranks: slot ${r} holds ${all[3 * r]}`);
      expect(all[3 * r + 1] === r, `rank ${r} has localRank ${all[3 * r + 1]}`);
      expect(all[3 * r + 2] === P, `rank ${r} has localSize ${all[3 * r + 2]}`);
    }
  });

  for (const [Ctor, dtype] of [[Float32Array, 'float32'], [Float64Array, 'float64']]) {
    check(`allReduce sum exact ${dtype}`, async () => {
      const n = 1000;
      const x = data(Ctor, 'sum-exact', R, n, 'dyadic');
      const inputs = ranks.map((r) => data(Ctor, 'sum-exact', r, n, 'dyadic'));
      const want = new Ctor(n);
      for (let i = 0; i < n; i++) want[i] = refSum(inputs, i);
      const res = await comm.allReduce(x, 'sum');
      expect(res === x, 'allReduce in place resolves to x');
      expectEqualArrays(x, want, 'sum');
    });

    check(`allReduce mean exact ${dtype}, into another array`, async () => {
      const n = 257;
      const x = data(Ctor, 'mean-exact', R, n, 'dyadic');
      const x0 = x.slice();
      const inputs = ranks.map((r) => data(Ctor, 'mean-exact', r, n, 'dyadic'));
      const round = dtype === 'float32' ? Math.fround : (v) => v;
      const want = new Ctor(n);
      // The exact sum, divided once and rounded once: what the native division gives.
      for (let i = 0; i < n; i++) want[i] = round(refSum(inputs, i) / P);
      const into = new Ctor(n).fill(NaN);
      const res = await comm.allReduce(x, 'mean', into);
      expect(res === into, 'resolves to into');
      expectEqualArrays(into, want, 'mean');
      expectEqualArrays(x, x0, 'x unchanged when into is given');
    });

    check(`allReduce sum of random ${dtype} within the summation bound, bitwise equal on every rank`, async () => {
      const n = 4099;
      const u = dtype === 'float32' ? 2 ** -24 : 2 ** -53;
      const gamma = ((P - 1) * u) / (1 - (P - 1) * u);
      const x = data(Ctor, 'sum-random', R, n, 'uniform');
      const inputs = ranks.map((r) => data(Ctor, 'sum-random', r, n, 'uniform'));
      await comm.allReduce(x, 'sum');
      for (let i = 0; i < n; i++) {
        const s = refSum(inputs, i);
        let abs = 0;
        for (const a of inputs) abs += Math.abs(a[i]);
        // Any summation order of P terms: |fl(sum) - sum| <= gamma_{P-1} * sum |x_r|.
        const bound = gamma * abs + 2 ** -1074;
        expect(Math.abs(x[i] - s) <= bound, `[${i}] ${x[i]} vs ${s}: error ${Math.abs(x[i] - s)} > bound ${bound}`);
      }
      const all = await comm.allGather(x);
      const mine = bytesOf(x);
      const every = bytesOf(all);
      for (const r of ranks) {
        const theirs = every.subarray(r * mine.length, (r + 1) * mine.length);
        expect(Buffer.compare(Buffer.from(theirs), Buffer.from(mine)) === 0, `rank ${r}'s result differs bitwise from rank ${R}'s`);
      }
    });

    check(`allGather ${dtype}, different lengths per rank (rank 0 sends none)`, async () => {
      const len = (r) => 2 * r + (r === 0 ? 0 : 1);
      const x = data(Ctor, 'gather', R, len(R), 'uniform');
      const want = new Ctor(ranks.reduce((s, r) => s + len(r), 0));
      let off = 0;
      for (const r of ranks) {
        want.set(data(Ctor, 'gather', r, len(r), 'uniform'), off);
        off += len(r);
      }
      const got = await comm.allGather(x);
      expectEqualArrays(got, want, 'allGather');
      expect(comm.native.isAllocated(got) || got.length === 0, 'the new result array is addon-owned (zero-copy for the next collective)');
      const into = new Ctor(want.length).fill(NaN);
      const res = await comm.allGather(x, into);
      expect(res === into, 'resolves to into');
      expectEqualArrays(into, want, 'allGather into');
    });

    check(`broadcast ${dtype} from rank 0 and from the last rank`, async () => {
      for (const root of [0, P - 1]) {
        const n = 333;
        const x = R === root ? data(Ctor, `bcast${root}`, root, n, 'uniform') : new Ctor(n).fill(-7);
        const res = await comm.broadcast(x, root);
        expect(res === x, 'resolves to x');
        expectEqualArrays(x, data(Ctor, `bcast${root}`, root, n, 'uniform'), `broadcast from ${root}`);
      }
    });
  }

  check('allReduce max/min on Int32Array, sum on Uint8Array', async () => {
    const n = 100;
    const inputs = ranks.map((r) => data(Int32Array, 'ints', r, n, 'int'));
    for (const op of ['max', 'min']) {
      const x = inputs[R].slice();
      await comm.allReduce(x, op);
      const want = new Int32Array(n);
      for (let i = 0; i < n; i++) want[i] = (op === 'max' ? Math.max : Math.min)(...inputs.map((a) => a[i]));
      expectEqualArrays(x, want, op);
    }
    const bytes = ranks.map((r) => data(Uint8Array, 'bytes', r, n, 'byte'));
    const y = bytes[R].slice();
    await comm.allReduce(y, 'sum');
    const wantY = new Uint8Array(n);
    for (let i = 0; i < n; i++) wantY[i] = bytes.reduce((s, a) => s + a[i], 0);
    expectEqualArrays(y, wantY, 'uint8 sum');
  });

  check('addon-owned buffers: in place with no staging, same results', async () => {
    const n = 5000;
    const a = comm.allocate('float64', n);
    expect(a instanceof Float64Array && a.length === n && a.every((v) => v === 0), 'allocate gives a zeroed Float64Array');
    expect(comm.native.isAllocated(a) && comm.native.isAllocated(a.subarray(10, 20)), 'allocated arrays and their views are recognised');
    expect(!comm.native.isAllocated(new Float64Array(n)), 'an ordinary array is not');
    a.set(data(Float64Array, 'alloc', R, n, 'dyadic'));
    const plain = data(Float64Array, 'alloc', R, n, 'dyadic');
    await comm.allReduce(a, 'sum');
    await comm.allReduce(plain, 'sum');
    expectEqualArrays(a, plain, 'allocated vs ordinary');
    const view = a.subarray(100, 200);
    const before = Float64Array.from(view);
    await comm.allReduce(view, 'max'); // every rank holds the same values: max leaves them
    expectEqualArrays(Float64Array.from(view), before, 'allReduce on a view of an allocation');
  });

  check('barrier: nobody leaves before the last rank arrives', async () => {
    await sleep(150 * R);
    const enter = Date.now();
    await comm.barrier();
    const leave = Date.now();
    const all = await comm.allGather(new Float64Array([enter, leave]));
    const lastIn = Math.max(...ranks.map((r) => all[2 * r]));
    for (const r of ranks) expect(all[2 * r + 1] >= lastIn, `rank ${r} left at ${all[2 * r + 1]} before the last arrival at ${lastIn}`);
  });

  check('a pending collective does not block the event loop', async () => {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const late = P - 1;
    if (R === late) await sleep(400);
    const t0 = Date.now();
    const x = new Float64Array([1]);
    await comm.allReduce(x, 'sum');
    const waited = Date.now() - t0;
    clearInterval(timer);
    expect(x[0] === P, `sum ${x[0]}`);
    if (P > 1 && R !== late) {
      expect(waited >= 300, `rank ${R} waited only ${waited} ms for the late rank`);
      expect(ticks >= 10, `only ${ticks} timer ticks ran during a ${waited} ms wait: the event loop was blocked`);
    }
  });

  check('ranks that disagree all get the same coded error, and stay in step', async () => {
    if (P > 1) {
      const msgs = [];
      // Lengths.
      msgs.push(
        (await expectReject(comm.allReduce(new Float32Array(R === 0 ? 5 : 6)), 'SHAPE_MISMATCH', /different lengths.*rank 0 called allReduce\(float32\[5\], sum\)/, 'lengths')).message,
      );
      // Element types.
      await expectReject(comm.allReduce(R === 0 ? new Float32Array(4) : new Float64Array(4)), 'DTYPE_MISMATCH', /different element types/, 'dtypes');
      // Collectives.
      await expectReject(R === 0 ? comm.allReduce(new Float32Array(4)) : comm.broadcast(new Float32Array(4), 0), 'COLLECTIVE_MISMATCH', /different collectives/, 'kinds');
      await expectReject(comm.allReduce(new Float32Array(4), R === 0 ? 'sum' : 'max'), 'COLLECTIVE_MISMATCH', /different ops/, 'ops');
      await expectReject(comm.broadcast(new Float32Array(4), R === 0 ? 0 : 1), 'COLLECTIVE_MISMATCH', /different roots/, 'roots');
      await expectReject(R === 0 ? comm.barrier() : comm.allGather(new Float32Array(1)), 'COLLECTIVE_MISMATCH', /rank 0 called barrier\(\)/, 'barrier vs allGather');
      // allGather into an array of the wrong total on one rank.
      const total = P;
      await expectReject(comm.allGather(new Float32Array(1), new Float32Array(R === P - 1 ? total + 1 : total)), 'SHAPE_MISMATCH', new RegExp(`rank ${P - 1}'s output holds ${total + 1} elements`), 'allGather into');
      // The same message on every rank.
      const enc = new TextEncoder().encode(msgs[0]);
      const all = await comm.allGather(Uint8Array.from(enc));
      for (const r of ranks) {
        expect(Buffer.from(all.subarray(r * enc.length, (r + 1) * enc.length)).toString() === msgs[0], `rank ${r} got another message`);
      }
    }
    // A root outside the world is refused collectively too (all ranks agree on it).
    await expectReject(comm.native.broadcast(new Float32Array(2), P + 3), 'INVALID_ARGUMENT', /root .* is not a rank/, 'root out of range');
    // Still in step.
    const x = new Float64Array([R + 1]);
    await comm.allReduce(x, 'sum');
    expect(x[0] === (P * (P + 1)) / 2, `after the errors: sum ${x[0]}`);
  });

  check('bad arguments reject locally with a coded error, never crash', async () => {
    const f = new Float32Array(3);
    await expectReject(comm.allReduce(/** @type {any} */ ([1, 2, 3])), 'INVALID_ARGUMENT', /Float32Array, Float64Array, Int32Array, Uint8Array or Tensor/, 'plain array');
    await expectReject(comm.allReduce(/** @type {any} */ (new Int16Array(3))), 'INVALID_ARGUMENT', /Int16Array/, 'Int16Array');
    await expectReject(comm.allReduce(f, /** @type {any} */ ('prod')), 'INVALID_ARGUMENT', /'sum', 'mean', 'max' or 'min'/, 'op');
    await expectReject(comm.allReduce(new Int32Array(3), 'mean'), 'INVALID_ARGUMENT', /'mean' needs a Float32Array or Float64Array/, 'int mean');
    await expectReject(comm.allReduce(f, 'sum', /** @type {any} */ (new Float64Array(3))), 'DTYPE_MISMATCH', /Float32Array for into/, 'into dtype');
    await expectReject(comm.allReduce(f, 'sum', new Float32Array(4)), 'SHAPE_MISMATCH', /length of x/, 'into length');
    const buf = new Float32Array(10);
    await expectReject(comm.allReduce(buf.subarray(0, 6), 'sum', buf.subarray(3, 9)), 'INVALID_ARGUMENT', /overlap/, 'overlap');
    await expectReject(comm.broadcast(f, P), 'INVALID_ARGUMENT', /integer rank/, 'root = size');
    await expectReject(comm.broadcast(f, 0.5), 'INVALID_ARGUMENT', /integer rank/, 'fractional root');
    await expectReject(comm.allGather(f, /** @type {any} */ ('x')), 'INVALID_ARGUMENT', /into/, 'allGather into');
    await expectReject(Promise.resolve().then(() => comm.allocate(/** @type {any} */ ('float16'), 3)), 'INVALID_ARGUMENT', /dtype/, 'allocate dtype');
    await expectReject(Promise.resolve().then(() => comm.allocate('float32', -1)), 'INVALID_ARGUMENT', /length/, 'allocate length');
    await expectReject(Promise.resolve().then(() => comm.native.allReduce(/** @type {any} */ (undefined), 'sum')), 'INVALID_ARGUMENT', /for x/, 'native, no argument');
    // Still in step (none of the above communicated).
    const x = new Int32Array([1]);
    await comm.allReduce(x, 'sum');
    expect(x[0] === P, `after bad arguments: sum ${x[0]}`);
  });

  check('an array detached while its collective runs: a coded rejection, no crash', async () => {
    const x = new Float64Array(1000).fill(R);
    if (R === P - 1) await sleep(200);
    const p = comm.allReduce(x, 'sum');
    structuredClone(x.buffer, { transfer: [x.buffer] }); // x is now detached
    expect(x.length === 0, 'x detached');
    await expectReject(p, 'INVALID_ARGUMENT', /detached/, 'detached');
    const y = new Float64Array([1]);
    await comm.allReduce(y, 'sum');
    expect(y[0] === P, `after the detach: sum ${y[0]}`);
  });

  check('tensors: allReduce, allGather, broadcast through host memory', async () => {
    const cpu = krad.getBackend('cpu');
    for (const [Ctor, dtype] of [[Float32Array, 'float32'], [Float64Array, 'float64']]) {
      const inputs = ranks.map((r) => data(Ctor, `tensor-${dtype}`, r, 6, 'dyadic'));
      const t = cpu.fromArray(inputs[R], [2, 3]);
      expect((await comm.allReduce(t, 'sum')) === t, 'allReduce resolves to the tensor');
      const want = new Ctor(6);
      for (let i = 0; i < 6; i++) want[i] = refSum(inputs, i);
      expectEqualArrays(t.read(), want, `tensor allReduce ${dtype}`);
      const into = cpu.tensor(dtype, [6]);
      await comm.allReduce(cpu.fromArray(inputs[R], [3, 2]), 'mean', into);
      const round = dtype === 'float32' ? Math.fround : (v) => v;
      expectEqualArrays(into.read(), want.map((v) => round(v / P)), `tensor allReduce mean into ${dtype}`);

      const g = await comm.allGather(cpu.fromArray(inputs[R], [6]));
      expect(g instanceof krad.Tensor && g.size === 6 * P && g.dtype === dtype, 'allGather of a tensor gives a tensor of the total size');
      const wantG = new Ctor(6 * P);
      ranks.forEach((r) => wantG.set(inputs[r], 6 * r));
      expectEqualArrays(g.read(), wantG, `tensor allGather ${dtype}`);

      const b = R === 0 ? cpu.fromArray(inputs[0], [6]) : cpu.tensor(dtype, [6]);
      await comm.broadcast(b, 0);
      expectEqualArrays(b.read(), inputs[0], `tensor broadcast ${dtype}`);
    }
    await expectReject(comm.allGather(cpu.tensor('float32', [2]), /** @type {any} */ (new Float32Array(2 * P))), 'INVALID_ARGUMENT', /a Tensor/, 'tensor into array');
    await expectReject(comm.allReduce(cpu.tensor('float32', [2]), 'sum', cpu.tensor('float64', [2])), 'DTYPE_MISMATCH', /float32 tensor/, 'tensor into dtype');
    const gone = cpu.tensor('float32', [2]);
    gone.dispose();
    await expectReject(comm.allReduce(gone), 'DISPOSED', null, 'disposed tensor');
  });

  check('worker threads: a worker communicates; a worker ended mid-collective does not crash or desync', async () => {
    // 1. A worker's own communicator over the same MPI.
    const sum = await new Promise((resolve, reject) => {
      const w = new Worker(__filename, { workerData: { mode: 'sum' } });
      w.once('message', resolve);
      w.once('error', reject);
    });
    expect(sum === (P * (P - 1)) / 2, `worker allReduce gave ${sum}`);
    // 2. Workers that submit a collective and are terminated around the time it completes
    // (the last rank joins 0..55 ms late, so the completion lands before, during or after
    // the other ranks' terminate()): the collective still runs (the comm thread owns its
    // buffers), its result is dropped, and the ranks stay in step. Round after round, as
    // the race it guards against (a completion queued into a terminating worker) is narrow.
    for (let round = 0; round < 12; round++) {
      const w = new Worker(__filename, { workerData: { mode: 'orphan', delay: R === P - 1 ? 5 * round : 0 } });
      await new Promise((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
      });
      await w.terminate();
      const x = new Float64Array([round]);
      await comm.allReduce(x, 'sum');
      expect(x[0] === round * P, `after orphaned collective ${round}: ${x[0]}`);
    }
  });

  check('bandwidth helper', async () => {
    const rep = await dist.measureBandwidth(comm, { bytes: 1 << 16, iterations: 3, warmup: 1 });
    expect(rep.size === P && rep.iterations === 3 && rep.allReduce.bytes === 1 << 16, JSON.stringify(rep));
    expect(rep.allReduce.seconds > 0 && rep.allGather.seconds > 0, 'positive times');
    expect(rep.allReduce.minSeconds <= rep.allReduce.seconds && rep.allReduce.seconds <= rep.allReduce.maxSeconds, 'min <= median <= max');
    expect(Math.abs(rep.allReduce.algBandwidth - rep.allReduce.bytes / rep.allReduce.seconds) <= 1e-9 * rep.allReduce.algBandwidth, 'alg bandwidth');
    const all = await comm.allGather(new Float64Array([rep.allReduce.seconds, rep.allGather.seconds]));
    for (const r of ranks) expect(all[2 * r] === rep.allReduce.seconds && all[2 * r + 1] === rep.allGather.seconds, `rank ${r} reports other times`);
    await expectReject(dist.measureBandwidth(comm, /** @type {any} */ ({ bytes: 3 })), 'INVALID_OPTION', /bytes/, 'too few bytes');
  });

  for (const [name, fn] of checks) {
    try {
      await fn();
    } catch (e) {
      const err = /** @type {any} */ (e);
      comm.abort(1, `check "${name}" failed: ${err instanceof CheckFailed ? err.message : err && err.stack}`);
    }
    console.log(`ok ${name}`);
  }

  await comm.finalize();
  expect(comm.finalized, 'finalized');
  await expectReject(comm.allReduce(new Float32Array(1)), 'DISPOSED', /finalized/, 'after finalize');
  await expectReject(dist.init(), 'DISPOSED', /finalized/, 'init after finalize');
  console.log(`ok finalize`);
  console.log(`done rank ${R} of ${P}`);
}

async function workerMain() {
  const comm = await dist.init();
  if (workerData.mode === 'sum') {
    const x = new Float64Array([comm.rank]);
    await comm.allReduce(x, 'sum');
    parentPort.postMessage(x[0]);
  } else {
    if (workerData.delay) await sleep(workerData.delay);
    void comm.allReduce(new Float64Array(1 << 16).fill(1), 'sum');
    parentPort.postMessage('submitted'); // the parent terminates this worker now
    await sleep(60000);
  }
}

/**
 * Fault scenarios: rank 1 fails while rank 0 waits in a collective that rank 1 will never
 * join. throw / reject: an uncaught exception / unhandled rejection; exit-code:
 * process.exit(3) before finalize; kill-target: rank 1 writes its pid to
 * $KRADAGRAD_PID_FILE and both keep all-reducing until the test kill -9s it;
 * throw-no-abort: as throw with abortOnError: false (what mpirun does on its own).
 */
async function faultScenario(which) {
  const comm = await dist.init({ abortOnError: which !== 'throw-no-abort' });
  const x = new Float64Array([1]);
  await comm.allReduce(x, 'sum');
  console.log(`rank ${comm.rank} ready`);
  if (which === 'kill-target') {
    if (comm.rank === 1) require('fs').writeFileSync(process.env.KRADAGRAD_PID_FILE, String(process.pid));
    for (;;) {
      await comm.allReduce(x, 'sum');
      await sleep(5);
    }
  }
  if (comm.rank === 1) {
    await sleep(200);
    if (which === 'throw' || which === 'throw-no-abort') setTimeout(() => { throw new Error('boom on purpose'); }, 0);
    else if (which === 'reject') void Promise.reject(new Error('rejected on purpose'));
    else if (which === 'exit-code') process.exit(3);
    await sleep(60000);
  } else {
    await comm.allReduce(x, 'sum'); // rank 1 never joins
    console.log('UNREACHABLE: the collective completed without rank 1');
  }
}

async function main() {
  const scenario = process.argv[2] || 'suite';
  if (scenario === 'suite') return suite(await dist.init());
  if (scenario === 'clean-exit') {
    // No finalize(): the exit hook finalizes, and mpirun reports success.
    const comm = await dist.init();
    const x = new Int32Array([1]);
    await comm.allReduce(x, 'sum');
    console.log(`rank ${comm.rank} sum ${x[0]}`);
    return;
  }
  if (scenario === 'singleton') {
    const comm = await dist.init();
    const x = Float32Array.from([1.5, -2]);
    await comm.allReduce(x, 'mean');
    const g = await comm.allGather(Float64Array.from([3]));
    await comm.barrier();
    console.log(JSON.stringify({ rank: comm.rank, size: comm.size, localRank: comm.localRank, threadLevel: comm.threadLevel, mean: Array.from(x), gather: Array.from(g) }));
    await comm.finalize();
    return;
  }
  return faultScenario(scenario);
}

if (isMainThread) {
  main().catch((e) => {
    console.error(e && e.stack ? e.stack : e);
    process.exit(1);
  });
} else {
  workerMain().catch((e) => {
    throw e;
  });
}
