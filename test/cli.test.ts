/**
 * The CLI: every command on a tiny configuration, in-process (main() with captured
 * output), checking the outputs' structure and values; the conditioning run reproduces
 * from its seed; bad flags exit 2 with a message that says what is expected.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Io, logGrid, parseGrid } from '../lib/cli/args';
import { Quadratic, buildProblem, ratioToSgd } from '../lib/cli/conditioning';
import { householderQR, matmul, orthogonalityError, paperSpectrum, Rng } from '../lib/cli/linalg';
import { main } from '../lib/cli/main';
import * as ops from '../lib/ops';
import { getBackend } from '../lib/tensor';

function capture(): { io: Io; out: () => string; err: () => string } {
  const o: string[] = [];
  const e: string[] = [];
  return {
    io: { out: (s) => o.push(s), err: (s) => e.push(s), isTTY: false },
    out: () => o.join('\n'),
    err: () => e.join(''),
  };
}

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const c = capture();
  const code = await main(argv, c.io);
  return { code, out: c.out(), err: c.err() };
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kradagrad-cli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('help and usage errors', () => {
  test('help for every command, exit 0', async () => {
    for (const argv of [['help'], ['--help'], ['bench', '--help'], ['help', 'bench', 'step'], ['help', 'info']]) {
      const r = await run(argv);
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/Usage: kradagrad/);
    }
    const cond = await run(['bench', 'conditioning', '--help']);
    expect(cond.code).toBe(0);
    expect(cond.out).toMatch(/Usage: kradagrad bench conditioning/);
    expect(cond.out).toMatch(/--lrs/);
    const step = await run(['bench', 'step', '-h']);
    expect(step.out).toMatch(/Usage: kradagrad bench step/);
    const info = await run(['info', '--help']);
    expect(info.out).toMatch(/Usage: kradagrad info/);
    const build = await run(['build-native', '--help']);
    expect(build.code).toBe(0);
    expect(build.out).toMatch(/Usage: kradagrad build-native[\s\S]*KRADAGRAD_BUILD_FROM_SOURCE=1/);
    expect(cond.out).toMatch(/--momentum <m> +heavy-ball momentum of SGD and the Kronecker methods/);
    expect(cond.out).toMatch(/momentum 0\.9/);
    // golden is the lead's module: dispatch only.
    expect(await main(['golden', '--help'], capture().io)).toBe(0);
  });

  test('no command prints the help and exits 2', async () => {
    const r = await run([]);
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/Commands:/);
  });

  test.each([
    [['bench', 'conditioning', '--steps', 'abc'], /--steps expects a positive integer, got 'abc'/],
    [['bench', 'conditioning', '--steps', '0'], /--steps expects a positive integer, got '0'/],
    [['bench', 'conditioning', '--size=1.5'], /--size expects an integer >= 2, got '1.5'/],
    [['bench', 'conditioning', '--cond', 'big'], /--cond expects a number >= 1, got 'big'/],
    [['bench', 'conditioning', '--bogus'], /unknown option '--bogus' for bench conditioning; expected one of .*--steps/],
    [['bench', 'conditioning', '--steps'], /--steps expects a value/],
    [['bench', 'conditioning', '--lrs', '1e-3:x:3'], /--lrs expects a comma list of positive numbers .* or a log range min:max:count/],
    [['bench', 'conditioning', '--lrs', 'nope=1e-3'], /unknown optimizer 'nope'/],
    [['bench', 'conditioning', '--optimizers', 'sgd,foo'], /--optimizers expects a comma list of sgd, adam/],
    [['bench', 'conditioning', '--backend', 'tpu'], /--backend expects one of auto, cpu, cuda, got 'tpu'/],
    [['bench', 'conditioning', '--quick=yes'], /--quick takes no value/],
    [['bench', 'conditioning', 'extra'], /takes no positional arguments/],
    [['bench', 'step', '--sets', 'resnet50'], /--sets expects a comma list of resnet32, mlp, single4096, tiny, got 'resnet50'/],
    [['bench', 'step', '--root-every', '-3'], /--root-every expects a positive integer, got '-3'/],
    [['bench', 'step', '--root-method', 'svd'], /--root-method expects one of eigh, newton, got 'svd'/],
    [['bench', 'nope'], /unknown benchmark 'nope'; expected conditioning, step or distributed/],
    [['bench', 'distributed', '--sets', 'single4096'], /--sets expects a comma list of mlp, resnet32, tiny, got 'single4096'/],
    [['bench', 'distributed', '--optimizers', 'adam'], /--optimizers expects a comma list of kradstar32, kradstar64, shampoo32, shampoo64, krad32, got 'adam'/],
    [['bench', 'distributed', '--steps', '0'], /--steps expects a positive integer, got '0'/],
    [['frobnicate'], /unknown command 'frobnicate'/],
    [['info', '--verbose'], /unknown option '--verbose' for info/],
    [['help', 'nothing'], /no help for 'nothing'/],
    [['bench', 'conditioning', '--momentum', '1'], /--momentum expects a number in \[0, 1\), got '1'/],
    [['bench', 'conditioning', '--momentum=-0.5'], /--momentum expects a number in \[0, 1\), got '-0.5'/],
    [['bench', 'conditioning', '--steps', '5', '--steps', '6'], /--steps given twice/],
    [['bench', 'conditioning', '--steps', '--quick'], /--steps expects a value/],
    [['bench', 'conditioning', '-x'], /unknown option '-x' for bench conditioning/],
    [['bench', 'conditioning', '--help=yes'], /--help takes no value, got 'yes'/],
    [['golden', '--backend', 'tpu'], /--backend expects one of auto, cpu, cuda, got 'tpu'/],
    [['golden', 'a.json', 'b.json'], /golden takes one file, got 'a\.json' and 'b\.json'/],
    [['golden', '--bogus'], /unknown option '--bogus' for golden; expected one of --backend, --case, --json, --help/],
    [['build-native', 'extra'], /build-native takes no positional arguments, got 'extra'/],
  ])('%j exits 2', async (argv, msg) => {
    const r = await run(argv as string[]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(msg as RegExp);
    expect(r.err).toMatch(/--help/);
  });

  test('grids', () => {
    expect(logGrid(1e-4, 1e-1, 7)).toEqual([1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2, 3.16e-2, 1e-1]);
    expect(parseGrid('1e-3,0.01', '--lrs')).toEqual([1e-3, 0.01]);
    expect(parseGrid('1e-2:1:3', '--lrs')).toEqual([1e-2, 0.1, 1]);
    expect(() => parseGrid('1:1e-2:3', '--lrs')).toThrow(/log range/);
    expect(() => parseGrid('-1', '--lrs')).toThrow(/positive numbers/);
  });
});

describe('the conditioning problem', () => {
  test('spectrum, orthogonal rotations, SPD matrices with the requested condition', () => {
    const w = paperSpectrum(128, 1e10);
    expect(Math.max(...w)).toBe(10);
    expect(Math.max(...w) / Math.min(...w)).toBeCloseTo(1e10, -1);
    // 10^(-s^2) with s evenly spaced in [0, sqrt(10)]
    const s = Math.sqrt(10) * (5 / 127);
    expect(w[5]).toBeCloseTo(10 * 10 ** -(s * s), 12);
    const n = 24;
    const g = new Rng(3).normals(n * n);
    const { q, r } = householderQR(g, n);
    expect(orthogonalityError(q, n)).toBeLessThan(1e-13);
    const qr = matmul(q, r, n);
    for (let i = 0; i < n * n; i++) expect(Math.abs(qr[i] - g[i])).toBeLessThan(1e-12);
    for (let i = 0; i < n; i++) expect(r[i * n + i]).toBeGreaterThanOrEqual(0);

    const p = buildProblem(n, 1e6, 5);
    const B = getBackend('cpu');
    for (const m of [p.a, p.b]) {
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) expect(m[i * n + j]).toBe(m[j * n + i]);
      const t = B.fromArray(m, [n, n]);
      const e = ops.eigh(t);
      const ev = Array.from(e.w.read()).sort((a, b) => a - b);
      const want = Array.from(p.spectrum).sort((a, b) => a - b);
      ev.forEach((x, i) => expect(Math.abs(x - want[i])).toBeLessThan(1e-13 * 10));
      expect(ev[n - 1] / ev[0]).toBeCloseTo(1e6, -1);
      [t, e.w, e.v].forEach((x) => x.dispose());
    }
  });

  test('loss and gradient in float64 match a plain TypeScript computation', () => {
    const n = 12;
    const p = buildProblem(n, 1e8, 9);
    const q = new Quadratic(p, getBackend('cpu'));
    const g = new Float64Array(n * n);
    const f = q.eval(p.x0, g);
    const axb = matmul(matmul(p.a, p.x0, n), p.b, n);
    let want = 0;
    for (let i = 0; i < n * n; i++) want += p.x0[i] * axb[i];
    expect(Math.abs(f - want) / want).toBeLessThan(1e-13);
    for (let i = 0; i < n * n; i++) expect(Math.abs(g[i] - 2 * axb[i])).toBeLessThan(1e-12 * Math.abs(want));
    // float32 gradients are the float64 ones rounded.
    const g32 = new Float32Array(n * n);
    q.eval(Float32Array.from(p.x0), g32);
    expect(Math.abs(g32[0] - g[0]) / Math.abs(g[0])).toBeLessThan(1e-5);
    q.dispose();
  });
});

describe('bench conditioning', () => {
  const argv = (out: string, seed = 4): string[] => [
    'bench', 'conditioning', '--size', '16', '--cond', '1e6', '--steps', '30', '--seed', String(seed),
    '--lrs', '1e-3:1e-1:3', '--lrs', 'adam=0.01,0.1', '--backend', 'cpu', '--out', out, '--quiet',
  ];

  test('runs, prints the table and the plot paths, writes JSON/SVG/PNG/MD with sane values; reproduces from its seed', async () => {
    const outA = path.join(tmp, 'condA');
    const r = await run(argv(outA));
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    for (const label of ['SGD', 'Adam', 'Shampoo fp64', 'Shampoo fp32', 'KrADagrad* fp32', 'KrADagrad fp32', 'KrADagrad* fp64']) {
      expect(r.out).toContain(label);
    }
    expect(r.out).toMatch(/best lr +loss@10 +loss@30/);
    const lines = r.out.trim().split('\n');
    // It ends with the file paths, the plot last.
    expect(lines[lines.length - 1]).toMatch(/^plot: +.*conditioning\.(png|svg)$/);
    expect(r.out).toContain(path.join(outA, 'conditioning.svg'));

    const json = JSON.parse(fs.readFileSync(path.join(outA, 'conditioning.json'), 'utf8'));
    expect(json.benchmark).toBe('conditioning');
    expect(json.config).toMatchObject({ size: 16, cond: 1e6, steps: 30, seed: 4, epsilon: 1e-8, rootEvery: 3, startStep: 3, backendUsed: 'cpu' });
    expect(json.config.checkpoints).toEqual([10, 30]);
    expect(json.problem.measured.conditionA).toBeGreaterThan(0.99e6);
    expect(json.problem.measured.conditionA).toBeLessThan(1.01e6);
    expect(json.optimizers.map((o: { id: string }) => o.id)).toEqual(['sgd', 'adam', 'shampoo64', 'shampoo32', 'kradstar32', 'krad32', 'kradstar64']);
    for (const o of json.optimizers) {
      expect(o.runs.map((x: { lr: number }) => x.lr)).toEqual(o.id === 'adam' ? [0.01, 0.1] : [1e-3, 1e-2, 1e-1]);
      for (const x of o.runs) {
        expect(['ok', 'diverged', 'error']).toContain(x.status);
        if (x.status === 'ok') expect(x.finalLoss).toBeLessThan(json.problem.f0);
      }
      expect(o.best).not.toBeNull();
      expect(o.best.curve).toHaveLength(31);
      // float32 parameters start from X0 rounded to float32.
      const tol = o.paramDtype === 'float64' ? 1e-13 : 1e-6;
      expect(Math.abs(o.best.curve[0] - json.problem.f0) / json.problem.f0).toBeLessThan(tol);
      expect(o.best.curve[30]).toBe(o.best.finalLoss);
      expect(o.best.at['30']).toBe(o.best.finalLoss);
      expect(o.best.at['10']).toBe(o.best.curve[10]);
      expect(Math.min(...o.runs.filter((x: { status: string }) => x.status === 'ok').map((x: { finalLoss: number }) => x.finalLoss))).toBe(o.best.finalLoss);
    }
    expect(json.optimizers.find((o: { id: string }) => o.id === 'shampoo32').paramDtype).toBe('float32');
    expect(json.optimizers.find((o: { id: string }) => o.id === 'kradstar64').statisticsDtype).toBe('float64');
    expect(typeof json.findings.shampoo64Lowest).toBe('boolean');
    expect(typeof json.findings.kradstar32BelowShampoo32).toBe('boolean');

    const svg = fs.readFileSync(path.join(outA, 'conditioning.svg'), 'utf8');
    expect(svg).toMatch(/^<svg /);
    expect(svg).toContain('KrADagrad* fp32 (lr');
    expect(svg).toContain('loss f(X) (log scale)');
    // Two panels: the loss curves and each curve divided by SGD's (the paper's Figure 1).
    expect((svg.match(/<polyline/g) ?? []).length).toBeGreaterThanOrEqual(14);
    expect(svg).toContain('Each loss curve divided by SGD');
    expect(svg).toContain('loss / SGD loss (log scale)');
    const ratio = ratioToSgd(json)!;
    const sgdCurve = json.optimizers[0].best.curve;
    expect(ratio.map((s) => s.label)).toEqual(json.optimizers.map((o: { label: string }) => o.label));
    expect(Array.from(ratio[0].y).every((v) => v === 1)).toBe(true);
    for (const [i, o] of json.optimizers.entries()) for (const t of [0, 10, 30]) expect(ratio[i].y[t]).toBe(o.best.curve[t] / sgdCurve[t]);
    // The paper's settings: momentum 0.9 for SGD and the Kronecker methods, Adam's own beta1.
    expect(json.config.momentum).toBe(0.9);
    for (const o of json.optimizers) expect(o.options.momentum).toBe(o.id === 'adam' ? undefined : 0.9);
    expect(json.optimizers.find((o: { id: string }) => o.id === 'adam').options.beta1).toBe(0.9);
    expect(r.out).toMatch(/heavy-ball momentum 0\.9 for SGD and the Kronecker methods/);
    const pngPath = path.join(outA, 'conditioning.png');
    if (fs.existsSync(pngPath)) expect(fs.readFileSync(pngPath).subarray(1, 4).toString()).toBe('PNG');
    else expect(r.out).toMatch(/note: .*resvg/);
    expect(fs.readFileSync(path.join(outA, 'conditioning.md'), 'utf8')).toMatch(/\| optimizer \| best lr \|/);

    // Same seed, same numbers (everything but timings and the output path).
    const outB = path.join(tmp, 'condB');
    expect((await run(argv(outB))).code).toBe(0);
    const again = JSON.parse(fs.readFileSync(path.join(outB, 'conditioning.json'), 'utf8'));
    const strip = (j: Record<string, unknown>): string =>
      JSON.stringify(j, (k, v) => (['ms', 'sweepMs', 'totalMs', 'command'].includes(k) ? undefined : v));
    expect(strip(again)).toBe(strip(json));
    // Another seed, another problem.
    const outC = path.join(tmp, 'condC');
    expect((await run([...argv(outC, 5), '--optimizers', 'sgd', '--no-png'])).code).toBe(0);
    const other = JSON.parse(fs.readFileSync(path.join(outC, 'conditioning.json'), 'utf8'));
    expect(other.problem.f0).not.toBe(json.problem.f0);
    expect(fs.existsSync(path.join(outC, 'conditioning.png'))).toBe(false);
  });

  test('--momentum reaches SGD and the Kronecker methods, and the report says so', async () => {
    const base = ['bench', 'conditioning', '--size', '12', '--cond', '1e4', '--steps', '20', '--optimizers', 'sgd,adam,shampoo64,kradstar32', '--lrs', '1e-3', '--lrs', 'adam=0.01', '--backend', 'cpu', '--quiet', '--no-png'];
    const runWith = async (extra: string[], dir: string): Promise<{ out: string; j: { config: { momentum: number }; optimizers: { id: string; options: { momentum?: number }; best: { finalLoss: number } }[] } }> => {
      const out = path.join(tmp, dir);
      const r = await run([...base, '--out', out, ...extra]);
      expect(r.code).toBe(0);
      return { out: r.out, j: JSON.parse(fs.readFileSync(path.join(out, 'conditioning.json'), 'utf8')) };
    };
    const m0 = await runWith(['--momentum', '0'], 'mom0');
    const m9 = await runWith([], 'mom9');
    const m5 = await runWith(['--momentum=0.5'], 'mom5');
    expect([m0.j.config.momentum, m9.j.config.momentum, m5.j.config.momentum]).toEqual([0, 0.9, 0.5]);
    expect(m0.out).toMatch(/no momentum for SGD and the Kronecker methods \(--momentum 0\)/);
    expect(fs.readFileSync(path.join(tmp, 'mom5', 'conditioning.md'), 'utf8')).toMatch(/heavy-ball momentum 0\.5/);
    const final = (x: typeof m0, id: string): number => x.j.optimizers.find((o) => o.id === id)!.best.finalLoss;
    for (const id of ['sgd', 'shampoo64', 'kradstar32']) {
      expect(m5.j.optimizers.find((o) => o.id === id)!.options.momentum).toBe(0.5);
      expect(final(m0, id)).not.toBe(final(m9, id));
      expect(final(m5, id)).not.toBe(final(m9, id));
    }
    // Adam keeps its first moment whatever --momentum says.
    expect(final(m0, 'adam')).toBe(final(m9, 'adam'));
  });

  test('--out naming a file is a usage error before any run; a missing folder is created first', async () => {
    const file = path.join(tmp, 'a-file');
    fs.writeFileSync(file, 'x');
    const t0 = Date.now();
    for (const cmd of [['bench', 'conditioning'], ['bench', 'step', '--sets', 'tiny']]) {
      const r = await run([...cmd, '--backend', 'cpu', '--out', file]);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(new RegExp(`--out expects a directory, but '${file.replace(/[/.]/g, '\\$&')}' is a file`));
      expect(r.out).toBe('');
      const under = await run([...cmd, '--backend', 'cpu', '--out', path.join(file, 'sub')]);
      expect(under.code).toBe(2);
      expect(under.err).toMatch(/--out '.*a-file\/sub' cannot be used as the output directory \(ENOTDIR\)/);
    }
    // The default benchmark takes seconds; these stopped before it.
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(fs.readFileSync(file, 'utf8')).toBe('x');
    const fresh = path.join(tmp, 'new', 'nested');
    const ok = await run(['bench', 'conditioning', '--size', '4', '--steps', '3', '--optimizers', 'sgd', '--lrs', '1e-3', '--backend', 'cpu', '--quiet', '--no-png', '--out', fresh]);
    expect(ok.code).toBe(0);
    expect(fs.existsSync(path.join(fresh, 'conditioning.json'))).toBe(true);
  });

  test('a learning rate that blows up counts as failed', async () => {
    const out = path.join(tmp, 'condD');
    const r = await run(['bench', 'conditioning', '--size', '8', '--steps', '20', '--optimizers', 'sgd', '--lrs', '1e-3,10', '--out', out, '--quiet', '--no-png', '--backend', 'cpu']);
    expect(r.code).toBe(0);
    const j = JSON.parse(fs.readFileSync(path.join(out, 'conditioning.json'), 'utf8'));
    const [ok, bad] = j.optimizers[0].runs;
    expect(ok.status).toBe('ok');
    expect(bad.status).toBe('diverged');
    expect(bad.finalLoss).toBeNull();
    expect(j.optimizers[0].best.lr).toBe(1e-3);
    expect(r.out).toMatch(/1\/2/);
  });
});

describe('bench step', () => {
  test('tiny set on the CPU: table, JSON, chart; amortization arithmetic', async () => {
    const out = path.join(tmp, 'step');
    const r = await run(['bench', 'step', '--sets', 'tiny', '--optimizers', 'adam,shampoo32,shampoo64,kradstar32', '--backend', 'cpu', '--warmup', '1', '--steps', '2', '--root-every', '10', '--momentum', '0', '--out', out, '--quiet']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/amortized ms \(N=10\)/);
    expect(r.out).toMatch(/float32 vs float64/);
    expect(r.out).toMatch(/tiny +cpu +\d+ +Shampoo +[\d.]+ +[\d.]+ +[\d.]+/);
    const j = JSON.parse(fs.readFileSync(path.join(out, 'step.json'), 'utf8'));
    expect(j.benchmark).toBe('step');
    expect(j.backends).toHaveLength(1);
    expect(j.backends[0].name).toBe('cpu');
    expect(j.sets).toEqual([{ id: 'tiny', label: 'tiny', tensors: 3, params: 32 * 16 + 16 * 8 + 16, blockSize: 16 }]);
    expect(j.rows.map((x: { optimizer: string }) => x.optimizer)).toEqual(['adam', 'shampoo32', 'shampoo64', 'kradstar32']);
    const adam = j.rows[0];
    expect(adam.ratioToAdam).toBe(1);
    for (const x of j.rows) {
      expect(x.error).toBeUndefined();
      expect(x.plainSamples).toHaveLength(2);
      expect(x.plainMs).toBeGreaterThan(0);
      expect(x.amortizedMs).toBeCloseTo(x.plainMs + (x.rootMs - x.plainMs) / 10, 10);
      expect(x.ratioToAdam).toBeCloseTo(x.amortizedMs / adam.amortizedMs, 10);
      expect(x.stateBytes).toBeGreaterThan(0);
    }
    // fp64 statistics take twice the bytes of fp32 (same shapes; no momentum buffers, which keep the parameters' dtype).
    const s32 = j.rows.find((x: { optimizer: string }) => x.optimizer === 'shampoo32');
    const s64 = j.rows.find((x: { optimizer: string }) => x.optimizer === 'shampoo64');
    expect(s64.stateBytes).toBe(2 * s32.stateBytes);
    expect(fs.readFileSync(path.join(out, 'step.svg'), 'utf8')).toContain('Shampoo fp64');
    expect(r.out.trim().split('\n').pop()).toMatch(/^chart: +.*step\.(png|svg)$/);
    expect(j.config.rootMethod).toBe('eigh');
  });

  test('--threads list, floors, breakdown, momentum; --torch without torch says why', async () => {
    const out = path.join(tmp, 'step-threads');
    const r = await run(['bench', 'step', '--sets', 'tiny', '--optimizers', 'adam,kradstar32', '--backend', 'cpu', '--threads', '1,2', '--warmup', '1', '--steps', '2', '--stat', 'median', '--torch', '--python', path.join(tmp, 'no-such-python'), '--out', out, '--quiet', '--no-png']);
    expect(r.code).toBe(0);
    const j = JSON.parse(fs.readFileSync(path.join(out, 'step.json'), 'utf8'));
    expect(j.config).toMatchObject({ threads: [1, 2], momentum: 0.9, stat: 'median' });
    expect(j.backends.map((b: { threads: number }) => b.threads)).toEqual([1, 2]);
    expect(j.backends[0].device).toMatch(/, 1 thread,/);
    expect(j.backends[1].device).toMatch(/, 2 threads,/);
    for (const b of j.backends) expect(b.bandwidth.copy).toBeGreaterThan(0);
    expect(j.rows.map((x: { threads: number; optimizer: string }) => `${x.threads}:${x.optimizer}`)).toEqual(['1:adam', '1:kradstar32', '2:adam', '2:kradstar32']);
    for (const x of j.rows) {
      expect(x.error).toBeUndefined();
      expect(x.floorMs).toBeGreaterThan(0);
      expect(x.plainBreakdown.wallMs).toBeGreaterThan(0);
    }
    const adam = j.rows[0];
    expect(adam.floorKind).toBe('memory');
    expect(adam.memoryBytes).toBe(28 * (32 * 16 + 16 * 8 + 16));
    const bw = Math.max(j.backends[0].bandwidth.copy, j.backends[0].bandwidth.copyStream, j.backends[0].bandwidth.triad, j.backends[0].bandwidth.triadStream);
    expect(adam.floorMs).toBeCloseTo((adam.memoryBytes / (bw * 1e9)) * 1e3, 10);
    const k = j.rows[1];
    expect(k.floorKind).toBe('gemm');
    expect(k.rootBreakdown.eighMs).toBeGreaterThan(0);
    expect(k.plainBreakdown.eighMs).toBe(0);
    expect(k.plainMs).toBe([...k.plainSamples].sort((a: number, b: number) => a - b)[0] / 2 + [...k.plainSamples].sort((a: number, b: number) => a - b)[1] / 2);
    expect(j.torch.runs).toHaveLength(2);
    expect(j.torch.runs[0].error).toMatch(/no-such-python/);
    expect(r.out).toMatch(/Where the time went/);
    expect(r.out).toMatch(/memory [\d.]+ GB\/s/);
    expect(r.out).toMatch(/not measured: 1 threads: /);
  });

  test('--threads and --stat are checked', async () => {
    for (const bad of [['--threads', '0'], ['--threads', '1,x'], ['--stat', 'mean'], ['--momentum', '1']]) {
      const r = await run(['bench', 'step', '--sets', 'tiny', ...bad, '--out', path.join(tmp, 'step-bad')]);
      expect(r.code).toBe(2);
    }
  });

  test('--root-method newton reaches the optimizers and the report', async () => {
    const out = path.join(tmp, 'step-newton');
    const r = await run(['bench', 'step', '--sets', 'tiny', '--optimizers', 'kradstar32', '--backend', 'cpu', '--warmup', '1', '--steps', '1', '--root-method', 'newton', '--out', out, '--quiet', '--no-png']);
    expect(r.code).toBe(0);
    const j = JSON.parse(fs.readFileSync(path.join(out, 'step.json'), 'utf8'));
    expect(j.config.rootMethod).toBe('newton');
    expect(j.rows[0].error).toBeUndefined();
    expect(fs.readFileSync(path.join(out, 'step.svg'), 'utf8')).toContain('(newton)');
  });
});

describe('info', () => {
  test('reports the backend, why CUDA is or is not used, versions', async () => {
    const r = await run(['info', '--json']);
    expect({ code: r.code, err: r.err, auto: r.code ? JSON.parse(r.out).auto : undefined }).toEqual({ code: 0, err: '', auto: undefined });
    const j = JSON.parse(r.out);
    expect(j.node).toBe(process.versions.node);
    expect(j.napi).toBe(process.versions.napi);
    expect(j.kradagrad).toMatch(/^\d+\.\d+\.\d+/);
    expect(['cpu', 'cuda']).toContain(j.auto.backend);
    expect(j.cpuAddon.backends.map((b: { name: string }) => b.name)).toContain('cpu');
    expect(j.cpuAddon.openblas).toMatch(/OpenBLAS|\d/);
    if (!j.cuda.available) expect(j.cuda.reason).toMatch(/CUDA backend unavailable/);
    const t = await run(['info']);
    expect(t.code).toBe(0);
    expect(t.out).toMatch(/backend 'auto' uses: (cpu|cuda)/);
    expect(t.out).toMatch(/CUDA: (available|not used)/);
    expect(t.out).toMatch(/OpenBLAS: /);
  });
});

describe('the installed bin', () => {
  const bin = path.join(__dirname, '..', 'dist', 'lib', 'cli', 'main.js');
  const built = fs.existsSync(bin);
  (built ? test : test.skip)('node dist/lib/cli/main.js: shebang, exit codes, stderr message', () => {
    expect(fs.readFileSync(bin, 'utf8').startsWith('#!/usr/bin/env node')).toBe(true);
    const ok = spawnSync(process.execPath, [bin, 'help'], { encoding: 'utf8' });
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/bench conditioning/);
    const bad = spawnSync(process.execPath, [bin, 'bench', 'conditioning', '--steps', 'abc'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--steps expects a positive integer, got 'abc'/);
  });
  if (!built) test('bin check skipped: dist/lib/cli/main.js not built (npm test builds it)', () => undefined);
});
