/**
 * Bad input never crashes: every kind is a KradagradError with a stable `code` and a
 * message that says what was expected, through the typed API and through the raw addon
 * (whose argument checks are the last line of defence). A rejected call leaves its
 * outputs as they were.
 */
import { KradagradError, Tensor, getBackend, ops } from '../lib';
import type { ErrorCode } from '../lib';
import type { NativeAddon, NativeTensor } from '../lib/native';
import { Pool } from './ref/check';

const backend = getBackend('cpu');
const addon: NativeAddon = backend.addon;
const pool = new Pool(backend);
afterEach(() => pool.disposeAll());

/** Runs `fn`, expects a KradagradError with `code` and a message matching `msg`; returns it. */
function expectError(fn: () => unknown, code: ErrorCode, msg?: RegExp): KradagradError {
  let thrown: unknown;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  if (thrown === undefined) throw new Error(`expected a KradagradError with code ${code}, but nothing was thrown`);
  if (!(thrown instanceof KradagradError)) throw new Error(`expected a KradagradError with code ${code}, got ${String(thrown)}`);
  expect(thrown).toBeInstanceOf(Error);
  expect(thrown.name).toBe('KradagradError');
  expect(thrown.code).toBe(code);
  expect(thrown.message.length).toBeGreaterThan(10);
  if (msg) expect(thrown.message).toMatch(msg);
  return thrown;
}
async function expectRejection(p: Promise<unknown>, code: ErrorCode, msg?: RegExp): Promise<KradagradError> {
  let thrown: unknown;
  try {
    await p;
  } catch (e) {
    thrown = e;
  }
  return expectError(() => {
    if (thrown !== undefined) throw thrown;
  }, code, msg);
}

const f32 = (shape: number[], batch = 1, fill = 1): Tensor => pool.from('float32', new Float32Array(shape.reduce((a, b) => a * b, batch)).fill(fill), shape, batch);
const f64 = (shape: number[], batch = 1, fill = 1): Tensor => pool.from('float64', new Float64Array(shape.reduce((a, b) => a * b, batch)).fill(fill), shape, batch);

describe('wrong buffer length', () => {
  test('fromArray with too few / too many elements', () => {
    expectError(() => backend.fromArray(new Float32Array(5), [2, 3]), 'SHAPE_MISMATCH', /6 elements.*5/);
    expectError(() => backend.fromArray(new Float64Array(7), [2, 3]), 'SHAPE_MISMATCH');
    expectError(() => backend.fromArray(new Float64Array(6), [2, 3], 2), 'SHAPE_MISMATCH', /12/);
  });
  test('write and read(into) with the wrong length leave the tensor as it was', () => {
    const t = f32([2, 2], 1, 3);
    expectError(() => t.write(new Float32Array(3)), 'SHAPE_MISMATCH', /expected 4 elements/);
    expectError(() => t.write(new Float32Array(5)), 'SHAPE_MISMATCH');
    expectError(() => t.read(new Float32Array(8)), 'SHAPE_MISMATCH', /4 elements/);
    expect(Array.from(t.read())).toEqual([3, 3, 3, 3]);
  });
  test('data that is not a float typed array', () => {
    expectError(() => backend.fromArray([1, 2] as unknown as Float32Array, [2]), 'INVALID_ARGUMENT', /Float32Array or Float64Array/);
    expectError(() => backend.fromArray(new Int32Array(2) as unknown as Float32Array, [2]), 'INVALID_ARGUMENT', /integer typed array/);
    expectError(() => f32([2]).write('ab' as unknown as Float32Array), 'INVALID_ARGUMENT');
  });
  test('bad shapes, batches and dtypes of new tensors', () => {
    expectError(() => backend.tensor('float32', [0, 2]), 'INVALID_ARGUMENT', /positive integers/);
    expectError(() => backend.tensor('float32', [-1]), 'INVALID_ARGUMENT');
    expectError(() => backend.tensor('float32', [1.5]), 'INVALID_ARGUMENT');
    expectError(() => backend.tensor('float32', 'x' as unknown as number[]), 'INVALID_ARGUMENT');
    expectError(() => backend.tensor('float32', [2], 0), 'INVALID_ARGUMENT', /batch/);
    expectError(() => backend.tensor('float16' as 'float32', [2]), 'INVALID_ARGUMENT', /'float32' or 'float64'/);
    expectError(() => backend.tensor('float32', [1 << 30, 1 << 30]), 'INVALID_ARGUMENT', /more than 2\^53 elements/);
    expectError(() => backend.tensor('float32', [1 << 20, 1 << 21]), 'INVALID_ARGUMENT', /too large/);
    expectError(() => addon.fromArray('cpu', new Float32Array(0), 0, [2]), 'INVALID_ARGUMENT', /batch/);
  });
  test('reshape to another element count', () => {
    expectError(() => f32([2, 3]).reshape([5]), 'SHAPE_MISMATCH', /cannot view/);
    expectError(() => f32([2, 3]).reshape([3], 3), 'SHAPE_MISMATCH');
  });
});

