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
let errorClassSet = new WeakSet<NativeAddon>();

function candidates(flavor: 'cpu' | 'cuda'): string[] {
  const file = `kradagrad_${flavor}.node`;
  const env = flavor === 'cpu' ? process.env.KRADAGRAD_CPU_ADDON : process.env.KRADAGRAD_CUDA_ADDON;
  const list = [
    env ?? '',
    path.join(root, flavor === 'cpu' ? 'build' : 'build-cuda', 'Release', file),
    path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, file),
  ];
  if (flavor === 'cuda') {
    try {
      const pkg = require.resolve(`@kradagrad/${process.platform}-${process.arch}-cuda13/package.json`);
      list.push(path.join(path.dirname(pkg), file));
    } catch {
      /* platform package not installed */
    }
  }
  return list.filter((p) => p !== '');
}

function loadAddon(flavor: 'cpu' | 'cuda'): { addon?: NativeAddon; path?: string; reason?: string } {
  const tried: string[] = [];
  for (const p of candidates(flavor)) {
    if (!fs.existsSync(p)) {
      tried.push(`${p} (missing)`);
      continue;
    }
    const cached = addons.get(p);
    if (cached) return { addon: cached, path: p };
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      const addon = require(p) as NativeAddon;
      addons.set(p, addon);
      return { addon, path: p };
    } catch (e) {
      tried.push(`${p} (failed to load: ${(e as Error).message.split('\n')[0]})`);
    }
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
      `CPU addon not found (${cpu.reason}). Build it with \`npm run build:native\` ` +
        '(needs a C++ compiler and libopenblas-dev + liblapacke-dev).',
      'BACKEND_UNAVAILABLE',
    );
  }
  const entry = cpu.addon.backends().find((b) => b.name === 'cpu')!;
  return {
    addon: prepared(cpu.addon, KradagradError),
    report: { backend: 'cpu', addonPath: cpu.path!, device: entry.device, cudaReason },
  };
}
