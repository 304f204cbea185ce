#!/usr/bin/env node
// @ts-check
'use strict';
// The NCCL device path of kradagrad/distributed, run by every rank (plain JS on dist/lib,
// as mpirun starts plain node processes).
//
//   node nccl_ranks.js emulated            (here, no GPU: test/distributed/nccl.test.ts at np 1, 2, 3)
//       The sharded optimizers' device path (stageForDevice, the grouped gradient
//       all-reduce, exchangeDevice's broadcasts into the inbox tensors) on the CPU backend,
//       with NCCL replaced by a stand-in that runs each NCCL op of a group through the MPI
//       addon on host copies. The real NcclChannel code (header agreement, op lists) runs;
//       only ncclRun is emulated. Every step must be bitwise equal to the host path's.
//   node nccl_ranks.js gpu [--json FILE] [--self-mpi]   (the GPU machine: scripts/gpu-check-nccl.sh)
//       comm.initNccl() for real; allReduce (sum, mean) / allGather (equal and unequal
//       lengths) / broadcast of CUDA tensors against the host results; coded errors of the
//       device path; then the sharded optimizers on CUDA with NCCL against the same
//       optimizers on CUDA through host memory (built before initNccl): bitwise equal.
//       --self-mpi: a world of one without MPI (a stand-in for the MPI addon; the GPU
//       machine may have no OpenMPI); the NCCL side is real.
//
// Gradients are multiples of 1/64 in [-1, 1], so that the sum over up to 8 ranks is exact
// in any order and the mean (one rounding) is the same whatever the reduction order of
// MPI or NCCL: the paths must then agree bit for bit. A failed check aborts the job naming
// it; every rank prints `ok <check>` per check and `done rank r of P`.
const fs = require('fs');
const path = require('path');

const libDir = process.env.KRADAGRAD_LIB_DIR || path.resolve(__dirname, '..', '..', 'dist', 'lib');
const krad = require(libDir);
const dist = require(path.join(libDir, 'distributed'));
const { NcclChannel } = require(path.join(libDir, 'distributed', 'nccl'));
const { Communicator } = require(path.join(libDir, 'distributed', 'communicator'));

const args = process.argv.slice(2);
const scenario = args[0];
const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : undefined;
const selfMpi = args.includes('--self-mpi');
/** @type {any} */
const report = { scenario, checks: [], timings: {} };

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
/** Multiples of 1/64 in [-1, 1]: exact sums over the ranks. */
function dyadic(n, seed, Ctor) {
  const r = rng(seed);
  const a = new Ctor(n);
  for (let i = 0; i < n; i++) a[i] = Math.round((r() * 2 - 1) * 64) / 64;
  return a;
}

class CheckFailed extends Error {}
function expect(cond, msg) {
  if (!cond) throw new CheckFailed(msg);
}
let comm;
async function check(name, fn) {
  try {
    const t0 = Date.now();
    await fn();
    report.checks.push({ name, ok: true, ms: Date.now() - t0 });
    console.log(`ok ${name}`);
  } catch (e) {
    report.checks.push({ name, ok: false, error: String(/** @type {any} */ (e)?.stack ?? e) });
    console.log(`FAILED ${name}: ${/** @type {any} */ (e)?.stack ?? e}`);
    writeReport();
    if (comm && comm.size > 1) comm.abort(3, `check failed: ${name}`);
    process.exit(3);
  }
}
async function expectReject(p, code, re, what) {
  try {
    await p;
  } catch (e) {
    const err = /** @type {any} */ (e);
    expect(err instanceof krad.KradagradError, `${what}: not a KradagradError: ${err && err.stack}`);
    expect(err.code === code, `${what}: code ${err.code}, expected ${code}: ${err.message}`);
    expect(re.test(err.message), `${what}: message ${JSON.stringify(err.message)} does not match ${re}`);
    return;
  }
  throw new CheckFailed(`${what}: did not reject`);
}
function writeReport() {
  if (jsonOut && (!comm || comm.rank === 0)) fs.writeFileSync(jsonOut, JSON.stringify(report, null, 2));
}
const same = (a, b) => a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

