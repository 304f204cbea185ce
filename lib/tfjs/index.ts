/**
 * `kradagrad/tfjs`: our optimizers as TensorFlow.js optimizers.
 *
 * ```ts
 * import * as tf from '@tensorflow/tfjs';
 * import { KradagradStarOptimizer } from 'kradagrad/tfjs';
 * model.compile({ optimizer: new KradagradStarOptimizer({ lr: 0.01, blockSize: 128 }), loss: 'binaryCrossentropy' });
 * await model.fit(xs, ys);
 * ```
 *
 * Each class is a `tf.Optimizer` (from @tensorflow/tfjs-core, a peer dependency that only
 * this entry point imports). `applyGradients` is synchronous, as tfjs requires: it reads the
 * gradients and the variables' current values (`dataSync`, float32), runs one step of our
 * optimizer on host arrays (our backend: CPU, or CUDA when it loads) and assigns the new
 * values to the tf variables inside `tf.tidy` (no tensors leak).
 *
 * State is keyed by variable name. Our optimizer is created on the first `applyGradients`
 * for the variables it is given; later steps must give the same variables (by name, with
 * the same shapes): a variable added, removed or renamed is a KradagradError with code
 * INVALID_ARGUMENT, nothing changed. (Changing which variables train means a new optimizer.)
 *
 * Weights (`getWeights`/`setWeights`, and so `model.save(h, {includeOptimizer: true})` and
 * `tf.loadLayersModel`) are two tensors with stable names: `iter` (int32 scalar, the tfjs
 * convention) and `kradagrad/state`, an int32 tensor holding our versioned `saveState()`
 * bytes (element 0: byte length; then the bytes, 4 per element, little-endian), so the
 * state round-trips bit for bit. The classes are registered with
 * `tf.serialization.registerClass`, and `getConfig`/`fromConfig` carry the options, so a
 * model saved with its optimizer reloads with it and resumes with identical steps.
 * On restore (the first step after setWeights) the saved variables are matched to the given
 * ones by name when the names are the same, otherwise in order, as tfjs' own optimizers do:
 * a model reloaded in the same process gets tfjs-layers' de-duplicating suffix
 * (`dense_Dense1/kernel` -> `dense_Dense1/kernel_1`), and another instance of the same
 * architecture gets other layer names. Count and shapes must agree (else INVALID_ARGUMENT);
 * from then on the names are fixed as above.
 *
 * Exactness holds on backends that keep int32 tensors exact (cpu, wasm, tfjs-node); the
 * WebGL backend stores int32 as float and is not supported for saving optimizer state.
 *
 * Data-parallel training under `mpirun` (the `distributed` option, a communicator of
 * `kradagrad/distributed`): every rank runs the same script on its own shard of the data.
 * Start from the same weights ({@link broadcastWeights} from rank 0), then either
 *  - `model.fit(xs, ys, { callbacks: [optimizer.fitCallback()] })`: tfjs calls the
 *    synchronous `applyGradients`, which cannot wait for the other ranks without blocking
 *    the event loop; with `distributed` it only takes the gradients, and the callback's
 *    `onBatchEnd` (which `fit` awaits before the next batch) runs the step, collectives and
 *    all, and assigns the new weights. Every rank must run the same number of batches
 *    (equal shards, the same batch size); the losses `fit` logs are each rank's own; or
 *  - a custom loop with `minimizeAsync` / `applyGradientsAsync`.
 * The global batch is the ranks' batches together: its gradient is the mean of theirs (for a
 * loss that is a mean over the batch and equal shards), which is what the step all-reduces.
 * `getWeights` (and so `model.save` with `includeOptimizer`) is then a collective: call it
 * on every rank (and write the files on one).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Communicator } from '../distributed/communicator';

/** A tensor with a name (tfjs-core's NamedTensor, which its index does not export). */
export interface NamedTensor {
  name: string;
  tensor: tf.Tensor;
}
import { KradagradError, describe } from '../errors';
import { Adam, Kradagrad, KradagradStar, Sgd, Shampoo } from '../optim';
import { resolveAdam, resolveKradagrad, resolveKradagradStar, resolveSgd, resolveShampoo } from '../optim/options';
import { checkpointSummary } from '../optim/checkpoint';
import { Backend } from '../tensor';
import type {
  AdamOptions,
  BaseOptions,
  KradagradOptions,
  KradagradStarOptions,
  NamedParams,
  Optimizer as KOptimizer,
  SgdOptions,
  ShampooOptions,
} from '../optim/types';