describe('shape mismatch', () => {
  test('gemm: inner dimensions, C shape, batches; C is untouched', () => {
    const C = f32([2, 2], 1, 7);
    expectError(() => ops.gemm(f32([2, 3]), f32([4, 2]), C), 'SHAPE_MISMATCH', /op\(A\) is 2x3, op\(B\) is 4x2/);
    expectError(() => ops.gemm(f32([2, 3]), f32([3, 2]), f32([2, 3])), 'SHAPE_MISMATCH');
    expectError(() => ops.gemm(f32([2, 3]), f32([3, 2]), C, { transA: true }), 'SHAPE_MISMATCH');
    expectError(() => ops.gemm(f32([2, 3], 2), f32([3, 2], 3)), 'SHAPE_MISMATCH', /batch/);
    expectError(() => ops.gemm(f32([2, 3], 2), f32([3, 2]), f32([2, 2], 3)), 'SHAPE_MISMATCH', /batch of A is 2/);
    expectError(() => ops.gemm(f32([3]), f32([3])), 'SHAPE_MISMATCH', /matrices/);
    expectError(() => ops.gemm(f32([2, 3, 1]), f32([3, 2]), C), 'SHAPE_MISMATCH', /rank 2/);
    expect(Array.from(C.read())).toEqual([7, 7, 7, 7]);
  });
  test('gram and modeProduct', () => {
    expectError(() => ops.gram(f32([3, 4]), 0, f32([4, 4])), 'SHAPE_MISMATCH', /\[3, 3\]/);
    expectError(() => ops.gram(f32([3, 4], 2), 1, f32([4, 4])), 'SHAPE_MISMATCH', /batch 2/);
    expectError(() => ops.gram(f32([3, 4]), 1, f32([4, 3])), 'SHAPE_MISMATCH', /square/);
    expectError(() => ops.modeProduct(f32([3, 4]), 0, f32([5, 4])), 'SHAPE_MISMATCH', /contracts a dimension of 4/);
    expectError(() => ops.modeProduct(f32([3, 4]), 1, f32([5, 4]), f32([3, 4])), 'SHAPE_MISMATCH', /out must be/);
    expectError(() => ops.modeProduct(f32([3, 4], 2), 1, f32([5, 4], 3)), 'SHAPE_MISMATCH', /batch of M/);
    expectError(() => ops.modeProduct(f32([3, 4]), 1, f32([5, 4, 1])), 'SHAPE_MISMATCH');
  });
  test('elementwise ops and per-item coefficients', () => {
    const y = f32([2, 3], 2, 5);
    expectError(() => ops.axpby(f32([3, 2], 3), y, 1, 1), 'SHAPE_MISMATCH', /x is .* but y is/);
    expectError(() => ops.axpby(f32([2, 3], 2), y, [1, 2, 3], 1), 'SHAPE_MISMATCH', /2 per-item coefficients but got 3/);
    expectError(() => ops.scale(y, [1]), 'SHAPE_MISMATCH');
    expectError(() => ops.addIdentity(f32([2, 2], 2), new Float64Array(3)), 'SHAPE_MISMATCH');
    expectError(() => ops.addIdentity(f32([2, 3]), 1), 'SHAPE_MISMATCH', /square/);
    expectError(() => ops.symmetrize(f32([2, 3])), 'SHAPE_MISMATCH', /square/);
    expectError(() => ops.trace(f32([4])), 'SHAPE_MISMATCH', /square/);
    expectError(() => ops.mulAcc(f32([3]), f32([4]), f32([3]), 1, 1), 'SHAPE_MISMATCH', /element counts/);
    expectError(() => ops.divSqrt(f32([3]), f32([3]), f32([2]), 1, 0), 'SHAPE_MISMATCH');
    expectError(() => ops.dot(f32([3]), f32([3], 2)), 'SHAPE_MISMATCH');
    expectError(() => ops.copy(f32([3]), f32([4])), 'SHAPE_MISMATCH', /element counts differ/);
    expect(Array.from(y.read())).toEqual(new Array(12).fill(5));
  });
  test('boxes out of range', () => {
    const full = f32([4, 4]);
    expectError(() => ops.boxes(full, f32([2, 2], 2), [[3, 0]]), 'INVALID_ARGUMENT', /overruns/);
    expectError(() => ops.boxes(full, f32([2, 2], 2), [[-1, 0]]), 'INVALID_ARGUMENT');
    expectError(() => ops.boxes(full, f32([2, 2], 1), [[0, 0], [2, 2]]), 'SHAPE_MISMATCH', /do not exist/);
    expectError(() => ops.boxes(full, f32([2, 2], 2), [[0, 0]], false, 2), 'SHAPE_MISMATCH');
    expectError(() => ops.boxes(full, f32([2], 2), [[0]]), 'SHAPE_MISMATCH', /rank/);
    expectError(() => ops.boxes(f32([4, 4], 2), f32([2, 2], 2), [[0, 0]]), 'SHAPE_MISMATCH', /batch 1/);
    expectError(() => ops.boxes(full, f32([2, 2], 2), [[0, 0, 0]]), 'SHAPE_MISMATCH');
  });
});