// ---- NCCL emulated through MPI (the CPU backend stands in for the GPU) ---------------------

/** An NcclChannel whose ncclRun runs each op through the MPI addon on host copies. */
function emulatedChannel(c) {
  const cpu = krad.getBackend('cpu');
  const groups = [];
  const native = {
    async ncclRun(_h, ops) {
      groups.push(ops.map((o) => o.kind));
      for (const o of ops) {
        if (o.kind === 'allReduce') {
          const h = (o.send ?? o.recv).read();
          await c.native.allReduce(h, o.op ?? 'sum');
          o.recv.write(h);
        } else if (o.kind === 'broadcast') {
          const full = o.recv.read();
          const off = o.offset ?? 0;
          const part = full.subarray(off, off + (o.count ?? full.length - off));
          if (o.send && o.root === c.rank) part.set(o.send.read());
          await c.native.broadcast(part, o.root);
          o.recv.write(full);
        } else {
          o.recv.write(await c.native.allGather(o.send.read()));
        }
      }
    },
    async ncclFree() {},
  };
  return { channel: new NcclChannel(c, native, {}, { version: 'emulated', device: 0, backend: cpu, library: 'none' }), groups };
}

// ---- the sharded step: device path vs host path --------------------------------------------

const SHAPES = { bias: [10], w2: [12, 6], w3: [4, 6, 5], big: [20, 9] };
const NAMES = Object.keys(SHAPES);
const size = (s) => s.reduce((a, b) => a * b, 1);
const KINDS = [
  { name: 'KradagradStar fp32', Ctor: 'KradagradStar', dtype: 'float32', opts: {} },
  { name: 'KradagradStar fp64', Ctor: 'KradagradStar', dtype: 'float64', opts: { statisticsDtype: 'float64' } },
  { name: 'Kradagrad fp32', Ctor: 'Kradagrad', dtype: 'float32', opts: { lr: 0.003 } },
  { name: 'Shampoo fp32 (adam graft, start 4)', Ctor: 'Shampoo', dtype: 'float32', opts: { grafting: 'adam', startStep: 4 } },
  { name: 'Shampoo fp64', Ctor: 'Shampoo', dtype: 'float64', opts: { statisticsDtype: 'float64', nesterov: true } },
  { name: 'Adam', Ctor: 'Adam', dtype: 'float32', opts: {} },
];

/** Host-mode parameters (the same on every rank). */
function hostParams(dtype) {
  const Ctor = dtype === 'float32' ? Float32Array : Float64Array;
  return Object.fromEntries(NAMES.map((n, i) => [n, { data: dyadic(size(SHAPES[n]), 1000 + i, Ctor), shape: SHAPES[n] }]));
}
/** Device-mode parameters on `backend` (same values). */
function tensorParams(backend, dtype) {
  const hp = hostParams(dtype);
  return Object.fromEntries(NAMES.map((n) => [n, backend.fromArray(hp[n].data, SHAPES[n])]));
}
function gradsFor(dtype, step, rank, skip) {
  const Ctor = dtype === 'float32' ? Float32Array : Float64Array;
  const g = {};
  NAMES.forEach((n, i) => {
    if (n !== skip) g[n] = dyadic(size(SHAPES[n]), 7919 * step + 131 * rank + i, Ctor);
  });
  return g;
}
const values = (params) => NAMES.map((n) => (params[n].data ? params[n].data : params[n].read()));

/**
 * Steps an optimizer on the host path and one on the device path with the same gradients:
 * parameters bitwise equal after every step. `asHost` / `asDevice` build each (the path is
 * chosen at construction: whether the communicator has an NCCL channel for the backend).
 * Steps 3 and 7 give the device path its gradients as tensors; step 5 leaves 'bias' out on
 * every rank (missingGradient 'skip'): zero-filled staging on the device path.
 */