/** Name of the optimizer-state weight in getWeights()/setWeights() and saved models. */
export const STATE_WEIGHT_NAME = 'kradagrad/state';
/** Name of the iteration-count weight (the tfjs convention). */
export const ITER_WEIGHT_NAME = 'iter';

type AnyOptions = BaseOptions & Record<string, unknown>;
type Factory = (params: NamedParams, opts: AnyOptions) => KOptimizer;

/** One variable as our optimizer sees it. */
interface Slot {
  /** tfjs variable name (current). */
  varName: string;
  /** our parameter name (the name in the saved state; equals varName unless restored across a tfjs rename). */
  key: string;
  shape: number[];
  host: Float32Array;
  /**
   * The variable's data as this optimizer last assigned it (tfjs tensors are immutable, so
   * while the variable still holds it, `host` holds its values and need not be read again).
   */
  assigned?: object;
}

function err(message: string, details?: Record<string, unknown>): KradagradError {
  return new KradagradError(message, 'INVALID_ARGUMENT', details);
}

/**
 * The adapter: a tf.Optimizer that runs one of our optimizers (given by `kind` and a
 * factory). Use the concrete subclasses below; extend it the same way for your own.
 */
export abstract class KradagradTfjsOptimizer<O extends BaseOptions = BaseOptions> extends tf.Optimizer {
  /** Options as given (validated at construction). */
  protected readonly options: O;
  private readonly factory: Factory;
  /** Our optimizer's `kind` ('kradagrad_star', 'shampoo', ...). */
  readonly kind: string;
  private inner: KOptimizer | null = null;
  private slots: Slot[] = [];
  private byVar = new Map<string, Slot>();
  /** State from setWeights() not yet applied (applied on the next applyGradients, when the variables are known). */
  private pending: Buffer | null = null;
  /** Distributed: the gradients of the last applyGradients, waiting for applyDeferredAsync (the fit callback). */
  private deferred: { grads: Record<string, Float32Array>; registered: Record<string, tf.Variable> } | null = null;

  protected constructor(kind: string, factory: Factory, validate: (o: O) => unknown, options: O | undefined) {
    super();
    // tfjs-layers' deserializer adds `customObjects` to the config it hands fromConfig.
    const o = { ...(options ?? {}) } as Record<string, unknown>;
    delete o.customObjects;
    validate(o as O);
    this.options = o as O;
    this.kind = kind;
    this.factory = factory;
  }

  /** Our optimizer once created (after the first applyGradients), else null. */
  get optimizer(): KOptimizer | null {
    return this.inner;
  }

  /** Variable names the optimizer is bound to, in order (empty before the first step). */
  get variableNames(): string[] {
    return this.slots.map((s) => s.varName);
  }

