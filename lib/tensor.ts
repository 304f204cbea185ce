/**
 * Tensors: backend-owned buffers behind handles. A tensor is a batch of same-shape
 * row-major arrays (`batch` items of `shape`). Host data goes in with
 * {@link Backend.fromArray} / {@link Tensor.write} and comes back only when asked
 * ({@link Tensor.read}). Free early with `dispose()` or `using`; a FinalizationRegistry
 * frees forgotten ones when they are collected.
 */
import { KradagradError, describe } from './errors';
import { BackendName, BackendRequest, LoadReport, NativeAddon, NativeTensor, loadBackend } from './native';

export type DType = 'float32' | 'float64';
export type TypedArrayFor<D extends DType> = D extends 'float32' ? Float32Array : Float64Array;
export type FloatArray = Float32Array | Float64Array;

// Node 20 defines Symbol.dispose (as Symbol.for('nodejs.dispose')) only in its main realm;
// vm contexts such as Jest's lack it, which would name the method below "undefined" and
// break `using`. Supply the same symbol there.
if (typeof Symbol.dispose !== 'symbol') {
  Object.defineProperty(Symbol, 'dispose', { value: Symbol.for('nodejs.dispose') });
}

const registry = new FinalizationRegistry<NativeTensor>((n) => {
  if (!n.disposed) n.dispose();
});

/**
 * The tensors this module made. `instanceof Tensor` also holds for objects that merely
 * have Tensor's prototype (`Object.create(Tensor.prototype)`), whose fields are anything;
 * every method and every op checks membership here instead, so such an object is an
 * INVALID_HANDLE error and never a TypeError from deep inside.
 */
const genuine = new WeakSet<object>();

/**
 * The prototypes of the addons' NativeTensor handles (recorded when a Backend is made). A
 * Tensor's handle must have one of them; the handle's members are native functions that
 * check the receiver themselves, so even `Object.create(thatPrototype)` only ever throws
 * INVALID_HANDLE. (A set of prototypes rather than `instanceof addon.NativeTensor`: tools
 * such as bench/calls.ts wrap the addon in a Proxy.)
 */
const nativePrototypes = new WeakSet<object>();

/** Whether `t` is a tensor made by kradagrad (not merely something with Tensor's prototype). */
export function isTensor(t: unknown): t is Tensor {
  return typeof t === 'object' && t !== null && genuine.has(t);
}

/** The native handle of a genuine tensor; INVALID_HANDLE for anything else. */
function nativeOf(t: unknown, what = 'tensor'): NativeTensor {
  if (!isTensor(t)) throw new KradagradError(`Expected a kradagrad Tensor for ${what} but received ${describe(t)} (not made by a Backend)`, 'INVALID_HANDLE');
  return t.native;
}

export class Tensor {
  /** @internal */ readonly native: NativeTensor;
  readonly backend: Backend;

  /** @internal Use Backend.tensor / Backend.fromArray. */
  constructor(backend: Backend, native: NativeTensor) {
    // Only a Backend and a handle of its own addon make a tensor (the addon checks the
    // handle itself again on every use).
    if (!(backend instanceof Backend) || typeof native !== 'object' || native === null || !nativePrototypes.has(Object.getPrototypeOf(native))) {
      throw new KradagradError('Tensors are made by Backend.tensor / Backend.fromArray (or reshape); this constructor got something else', 'INVALID_HANDLE');
    }
    this.backend = backend;
    this.native = native;
    registry.register(this, native, this);
    genuine.add(this);
  }
  get dtype(): DType {
    return nativeOf(this).dtype;
  }
  /** Shape of one item. */
  get shape(): number[] {
    return nativeOf(this).shape;
  }
  /** Number of items. */
  get batch(): number {
    return nativeOf(this).batch;
  }
  /** Elements in one item. */
  get itemSize(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
  /** Elements in all items. */
  get size(): number {
    return this.itemSize * this.batch;
  }
  get bytes(): number {
    return nativeOf(this).bytes;
  }
  get disposed(): boolean {
    return nativeOf(this).disposed;
  }
  /** Copies the whole tensor to the host (into `into` when given). */
  read(into?: FloatArray): FloatArray {
    return nativeOf(this).read(into);
  }
  /** Overwrites the whole tensor from host data of the same dtype and length. */
  write(data: FloatArray): this {
    nativeOf(this).write(data);
    return this;
  }
  /**
   * A view of the same storage as `batch` items of `shape` (same element count). The
   * element count is computed natively with overflow checks: dims whose product passes
   * 2^53 (or wraps around to the real count) are INVALID_ARGUMENT.
   */
  reshape(shape: number[], batch = 1): Tensor {
    return new Tensor(this.backend, nativeOf(this).reshape(batch, shape));
  }
  /** Frees the native memory now. Idempotent; later use throws DISPOSED. */
  dispose(): void {
    const n = nativeOf(this);
    registry.unregister(this);
    n.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

function checkShape(shape: unknown, what: string): number[] {
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new KradagradError(`Expected an array of positive integers for ${what} but received ${describe(shape)}`, 'INVALID_ARGUMENT');
  }
  return shape as number[];
}

/** A loaded backend: where tensors live. Obtain with {@link getBackend}. */
export class Backend {
  readonly name: BackendName;
  /** @internal */ readonly addon: NativeAddon;
  /** How the backend was chosen (addon path, device, why CUDA is not used). */
  readonly report: LoadReport;

  /** @internal */
  constructor(addon: NativeAddon, report: LoadReport) {
    const proto = (addon?.NativeTensor as { prototype?: unknown } | undefined)?.prototype;
    if (proto && typeof proto === 'object') nativePrototypes.add(proto);
    this.addon = addon;
    this.report = report;
    this.name = report.backend;
  }
  get device(): string {
    return this.report.device;
  }
  /** A zero tensor of `batch` items of `shape`. */
  tensor(dtype: DType, shape: number[], batch = 1): Tensor {
    return new Tensor(this, this.addon.tensor(this.name, dtype, batch, checkShape(shape, 'shape')));
  }
  /** A tensor holding a copy of `data` (dtype from the array type). */
  fromArray(data: FloatArray, shape: number[], batch = 1): Tensor {
    return new Tensor(this, this.addon.fromArray(this.name, data, batch, checkShape(shape, 'shape')));
  }
  /** Waits for queued work (a no-op on CPU). */
  synchronize(): void {
    this.addon.synchronize(this.name);
  }
}

const backends = new Map<string, Backend>();

/**
 * The backend for `request` (default 'auto': CUDA when its addon and a device load,
 * else CPU; `backend.report.cudaReason` says why CUDA was not used).
 */
export function getBackend(request: BackendRequest = 'auto'): Backend {
  const cached = backends.get(request);
  if (cached) return cached;
  const { addon, report } = loadBackend(request);
  const existing = [...backends.values()].find((b) => b.addon === addon && b.name === report.backend);
  const b = existing ?? new Backend(addon, report);
  backends.set(request, b);
  return b;
}
