/**
 * Finds and loads the native addons. The CPU addon (node-gyp, binding.gyp) is always
 * needed; the CUDA addon (cmake-js, CMakeLists.txt) is optional and only tried for
 * `backend: 'auto' | 'cuda'`. Why a backend was or was not chosen is kept for `kradagrad info`.
 */
import * as fs from 'fs';
import * as path from 'path';
import { KradagradError } from './errors';

/** The raw N-API surface (see native/napi/ops_binding.cc). Use the typed wrappers in ops.ts. */
export interface NativeTensor {
  readonly dtype: 'float32' | 'float64';
  readonly shape: number[];
  readonly batch: number;
  readonly backend: string;
  readonly bytes: number;
  readonly disposed: boolean;
  dispose(): void;
  read(into?: Float32Array | Float64Array): Float32Array | Float64Array;
  write(data: Float32Array | Float64Array): void;
  reshape(batch: number, shape: number[]): NativeTensor;
}
type Coeff = number | number[] | Float64Array;
export interface NativeAddon {
  flavor: 'cpu' | 'cuda';
  abiVersion: number;
  NativeTensor: Function;
  backends(): { name: string; available: boolean; reason: string; device: string }[];
  setErrorClass(ctor: Function): void;
  tensor(backend: string, dtype: string, batch: number, shape: number[]): NativeTensor;
  fromArray(backend: string, data: Float32Array | Float64Array, batch: number, shape: number[]): NativeTensor;
  gemm(a: NativeTensor, b: NativeTensor, c: NativeTensor, ta?: boolean, tb?: boolean, alpha?: number, beta?: number): void;
  gram(g: NativeTensor, mode: number, h: NativeTensor, alpha?: number, beta?: number): void;
  modeProduct(g: NativeTensor, mode: number, m: NativeTensor, out: NativeTensor, transM?: boolean): void;
  eigh(a: NativeTensor, w: NativeTensor, v: NativeTensor): Int32Array;
  eighAsync(a: NativeTensor, w: NativeTensor, v: NativeTensor): Promise<Int32Array>;
  matpow(a: NativeTensor, p: number, floor: number, ridge: number, out: NativeTensor): Int32Array;
  matpowAsync(a: NativeTensor, p: number, floor: number, ridge: number, out: NativeTensor): Promise<Int32Array>;
  axpby(x: NativeTensor, y: NativeTensor, alpha: Coeff, beta: Coeff): void;
  scale(x: NativeTensor, alpha: Coeff): void;
  addIdentity(a: NativeTensor, alpha: Coeff): void;
  symmetrize(a: NativeTensor): void;
  copy(src: NativeTensor, dst: NativeTensor): void;
  fill(x: NativeTensor, value: number): void;
  mulAcc(x: NativeTensor, y: NativeTensor, acc: NativeTensor, a: number, b: number): void;
  divSqrt(x: NativeTensor, acc: NativeTensor, out: NativeTensor, scale: number, eps: number): void;
  dot(x: NativeTensor, y: NativeTensor): Float64Array;
  frobNorm(x: NativeTensor): Float64Array;
  trace(a: NativeTensor): Float64Array;
  allFinite(x: NativeTensor): Uint8Array;
  boxes(full: NativeTensor, blocks: NativeTensor, offsets: number[], scatter?: boolean, first?: number): void;
  synchronize(backend: string): void;
  scaleByNormRatio(d: NativeTensor, a: NativeTensor, eps: number): void;
  inverseUpdate(l: NativeTensor, t: NativeTensor, m: NativeTensor, kind: 'trace' | 'frobenius'): void;
  allFiniteMany(xs: NativeTensor[]): Uint8Array;
  axpbyMany(xs: NativeTensor[], ys: NativeTensor[], alpha: number, beta: number): void;
  copyMany(srcs: NativeTensor[], dsts: NativeTensor[]): void;
  mulAccMany(xs: NativeTensor[], ys: NativeTensor[], accs: NativeTensor[], a: number, b: number): void;
  divSqrtMany(xs: NativeTensor[], accs: NativeTensor[], outs: NativeTensor[], scale: number, eps: number): void;
  scaleByNormRatioMany(ds: NativeTensor[], as: NativeTensor[], eps: number): void;
  boxesMany(fulls: NativeTensor[], blocks: NativeTensor, offsets: number[][], firsts: number[], scatter: boolean): void;
  root(a: NativeTensor, prev: NativeTensor, out: NativeTensor, spec: NativeRootSpec): Int32Array;
  /** Recording only: slot numbers of the per-item solver info and the new failure counts. */
  rootRefresh(
    a: NativeTensor,
    prev: NativeTensor,
    out: NativeTensor,
    spec: NativeRootSpec,
    failures: Int32Array,
    maxFailures: number,
    tag: number,
    active?: Uint8Array | null,
  ): { info: number; failures: number };
  /** Recording only. */
  guardFinite(xs: NativeTensor[], tag: number): void;
  /** Immediately: per-entry finiteness; recorded: a guard (returns undefined). */
  updateMany(
    ds: NativeTensor[],
    ms: NativeTensor[] | null,
    ws: NativeTensor[],
    us: NativeTensor[] | null,
    mOuts: NativeTensor[] | null,
    wOuts: NativeTensor[],
    p: { lr: number; momentum?: number; weightDecay?: number; nesterov?: boolean; l2?: boolean; decoupled?: boolean },
    tag?: number,
  ): Uint8Array | undefined;
  adamMany(
    gs: NativeTensor[],
    ms: NativeTensor[],
    vs: NativeTensor[],
    ws: NativeTensor[],
    mOuts: NativeTensor[],
    vOuts: NativeTensor[],
    wOuts: NativeTensor[],
    p: { lr: number; beta1: number; beta2: number; eps: number; weightDecay?: number; bc1: number; bc2: number; l2?: boolean; decoupled?: boolean },
    tag?: number,
  ): Uint8Array | undefined;
  graftMany(
    kind: 'adagrad' | 'adam',
    gs: NativeTensor[],
    accs: NativeTensor[],
    moms: NativeTensor[] | null,
    accOuts: NativeTensor[],
    momOuts: NativeTensor[] | null,
    dirs: NativeTensor[],
    p: { eps: number; beta1?: number; beta2?: number; bc1?: number; bc2?: number },
  ): void;
  axpbyOutMany(xs: NativeTensor[], ys: NativeTensor[], zs: NativeTensor[], a: number, b: number): void;
  crc32c(bytes: ArrayBufferView, seed?: number): number;
  crc32cAsync(bytes: ArrayBufferView, seed?: number): Promise<number>;
  beginJob(): void;
  endJob(): NativeJob;
  discardJob(): void;
  /** The CPU backend's thread count (OpenBLAS and our kernels together); see backends.ts. */
  setThreads(n: number): void;
  getThreads(): number;
  /** Which build of the CPU elementwise kernels runs: 'generic' | 'avx2' | 'avx512'. */
  cpuKernels(): string;
  /** CPU backend primitive profile (bench step's breakdown): zero and start, stop and read. */
  profileStart(): void;
  profileStop(): Record<string, { ms: number; calls: number }>;
  /** STREAM-like bandwidth of the CPU kernels, GB/s (best of `reps`). */
  measureBandwidth(elements: number, reps: number): NativeBandwidth;
}

