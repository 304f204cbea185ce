/**
 * The CPU backend's thread setting and its vectorised, threaded kernels (issue 13):
 * setThreads/getThreads validate and apply; the fused stages give bitwise the same
 * results at 1 and 2 threads, with every kernel build (generic, avx2, avx512: the CPU's
 * best in this process, the generic one in a child process), and equal a float32-exact
 * JavaScript reference of Adam element for element (so no FMA contraction or
 * reassociation crept in); eigh of a batch is the same whatever the thread count; steps
 * running on the libuv pool while the main thread works and the setting changes give
 * the results of the same steps run alone; the profile and bandwidth probes report.
 */
import { spawnSync } from 'child_process';
import { Adam, KradagradError, KradagradStar, Sgd, getBackend, getThreads, ops, setThreads } from '../lib';
import type { NativeTensor } from '../lib/native';
import { mulberry32 } from './ref/linalg';

/** A small seeded generator local to this file (its source also runs in a child process). */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

const B = getBackend('cpu');
const A = B.addon;
const initial = getThreads();
afterAll(() => setThreads(initial));

// Spans that cross tiles (512) and work pieces (16384), with odd tails, and specials.
const SIZES = [40003, 5000, 17, 1];

/** The kernel inputs, made the same way here and in the child process (KERNEL_SCRIPT). */
function inputs(seed: number, n: number): Float32Array {
  const r = prng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (2 * r() - 1) * (i % 7 === 3 ? 1e-3 : 1);
  if (n > 100) {
    a[5] = -0;
    a[77] = 0;
  }
  return a;
}
function withSpecials(a: Float32Array, j: number): Float32Array {
  if (j === 1) a[123] = NaN;
  if (j === 2) a[4] = Infinity;
  return a;
}

// The same kernel calls as a plain script (run in a child process with another kernel build).
const KERNEL_SCRIPT = String.raw`
const A = require(process.argv[1]);
${prng.toString()}
const SIZES = ${JSON.stringify(SIZES)};
${inputs.toString()}
${withSpecials.toString()}
${runKernels.toString()}
console.log(JSON.stringify({ kernels: A.cpuKernels(), out: runKernels(A) }));
`;

/** Runs the fused stages on fixed inputs; returns every output as base64 of its bytes. */
function runKernels(A: any): Record<string, string> {
  const T = (a: Float32Array): NativeTensor => A.fromArray('cpu', a, 1, [a.length]);
  const zeros = (n: number): NativeTensor => A.tensor('cpu', 'float32', 1, [n]);
  const out: Record<string, string> = {};
  const b64 = (t: NativeTensor): string => Buffer.from((t.read() as Float32Array).buffer).toString('base64');
  const g = SIZES.map((n: number, j: number) => T(withSpecials(inputs(10 + j, n), j)));
  const m = SIZES.map((n: number, j: number) => T(inputs(20 + j, n)));
  const v = SIZES.map((n: number, j: number) => T(inputs(30 + j, n).map(Math.abs)));
  const w = SIZES.map((n: number, j: number) => T(inputs(40 + j, n)));
  const adamCases: [string, Record<string, unknown>][] = [
    ['adam', { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, bc1: 0.19, bc2: 0.003 }],
    ['adamw', { lr: 1e-2, beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0.1, decoupled: true, bc1: 0.5, bc2: 0.1 }],
    ['adaml2b0', { lr: 3e-3, beta1: 0, beta2: 0.9, eps: 1e-7, weightDecay: 0.05, l2: true, bc1: 1, bc2: 0.5 }],
  ];
  for (const [name, p] of adamCases) {
    const mo = SIZES.map(zeros), vo = SIZES.map(zeros), wo = SIZES.map(zeros);
    const f = A.adamMany(g, m, v, w, mo, vo, wo, p);
    out[`${name}/finite`] = Array.from(f).join('');
    SIZES.forEach((_n: number, j: number) => {
      out[`${name}/m${j}`] = b64(mo[j]);
      out[`${name}/v${j}`] = b64(vo[j]);
      out[`${name}/w${j}`] = b64(wo[j]);
    });
  }
  const updCases: [string, Record<string, unknown>][] = [
    ['sgd', { lr: 0.1 }],
    ['heavy', { lr: 0.05, momentum: 0.9, weightDecay: 0.01, l2: true }],
    ['nesterov', { lr: 0.05, momentum: 0.5, nesterov: true, weightDecay: 0.02, decoupled: true }],
  ];
  for (const [name, p] of updCases) {
    const mom = (p as { momentum?: number }).momentum;
    const mo = mom ? SIZES.map(zeros) : null;
    const wo = SIZES.map(zeros);
    const f = A.updateMany(g, mom ? m : null, w, null, mo, wo, p);
    out[`${name}/finite`] = Array.from(f).join('');
    SIZES.forEach((_n: number, j: number) => {
      out[`${name}/w${j}`] = b64(wo[j]);
      if (mo) out[`${name}/m${j}`] = b64(mo[j]);
    });
  }
  for (const kind of ['adagrad', 'adam']) {
    const ao = SIZES.map(zeros), mo = SIZES.map(zeros), dir = SIZES.map(zeros);
    A.graftMany(kind, g, v, kind === 'adam' ? m : null, ao, kind === 'adam' ? mo : null, dir, { eps: 1e-7, beta1: 0.9, beta2: 0.99, bc1: 0.3, bc2: 0.05 });
    SIZES.forEach((_n: number, j: number) => {
      out[`graft-${kind}/a${j}`] = b64(ao[j]);
      out[`graft-${kind}/d${j}`] = b64(dir[j]);
    });
  }
  const z = SIZES.map(zeros);
  A.axpbyOutMany(g, m, z, 0.7, -1.3);
  SIZES.forEach((_n: number, j: number) => (out[`axpby3/${j}`] = b64(z[j])));
  const d = SIZES.map((n: number, j: number) => T(inputs(50 + j, n)));
  A.scaleByNormRatioMany(d, m, 1e-16);
  SIZES.forEach((_n: number, j: number) => (out[`ratio/${j}`] = b64(d[j])));
  out.dot = Array.from(A.dot(m[0], w[0])).join(',');
  return out;
}

