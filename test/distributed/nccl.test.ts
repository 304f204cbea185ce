/**
 * NCCL on device buffers (Communicator.initNccl), as far as a machine without a GPU can
 * check it:
 *  - the build: kradagrad_nccl.so links libnccl (its dynamic dependencies and the NCCL
 *    symbols it imports) and exports the C interface; the CUDA addon itself does not link
 *    libnccl, and loading it loads no NCCL (only ncclStatus does, on demand);
 *  - the coded errors: NCCL_UNAVAILABLE naming the fix without kradagrad_nccl.so, without
 *    the CUDA addon, and without a GPU; INVALID_OPTION for bad options;
 *  - the TypeScript of the device path with NCCL replaced (no GPU): the header agreement
 *    (mismatched ranks get the same coded error and nothing reaches NCCL), the op lists the
 *    collectives build, and the sharded optimizers' device path bitwise equal to the host
 *    path at np 1, 2, 3 (test/distributed/nccl_ranks.js emulated, NCCL ops run over MPI on
 *    the CPU backend).
 * The real collectives on a GPU: scripts/gpu-check-nccl.sh (nccl_ranks.js gpu).
 *
 * The build checks need build-cuda/Release/kradagrad_nccl.so (`node scripts/build-cuda.js`);
 * skipped without it, saying so, unless KRADAGRAD_REQUIRE_NCCL=1 (CI). The MPI parts need
 * OpenMPI, as the other distributed tests (KRADAGRAD_REQUIRE_MPI=1 in CI).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { KradagradError, getBackend, type Tensor } from '../../lib';
import type { Communicator } from '../../lib/distributed/communicator';
import { NcclChannel, checkNcclOptions, defaultDevice, type NativeNccl, type NativeNcclOp } from '../../lib/distributed/nccl';

const root = path.resolve(__dirname, '..', '..');
const ncclLib = path.join(root, 'build-cuda', 'Release', 'kradagrad_nccl.so');
const cudaAddon = path.join(root, 'build-cuda', 'Release', 'kradagrad_cuda.node');
const ranksJs = path.join(__dirname, 'nccl_ranks.js');

function which(prog: string): string | null {
  for (const d of (process.env.PATH || '').split(path.delimiter)) {
    if (d && fs.existsSync(path.join(d, prog))) return path.join(d, prog);
  }
  return null;
}

async function rejection(p: Promise<unknown> | (() => unknown)): Promise<KradagradError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    return e as KradagradError;
  }
  throw new Error('did not reject');
}

describe('NCCL options', () => {
  test('initNccl / init({ nccl }) options are validated', async () => {
    expect(checkNcclOptions(undefined, 'x')).toEqual({});
    expect(checkNcclOptions(true, 'x')).toEqual({});
    expect(checkNcclOptions({ device: 3 }, 'x')).toEqual({ device: 3 });
    for (const [bad, re] of [
      ['yes', /Expected an object \(or true\) for x but received string "yes"/],
      [null, /received null/],
      [[1], /received an array/],
      [{ device: -1 }, /integer in \[0, 65535\] for x.device but received number -1/],
      [{ device: 1.5 }, /x.device/],
      [{ device: '0' }, /x.device but received string/],
      [{ devcie: 0 }, /Unknown option 'devcie' for x; known options: device/],
    ] as [unknown, RegExp][]) {
      const e = await rejection(() => checkNcclOptions(bad, 'x'));
      expect(e).toBeInstanceOf(KradagradError);
      expect(e.code).toBe('INVALID_OPTION');
      expect(e.message).toMatch(re);
    }
    // init() rejects a bad nccl option before it loads or initialises MPI.
    const { init } = await import('../../lib/distributed');
    const e = await rejection(init({ nccl: 5 as never }));
    expect([e.code, e.message]).toEqual(['INVALID_OPTION', 'Expected an object (or true) for init() option nccl but received number 5']);
  });

  test('the default device: one per rank on its node, unless the launcher or KRADAGRAD_CUDA_DEVICE fixed it', () => {
    expect(defaultDevice(3, {})).toBe(3);
    expect(defaultDevice(3, { CUDA_VISIBLE_DEVICES: '5' })).toBe(0);
    expect(defaultDevice(3, { CUDA_VISIBLE_DEVICES: '0,1,2,3' })).toBe(3);
    expect(defaultDevice(3, { KRADAGRAD_CUDA_DEVICE: '1' })).toBe(1);
    expect(defaultDevice(2, { KRADAGRAD_CUDA_DEVICE: 'x' })).toBe(2);
  });
});

/**
 * An NcclChannel on the CPU backend whose "other rank" is simulated: the header all-gather
 * returns this rank's header followed by `other`'s; ncclRun only records the ops.
 */
