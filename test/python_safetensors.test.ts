/**
 * A format 2 checkpoint opens in Python with the `safetensors` package and holds the same
 * tensors as the Node side. Skipped (saying why) where Python lacks safetensors/numpy,
 * unless KRADAGRAD_REQUIRE_SAFETENSORS=1 (CI installs them: pip install safetensors numpy).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { KradagradStar, Shampoo, getBackend } from '../lib';
import { mulberry32 } from './ref/linalg';
import { readHeader, tensorBytes } from './support/checkpoint';

const python = process.env.PYTHON ?? 'python3';
const probe = spawnSync(python, ['-c', 'import safetensors, numpy'], { encoding: 'utf8' });
const have = probe.status === 0;
const required = process.env.KRADAGRAD_REQUIRE_SAFETENSORS === '1';
if (!have && !required) {
  // eslint-disable-next-line no-console
  console.warn(`python_safetensors.test: skipped: ${python} cannot import safetensors and numpy (pip install safetensors numpy)`);
}
const maybe = have || required ? describe : describe.skip;

maybe('checkpoints in Python (safetensors)', () => {
  test.each([
    ['KradagradStar with momentum and Adam grafting', 'float32'],
    ['Shampoo float64', 'float64'],
  ])('%s: every tensor equal', (name, dtype) => {
    expect(have).toBe(true);
    const B = getBackend('cpu');
    const r = mulberry32(9);
    const arr = (n: number): Float32Array | Float64Array => {
      const a = dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
      for (let i = 0; i < n; i++) a[i] = 2 * r() - 1;
      return a;
    };
    const p = { w: { data: arr(35), shape: [5, 7] }, b: { data: arr(7), shape: [7] }, c: { data: arr(24), shape: [2, 3, 4] } };
    const opt = name.startsWith('Shampoo')
      ? new Shampoo(p, { backend: B, blockSize: 4, rootFrequency: 2, statisticsDtype: 'float64', momentum: 0.5 })
      : new KradagradStar(p, { backend: B, blockSize: 4, rootFrequency: 2, momentum: 0.9, grafting: 'adam' });
    for (let t = 1; t <= 3; t++) opt.step({ w: arr(35), b: arr(7), c: arr(24) });
    const buf = opt.saveState();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'krad-py-'));
    const file = path.join(dir, 'state.safetensors');
    fs.writeFileSync(file, buf);
    const { header } = readHeader(buf);
    const expected: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(header)) {
      if (k === '__metadata__') continue;
      const e = v as { dtype: string; shape: number[] };
      const bytes = Uint8Array.from(tensorBytes(buf, k));
      const values = e.dtype === 'F32' ? new Float32Array(bytes.buffer) : new Float64Array(bytes.buffer);
      expected[k] = { dtype: e.dtype === 'F32' ? 'float32' : 'float64', shape: e.shape, values: Array.from(values) };
    }
    fs.writeFileSync(path.join(dir, 'expected.json'), JSON.stringify(expected));
    const res = spawnSync(python, [path.join(__dirname, 'python', 'check_checkpoint.py'), file, path.join(dir, 'expected.json')], { encoding: 'utf8' });
    fs.rmSync(dir, { recursive: true, force: true });
    expect(`${res.status}\n${res.stdout}${res.stderr}`).toMatch(/^0\n/);
    expect(res.stdout).toMatch(new RegExp(`${Object.keys(expected).length} tensors, 0 differ`));
    expect(res.stdout).toMatch(/w\/block\/1\/stat\/0/);
    opt.dispose();
  });
});
