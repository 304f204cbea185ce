/**
 * The pieces of scripts/gpu-check.sh that can be checked without a GPU: the side-by-side
 * step table (scripts/step-compare.js) and the compute-sanitizer case filter, which must
 * keep selecting a case of every kernel group as bench/gpu-ops.ts's case names change (a
 * filter that selects nothing would let the sanitizer pass vacuously on the device).
 * The script as a whole is exercised by its self-test (GPU_CHECK_SELF=1), which builds
 * the CUDA addon and so is not part of this suite.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { opCases } from './support/gpu_op_cases';

const root = path.resolve(__dirname, '..');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { compare } = require('../scripts/step-compare') as { compare: (specs: string[]) => string };

interface Row {
  set: string;
  backend: string;
  optimizer: string;
  label: string;
  precision: string | null;
  plainMs: number;
  rootMs: number;
  amortizedMs: number;
  error?: string;
}
const row = (optimizer: string, label: string, plainMs: number, rootMs: number, extra: Partial<Row> = {}): Row => ({
  set: 'mlp',
  backend: 'cuda',
  optimizer,
  label,
  precision: optimizer === 'adam' ? null : 'float32',
  plainMs,
  rootMs,
  amortizedMs: plainMs + (rootMs - plainMs) / 20,
  ...extra,
});

describe('scripts/step-compare.js', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'step-compare-'));
    const write = (name: string, rows: Row[]) => {
      fs.mkdirSync(path.join(dir, name));
      fs.writeFileSync(path.join(dir, name, 'step.json'), JSON.stringify({ backends: [{ name: 'cuda', device: 'Test GPU' }], rows }));
    };
    write('a', [row('adam', 'Adam', 0.47, 0.47), row('kradstar32', 'KrADagrad* fp32', 5.4, 279)]);
    write('b', [row('kradstar32', 'KrADagrad* fp32', 4, 100), row('shampoo32', 'Shampoo fp32', 3, 50, { error: 'CUDA_FAILED: x' })]);
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('one column per run, rows matched by set, backend and optimizer', () => {
    const md = compare([`as shipped=${path.join(dir, 'a')}`, `syrk off=${path.join(dir, 'b')}`, `gone=${path.join(dir, 'none')}`]);
    const lines = md.split('\n');
    expect(lines[0]).toBe('| set | backend | optimizer | as shipped | syrk off | gone |');
    // amortized = 5.4 + (279 - 5.4) / 20 = 19.08; = 4 + 96 / 20 = 8.8
    expect(lines).toContain('| mlp | cuda | KrADagrad* fp32 | 19.1 (5.40 / 279) | 8.80 (4.00 / 100) | - |');
    expect(lines).toContain('| mlp | cuda | Adam | 0.470 | - | - |');
    expect(lines).toContain('| mlp | cuda | Shampoo fp32 | - | failed | - |');
    expect(md).toMatch(/- gone: .*none[/\\]step\.json: not written/);
    expect(md).toContain('- device: cuda: Test GPU');
  });

  test('the command line: markdown on stdout, usage error without runs', () => {
    const ok = spawnSync(process.execPath, ['scripts/step-compare.js', `x=${path.join(dir, 'a')}`], { cwd: root, encoding: 'utf8' });
    expect(ok.status).toBe(0);
    expect(ok.stdout).toContain('| mlp | cuda | Adam | 0.470 |');
    const bad = spawnSync(process.execPath, ['scripts/step-compare.js'], { cwd: root, encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/usage/);
    const noLabel = spawnSync(process.execPath, ['scripts/step-compare.js', 'nolabel'], { cwd: root, encoding: 'utf8' });
    expect(noLabel.status).toBe(2);
    expect(noLabel.stderr).toMatch(/LABEL=DIR/);
  });
});

describe("gpu-check's compute-sanitizer case filter", () => {
  const script = fs.readFileSync(path.join(root, 'scripts', 'gpu-check.sh'), 'utf8');
  const filter = /^san_filter='([^']*)'$/m.exec(script)?.[1];
  const groups = [...(/^san_groups=\(([^)]*)\)$/m.exec(script)?.[1] ?? '').matchAll(/'([^']*)'/g)].map((m) => m[1]);

  test('selects at least one case of every group, among them inverseUpdate, allFiniteMany, gram and the Jacobi retry', () => {
    expect(filter).toBeDefined();
    expect(groups).toEqual(expect.arrayContaining(['^inverseUpdate ', '^allFiniteMany ', '^gram ', '^eigh .*sweeps:1']));
    // The stages, roots, jobs and steps built since the last GPU run.
    expect(groups).toEqual(
      expect.arrayContaining(['^updateMany .*300001', '^adamMany .*300001', '^root float32 .*newton', '^job float32', '^optimizer step KradagradStar']),
    );
    const selected = opCases()
      .map((c) => c.name)
      .filter((n) => new RegExp(filter!).test(n));
    const empty = groups.filter((g) => !selected.some((n) => new RegExp(g).test(n)));
    expect(empty).toEqual([]);
  });

  test('leaves the slow cases out (gemm, modeProduct, matpow, the eigh sweep, small fused stages, most steps)', () => {
    const selected = opCases()
      .map((c) => c.name)
      .filter((n) => new RegExp(filter!).test(n));
    expect(selected.filter((n) => /^(gemm|modeProduct|matpow) /.test(n))).toEqual([]);
    expect(selected.filter((n) => n.startsWith('eigh ') && !n.includes('sweeps:1'))).toEqual([]);
    // The small fused-stage cases (the large ones hold their entries too), and most steps.
    expect(selected.filter((n) => /^(updateMany|adamMany|graftMany) /.test(n) && !n.includes('300001'))).toEqual([]);
    expect(selected.filter((n) => n.startsWith('optimizer step ')).length).toBe(2);
  });
});