function fakeChannel(other: (mine: Float64Array) => Float64Array, rank = 0) {
  const cpu = getBackend('cpu');
  const runs: NativeNcclOp[][] = [];
  const mpi = {
    allGather: async (x: Float64Array) => {
      const o = other(x);
      return rank === 0 ? Float64Array.from([...x, ...o]) : Float64Array.from([...o, ...x]);
    },
  };
  const comm = { size: 2, rank, native: mpi } as unknown as Communicator;
  const native = {
    ncclRun: async (_h: object, ops: NativeNcclOp[]) => {
      runs.push(ops);
    },
    ncclFree: async () => undefined,
  } as unknown as NativeNccl;
  const ch = new NcclChannel(comm, native, {}, { version: 'test', device: 0, backend: cpu, library: 'none' });
  return { ch, runs, cpu };
}

describe('the device collectives (NCCL replaced by a recorder)', () => {
  test('ranks that disagree get the same coded error and nothing reaches NCCL', async () => {
    const cases: [(h: Float64Array) => Float64Array, (c: NcclChannel, t: Tensor) => Promise<unknown>, string, RegExp][] = [
      [(h) => Float64Array.of(h[0], h[1], h[2] + 1, h[3], h[4]), (c, t) => c.allReduce(t, 'sum'), 'SHAPE_MISMATCH', /different lengths: rank 0 called allReduce\(float32\[6\]\), rank 1 called allReduce\(float32\[7\]\)/],
      [(h) => Float64Array.of(h[0], 2, h[2], h[3], h[4]), (c, t) => c.allReduce(t, 'sum'), 'DTYPE_MISMATCH', /different element types/],
      [(h) => Float64Array.of(h[0], h[1], h[2], 3, h[4]), (c, t) => c.allReduce(t, 'mean'), 'COLLECTIVE_MISMATCH', /different ops/],
      [(h) => Float64Array.of(h[0], h[1], h[2], 1, h[4]), (c, t) => c.broadcast(t, 0), 'COLLECTIVE_MISMATCH', /different roots/],
      [(h) => Float64Array.of(3, h[1], h[2], h[3], h[4]), (c, t) => c.allReduce(t, 'sum'), 'COLLECTIVE_MISMATCH', /different collectives/],
      [(h) => Float64Array.of(h[0], h[1], h[2], h[3], h[4] + 1), (c, t) => c.allReduceMany([t], 'mean', 42), 'SHAPE_MISMATCH', /different layouts/],
    ];
    for (const [other, call, code, re] of cases) {
      const { ch, runs, cpu } = fakeChannel(other);
      const e = await rejection(call(ch, cpu.tensor('float32', [6])));
      expect([e.code, e.message]).toEqual([code, expect.stringMatching(re)]);
      expect(runs).toEqual([]);
    }
  });

  test('matching ranks: the op lists NCCL gets', async () => {
    const { ch, runs, cpu } = fakeChannel((h) => h);
    const a = cpu.tensor('float32', [6]);
    const b = cpu.tensor('float64', [3]);
    await ch.allReduce(a, 'mean');
    await ch.allReduceMany([a, b], 'mean', 7);
    await ch.broadcast(b, 1);
    await ch.broadcastMany([{ root: 0, tensor: a }, { root: 1, tensor: b }], 7);
    const g = await ch.allGather(a); // equal lengths (the other rank's header is ours)
    expect(g.size).toBe(12);
    expect(runs.map((r) => r.map((o) => [o.kind, o.op ?? null, o.root ?? null]))).toEqual([
      [['allReduce', 'mean', null]],
      [['allReduce', 'mean', null], ['allReduce', 'mean', null]],
      [['broadcast', null, 1]],
      [['broadcast', null, 0], ['broadcast', null, 1]],
      [['allGather', null, null]],
    ]);
    expect(runs[1][0].recv).toBe(a.native);
    expect(runs[1][1].recv).toBe(b.native);
    expect(runs[3][1].recv).toBe(b.native);
  });

  test('allGather of unequal lengths: one broadcast per rank into its place', async () => {
    // Rank 1 of 2 contributes 4 elements; rank 0 (this one) 6.
    const { ch, runs, cpu } = fakeChannel((h) => Float64Array.of(h[0], h[1], 4, h[3], h[4]));
    const x = cpu.tensor('float32', [6]);
    const out = await ch.allGather(x);
    expect(out.size).toBe(10);
    expect(runs).toHaveLength(1);
    expect(runs[0].map((o) => [o.kind, o.root, o.offset, o.count, o.send === x.native])).toEqual([
      ['broadcast', 0, 0, 6, true],
      ['broadcast', 1, 6, 4, false],
    ]);
    const e = await rejection(ch.allGather(x, cpu.tensor('float32', [9])));
    expect([e.code, e.message]).toEqual(['SHAPE_MISMATCH', 'allGather: into has 9 elements but the ranks contribute 10 in all (per rank: 6, 4)']);
    await ch.free();
    expect((await rejection(ch.allReduce(x, 'sum'))).code).toBe('DISPOSED');
  });
});