  /**
   * One optimizer step from these gradients (synchronous, as tf.Optimizer requires). A
   * variable whose gradient is null (the loss does not depend on it in this batch) sits
   * the step out: its value and state stay as they are, as with tfjs' own optimizers
   * (`missingGradient: 'skip'`, this adapter's default).
   */
  applyGradients(variableGradients: tf.NamedTensorMap | NamedTensor[]): void {
    if (this.distributed && this.deferred) {
      throw new KradagradError(
        `${this.getClassName()}.applyGradients: the gradients of the previous call have not been applied yet. With the distributed option, ` +
          'applyGradients only takes the gradients: give model.fit the callback of optimizer.fitCallback(), or await optimizer.applyDeferredAsync() after each call',
        'BUSY',
      );
    }
    const p = this.prepare(variableGradients);
    const grads: Record<string, Float32Array> = {};
    const deferred = !!this.distributed;
    p.entries.forEach(([, g], i) => {
      if (!g) return;
      const d = g.dataSync() as Float32Array;
      // Copied when deferred: the gradients are disposed before the step runs.
      grads[p.keys[i]] = deferred ? Float32Array.from(d) : d;
    });
    // The variables' current values (they may have been changed outside the optimizer).
    for (const s of this.slots) {
      const v = p.registered[s.varName];
      if (v.dataId !== s.assigned) s.host.set(v.dataSync() as Float32Array);
    }
    if (deferred) {
      this.deferred = { grads, registered: p.registered };
      return;
    }
    this.inner!.step(grads);
    this.assignAll(p.registered);
  }

  /** The communicator of the `distributed` option, if any. */
  private get distributed(): Communicator | undefined {
    return (this.options as BaseOptions).distributed;
  }

  /**
   * Distributed: runs the step whose gradients the last `applyGradients` took (a
   * collective: every rank calls it), then assigns the new values. Nothing to do when there
   * is none. `fitCallback()` calls it after every batch of `model.fit`.
   */
  async applyDeferredAsync(): Promise<void> {
    const d = this.deferred;
    if (!d) return;
    this.deferred = null;
    await this.inner!.stepAsync(d.grads);
    this.assignAll(d.registered);
  }

  /**
   * The `model.fit` callback of data-parallel training (the `distributed` option): its
   * `onBatchEnd`, which fit awaits before the next batch, runs the step of that batch on
   * every rank (see {@link KradagradTfjsOptimizer.applyDeferredAsync}). Without
   * `distributed` it does nothing.
   * ```ts
   * await model.fit(xs, ys, { batchSize, epochs, callbacks: [optimizer.fitCallback()] });
   * ```
   */
  fitCallback(): { onBatchEnd: (batch: number, logs?: unknown) => Promise<void> } {
    return { onBatchEnd: () => this.applyDeferredAsync() };
  }

  /**
   * applyGradients without blocking the event loop, for custom training loops in services:
   * gradients and variables are read with `data()`, and the step runs off the main thread
   * (Optimizer.stepAsync). Variables are assigned when the promise resolves; until then
   * other calls on this optimizer throw BUSY.
   */
  async applyGradientsAsync(variableGradients: tf.NamedTensorMap | NamedTensor[]): Promise<void> {
    const p = this.prepare(variableGradients);
    const grads: Record<string, Float32Array> = {};
    const reads = p.entries.map(async ([, g], i) => {
      if (g) grads[p.keys[i]] = (await g.data()) as Float32Array;
    });
    const values = this.slots.map(async (s) => {
      const v = p.registered[s.varName];
      if (v.dataId !== s.assigned) s.host.set((await v.data()) as Float32Array);
    });
    await Promise.all([...reads, ...values]);
    await this.inner!.stepAsync(grads);
    this.assignAll(p.registered);
  }

  /**
   * minimize() with the step off the main thread: computes the gradients of `f` (a scalar
   * loss) with respect to `varList` (default: all trainable variables), applies them with
   * applyGradientsAsync, and returns the loss when `returnCost` (else null).
   */
  async minimizeAsync(f: () => tf.Scalar, returnCost = false, varList?: tf.Variable[]): Promise<tf.Scalar | null> {
    const { value, grads } = this.computeGradients(f, varList);
    try {
      // As tf.Optimizer.minimize: with a varList, every variable is given, those the loss
      // does not reach with a null gradient (skipped).
      await this.applyGradientsAsync(varList ? varList.map((v) => ({ name: v.name, tensor: grads[v.name] })) : grads);
    } finally {
      tf.dispose(grads);
    }
    if (returnCost) return value;
    value.dispose();
    return null;
  }