/** What measureBandwidth returns: GB/s, bytes counted as STREAM does (no write-allocate reads). */
export interface NativeBandwidth {
  copy: number;
  copyStream: number;
  triad: number;
  triadStream: number;
  read: number;
  bytesPerArray: number;
  threads: number;
}

/** How roots are computed natively (native/core/ops.h RootSpec). */
export interface NativeRootSpec {
  p: number;
  floor?: number;
  ridge?: number;
  newton?: boolean;
  maxIterations?: number;
  tolerance?: number;
  retryFloat64?: boolean;
}

/** What a job's guards decided and its ops reported (native/napi/job.h). */
export interface NativeJobResult {
  aborted: boolean;
  /** The aborting guard's error code. */
  code?: string;
  /** The entry or item the guard names (-1 when none). */
  index: number;
  /** The tag the recording code gave the guard (-1 when none). */
  tag: number;
  /** Per-item results by slot number. */
  slots: Int32Array[];
}
/** A recorded job: runs once, on the main thread or off it. */
export interface NativeJob {
  readonly size: number;
  run(): NativeJobResult;
  runAsync(): Promise<NativeJobResult>;
  /** After runAsync(): blocks until the ops have run and returns their result. */
  wait(): NativeJobResult;
}

export type BackendName = 'cpu' | 'cuda';
export type BackendRequest = 'auto' | BackendName;