describe('dtype mismatch', () => {
  test('writing or reading a Float64Array through a float32 tensor (and vice versa)', () => {
    const t = f32([2, 2], 1, 2);
    expectError(() => t.write(new Float64Array(4)), 'DTYPE_MISMATCH', /expected a Float32Array .* received a Float64Array/);
    expectError(() => t.read(new Float64Array(4)), 'DTYPE_MISMATCH');
    expectError(() => f64([2]).write(new Float32Array(2)), 'DTYPE_MISMATCH');
    expect(Array.from(t.read())).toEqual([2, 2, 2, 2]);
  });
  test('ops on mixed dtypes', () => {
    expectError(() => ops.gemm(f32([2, 2]), f64([2, 2])), 'DTYPE_MISMATCH', /float32 and float64/);
    expectError(() => ops.gemm(f32([2, 2]), f32([2, 2]), f64([2, 2])), 'DTYPE_MISMATCH');
    expectError(() => ops.gram(f32([2, 3]), 0, f64([2, 2])), 'DTYPE_MISMATCH');
    expectError(() => ops.modeProduct(f64([2, 3]), 0, f32([2, 2])), 'DTYPE_MISMATCH');
    expectError(() => ops.axpby(f32([3]), f64([3]), 1, 1), 'DTYPE_MISMATCH');
    expectError(() => ops.mulAcc(f32([3]), f64([3]), f32([3]), 1, 1), 'DTYPE_MISMATCH');
    expectError(() => ops.divSqrt(f32([3]), f32([3]), f64([3]), 1, 1), 'DTYPE_MISMATCH');
    expectError(() => ops.dot(f32([3]), f64([3])), 'DTYPE_MISMATCH');
    expectError(() => ops.matpow(f32([2, 2]), 0.5, { out: f64([2, 2]) }), 'DTYPE_MISMATCH');
    expectError(() => ops.boxes(f32([4]), f64([2], 2), [[0]]), 'DTYPE_MISMATCH');
    expectError(() => addon.eigh(f32([2, 2]).native, f64([2]).native, f32([2, 2]).native), 'DTYPE_MISMATCH');
  });
});