  /** Checks the gradients against the variables (binding the optimizer on the first call); changes nothing. */
  private prepare(variableGradients: tf.NamedTensorMap | NamedTensor[]): {
    entries: [string, tf.Tensor | null][];
    keys: string[];
    registered: Record<string, tf.Variable>;
  } {
    if (variableGradients === null || typeof variableGradients !== 'object') {
      throw err(`${this.getClassName()}.applyGradients: expected a map or array of named gradients but received ${describe(variableGradients)}`);
    }
    const entries: [string, tf.Tensor | null][] = Array.isArray(variableGradients)
      ? variableGradients.map((e) => [e?.name, e?.tensor ?? null])
      : Object.keys(variableGradients).map((k) => [k, variableGradients[k] ?? null]);
    const names = entries.map((e) => e[0]);
    if (new Set(names).size !== names.length) throw err(`${this.getClassName()}.applyGradients: a variable is given twice (${names.join(', ')})`);
    const registered = tf.engine().registeredVariables;
    const vars = names.map((n) => {
      const v = typeof n === 'string' ? registered[n] : undefined;
      if (!v) throw err(`${this.getClassName()}.applyGradients: ${typeof n === 'string' ? `'${n}'` : describe(n)} is not a registered tf variable`, { variable: n });
      if (v.dtype !== 'float32') throw err(`${this.getClassName()}.applyGradients: variable '${n}' is ${v.dtype}; only float32 variables are supported`, { variable: n });
      return v;
    });
    if (!this.inner) this.bind(names, vars);
    else this.checkSame(names, vars);
    // Validate every gradient before touching anything.
    entries.forEach(([name, g], i) => {
      if (g == null) return;
      if (!(g instanceof tf.Tensor)) throw err(`Gradient of '${name}' must be a tf.Tensor but received ${describe(g)}`, { variable: name });
      if (g.dtype !== 'float32') throw err(`Gradient of '${name}' is ${g.dtype}, expected float32`, { variable: name });
      if (g.size !== this.byVar.get(name)!.host.length || !tf.util.arraysEqual(g.shape, vars[i].shape)) {
        throw new KradagradError(`Gradient of '${name}' has shape [${g.shape}], the variable [${vars[i].shape}]`, 'SHAPE_MISMATCH', { variable: name });
      }
    });
    return { entries, keys: names.map((n) => this.byVar.get(n)!.key), registered };
  }

  /** Writes our parameters into the tf variables (inside tf.tidy: no tensors leak) and counts the iteration. */
  private assignAll(registered: Record<string, tf.Variable>): void {
    tf.tidy(() => {
      for (const s of this.slots) {
        const v = registered[s.varName];
        v.assign(tf.tensor(s.host.slice(), v.shape, 'float32'));
        s.assigned = v.dataId;
      }
    });
    this.incrementIterations();
  }