/** What the loader found; `kradagrad info` prints it. */
export interface LoadReport {
  backend: BackendName;
  addonPath: string;
  device: string;
  /** Why CUDA is not used, when it is not. */
  cudaReason?: string;
}

/** The package root: the nearest folder above this file with kradagrad's package.json (lib/ or dist/lib/). */
export const packageRoot = ((): string => {
  let d = __dirname;
  for (let i = 0; i < 5; i++) {
    const p = path.join(d, 'package.json');
    if (fs.existsSync(p) && JSON.parse(fs.readFileSync(p, 'utf8')).name === 'kradagrad') return d;
    d = path.dirname(d);
  }
  return path.resolve(__dirname, '..');
})();
const root = packageRoot;
const addons = new Map<string, NativeAddon>();
/** The thread count set through setThreads (backends.ts), applied to every addon as it loads. */
let threadSetting: number | undefined;

/** Sets the CPU thread count of every loaded addon and of those loaded later. */
export function setAddonThreads(n: number): void {
  for (const a of new Set(addons.values())) a.setThreads(n);
  threadSetting = n;
}
/** The thread count set through setAddonThreads, if any. */
export function addonThreadSetting(): number | undefined {
  return threadSetting;
}
let errorClassSet = new WeakSet<NativeAddon>();

/**
 * The addon ABI this TypeScript layer speaks: package.json's `kradagrad.abi`, which the
 * native builds compile in too (binding.gyp, CMakeLists.txt), so the number lives in one place.
 */
const ABI_VERSION: number = (() => {
  try {
    return JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')).kradagrad.abi;
  } catch {
    return -1;
  }
})();
const CUDA_PACKAGE = `@kradagrad/${process.platform}-${process.arch}-cuda13`;
/** The prebuilt CPU addon's platform package (an optional dependency; npm and pnpm install the one matching os/cpu/libc). */
const CPU_PACKAGE = `@kradagrad/${process.platform}-${process.arch}`;
/** The explicit source build, for platforms without a prebuilt package. */
const BUILD_HINT = 'npx kradagrad build-native';

/** KRADAGRAD_BUILD_FROM_SOURCE=1: use only an addon built from source, never a prebuilt one. */
function fromSourceOnly(): boolean {
  const v = process.env.KRADAGRAD_BUILD_FROM_SOURCE;
  return v !== undefined && v !== '' && v !== '0' && v !== 'false';
}

interface Candidate {
  path: string;
  /** Where it came from, for messages: env override, local build, prebuild, platform package. */
  source: string;
  /** Set when the candidate is known to be unusable before loading it. */
  problem?: string;
}

/** The version in `dir`'s package.json (default: kradagrad's own), undefined when unreadable. The one reader of it. */
export function packageVersion(dir: string = packageRoot): string | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version;
  } catch {
    return undefined;
  }
}

/** The folder of an installed package, resolved from kradagrad's root (undefined when not installed). */
function packageDir(name: string): string | undefined {
  try {
    return path.dirname(require.resolve(`${name}/package.json`, { paths: [root] }));
  } catch {
    return undefined;
  }
}