describe('non-finite input where finiteness is required', () => {
  const nanMatrix = (dt: 'float32' | 'float64', bad: number): Tensor => {
    const a = [2, 0, 0, 0, 3, 0, 0, 0, 4];
    a[bad] = bad % 2 ? Infinity : NaN;
    return pool.from(dt, a, [3, 3]);
  };
  test.each(['float32', 'float64'] as const)('%s eigh / matpow of a NaN or Inf matrix: NONFINITE', (dt) => {
    const e = expectError(() => ops.eigh(nanMatrix(dt, 4)), 'NONFINITE', /item 0 .* not finite/);
    expect(e.details).toEqual({ item: 0 });
    expectError(() => ops.eigh(nanMatrix(dt, 3)), 'NONFINITE'); // Inf in the lower triangle
    expectError(() => ops.matpow(nanMatrix(dt, 0), 0.25), 'NONFINITE');
    expectError(() => ops.matpow(nanMatrix(dt, 7), -0.5, { floor: 1e-6 }), 'NONFINITE');
    const out = pool.from(dt, [9, 9, 9, 9, 9, 9, 9, 9, 9], [3, 3]);
    expectError(() => ops.matpow(nanMatrix(dt, 4), 0.5, { out }), 'NONFINITE');
    expect(Array.from(out.read())).toEqual(new Array(9).fill(9)); // the previous root is kept
  });
  test('the failing item of a batch is named', () => {
    const a = new Float64Array(3 * 4).fill(0);
    a[2 * 4] = NaN;
    const e = expectError(() => ops.eigh(pool.from('float64', a, [2, 2], 3)), 'NONFINITE', /item 2/);
    expect(e.details).toEqual({ item: 2 });
  });
  test('async forms reject with NONFINITE', async () => {
    await expectRejection(ops.eighAsync(nanMatrix('float64', 4)), 'NONFINITE');
    await expectRejection(ops.matpowAsync(nanMatrix('float32', 0), 0.5), 'NONFINITE');
  });
  test('non-finite scalars and coefficients', () => {
    expectError(() => ops.scale(f32([2]), NaN), 'INVALID_ARGUMENT', /finite number for alpha/);
    expectError(() => ops.axpby(f32([2]), f32([2]), 1, Infinity), 'INVALID_ARGUMENT', /beta/);
    expectError(() => ops.axpby(f32([2], 2), f32([2], 2), [1, NaN]), 'NONFINITE', /alpha\[1\]/);
    expectError(() => ops.addIdentity(f32([2, 2], 2), new Float64Array([1, Infinity])), 'NONFINITE');
    expectError(() => ops.matpow(f32([2, 2]), NaN), 'INVALID_ARGUMENT', /exponent/);
    expectError(() => ops.matpow(f32([2, 2]), 0.5, { floor: Infinity }), 'INVALID_ARGUMENT', /floor/);
    expectError(() => ops.fill(f32([2]), NaN), 'INVALID_ARGUMENT');
    expectError(() => ops.gemm(f32([2, 2]), f32([2, 2]), undefined, { alpha: NaN }), 'INVALID_ARGUMENT', /alpha/);
    expectError(() => ops.axpby(f32([2]), f32([2]), ['a'] as unknown as number[]), 'INVALID_ARGUMENT', /element 0/);
  });
  test('a negative exponent needs a positive floor', () => {
    expectError(() => ops.matpow(f32([2, 2]), -0.25), 'INVALID_ARGUMENT', /floor > 0/);
  });
});