async function compare(kind, backend, tensorMode, asHost, asDevice, steps) {
  const common = { backend, lr: 0.01, blockSize: 8, mergeDims: false, rootFrequency: 3, momentum: 0.9, missingGradient: 'skip' };
  const opts = { ...(kind.Ctor === 'Adam' ? { backend, lr: 0.01, missingGradient: 'skip' } : common), ...kind.opts, distributed: comm };
  const Ctor = krad[kind.Ctor];
  const pH = tensorMode ? tensorParams(backend, kind.dtype) : hostParams(kind.dtype);
  const pD = tensorMode ? tensorParams(backend, kind.dtype) : hostParams(kind.dtype);
  const H = asHost(() => new Ctor(pH, opts));
  const D = asDevice(() => new Ctor(pD, opts));
  expect(!H.dp?.device && !!D.dp?.device, `${kind.name}: the host optimizer must take the host path and the other the device path`);
  for (let t = 1; t <= steps; t++) {
    const skip = t === 5 ? 'bias' : undefined;
    const gh = gradsFor(kind.dtype, t, comm.rank, skip);
    const gd = {};
    for (const n of Object.keys(gh)) gd[n] = t === 3 || t === 7 || tensorMode ? backend.fromArray(gh[n], [gh[n].length]) : gh[n].slice();
    await H.stepAsync(tensorMode ? gd : gh);
    await D.stepAsync(gd);
    const a = values(pH);
    const b = values(pD);
    NAMES.forEach((n, i) => expect(same(a[i], b[i]), `${kind.name} step ${t}: '${n}' differs between the host path and the device path`));
  }
  const prof = D.distributedProfile;
  expect(prof && prof.allReduceBytes > 0, `${kind.name}: the device path all-reduced nothing`);
  H.dispose?.();
  D.dispose?.();
  return prof;
}

async function emulated() {
  comm = await dist.init();
  const { channel, groups } = emulatedChannel(comm);
  const withChannel = (make) => {
    comm.ncclFor = () => channel; // what initNccl would provide, for the constructor only
    try {
      return make();
    } finally {
      delete comm.ncclFor;
    }
  };
  const plain = (make) => make();
  const cpu = krad.getBackend('cpu');
  for (const kind of KINDS) {
    await check(`device path = host path, ${kind.name}, 8 steps (np ${comm.size})`, async () => {
      const before = groups.length;
      await compare(kind, cpu, false, plain, withChannel, 8);
      const mine = groups.slice(before);
      expect(mine.length >= 8, `${kind.name}: ${mine.length} NCCL groups for 8 steps`);
      expect(mine.filter((g) => g[0] === 'allReduce').length === 8, `${kind.name}: one gradient all-reduce group per step expected`);
      if (kind.Ctor !== 'Adam' && comm.size > 1) expect(mine.some((g) => g[0] === 'broadcast'), `${kind.name}: the directions were never exchanged`);
    });
  }
  await check(`device path = host path, device-mode parameters (np ${comm.size})`, async () => {
    await compare(KINDS[0], cpu, true, plain, withChannel, 6);
  });
  await check('device collectives (emulated): allReduce, allGather (unequal lengths), broadcast', async () => {
    const P = comm.size;
    const x = cpu.fromArray(Float64Array.from({ length: 5 }, (_, i) => comm.rank + i / 4), [5]);
    await channel.allReduce(x, 'sum');
    const want = Float64Array.from({ length: 5 }, (_, i) => (P * (P - 1)) / 2 + (P * i) / 4);
    expect(same(x.read(), want), `allReduce sum: ${x.read()} != ${want}`);
    const part = cpu.fromArray(Float32Array.from({ length: comm.rank + 1 }, () => comm.rank), [comm.rank + 1]);
    const g = await channel.allGather(part);
    const wantG = Float32Array.from(Array.from({ length: P }, (_, r) => Array(r + 1).fill(r)).flat());
    expect(same(g.read().subarray(0, wantG.length), wantG), `allGather: ${g.read()} != ${wantG}`);
    const b = cpu.fromArray(Float32Array.of(comm.rank, 7), [2]);
    await channel.broadcast(b, P - 1);
    expect(same(b.read(), Float32Array.of(P - 1, 7)), `broadcast: ${b.read()}`);
    if (P > 1) {
      // Ranks that disagree get the same coded error, and nothing reaches NCCL.
      const n = groups.length;
      const y = cpu.tensor('float32', [comm.rank === 0 ? 3 : 4]);
      await expectReject(channel.allReduce(y, 'sum'), 'SHAPE_MISMATCH', /different lengths/, 'allReduce of different lengths');
      const z = cpu.tensor(comm.rank === 0 ? 'float32' : 'float64', [3]);
      await expectReject(channel.broadcast(z, 0), 'DTYPE_MISMATCH', /different element types/, 'broadcast of different dtypes');
      await expectReject(channel.allReduce(cpu.tensor('float32', [3]), comm.rank === 0 ? 'sum' : 'max'), 'COLLECTIVE_MISMATCH', /different ops/, 'different ops');
      expect(groups.length === n, 'a mismatched call reached ncclRun');
    }
  });
  await comm.finalize();
  console.log(`done rank ${comm.rank} of ${comm.size}`);
}