  /** First step (or first after setWeights): create our optimizer for these variables. */
  private bind(names: string[], vars: tf.Variable[]): void {
    const shapes = vars.map((v) => (v.shape.length === 0 ? [1] : v.shape.slice()));
    let keys = names.slice();
    let order = names.map((_, i) => i);
    const pending = this.pending;
    if (pending) {
      const saved = checkpointSummary(pending).params;
      if (saved.length !== names.length) {
        throw err(
          `${this.getClassName()}: the restored state is for ${saved.length} variables (${saved.map((p) => p.name).join(', ')}) but ${names.length} were given (${names.join(', ')})`,
        );
      }
      const savedNames = saved.map((p) => p.name);
      // By name when the names are the same; otherwise in order (as tfjs' own optimizers do),
      // e.g. a reloaded model whose variables got tfjs' de-duplicating suffix, or another
      // instance of the same architecture. The shapes must agree either way.
      const exact = savedNames.every((n) => names.includes(n));
      const idx = exact ? savedNames.map((n) => names.indexOf(n)) : savedNames.map((_, i) => i);
      idx.forEach((j, i) => {
        if (!tf.util.arraysEqual(shapes[j], saved[i].shape)) {
          throw err(
            `${this.getClassName()}: the restored state does not fit the variables: '${names[j]}' has shape [${shapes[j]}] but the state has [${saved[i].shape}] for '${saved[i].name}'` +
              ` (state variables: ${savedNames.join(', ')}; given: ${names.join(', ')})`,
          );
        }
      });
      order = idx;
      keys = savedNames;
    }
    const slots: Slot[] = order.map((j, i) => ({ varName: names[j], key: keys[i], shape: shapes[j], host: new Float32Array(vars[j].size) }));
    const params: NamedParams = {};
    for (const s of slots) params[s.key] = { data: s.host, shape: s.shape };
    // A null gradient skips the variable, as tfjs' own optimizers do (unless the options say otherwise).
    const inner = this.factory(params, { missingGradient: 'skip', ...(this.options as AnyOptions) });
    if (pending) {
      try {
        inner.loadState(pending);
      } catch (e) {
        inner.dispose();
        throw e;
      }
    }
    this.inner = inner;
    this.slots = slots;
    this.byVar = new Map(slots.map((s) => [s.varName, s]));
    this.pending = null;
  }

  private checkSame(names: string[], vars: tf.Variable[]): void {
    const added = names.filter((n) => !this.byVar.has(n));
    const removed = this.slots.map((s) => s.varName).filter((n) => !names.includes(n));
    if (added.length || removed.length) {
      const what = added.length && removed.length ? 'renamed or replaced' : added.length ? 'added' : 'removed';
      throw err(
        `${this.getClassName()}: variables ${what} since the first step` +
          `${added.length ? `; new: ${added.join(', ')}` : ''}${removed.length ? `; missing: ${removed.join(', ')}` : ''}` +
          `. The optimizer's state is per variable: create a new optimizer (or recompile) after changing the trainable variables.`,
        { added, removed },
      );
    }
    vars.forEach((v, i) => {
      const s = this.byVar.get(names[i])!;
      if (v.size !== s.host.length) {
        throw err(`${this.getClassName()}: variable '${names[i]}' changed shape to [${v.shape}] (was [${s.shape}])`, { variable: names[i] });
      }
    });
  }

  /** `iter` and `kradagrad/state` (absent before the first step unless restored). */
  async getWeights(): Promise<NamedTensor[]> {
    const out: NamedTensor[] = [await this.saveIterations()];
    // Distributed: a collective (the blocks' state is spread over the ranks).
    const buf = this.inner ? (this.distributed ? await this.inner.saveStateAsync() : this.inner.saveState()) : this.pending;
    if (buf) out.push({ name: STATE_WEIGHT_NAME, tensor: encodeBytes(buf) });
    return out;
  }

  async setWeights(weightValues: NamedTensor[]): Promise<void> {
    if (!Array.isArray(weightValues)) throw err(`${this.getClassName()}.setWeights: expected an array of named tensors but received ${describe(weightValues)}`);
    const known = [ITER_WEIGHT_NAME, STATE_WEIGHT_NAME];
    const unknown = weightValues.filter((w) => !known.includes(w?.name));
    if (unknown.length) {
      throw new KradagradError(
        `${this.getClassName()}.setWeights: unexpected weights ${unknown.map((w) => `'${w?.name}'`).join(', ')}; expected '${ITER_WEIGHT_NAME}' and '${STATE_WEIGHT_NAME}' (weights of another optimizer class?)`,
        'STATE_FORMAT',
      );
    }
    const iter = weightValues.find((w) => w.name === ITER_WEIGHT_NAME);
    const st = weightValues.find((w) => w.name === STATE_WEIGHT_NAME);
    let buf: Buffer | null = null;
    if (st) {
      buf = decodeBytes(st.tensor);
      const kind = checkpointSummary(buf).kind; // validates the header
      if (kind !== this.kind) throw new KradagradError(`${this.getClassName()}.setWeights: the state is for '${kind}', this optimizer is '${this.kind}'`, 'STATE_FORMAT');
    }
    this.iterations_ = iter ? (await iter.tensor.data())[0] : 0;
    this.disposeInner();
    this.pending = buf;
  }