describe('disposed handles', () => {
  test('every use of a disposed tensor is DISPOSED; dispose is idempotent', () => {
    const t = f32([2, 2]);
    t.dispose();
    t.dispose();
    expect(t.disposed).toBe(true);
    expectError(() => t.read(), 'DISPOSED', /disposed/);
    expectError(() => t.write(new Float32Array(4)), 'DISPOSED');
    expectError(() => t.reshape([4]), 'DISPOSED');
    expectError(() => t.shape, 'DISPOSED');
    expectError(() => t.dtype, 'DISPOSED');
    expectError(() => ops.scale(t, 2), 'DISPOSED');
    expectError(() => ops.gemm(f32([2, 2]), t, f32([2, 2])), 'DISPOSED', /^B: /);
    expectError(() => ops.gemm(f32([2, 2]), f32([2, 2]), t), 'DISPOSED', /^C: /);
    expectError(() => addon.eigh(t.native, f32([2]).native, f32([2, 2]).native), 'DISPOSED');
    expectError(() => ops.copy(f32([4]), t), 'DISPOSED');
  });
  test('async ops on a disposed tensor reject', async () => {
    const t = f64([2, 2]);
    t.dispose();
    await expectRejection(ops.eighAsync(t), 'DISPOSED');
    await expectRejection(ops.matpowAsync(t, 0.5), 'DISPOSED');
  });
  test('a view outlives the disposed tensor it was made from', () => {
    const t = pool.from('float32', [1, 2, 3, 4], [2, 2]);
    const v = pool.keep(t.reshape([4]));
    t.dispose();
    expect(Array.from(v.read())).toEqual([1, 2, 3, 4]);
  });
});

describe('foreign or invalid handles', () => {
  const forged: [string, unknown][] = [
    ['undefined', undefined],
    ['null', null],
    ['a number', 42],
    ['a string', 'tensor'],
    ['a plain object', {}],
    ['a NativeTensor-like plain object', { dtype: 'float32', shape: [2, 2], batch: 1, backend: 'cpu', bytes: 16, disposed: false, read() {}, dispose() {} }],
    ['a Float32Array', new Float32Array(4)],
  ];
  test.each(forged)('raw addon given %s: INVALID_HANDLE', (_what, v) => {
    const x = v as NativeTensor;
    expectError(() => addon.symmetrize(x), 'INVALID_HANDLE', /kradagrad tensor handle for A/);
    expectError(() => addon.gemm(x, x, x), 'INVALID_HANDLE');
    expectError(() => addon.eigh(f32([2, 2]).native, x, x), 'INVALID_HANDLE', /for W/);
    expectError(() => addon.copy(f32([4]).native, x), 'INVALID_HANDLE', /for dst/);
  });
  test('raw addon given an object with the NativeTensor prototype but no native tensor: INVALID_HANDLE', () => {
    const fake = Object.create((addon.NativeTensor as unknown as { prototype: object }).prototype) as NativeTensor;
    expectError(() => addon.symmetrize(fake), 'INVALID_HANDLE');
    expectError(() => addon.gram(f32([2, 2]).native, 0, fake), 'INVALID_HANDLE');
    expectError(() => addon.eighAsync(fake, fake, fake), 'INVALID_HANDLE');
  });
  test('NativeTensor cannot be constructed from JS', () => {
    const Ctor = addon.NativeTensor as unknown as new (...a: unknown[]) => unknown;
    expectError(() => new Ctor(), 'INVALID_ARGUMENT', /cannot be constructed directly/);
    expectError(() => new Ctor({}), 'INVALID_ARGUMENT');
  });
  test('typed ops given non-Tensor arguments: INVALID_HANDLE', () => {
    expectError(() => ops.scale({} as Tensor, 1), 'INVALID_HANDLE', /Tensor arguments/);
    expectError(() => ops.gemm(f32([2, 2]), { native: f32([2, 2]).native } as unknown as Tensor), 'INVALID_HANDLE');
    expectError(() => ops.trace(null as unknown as Tensor), 'INVALID_HANDLE');
  });
});

describe('non-square input to eigh', () => {
  test('typed and raw eigh / matpow', async () => {
    expectError(() => ops.eigh(f32([2, 3])), 'SHAPE_MISMATCH', /square/);
    expectError(() => ops.eigh(f64([4])), 'SHAPE_MISMATCH');
    expectError(() => ops.eigh(f64([2, 2, 2])), 'SHAPE_MISMATCH');
    await expectRejection(ops.eighAsync(f64([3, 2])), 'SHAPE_MISMATCH', /square/);
    expectError(() => ops.matpow(f32([2, 3]), 0.5), 'SHAPE_MISMATCH', /square/);
    await expectRejection(ops.matpowAsync(f32([2, 3]), 0.5), 'SHAPE_MISMATCH');
    expectError(() => addon.eigh(f32([2, 3]).native, f32([2]).native, f32([2, 3]).native), 'SHAPE_MISMATCH', /square/);
    expectError(() => addon.eigh(f32([3, 3]).native, f32([2]).native, f32([3, 3]).native), 'SHAPE_MISMATCH', /W must be/);
    expectError(() => addon.eigh(f32([3, 3]).native, f32([3]).native, f32([3, 3], 2).native), 'SHAPE_MISMATCH', /V must/);
    expectError(() => ops.matpow(f32([3, 3]), 0.5, { out: f32([2, 2]) }), 'SHAPE_MISMATCH', /out must/);
  });
});