// ---- on the GPU -------------------------------------------------------------------------

/** A world of one without MPI (the GPU machine may have no OpenMPI): what the MPI addon would do at size 1. */
function selfCommunicator() {
  const native = {
    flavor: 'mpi',
    abiVersion: 1,
    setErrorClass() {},
    allocate: (dtype, n) => new { float32: Float32Array, float64: Float64Array, int32: Int32Array, uint8: Uint8Array }[dtype](n),
    isAllocated: () => false,
    async allReduce(x, _op, into) {
      if (into && into !== x) into.set(x);
      return into ?? x;
    },
    async allGather(x, into) {
      if (into) {
        into.set(x);
        return into;
      }
      return x.slice();
    },
    async broadcast(x) {
      return x;
    },
    async barrier() {},
    async finalize() {},
    finalizeSync() {},
    abort(code) {
      process.exit(code);
    },
    state: () => ({ active: false, finalizing: false }),
  };
  return new Communicator(native, { rank: 0, size: 1, localRank: 0, localSize: 1, threadLevel: 'funneled', threadMain: true, library: 'self (no MPI)', processor: 'localhost' });
}

async function gpu() {
  comm = selfMpi ? selfCommunicator() : await dist.init();
  report.world = { rank: comm.rank, size: comm.size, localRank: comm.localRank, library: comm.library, selfMpi };
  // initNccl first: it creates the process's CUDA backend on this rank's device.
  let info;
  let cuda;
  await check('initNccl', async () => {
    const t0 = performance.now();
    info = await comm.initNccl();
    report.timings.initNcclMs = performance.now() - t0;
    report.nccl = { version: info.version, device: info.device, library: info.library };
    expect(comm.nccl && comm.nccl.device === info.device, 'comm.nccl');
    cuda = info.backend;
    report.device = cuda.device;
    expect(cuda.name === 'cuda' && krad.getBackend('cuda') === cuda, 'initNccl must use the process CUDA backend');
  });
  const P = comm.size;
  await check('device allReduce sum / mean = host result (float32, float64)', async () => {
    for (const [Ctor, dt] of [[Float32Array, 'float32'], [Float64Array, 'float64']]) {
      const h = dyadic(1 << 16, 11 + comm.rank, Ctor);
      const x = cuda.fromArray(h, [h.length]);
      const sum = new Ctor(h.length);
      for (let r = 0; r < P; r++) {
        const hr = dyadic(1 << 16, 11 + r, Ctor);
        for (let i = 0; i < sum.length; i++) sum[i] += hr[i];
      }
      await comm.allReduce(x, 'sum');
      expect(same(x.read(), sum), `${dt} sum differs from the host sum`);
      const y = cuda.fromArray(h, [h.length]);
      const out = cuda.tensor(dt, [h.length]);
      await comm.allReduce(y, 'mean', out);
      const mean = sum.map((v) => v / P);
      expect(same(out.read(), mean), `${dt} mean differs from the host mean`);
      expect(same(y.read(), h), `${dt} mean into another tensor changed the input`);
    }
  });
  await check('device allGather (equal and unequal lengths) and broadcast = host result', async () => {
    const mine = Float32Array.from({ length: 1000 }, (_, i) => comm.rank * 1000 + i);
    const g = await comm.allGather(cuda.fromArray(mine, [1000]));
    const want = Float32Array.from({ length: 1000 * P }, (_, i) => i);
    expect(same(g.read(), want), 'allGather (equal lengths)');
    const part = Float64Array.from({ length: comm.rank + 2 }, (_, i) => comm.rank + i / 8);
    const g2 = await comm.allGather(cuda.fromArray(part, [part.length]));
    const want2 = Float64Array.from(Array.from({ length: P }, (_, r) => Array.from({ length: r + 2 }, (_, i) => r + i / 8)).flat());
    expect(same(g2.read(), want2), 'allGather (unequal lengths)');
    const b = cuda.fromArray(Float32Array.of(comm.rank, 1, 2), [3]);
    await comm.broadcast(b, P - 1);
    expect(same(b.read(), Float32Array.of(P - 1, 1, 2)), 'broadcast');
  });
  await check('device collectives: coded errors', async () => {
    const cpuT = krad.getBackend('cpu').fromArray(Float32Array.of(1, 2), [2]);
    // A CPU tensor goes through host memory even with NCCL (no error, the host path).
    await comm.allReduce(cpuT, 'sum');
    const a = cuda.tensor('float32', [4]);
    const b = cuda.tensor('float64', [4]);
    await expectReject(comm.allReduce(a, 'sum', b), 'DTYPE_MISMATCH', /dtype/, 'allReduce into a float64 tensor');
    await expectReject(comm.allGather(a, cuda.tensor('float32', [4 * P + 1])), 'SHAPE_MISMATCH', /elements/, 'allGather into the wrong length');
  });
  // The sharded optimizers on CUDA: the NCCL path against the host path (the constructor of
  // the host one sees no NCCL channel).
  const hostPath = (make) => {
    comm.ncclFor = () => undefined;
    try {
      return make();
    } finally {
      delete comm.ncclFor;
    }
  };
  for (const kind of KINDS) {
    await check(`sharded step on CUDA: NCCL path = host path, ${kind.name}, 8 steps (np ${P})`, async () => {
      const t0 = performance.now();
      const prof = await compare(kind, cuda, false, hostPath, (make) => make(), 8);
      report.timings[kind.name] = { ms: performance.now() - t0, lastDeviceStep: prof };
    });
  }
  await check(`sharded step on CUDA: NCCL path = host path, device-mode parameters (np ${P})`, async () => {
    await compare(KINDS[0], cuda, true, hostPath, (make) => make(), 6);
  });
  writeReport();
  await comm.finalize();
  console.log(`done rank ${comm.rank} of ${comm.size}`);
}

const run = scenario === 'emulated' ? emulated : scenario === 'gpu' ? gpu : null;
if (!run) {
  console.error('usage: node nccl_ranks.js emulated | gpu [--json FILE] [--self-mpi]');
  process.exit(2);
}
run().catch((e) => {
  console.log(`FAILED ${scenario}: ${e && e.stack ? e.stack : e}`);
  writeReport();
  if (comm && comm.size > 1) comm.abort(4, String(e && e.message));
  process.exit(4);
});