/** Adam on float32 exactly as the kernels' scalar expressions (every operation rounded to float32). */
function adamRef(g: Float32Array, m: Float32Array, v: Float32Array, w: Float32Array, p: Record<string, number | boolean | undefined>) {
  const f = Math.fround;
  const lr = p.lr as number, wdd = (p.weightDecay as number) ?? 0, b1d = p.beta1 as number, b2d = p.beta2 as number;
  const wd = f(wdd), dec = f(1 - lr * wdd), a1 = f(1 - b1d), b1 = f(b1d), b2 = f(b2d), a2 = f(1 - b2d);
  const sc = f(1 / (p.bc2 as number)), eps = f(p.eps as number), step = f(-lr / (p.bc1 as number));
  const n = g.length;
  const mo = new Float32Array(n), vo = new Float32Array(n), wo = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let gi = g[i];
    if (p.l2) gi = f(f(wd * w[i]) + f(1 * gi));
    let wi = w[i];
    if (p.decoupled) wi = f(dec * wi);
    const mi = b1 === 0 ? f(a1 * gi) : f(f(a1 * gi) + f(b1 * m[i]));
    const vi = f(f(b2 * v[i]) + f(f(a2 * gi) * gi));
    const dir = f(mi / f(f(Math.sqrt(f(vi * sc))) + eps));
    mo[i] = mi;
    vo[i] = vi;
    wo[i] = f(f(step * dir) + f(1 * wi));
  }
  return { mo, vo, wo };
}

/** Same values: bitwise, except that any NaN equals any NaN (JavaScript writes its own NaN). */
function sameFloats(a: Float32Array, b: Float32Array): number {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length), ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  let bad = 0;
  for (let i = 0; i < a.length; i++) if (ua[i] !== ub[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) bad++;
  return bad;
}

