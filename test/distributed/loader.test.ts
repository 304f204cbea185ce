/**
 * kradagrad/distributed without a usable MPI addon: a coded DISTRIBUTED_UNAVAILABLE error
 * that names the fix, never a crash, and nothing else in kradagrad affected. These run
 * everywhere (no MPI needed); the collectives themselves are in mpi.test.ts.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { KradagradError } from '../../lib';

type Dist = typeof import('../../lib/distributed');
type Native = typeof import('../../lib/distributed/native');

/**
 * The distributed modules loaded afresh with KRADAGRAD_MPI_ADDON set (the loader caches
 * per module instance); the variable stays set until `fn`'s promise settles.
 */
async function withAddonPath<T>(addonPath: string, fn: (dist: Dist, native: Native) => T | Promise<T>): Promise<T> {
  const saved = process.env.KRADAGRAD_MPI_ADDON;
  process.env.KRADAGRAD_MPI_ADDON = addonPath;
  try {
    let out: T | Promise<T> | undefined;
    jest.isolateModules(() => {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      out = fn(require('../../lib/distributed') as Dist, require('../../lib/distributed/native') as Native);
    });
    return await (out as T | Promise<T>);
  } finally {
    if (saved === undefined) delete process.env.KRADAGRAD_MPI_ADDON;
    else process.env.KRADAGRAD_MPI_ADDON = saved;
  }
}

async function rejection(p: Promise<unknown>): Promise<KradagradError> {
  try {
    await p;
  } catch (e) {
    return e as KradagradError;
  }
  throw new Error('expected a rejection');
}

const FIX = /apt-get install openmpi-bin libopenmpi-dev.*npm run build:mpi/;

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kradagrad-mpi-loader-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('addon not built: init() rejects with DISTRIBUTED_UNAVAILABLE naming the fix', async () => {
  const missing = path.join(tmp, 'nowhere', 'kradagrad_mpi.node');
  const { err, avail } = await withAddonPath(missing, async (dist) => ({ err: await rejection(dist.init()), avail: dist.distributedAvailable() }));
  expect(err.name).toBe('KradagradError');
  expect(err.code).toBe('DISTRIBUTED_UNAVAILABLE');
  expect(err.message).toContain(missing);
  expect(err.message).toMatch(FIX);
  expect(avail.available).toBe(false);
  expect(avail.reason).toMatch(FIX);
});

test('a file that is no shared library: DISTRIBUTED_UNAVAILABLE saying so and how to rebuild', async () => {
  const junk = path.join(tmp, 'junk.node');
  fs.writeFileSync(junk, 'this is not an ELF file\n');
  const err = await withAddonPath(junk, (dist) => rejection(dist.init()));
  expect(err.code).toBe('DISTRIBUTED_UNAVAILABLE');
  expect(err.message).toMatch(/not a loadable shared library.*npm run build:mpi/);
});

const cpuAddon = path.resolve(__dirname, '..', '..', 'build', 'Release', 'kradagrad_cpu.node');
(fs.existsSync(cpuAddon) ? test : test.skip)('another addon in its place (the CPU addon): refused by flavor and ABI', async () => {
  const err = await withAddonPath(cpuAddon, (dist) => rejection(dist.init()));
  expect(err.code).toBe('DISTRIBUTED_UNAVAILABLE');
  expect(err.message).toMatch(/is not a kradagrad MPI addon .*flavor cpu/);
});

test('bad init options are INVALID_OPTION before anything loads', async () => {
  const missing = path.join(tmp, 'nowhere', 'kradagrad_mpi.node');
  await withAddonPath(missing, async (dist) => {
    const unknown = await rejection(dist.init({ abortOnErrors: true } as never));
    expect(unknown.code).toBe('INVALID_OPTION');
    expect(unknown.message).toMatch(/Unknown option 'abortOnErrors'/);
    const wrongType = await rejection(dist.init({ abortOnError: 'yes' } as never));
    expect(wrongType.code).toBe('INVALID_OPTION');
    // A failed init is not cached: the next call tries again (and reports the addon).
    expect((await rejection(dist.init())).code).toBe('DISTRIBUTED_UNAVAILABLE');
  });
});

describe('explainMpiLoadError: the dlopen failures users meet, and the fix', () => {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { explainMpiLoadError: explain } = require('../../lib/distributed/native') as Native;
  test('libmpi missing (MPI runtime not installed)', () => {
    const m = explain('libmpi.so.40: cannot open shared object file: No such file or directory');
    expect(m).toMatch(/the MPI runtime \(libmpi\.so\.40\) is not installed/);
    expect(m).toMatch(FIX);
  });
  test('libopen-pal missing', () => {
    expect(explain('libopen-pal.so.40: cannot open shared object file: No such file or directory')).toMatch(/MPI runtime/);
  });
  test('built against another MPI', () => {
    expect(explain('/p/kradagrad_mpi.node: undefined symbol: ompi_mpi_comm_world')).toMatch(/another MPI installation.*npm run build:mpi/);
  });
  test('built for another Node', () => {
    expect(explain('The module was compiled against a different Node.js version using NODE_MODULE_VERSION 108')).toMatch(/another Node\.js/);
  });
});

// Single-process users never load MPI: the compiled package's main entry, one optimizer
// step on the CPU backend, and no libmpi among the process's shared objects.
const distMain = path.resolve(__dirname, '..', '..', 'dist', 'lib', 'index.js');
(fs.existsSync(distMain) ? test : test.skip)('the main entry point and an optimizer step never load MPI', () => {
  const script = `
    const k = require(${JSON.stringify(distMain)});
    const w = new Float32Array(12).fill(1);
    new k.KradagradStar({ w: { data: w, shape: [4, 3] } }, { lr: 0.1, backend: 'cpu' }).step({ w: new Float32Array(12).fill(0.5) });
    const libs = process.report.getReport().sharedObjects.filter((s) => /libmpi|kradagrad_mpi/.test(s));
    const mods = Object.keys(require.cache).filter((m) => /[\\/]distributed[\\/]/.test(m));
    console.log(JSON.stringify({ libs, mods, moved: w[0] !== 1 }));`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  expect(r.stderr).toBe('');
  expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toEqual({ libs: [], mods: [], moved: true });
});