describe('unknown options', () => {
  test('sync ops', () => {
    expectError(() => ops.gemm(f32([2, 2]), f32([2, 2]), undefined, { transa: true } as never), 'INVALID_OPTION', /Unknown option 'transa' for gemm; known options: transA/);
    expectError(() => ops.eigh(f32([2, 2]), { allowFailure: true } as never), 'INVALID_OPTION', /allowFailure/);
    expectError(() => ops.matpow(f32([2, 2]), 0.5, { flor: 1e-3 } as never), 'INVALID_OPTION', /flor/);
  });
  test('async ops reject', async () => {
    await expectRejection(ops.eighAsync(f32([2, 2]), { x: 1 } as never), 'INVALID_OPTION');
    await expectRejection(ops.matpowAsync(f32([2, 2]), 1, { root: 4 } as never), 'INVALID_OPTION', /root/);
  });
});

describe('backends', () => {
  test('bad backend names', () => {
    expectError(() => getBackend('tpu' as 'cpu'), 'INVALID_OPTION', /'auto', 'cpu' or 'cuda'.*tpu/);
    expectError(() => getBackend(3 as unknown as 'cpu'), 'INVALID_OPTION');
    expectError(() => addon.tensor('tpu', 'float32', 1, [2]), 'BACKEND_UNAVAILABLE', /tpu/);
    expectError(() => addon.tensor(7 as unknown as string, 'float32', 1, [2]), 'INVALID_ARGUMENT', /backend name/);
    expectError(() => addon.synchronize('nope'), 'BACKEND_UNAVAILABLE');
  });
  test("'cuda' without a usable CUDA backend is BACKEND_UNAVAILABLE with the reason (skipped where CUDA works)", () => {
    let cudaWorks = false;
    try {
      cudaWorks = getBackend('cuda').name === 'cuda';
    } catch (e) {
      expect(e).toBeInstanceOf(KradagradError);
      expect((e as KradagradError).code).toBe('BACKEND_UNAVAILABLE');
      expect((e as KradagradError).message).toMatch(/CUDA backend unavailable: ./);
    }
    if (cudaWorks) console.log('CUDA is available here: the BACKEND_UNAVAILABLE path is not exercised');
  });
});

describe('bad mode index', () => {
  test.each([-1, 2, 1.5, 2 ** 32, 2 ** 31, -(2 ** 32)])('mode %p', (mode) => {
    const G = f32([3, 4]);
    expectError(() => ops.gram(G, mode, f32([3, 3])), 'INVALID_ARGUMENT', /mode/);
    expectError(() => ops.modeProduct(G, mode, f32([3, 3]), f32([3, 4])), 'INVALID_ARGUMENT', /mode/);
    expectError(() => addon.gram(G.native, mode, f32([3, 3]).native), 'INVALID_ARGUMENT', /mode|integer/);
  });
  test('gram without H, mode out of range', () => {
    expectError(() => ops.gram(f32([3, 4]), 2), 'INVALID_ARGUMENT', /mode 2 out of range/);
    expectError(() => ops.modeProduct(f32([3, 4]), 5, f32([3, 3])), 'SHAPE_MISMATCH', /mode 5/);
  });
});

