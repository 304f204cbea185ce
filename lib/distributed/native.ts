/**
 * Finds and loads the optional MPI addon (build-mpi/Release/kradagrad_mpi.node, built by
 * `npm run build:mpi` from native/mpi/). Nothing else in kradagrad loads it: the CPU addon
 * and single-process users never need MPI.
 */
import * as fs from 'fs';
import * as path from 'path';
import { KradagradError } from '../errors';
import { packageRoot } from '../native';

/** Element arrays the collectives accept. */
export type CommArray = Float32Array | Float64Array | Int32Array | Uint8Array;
/** Element types of {@link CommArray}. */
export type CommDType = 'float32' | 'float64' | 'int32' | 'uint8';
/** Reduction of {@link Communicator.allReduce}: `mean` is the sum divided by the world size (float types only). */
export type ReduceOp = 'sum' | 'mean' | 'max' | 'min';

/** What MPI reported at initialisation. */
export interface WorldInfo {
  rank: number;
  size: number;
  localRank: number;
  localSize: number;
  /** The MPI thread level provided: 'funneled' is what the communication thread asks for. */
  threadLevel: 'single' | 'funneled' | 'serialized' | 'multiple';
  /** MPI_Is_thread_main on the communication thread: it is the thread that initialised MPI. */
  threadMain: boolean;
  /** MPI_Get_library_version, first line. */
  library: string;
  /** MPI_Get_processor_name. */
  processor: string;
}

/** The raw N-API surface of native/mpi/addon.cc. Use {@link Communicator}. */
export interface NativeMpi {
  flavor: 'mpi';
  abiVersion: number;
  setErrorClass(ctor: Function): void;
  init(): Promise<WorldInfo>;
  allReduce<T extends CommArray>(x: T, op: ReduceOp, into?: T): Promise<T>;
  allGather<T extends CommArray>(x: T, into?: T): Promise<T>;
  broadcast<T extends CommArray>(x: T, root: number): Promise<T>;
  barrier(): Promise<void>;
  finalize(): Promise<void>;
  finalizeSync(): void;
  abort(code: number): void;
  allocate(dtype: CommDType, length: number): CommArray;
  isAllocated(x: CommArray): boolean;
  state(): { active: boolean; finalizing: boolean };
}

/** The ABI (native/mpi/addon.cc `abiVersion`) this layer speaks. */
const ABI_VERSION = 1;

/** How to get a working MPI addon; part of every DISTRIBUTED_UNAVAILABLE message. */
export const MPI_FIX =
  'install OpenMPI with its headers (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev) and build the MPI addon ' +
  'with `npm run build:mpi` (in an installed package: `npm explore kradagrad -- npm run build:mpi`)';

/** Where the addon is looked for: KRADAGRAD_MPI_ADDON when set (then only there), else the local build. */
export function mpiAddonPath(): { path: string; source: string } {
  const env = process.env.KRADAGRAD_MPI_ADDON;
  if (env) return { path: path.resolve(env), source: 'KRADAGRAD_MPI_ADDON' };
  return { path: path.join(packageRoot, 'build-mpi', 'Release', 'kradagrad_mpi.node'), source: 'local build' };
}

/** Turns a dlopen/require failure of the MPI addon into a reason that names the fix. */
export function explainMpiLoadError(message: string): string {
  const first = message.split('\n')[0];
  const lib = /(lib[\w.+-]+\.so[\w.]*): cannot open shared object file/.exec(first)?.[1];
  let hint: string;
  if (lib && /^lib(mpi|open-pal|open-rte|pmix|hwloc|event)/.test(lib)) {
    hint = `the MPI runtime (${lib}) is not installed or not on the loader path; ${MPI_FIX}`;
  } else if (lib) {
    hint = `a shared library it needs is missing (${lib}); ${MPI_FIX}`;
  } else if (/undefined symbol/.test(first)) {
    hint = `it was built against another MPI installation than the one found now; rebuild it with \`npm run build:mpi\``;
  } else if (/NODE_MODULE_VERSION|did not self-register|Module did not/.test(first)) {
    hint = 'it was built for another Node.js; rebuild it with `npm run build:mpi`';
  } else if (/invalid ELF header|file too short|not an ELF|wrong ELF class/.test(first)) {
    hint = 'the file is not a loadable shared library for this platform; rebuild it with `npm run build:mpi`';
  } else {
    hint = MPI_FIX;
  }
  return `${first} [${hint}]`;
}

let loaded: NativeMpi | undefined;

/**
 * Loads the MPI addon once per JS environment, or throws DISTRIBUTED_UNAVAILABLE with the
 * reason and the fix.
 */
export function loadMpiAddon(): NativeMpi {
  if (loaded) return loaded;
  const where = mpiAddonPath();
  if (!fs.existsSync(where.path)) {
    throw new KradagradError(
      `kradagrad/distributed needs the MPI addon, which is not built (${where.source}: ${where.path} is missing): ${MPI_FIX}`,
      'DISTRIBUTED_UNAVAILABLE',
      { path: where.path },
    );
  }
  let addon: NativeMpi;
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    addon = require(where.path) as NativeMpi;
  } catch (e) {
    throw new KradagradError(
      `kradagrad/distributed could not load the MPI addon ${where.path}: ${explainMpiLoadError((e as Error).message)}`,
      'DISTRIBUTED_UNAVAILABLE',
      { path: where.path },
    );
  }
  if (addon.flavor !== 'mpi' || addon.abiVersion !== ABI_VERSION) {
    throw new KradagradError(
      `${where.path} is not a kradagrad MPI addon with ABI ${ABI_VERSION} (flavor ${String(addon.flavor)}, ABI ` +
        `${String(addon.abiVersion)}); rebuild it with \`npm run build:mpi\``,
      'DISTRIBUTED_UNAVAILABLE',
      { path: where.path },
    );
  }
  addon.setErrorClass(KradagradError);
  loaded = addon;
  return addon;
}

/**
 * Whether kradagrad/distributed can be used here (the addon is built and loads with its
 * MPI library), and why not. Loading does not initialise MPI.
 */
export function distributedAvailable(): { available: boolean; path: string; reason?: string } {
  try {
    loadMpiAddon();
    return { available: true, path: mpiAddonPath().path };
  } catch (e) {
    return { available: false, path: mpiAddonPath().path, reason: (e as Error).message };
  }
}