const haveBuild = fs.existsSync(ncclLib) && fs.existsSync(cudaAddon);
const requireNccl = process.env.KRADAGRAD_REQUIRE_NCCL === '1';
const buildSuite = haveBuild ? describe : describe.skip;
if (!haveBuild) {
  // eslint-disable-next-line no-console
  console.log(`NCCL build checks skipped: ${ncclLib} or ${cudaAddon} is not built (node scripts/build-cuda.js)`);
  if (requireNccl) test('kradagrad_nccl.so is required here (KRADAGRAD_REQUIRE_NCCL=1)', () => expect(fs.existsSync(ncclLib)).toBe(true));
}

/** Runs `code` in a fresh node (the NCCL loader keeps its first outcome per process); returns its JSON output. */
function child(code: string, env: Record<string, string> = {}): Record<string, unknown> {
  const r = spawnSync(process.execPath, ['-e', code], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, KRADAGRAD_CUDA_ADDON: cudaAddon, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', ...env },
    timeout: 60000,
  });
  const line = r.stdout.split('\n').filter((l) => l.startsWith('{')).pop();
  if (r.status !== 0 || !line) throw new Error(`child exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  return JSON.parse(line) as Record<string, unknown>;
}

buildSuite('the NCCL build (compile and link; no GPU needed)', () => {
  const readelf = which('readelf');
  const nm = which('nm');

  test('kradagrad_nccl.so links libnccl and the CUDA runtime, and exports the C interface', () => {
    expect(readelf).not.toBeNull();
    const dyn = spawnSync(readelf!, ['-d', ncclLib], { encoding: 'utf8' }).stdout;
    expect(dyn).toMatch(/\(NEEDED\)\s+Shared library: \[libnccl\.so\.2\]/);
    expect(dyn).toMatch(/\(NEEDED\)\s+Shared library: \[libcudart\.so\.13\]/);
    const syms = spawnSync(nm!, ['-D', ncclLib], { encoding: 'utf8' }).stdout;
    for (const s of ['ncclCommInitRank', 'ncclAllReduce', 'ncclBroadcast', 'ncclAllGather', 'ncclGroupStart', 'ncclGroupEnd', 'ncclCommGetAsyncError', 'ncclCommAbort']) {
      expect(syms).toMatch(new RegExp(`\\bU ${s}\\b`));
    }
    for (const s of ['krad_nccl_api_version', 'krad_nccl_version', 'krad_nccl_unique_id', 'krad_nccl_comm_init', 'krad_nccl_run', 'krad_nccl_check', 'krad_nccl_comm_free']) {
      expect(syms).toMatch(new RegExp(`\\bT ${s}\\b`));
    }
  });

  test('the CUDA addon does not link NCCL: it loads kradagrad_nccl.so only when asked', () => {
    const dyn = spawnSync(readelf!, ['-d', cudaAddon], { encoding: 'utf8' }).stdout;
    expect(dyn).toMatch(/libcudart\.so/);
    const needed = dyn.split('\n').filter((l) => /\(NEEDED\)/.test(l));
    expect(needed.length).toBeGreaterThan(3);
    expect(needed.join('\n')).not.toMatch(/nccl/);
    const r = child(`
      const fs = require('fs');
      const maps = () => fs.readFileSync('/proc/self/maps', 'utf8');
      const a = require(process.env.KRADAGRAD_CUDA_ADDON);
      const before = /libnccl/.test(maps());
      const st = a.ncclStatus();
      const id = a.ncclUniqueId();
      console.log(JSON.stringify({ before, after: /libnccl/.test(maps()), st, idLength: id.length, idNonZero: id.some((b) => b !== 0) }));
    `);
    expect(r.before).toBe(false);
    expect(r.after).toBe(true);
    const st = r.st as { available: boolean; version: number; path: string };
    expect(st.available).toBe(true);
    expect(st.path).toBe(ncclLib);
    expect(st.version).toBeGreaterThanOrEqual(22707); // the pinned 2.27.7, or a newer libnccl.so.2
    expect(r.idLength).toBe(128);
    expect(r.idNonZero).toBe(true);
  });

  const probe = (env: Record<string, string>) =>
    child(
      `
      const { probeNccl } = require('./dist/lib/distributed/nccl');
      try { probeNccl(0); console.log(JSON.stringify({ ok: true })); }
      catch (e) { console.log(JSON.stringify({ ok: false, code: e.code, message: e.message, cls: e.constructor.name })); }
    `,
      env,
    );

  test('without kradagrad_nccl.so: NCCL_UNAVAILABLE naming the library and the fix', () => {
    const r = probe({ KRADAGRAD_NCCL_LIB: '/nonexistent/kradagrad_nccl.so' });
    expect(r).toMatchObject({ ok: false, code: 'NCCL_UNAVAILABLE', cls: 'KradagradError' });
    expect(r.message).toMatch(/KRADAGRAD_NCCL_LIB=\/nonexistent\/kradagrad_nccl\.so does not load/);
    expect(r.message).toMatch(/npm run build:cuda/);
  });

  test('a file that is not kradagrad_nccl.so: NCCL_UNAVAILABLE, not a crash', () => {
    const r = probe({ KRADAGRAD_NCCL_LIB: cudaAddon });
    expect(r).toMatchObject({ ok: false, code: 'NCCL_UNAVAILABLE' });
    expect(r.message).toMatch(/is not a kradagrad_nccl library of interface version 1/);
  });

  test('without the CUDA addon: NCCL_UNAVAILABLE naming it', () => {
    const r = probe({ KRADAGRAD_CUDA_ADDON: '/nonexistent/kradagrad_cuda.node' });
    expect(r).toMatchObject({ ok: false, code: 'NCCL_UNAVAILABLE' });
    expect(r.message).toMatch(/the CUDA addon does not load/);
    expect(r.message).toMatch(/\/nonexistent\/kradagrad_cuda\.node/);
  });

  const gpuHere = (() => {
    try {
      return getBackend('auto').name === 'cuda';
    } catch {
      return false;
    }
  })();
  (gpuHere ? test.skip : test)('without a GPU: NCCL_UNAVAILABLE saying so', () => {
    const r = probe({});
    expect(r).toMatchObject({ ok: false, code: 'NCCL_UNAVAILABLE' });
    expect(r.message).toMatch(/NCCL runs on GPUs and this rank has no usable CUDA device: CUDA backend unavailable/);
    expect(r.message).toMatch(/an NVIDIA GPU per rank/);
  });
});

const mpiMissing = ['mpirun', 'mpicc'].filter((p) => !which(p));
const mpiSuite = mpiMissing.length ? describe.skip : describe;
if (mpiMissing.length && process.env.KRADAGRAD_REQUIRE_MPI === '1') {
  test('MPI is required here (KRADAGRAD_REQUIRE_MPI=1)', () => expect(mpiMissing).toEqual([]));
}

mpiSuite('under MPI (no GPU: NCCL emulated over MPI on the CPU backend)', () => {
  const env = { ...process.env, OPENBLAS_NUM_THREADS: '1', OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' };
  beforeAll(() => {
    const r = spawnSync(process.execPath, ['scripts/build-mpi.js', '--quiet'], { cwd: root, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`build-mpi failed:\n${r.stdout}\n${r.stderr}`);
    const r2 = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: root, encoding: 'utf8' });
    if (r2.status !== 0) throw new Error(`tsc failed:\n${r2.stdout}`);
  }, 300000);

  test.each([1, 2, 3])('np %i: the sharded device path is bitwise the host path; device collectives; mismatches coded', (np) => {
    const argv =
      np === 1
        ? [process.execPath, [ranksJs, 'emulated']]
        : ['mpirun', ['--oversubscribe', '--bind-to', 'none', '--mca', 'btl_vader_single_copy_mechanism', 'none', '-np', String(np), process.execPath, ranksJs, 'emulated']];
    const r = spawnSync(argv[0] as string, argv[1] as string[], { cwd: root, env, encoding: 'utf8', timeout: 280000 });
    const out = `${r.stdout}\n${r.stderr}`;
    if (r.status !== 0) throw new Error(`nccl_ranks.js emulated at np ${np} exited ${r.status}:\n${out}`);
    for (let k = 0; k < np; k++) expect(r.stdout).toContain(`done rank ${k} of ${np}`);
    const oks = r.stdout.split('\n').filter((l) => l.startsWith('ok '));
    expect(oks.filter((l) => l.includes('device path = host path')).length).toBe(7 * np);
    expect(oks).toContain('ok device collectives (emulated): allReduce, allGather (unequal lengths), broadcast');
  });

  (haveBuild ? test : test.skip)('initNccl without a GPU (or without kradagrad_nccl.so): every rank rejects with NCCL_UNAVAILABLE', () => {
    const code = `
      const dist = require('./dist/lib/distributed');
      (async () => {
        const comm = await dist.init();
        let out;
        try { await comm.initNccl(); out = { ok: true }; }
        catch (e) { out = { ok: false, code: e.code, message: e.message }; }
        out.nccl = comm.nccl;
        out.rank = comm.rank;
        await comm.finalize();
        console.log(JSON.stringify(out));
      })();
    `;
    const r1 = child(code, { KRADAGRAD_NCCL_LIB: '/nonexistent/kradagrad_nccl.so' });
    expect(r1).toMatchObject({ ok: false, code: 'NCCL_UNAVAILABLE', nccl: null });
    expect(r1.message).toMatch(/kradagrad_nccl\.so does not load/);
    const gpu = (() => {
      try {
        return getBackend('auto').name === 'cuda';
      } catch {
        return false;
      }
    })();
    if (!gpu) {
      const r2 = child(code);
      expect(r2).toMatchObject({ ok: false, code: 'NCCL_UNAVAILABLE', nccl: null });
      expect(r2.message).toMatch(/no usable CUDA device/);
    }
  });
});