describe('aliasing outputs', () => {
  test('an output that is also an input is rejected, the data left as it was', () => {
    const A = pool.from('float32', [1, 2, 3, 4], [2, 2]);
    expectError(() => ops.gemm(A, A, A), 'INVALID_ARGUMENT', /alias/);
    expectError(() => ops.gemm(f32([2, 2]), A, A), 'INVALID_ARGUMENT', /alias/);
    expectError(() => ops.gemm(A, f32([2, 2]), pool.keep(A.reshape([2, 2]))), 'INVALID_ARGUMENT', /alias/); // a view of A
    expectError(() => ops.modeProduct(A, 0, f32([2, 2]), A), 'INVALID_ARGUMENT', /alias/);
    expectError(() => ops.modeProduct(f32([2, 2]), 0, A, A), 'INVALID_ARGUMENT', /alias/);
    expectError(() => ops.gram(A, 0, A), 'INVALID_ARGUMENT', /alias/);
    expectError(() => ops.gram(A, 1, pool.keep(A.reshape([2, 2]))), 'INVALID_ARGUMENT', /alias/);
    expectError(() => ops.boxes(A, pool.keep(A.reshape([2, 2])), [[0, 0]]), 'INVALID_ARGUMENT', /alias/);
    expect(Array.from(A.read())).toEqual([1, 2, 3, 4]);
  });
  test('elementwise ops may run in place (same element in and out)', () => {
    const A = pool.from('float64', [1, 4, 9], [3]);
    ops.axpby(A, A, 2, 1);
    expect(Array.from(A.read())).toEqual([3, 12, 27]);
    ops.divSqrt(A, A, A, 1, 0);
    expect(Array.from(A.read(), (x) => Math.round(x * 1e12) / 1e12)).toEqual([3, 12, 27].map((x) => Math.round(Math.sqrt(x) * 1e12) / 1e12));
  });
});

describe('fused optimizer pieces', () => {
  test('bad arguments', () => {
    expectError(() => ops.scaleByNormRatio(f32([3]), f32([4]), 0), 'SHAPE_MISMATCH');
    expectError(() => ops.scaleByNormRatio(f32([3]), f64([3]), 0), 'DTYPE_MISMATCH');
    expectError(() => ops.scaleByNormRatio(f32([3]), f32([3]), -1), 'INVALID_ARGUMENT', /eps/);
    expectError(() => ops.inverseUpdate(f32([2, 2]), f32([2, 2]), f32([2, 2]), 'spectral' as 'trace'), 'INVALID_ARGUMENT', /'trace' or 'frobenius'/);
    expectError(() => ops.inverseUpdate(f32([2, 3]), f32([2, 3]), f32([2, 3]), 'trace'), 'SHAPE_MISMATCH', /square/);
    expectError(() => ops.inverseUpdate(f32([2, 2]), f32([2, 2], 2), f32([2, 2]), 'trace'), 'SHAPE_MISMATCH');
    const L = f32([2, 2]);
    expectError(() => ops.inverseUpdate(L, L, f32([2, 2]), 'trace'), 'INVALID_ARGUMENT', /alias/);
    expectError(() => ops.allFiniteMany([f32([2]), {} as Tensor]), 'INVALID_HANDLE');
    expectError(() => addon.allFiniteMany([f32([2]).native, { dtype: 'float32' } as unknown as NativeTensor]), 'INVALID_HANDLE', /allFiniteMany element/);
    expectError(() => addon.allFiniteMany('x' as unknown as NativeTensor[]), 'INVALID_ARGUMENT', /array of tensors/);
  });
});

describe('errors from the native layer are KradagradErrors with a code (never plain Errors)', () => {
  test('missing arguments to the raw addon', () => {
    expectError(() => (addon.gemm as unknown as () => void)(), 'INVALID_HANDLE', /for A but received undefined/);
    expectError(() => (addon.tensor as unknown as () => void)(), 'INVALID_ARGUMENT');
    expectError(() => addon.gram(f32([2, 2]).native, undefined as unknown as number, f32([2, 2]).native), 'INVALID_ARGUMENT', /mode/);
    expectError(() => addon.gemm(f32([2, 2]).native, f32([2, 2]).native, f32([2, 2]).native, 1 as unknown as boolean), 'INVALID_ARGUMENT', /boolean for transA/);
    expectError(() => addon.boxes(f32([4]).native, f32([2]).native, 'x' as unknown as number[]), 'INVALID_ARGUMENT', /offsets/);
  });
});