/** A platform package as a candidate: its version must be kradagrad's. */
function platformCandidate(name: string, dir: string, file: string): Candidate {
  const ours = packageVersion(root);
  const theirs = packageVersion(dir);
  return {
    path: path.join(dir, file),
    source: `${name}@${theirs ?? '?'}`,
    problem: ours && theirs !== ours ? `version ${theirs ?? 'unknown'} does not match kradagrad ${ours}; install ${name}@${ours}` : undefined,
  };
}

/**
 * Where to look, in order. KRADAGRAD_CPU_ADDON / KRADAGRAD_CUDA_ADDON, when set, is the
 * only candidate: an explicit choice that does not load must say so, not be replaced
 * silently by another binary. Otherwise: a local build (build/ or build-cuda/: a
 * checkout's, or `npx kradagrad build-native` in an installed package), then the prebuilt
 * platform package (@kradagrad/<platform>-<arch> for the CPU addon, an optional
 * dependency; @kradagrad/<platform>-<arch>-cuda13 for CUDA, not on npm), then a checkout's
 * prebuilds/<platform>-<arch>/ (what scripts/prebuild.js makes for the platform package).
 * KRADAGRAD_BUILD_FROM_SOURCE=1 keeps only the local build for the CPU addon.
 */
function candidates(flavor: 'cpu' | 'cuda'): Candidate[] {
  const file = `kradagrad_${flavor}.node`;
  const envName = flavor === 'cpu' ? 'KRADAGRAD_CPU_ADDON' : 'KRADAGRAD_CUDA_ADDON';
  const env = process.env[envName];
  if (env) return [{ path: path.resolve(env), source: envName }];
  const list: Candidate[] = [{ path: path.join(root, flavor === 'cpu' ? 'build' : 'build-cuda', 'Release', file), source: 'local build' }];
  if (flavor === 'cpu' && fromSourceOnly()) return list;
  const name = flavor === 'cpu' ? CPU_PACKAGE : CUDA_PACKAGE;
  const dir = packageDir(name);
  if (dir) list.push(platformCandidate(name, dir, file));
  else if (flavor === 'cpu') {
    list.push({
      path: '',
      source: name,
      problem: `not installed (the optional dependency with the prebuilt addon; there is one for linux-x64 with glibc >= 2.34 only; elsewhere build from source: ${BUILD_HINT})`,
    });
  } else {
    list.push({
      path: '',
      source: name,
      problem:
        'not installed (it is not published on npm: build the CUDA addon from the repository, npm run build:cuda, ' +
        'and pack it with npm run pack:cuda, or point KRADAGRAD_CUDA_ADDON at a built kradagrad_cuda.node)',
    });
  }
  const prebuilt = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, file);
  if (flavor === 'cpu' && fs.existsSync(prebuilt)) list.push({ path: prebuilt, source: 'prebuild' });
  return list;
}