  getConfig(): tf.serialization.ConfigDict {
    const cfg: tf.serialization.ConfigDict = {};
    for (const [k, v] of Object.entries(this.options as Record<string, unknown>)) {
      // How the run is wired, not what the optimizer is: give the communicator again when restoring.
      if (v === undefined || k === 'distributed' || k === 'gradientsAveraged') continue;
      if (typeof v === 'function') {
        throw new KradagradError(
          `${this.getClassName()}.getConfig: option '${k}' is a function, which cannot be serialized; use a number to save this optimizer with a model`,
          'UNSUPPORTED',
        );
      }
      cfg[k] = v instanceof Backend ? v.name : (v as tf.serialization.ConfigDictValue);
    }
    return cfg;
  }

  dispose(): void {
    this.disposeInner();
    this.pending = null;
    super.dispose();
  }

  private disposeInner(): void {
    if (this.inner) this.inner.dispose();
    this.inner = null;
    this.deferred = null;
    this.slots = [];
    this.byVar = new Map();
  }
}

/** A model's weights (a tf.LayersModel, or anything with getWeights / setWeights). */
export interface WeightsHolder {
  getWeights(): tf.Tensor[];
  setWeights(weights: tf.Tensor[]): void;
}

/**
 * Data-parallel set-up: copies the values of `target` from rank `root` to every rank, so
 * that every rank starts from the same weights (the sharded optimizers check this on their
 * first step). One broadcast of all values together. A collective: every rank calls it
 * with the same variables or the same model architecture.
 * @param comm a communicator of `kradagrad/distributed`.
 * @param target float32 tf.Variables, or a model (getWeights/setWeights, all its weights).
 * @param root the rank whose values everyone gets; default 0.
 * @throws KradagradError INVALID_ARGUMENT for weights that are not float32 (or not variables),
 *   and the communicator's codes (SHAPE_MISMATCH when the ranks' weights differ in size).
 */
export async function broadcastWeights(comm: Communicator, target: tf.Variable[] | WeightsHolder, root = 0): Promise<void> {
  const isVars = Array.isArray(target);
  if (!isVars && (!target || typeof (target as WeightsHolder).getWeights !== 'function' || typeof (target as WeightsHolder).setWeights !== 'function')) {
    throw err(`broadcastWeights: expected an array of tf.Variables or a model with getWeights/setWeights but received ${describe(target)}`);
  }
  const tensors: tf.Tensor[] = isVars ? (target as tf.Variable[]) : (target as WeightsHolder).getWeights();
  tensors.forEach((t, i) => {
    if (!(t instanceof tf.Tensor)) throw err(`broadcastWeights: weight ${i} is ${describe(t)}, not a tensor`);
    if (isVars && !(t instanceof tf.Variable)) throw err(`broadcastWeights: entry ${i} is a tf.Tensor, not a tf.Variable (give variables, or the model)`);
    if (t.dtype !== 'float32') throw err(`broadcastWeights: weight ${i} is ${t.dtype}; only float32 weights are supported`);
  });
  const total = tensors.reduce((n, t) => n + t.size, 0);
  const buf = comm.allocate('float32', total);
  let off = 0;
  for (const t of tensors) {
    buf.set(t.dataSync() as Float32Array, off);
    off += t.size;
  }
  await comm.broadcast(buf, root);
  off = 0;
  const fresh = tensors.map((t) => {
    const v = tf.tensor(buf.slice(off, off + t.size), t.shape, 'float32');
    off += t.size;
    return v;
  });
  try {
    if (isVars) (target as tf.Variable[]).forEach((v, i) => v.assign(fresh[i]));
    else (target as WeightsHolder).setWeights(fresh);
  } finally {
    // (getWeights of a layers model returns its variables themselves: never dispose those.)
    tf.dispose(fresh);
  }
}