describe('setThreads / getThreads', () => {
  test('validates its argument with a coded error and changes nothing', () => {
    setThreads(2);
    for (const bad of [0, -1, 1.5, 4097, NaN, '2', undefined, null]) {
      let caught: unknown;
      try {
        setThreads(bad as unknown as number);
      } catch (e) {
        caught = e;
      }
      expect(caught).toBeInstanceOf(KradagradError);
      expect((caught as KradagradError).code).toBe('INVALID_OPTION');
      expect((caught as Error).message).toMatch(/Expected an integer between 1 and 4096 for the thread count but received/);
    }
    expect(getThreads()).toBe(2);
    expect(A.getThreads()).toBe(2);
  });

  test('applies to the addon (OpenBLAS and the kernels) and shows in the device string', () => {
    setThreads(1);
    expect(getThreads()).toBe(1);
    expect(A.getThreads()).toBe(1);
    expect(A.backends().find((b) => b.name === 'cpu')!.device).toMatch(/, 1 thread, (generic|avx2|avx512) kernels\)$/);
    setThreads(3);
    expect(A.getThreads()).toBe(3);
    expect(A.backends().find((b) => b.name === 'cpu')!.device).toMatch(/, 3 threads,/);
    setThreads(initial);
  });

  test('KRADAGRAD_NUM_THREADS sets the default of a new process', () => {
    const r = spawnSync(process.execPath, ['-e', 'const a = require(process.argv[1]); console.log(a.getThreads())', B.report.addonPath], {
      encoding: 'utf8',
      env: { ...process.env, KRADAGRAD_NUM_THREADS: '3' },
    });
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('3');
  });
});

describe('kernels: the same bits at every thread count and with every kernel build', () => {
  let at1: Record<string, string>;
  let at2: Record<string, string>;
  beforeAll(() => {
    setThreads(1);
    at1 = runKernels(A);
    setThreads(2);
    at2 = runKernels(A);
    setThreads(initial);
  });

  test('1 and 2 threads give identical outputs', () => {
    expect(Object.keys(at1).length).toBeGreaterThan(80);
    expect(at2).toEqual(at1);
    // Specials reach the finiteness flags: NaN in g of span 1, Inf in span 2.
    expect(at1['adam/finite']).toBe('1001');
  });

  test.each(['generic', 'avx2'])('the %s build (child process) gives identical outputs', (build) => {
    const r = spawnSync(process.execPath, ['-e', KERNEL_SCRIPT, B.report.addonPath], {
      encoding: 'utf8',
      env: { ...process.env, KRADAGRAD_CPU_KERNELS: build, KRADAGRAD_NUM_THREADS: '2' },
      maxBuffer: 64 << 20,
    });
    expect(r.stderr).toBe('');
    const child = JSON.parse(r.stdout);
    // A CPU without AVX2 runs the generic build for 'avx2'.
    expect([build, 'generic']).toContain(child.kernels);
    expect(child.out).toEqual(at1);
  });

  test('Adam equals a float32-exact reference element for element', () => {
    const dec = (s: string): Float32Array => {
      const b = Buffer.from(s, 'base64');
      return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
    };
    const cases: [string, Record<string, number | boolean>][] = [
      ['adam', { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, bc1: 0.19, bc2: 0.003 }],
      ['adamw', { lr: 1e-2, beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0.1, decoupled: true, bc1: 0.5, bc2: 0.1 }],
      ['adaml2b0', { lr: 3e-3, beta1: 0, beta2: 0.9, eps: 1e-7, weightDecay: 0.05, l2: true, bc1: 1, bc2: 0.5 }],
    ];
    for (const [name, p] of cases) {
      SIZES.forEach((n, j) => {
        const ref = adamRef(withSpecials(inputs(10 + j, n), j), inputs(20 + j, n), inputs(30 + j, n).map(Math.abs), inputs(40 + j, n), p);
        expect([name, j, sameFloats(dec(at1[`${name}/m${j}`]), ref.mo)]).toEqual([name, j, 0]);
        expect([name, j, sameFloats(dec(at1[`${name}/v${j}`]), ref.vo)]).toEqual([name, j, 0]);
        expect([name, j, sameFloats(dec(at1[`${name}/w${j}`]), ref.wo)]).toEqual([name, j, 0]);
      });
    }
  });
});