/** Turns a dlopen/require failure into a reason a user can act on. */
function explainLoadError(flavor: 'cpu' | 'cuda', message: string): string {
  const first = message.split('\n')[0];
  const lib = /(lib[\w.+-]+\.so[\w.]*): cannot open shared object file/.exec(first)?.[1];
  let hint = '';
  if (lib && /^libcuda\.so/.test(lib)) {
    hint = 'no NVIDIA driver found (libcuda.so.1); the CUDA 13 addon needs driver R580 or newer';
  } else if (lib && /^lib(cudart|cublas|cublasLt|cusolver|cusparse|nvJitLink)\.so/.test(lib)) {
    hint =
      `the CUDA 13 runtime libraries are not on the loader path (${lib}): install the CUDA 13 toolkit ` +
      'or NVIDIA\'s CUDA 13 pip wheels and add their lib folder (site-packages/nvidia/cu13/lib) to LD_LIBRARY_PATH; see the README of ' +
      CUDA_PACKAGE;
  } else if (lib && /^lib(openblas|lapacke|lapack|blas|gfortran)\.so/.test(lib)) {
    hint = `${lib} is missing (Debian/Ubuntu: apt-get install libopenblas0 liblapacke), or rebuild from source: ${BUILD_HINT}`;
  } else if (lib) {
    hint = `a shared library it needs is missing: ${lib}`;
  } else if (/version `(GLIBC|GLIBCXX|CXXABI)_[\d.]+' not found/.test(first)) {
    hint =
      'this system\'s C/C++ runtime is older than the one the binary was built for; ' +
      (flavor === 'cpu' ? `build from source: ${BUILD_HINT}` : 'use a newer distribution (glibc >= 2.34)');
  } else if (/undefined symbol/.test(first)) {
    hint = flavor === 'cuda' ? 'mismatched CUDA library versions (the addon needs CUDA 13.x libraries)' : 'the binary and its libraries do not match';
  } else if (/invalid ELF header|file too short|not an ELF|wrong ELF class|cannot open shared object file/.test(first)) {
    hint = 'the file is not a loadable shared library for this platform (corrupt, truncated or built for another system)';
  } else if (/NODE_MODULE_VERSION|did not self-register|Module did not/.test(first)) {
    hint = 'built for another Node.js ABI';
  }
  return hint ? `${first} [${hint}]` : first;
}

/**
 * The OpenBLAS kernel family for this CPU, for Intel x86-64 CPUs only. OpenBLAS built
 * with DYNAMIC_ARCH (the static copy in the prebuild, Debian's libopenblas) picks its
 * kernels from the CPU model number, and a model it does not know (new parts, or a cloud
 * VM that masks the model) gets the generic Prescott kernels: measured on an H100 host's
 * virtual Xeon, SGEMM 1024 took 12.5 ms instead of 2.9 ms. For Intel the feature flags
 * decide the family exactly as the known models map: AVX-512 (F/CD/BW/DQ/VL) -> SkylakeX,
 * AVX2 + FMA -> Haswell. AMD is left to OpenBLAS (it decides by family number). Only the
 * flags the kernel reports are used, so a forced family never needs missing instructions.
 */
function openblasCoretypeHint(): string | undefined {
  if (process.platform !== 'linux' || process.arch !== 'x64' || process.env.OPENBLAS_CORETYPE !== undefined) return undefined;
  try {
    const info = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const first = info.slice(0, info.indexOf('\n\n') > 0 ? info.indexOf('\n\n') : undefined);
    if (!/^vendor_id\s*:\s*GenuineIntel$/m.test(first)) return undefined;
    const flags = new Set((/^flags\s*:(.*)$/m.exec(first)?.[1] ?? '').trim().split(/\s+/));
    if (['avx512f', 'avx512cd', 'avx512bw', 'avx512dq', 'avx512vl'].every((f) => flags.has(f))) return 'SkylakeX';
    if (flags.has('avx2') && flags.has('fma')) return 'Haswell';
  } catch {
    /* no /proc: leave it to OpenBLAS */
  }
  return undefined;
}

/** require() of an addon file, with OPENBLAS_CORETYPE set while OpenBLAS initializes (at dlopen) when a hint applies. */
function requireAddon(file: string): NativeAddon {
  const core = openblasCoretypeHint();
  if (core) process.env.OPENBLAS_CORETYPE = core;
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    return require(file) as NativeAddon;
  } finally {
    // Child processes keep their own choice.
    if (core) delete process.env.OPENBLAS_CORETYPE;
  }
}

function loadAddon(flavor: 'cpu' | 'cuda'): { addon?: NativeAddon; path?: string; reason?: string } {
  const tried: string[] = [];
  for (const c of candidates(flavor)) {
    if (c.problem) {
      tried.push(`${c.source}: ${c.problem}`);
      continue;
    }
    if (!fs.existsSync(c.path)) {
      tried.push(`${c.source}: ${c.path} (missing)`);
      continue;
    }
    const cached = addons.get(c.path);
    if (cached) return { addon: cached, path: c.path };
    let addon: NativeAddon;
    try {
      addon = requireAddon(c.path);
    } catch (e) {
      tried.push(`${c.source}: ${c.path} failed to load: ${explainLoadError(flavor, (e as Error).message)}`);
      continue;
    }
    if (addon.flavor !== flavor || addon.abiVersion !== ABI_VERSION) {
      tried.push(
        `${c.source}: ${c.path} is a ${addon.flavor} addon with ABI ${addon.abiVersion}, expected ${flavor} with ABI ${ABI_VERSION} ` +
          '(a binary from another kradagrad version)',
      );
      continue;
    }
    if (threadSetting !== undefined) addon.setThreads(threadSetting);
    addons.set(c.path, addon);
    return { addon, path: c.path };
  }
  return { reason: `no loadable ${flavor} addon; tried ${tried.join('; ')}` };
}

function prepared(addon: NativeAddon, errorClass: Function): NativeAddon {
  if (!errorClassSet.has(addon)) {
    addon.setErrorClass(errorClass);
    errorClassSet.add(addon);
  }
  return addon;
}

/**
 * The CUDA addon module itself, without creating its backend (kradagrad/distributed's NCCL
 * set-up chooses the device first), or why it does not load.
 */
export function loadCudaAddon(): { addon?: NativeAddon; path?: string; reason?: string } {
  const c = loadAddon('cuda');
  return c.addon ? { addon: prepared(c.addon, KradagradError), path: c.path } : c;
}

/**
 * Loads the addon for `request`. 'auto' tries CUDA (addon present, loads, a device
 * usable) and falls back to CPU, recording why; 'cuda' throws BACKEND_UNAVAILABLE with
 * the reason instead of falling back.
 */
export function loadBackend(request: BackendRequest = 'auto'): { addon: NativeAddon; report: LoadReport } {
  if (request !== 'auto' && request !== 'cpu' && request !== 'cuda') {
    throw new KradagradError(`Expected backend 'auto', 'cpu' or 'cuda' but received ${String(request)}`, 'INVALID_OPTION');
  }
  let cudaReason: string | undefined;
  if (request === 'cuda' || (request === 'auto' && process.env.KRADAGRAD_DISABLE_CUDA !== '1')) {
    const c = loadAddon('cuda');
    if (c.addon) {
      const entry = c.addon.backends().find((b) => b.name === 'cuda');
      if (entry?.available) {
        return {
          addon: prepared(c.addon, KradagradError),
          report: { backend: 'cuda', addonPath: c.path!, device: entry.device },
        };
      }
      cudaReason = `CUDA addon ${c.path} loaded but no usable device: ${entry?.reason ?? 'no cuda backend inside'}`;
    } else {
      cudaReason = c.reason;
    }
    if (request === 'cuda') throw new KradagradError(`CUDA backend unavailable: ${cudaReason}`, 'BACKEND_UNAVAILABLE');
  } else if (request === 'auto') {
    cudaReason = 'disabled by KRADAGRAD_DISABLE_CUDA=1';
  } else {
    cudaReason = "backend 'cpu' requested";
  }
  const cpu = loadAddon('cpu');
  if (!cpu.addon) {
    throw new KradagradError(
      `CPU addon not found (${cpu.reason}). Build it from source with \`${BUILD_HINT}\` ` +
        '(or `npm run build:native` in a checkout; needs node-addon-api, a C++17 compiler, make, python3 and libopenblas-dev + liblapacke-dev).',
      'BACKEND_UNAVAILABLE',
    );
  }
  const entry = cpu.addon.backends().find((b) => b.name === 'cpu')!;
  return {
    addon: prepared(cpu.addon, KradagradError),
    report: { backend: 'cpu', addonPath: cpu.path!, device: entry.device, cudaReason },
  };
}