/** Bytes -> int32 tensor [byteLength, words...] (little-endian words). */
export function encodeBytes(buf: Buffer): tf.Tensor {
  const words = Math.ceil(buf.length / 4);
  const arr = new Int32Array(1 + words);
  arr[0] = buf.length;
  new Uint8Array(arr.buffer, 4, words * 4).set(buf);
  return tf.tensor1d(arr, 'int32');
}

/** Inverse of encodeBytes. */
export function decodeBytes(t: tf.Tensor): Buffer {
  if (!t || t.dtype !== 'int32' || t.rank !== 1 || t.size < 1) {
    throw new KradagradError(`'${STATE_WEIGHT_NAME}' must be a 1-D int32 tensor, got ${t ? `${t.dtype} [${t.shape}]` : describe(t)}`, 'STATE_FORMAT');
  }
  const a = Int32Array.from(t.dataSync() as Int32Array);
  const n = a[0];
  if (n < 0 || n > (a.length - 1) * 4) throw new KradagradError(`'${STATE_WEIGHT_NAME}' is truncated: ${n} bytes announced, ${(a.length - 1) * 4} present`, 'STATE_FORMAT');
  return Buffer.from(a.buffer, 4, n);
}

/** KrADagrad* (the paper's Algorithm 1) as a tf.Optimizer. Options: {@link KradagradStarOptions}. */
export class KradagradStarOptimizer extends KradagradTfjsOptimizer<KradagradStarOptions> {
  static className = 'KradagradStarOptimizer';
  constructor(options?: KradagradStarOptions) {
    super('kradagrad_star', (p, o) => new KradagradStar(p, o as KradagradStarOptions), resolveKradagradStar, options);
  }
}

/** KrADagrad (alternating variant) as a tf.Optimizer. Options: {@link KradagradOptions}. */
export class KradagradOptimizer extends KradagradTfjsOptimizer<KradagradOptions> {
  static className = 'KradagradOptimizer';
  constructor(options?: KradagradOptions) {
    super('kradagrad', (p, o) => new Kradagrad(p, o as KradagradOptions), resolveKradagrad, options);
  }
}

/** Shampoo (fp32 or fp64 statistics, `statisticsDtype`) as a tf.Optimizer. Options: {@link ShampooOptions}. */
export class ShampooOptimizer extends KradagradTfjsOptimizer<ShampooOptions> {
  static className = 'ShampooOptimizer';
  constructor(options?: ShampooOptions) {
    super('shampoo', (p, o) => new Shampoo(p, o as ShampooOptions), resolveShampoo, options);
  }
}

/** Our Adam (on our backend) as a tf.Optimizer; named so it does not clash with tf.AdamOptimizer. */
export class NativeAdamOptimizer extends KradagradTfjsOptimizer<AdamOptions> {
  static className = 'NativeAdamOptimizer';
  constructor(options?: AdamOptions) {
    super('adam', (p, o) => new Adam(p, o as AdamOptions), resolveAdam, options);
  }
}

/** Our SGD (momentum, Nesterov, weight decay) as a tf.Optimizer. */
export class NativeSgdOptimizer extends KradagradTfjsOptimizer<SgdOptions> {
  static className = 'NativeSgdOptimizer';
  constructor(options?: SgdOptions) {
    super('sgd', (p, o) => new Sgd(p, o as SgdOptions), resolveSgd, options);
  }
}

for (const cls of [KradagradStarOptimizer, KradagradOptimizer, ShampooOptimizer, NativeAdamOptimizer, NativeSgdOptimizer]) {
  tf.serialization.registerClass(cls);
}