describe('eigh and concurrent steps', () => {
  test('a batch of matrices (batch n^3 >= 1e6) is solved bit for bit the same at 1 and 2 threads', () => {
    const n = 96;
    const r = mulberry32(5);
    const a = new Float64Array(3 * n * n).map(() => 2 * r() - 1);
    const solve = (): [Float64Array, Float64Array] => {
      const t = B.fromArray(a, [n, n], 3);
      ops.symmetrize(t);
      const { w, v } = ops.eigh(t);
      const out: [Float64Array, Float64Array] = [w.read() as Float64Array, v.read() as Float64Array];
      [t, w, v].forEach((x) => x.dispose());
      return out;
    };
    setThreads(1);
    const one = solve();
    setThreads(2);
    const two = solve();
    setThreads(initial);
    expect(Buffer.from(two[0].buffer).equals(Buffer.from(one[0].buffer))).toBe(true);
    expect(Buffer.from(two[1].buffer).equals(Buffer.from(one[1].buffer))).toBe(true);
  });

  test('steps on the libuv pool beside main-thread work and thread changes equal the same steps run alone', async () => {
    const make = (seed: number) => {
      const r = mulberry32(seed);
      const w = Float32Array.from({ length: 96 * 80 }, () => 0.1 * (2 * r() - 1));
      const b = Float32Array.from({ length: 80 }, () => 0.1 * (2 * r() - 1));
      return { w: { data: w, shape: [96, 80] }, b: { data: b, shape: [80] } };
    };
    const grad = (t: number) => {
      const r = mulberry32(1000 + t);
      return { w: Float32Array.from({ length: 96 * 80 }, () => 2 * r() - 1), b: Float32Array.from({ length: 80 }, () => 2 * r() - 1) };
    };
    const optOf = (p: ReturnType<typeof make>) => new KradagradStar(p, { backend: B, blockSize: 32, rootFrequency: 1, momentum: 0.9 });
    setThreads(2);
    const pa = make(1);
    const alone = optOf(pa);
    for (let t = 1; t <= 4; t++) alone.step(grad(t));
    const pb = make(1);
    const busy = optOf(pb);
    const side = new Adam({ x: { data: new Float32Array(50000).fill(0.5), shape: [50000] } }, { backend: B });
    const sgd = new Sgd({ y: { data: new Float32Array(70000).fill(0.5), shape: [70000] } }, { backend: B, momentum: 0.9 });
    for (let t = 1; t <= 4; t++) {
      const p = busy.stepAsync(grad(t));
      // Main-thread work while the job runs: other steps, eigh of one matrix, a thread change.
      side.step({ x: new Float32Array(50000).fill(0.01 * t) });
      const m = B.fromArray(Float64Array.from({ length: 64 * 64 }, (_, i) => Math.sin(i * t)), [64, 64]);
      ops.symmetrize(m);
      const e = ops.eigh(m);
      [m, e.w, e.v].forEach((x) => x.dispose());
      setThreads(t % 2 === 0 ? 2 : 1);
      sgd.step({ y: new Float32Array(70000).fill(0.02) });
      setThreads(2);
      await p;
    }
    expect(Buffer.from(pb.w.data.buffer).equals(Buffer.from(pa.w.data.buffer))).toBe(true);
    expect(Buffer.from(pb.b.data.buffer).equals(Buffer.from(pa.b.data.buffer))).toBe(true);
    [alone, busy, side, sgd].forEach((o) => o.dispose());
    setThreads(initial);
  });
});

describe('profile and bandwidth probes', () => {
  test('profile counts the primitives run between start and stop', () => {
    const x = B.fromArray(new Float32Array(64 * 64).fill(1), [64, 64]);
    const y = B.tensor('float32', [64, 64]);
    A.profileStart();
    ops.gemm(x, x, y);
    ops.gemm(x, x, y);
    const p = A.profileStop();
    expect(p.gemm.calls).toBe(2);
    expect(p.gemm.ms).toBeGreaterThan(0);
    expect(p.eigh.calls).toBe(0);
    ops.gemm(x, x, y); // stopped: not counted
    A.profileStart();
    expect(A.profileStop().gemm.calls).toBe(0);
    [x, y].forEach((t) => t.dispose());
  });

  test('measureBandwidth reports positive rates and checks its arguments', () => {
    const bw = A.measureBandwidth(1 << 18, 2);
    for (const k of ['copy', 'copyStream', 'triad', 'triadStream', 'read'] as const) expect(bw[k]).toBeGreaterThan(0);
    expect(bw.bytesPerArray).toBe(4 << 18);
    expect(() => A.measureBandwidth(10, 1)).toThrow(/measureBandwidth expects/);
  });
});
