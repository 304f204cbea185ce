/**
 * The npm package as a user gets it. `npm pack`s this package (its prepack builds the
 * static CPU prebuild; run here first when needed, with `tsc` when dist/ is stale),
 * installs the tarball into an empty project with `npm install --offline` and a PATH that
 * holds only node, npm and sh (no cc, g++, make or python), loads it, runs one optimizer
 * step, and checks that CUDA trouble never stops the CPU path: a broken
 * KRADAGRAD_CUDA_ADDON, a broken @kradagrad/linux-x64-cuda13 package and one of another
 * version all fall back to CPU with the reason in `report.cudaReason`.
 *
 * Only linux-x64 (glibc) has a prebuild recipe; elsewhere the suite is skipped, saying so.
 */
import { spawnSync, SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.resolve(__dirname, '..');
const glibc = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header?.glibcVersionRuntime;
const supported = process.platform === 'linux' && process.arch === 'x64' && !!glibc;
if (!supported) {
  // eslint-disable-next-line no-console
  console.log(`pack test skipped: no prebuild recipe for ${process.platform}-${process.arch}${glibc ? '' : ' without glibc'}`);
}
const suite = supported ? describe : describe.skip;

/** npm's own cli.js, run with this node (npm test sets npm_execpath; otherwise npm sits beside node). */
function npmCli(): string {
  const fromEnv = process.env.npm_execpath;
  if (fromEnv && /npm-cli\.js$/.test(fromEnv) && fs.existsSync(fromEnv)) return fromEnv;
  const candidates = [
    path.resolve(path.dirname(process.execPath), '../lib/node_modules/npm/bin/npm-cli.js'),
    path.resolve(path.dirname(fs.realpathSync(path.join(path.dirname(process.execPath), 'npm'))), 'npm-cli.js'),
  ];
  const found = candidates.find((p) => fs.existsSync(p));
  if (!found) throw new Error(`npm-cli.js not found near ${process.execPath}`);
  return found;
}

function newest(p: string, re: RegExp): number {
  if (!fs.existsSync(p)) return 0;
  const st = fs.statSync(p);
  if (!st.isDirectory()) return re.test(p) ? st.mtimeMs : 0;
  return fs.readdirSync(p).reduce((t, e) => Math.max(t, newest(path.join(p, e), re)), 0);
}

function check(r: SpawnSyncReturns<string>, what: string): string {
  if (r.status !== 0) {
    throw new Error(`${what} failed (exit ${r.status}${r.error ? `, ${r.error.message}` : ''}):\n${r.stdout}\n${r.stderr}`);
  }
  return r.stdout;
}

/** The script run inside the installed project: load, report, one KradagradStar step. */
const stepScript = `
const k = require('kradagrad');
const b = k.getBackend('auto');
const w = Float32Array.from({ length: 12 }, (_, i) => Math.sin(i + 1));
const g = Float32Array.from({ length: 12 }, (_, i) => Math.cos(3 * i));
const w0 = w.slice();
const opt = new k.KradagradStar({ w: { data: w, shape: [4, 3] } }, { lr: 0.1 });
opt.step({ w: g });
console.log(JSON.stringify({
  backend: b.name, report: b.report, resolved: require.resolve('kradagrad'),
  changed: w.some((x, i) => x !== w0[i]), finite: w.every(Number.isFinite),
}));
`;

suite('npm package: pack, install without a compiler, load, step', () => {
  let tmp = '';
  let bin = '';
  let app = '';
  let tarball = '';
  let cudaTarball = '';
  let env: NodeJS.ProcessEnv = {};
  const t0 = Date.now();
  const cli = supported ? npmCli() : '';
  const npm = (args: string[], cwd: string, extra: NodeJS.ProcessEnv = env): SpawnSyncReturns<string> =>
    spawnSync(process.execPath, [cli, ...args], { cwd, env: extra, encoding: 'utf8', maxBuffer: 64 << 20 });
  const runStep = (extraEnv: NodeJS.ProcessEnv = {}): { backend: string; report: { backend: string; addonPath: string; cudaReason?: string }; resolved: string; changed: boolean; finite: boolean } => {
    const r = spawnSync('node', ['-e', stepScript], { cwd: app, env: { ...env, ...extraEnv }, encoding: 'utf8' });
    return JSON.parse(check(r, 'loading kradagrad in the installed project').trim().split('\n').pop()!);
  };

  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kradagrad-pack-'));
    // 1. dist/ (what the package's main points at) and the prebuild.
    const dist = path.join(root, 'dist', 'lib', 'index.js');
    if (!fs.existsSync(dist) || fs.statSync(dist).mtimeMs < newest(path.join(root, 'lib'), /\.ts$/)) {
      check(spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: root, encoding: 'utf8' }), 'tsc');
    }
    check(spawnSync(process.execPath, ['scripts/prebuild.js'], { cwd: root, encoding: 'utf8' }), 'scripts/prebuild.js');

    // 2. The tarballs: this package, and a platform package around a file that is no addon.
    const packOut = check(npm(['pack', '--json', '--pack-destination', tmp], root, process.env), 'npm pack');
    const packed = JSON.parse(packOut.slice(packOut.indexOf('[\n')));
    tarball = path.join(tmp, packed[0].filename);
    const broken = path.join(tmp, 'broken', 'kradagrad_cuda.node');
    fs.mkdirSync(path.dirname(broken));
    fs.writeFileSync(broken, 'this is not an ELF file\n');
    const out = check(
      spawnSync(process.execPath, ['scripts/pack-cuda-package.js', '--addon', broken, '--no-verify', '--out', tmp], { cwd: root, encoding: 'utf8' }),
      'scripts/pack-cuda-package.js',
    );
    cudaTarball = out.trim().split('\n').pop()!;

    // 3. A PATH with node, npm and sh only, and an environment without compiler settings.
    bin = path.join(tmp, 'bin');
    fs.mkdirSync(bin);
    fs.symlinkSync(process.execPath, path.join(bin, 'node'));
    fs.symlinkSync(cli, path.join(bin, 'npm'));
    fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));
    const cache = process.env.npm_config_cache || path.join(os.homedir(), '.npm');
    env = { PATH: bin, HOME: os.homedir(), TMPDIR: os.tmpdir(), npm_config_cache: cache, npm_config_update_notifier: 'false' };

    app = path.join(tmp, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }) + '\n');
  }, 180_000);

  afterAll(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    // eslint-disable-next-line no-console
    console.log(`pack test: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  });

  test('no compiler is reachable on the install PATH', () => {
    for (const tool of ['cc', 'gcc', 'g++', 'c++', 'clang', 'make', 'python3', 'python']) {
      const r = spawnSync('sh', ['-c', `command -v ${tool}`], { env, encoding: 'utf8' });
      expect(`${tool}: ${r.stdout.trim()}`).toBe(`${tool}: `);
    }
  });

  test('the tarball holds dist/, the prebuild and the sources for a fallback build, not build/', () => {
    const list = check(spawnSync('tar', ['tzf', tarball], { encoding: 'utf8', maxBuffer: 64 << 20 }), 'tar');
    const files = list.split('\n');
    for (const f of ['dist/lib/index.js', 'prebuilds/linux-x64/kradagrad_cpu.node', 'prebuilds/linux-x64/kradagrad_cpu.json', 'scripts/install.js', 'binding.gyp', 'native/core/ops.cc']) {
      expect(files).toContain(`package/${f}`);
    }
    expect(files.filter((f) => /^package\/(build|build-cuda|node_modules|test|\.cache)\//.test(f))).toEqual([]);
    expect(fs.statSync(tarball).size).toBeLessThan(40 << 20);
  });

  test('npm install --offline uses the prebuild, compiles nothing, and one KradagradStar step runs', () => {
    const args = ['install', '--no-audit', '--no-fund', '--foreground-scripts', tarball];
    let r = npm(['--offline', ...args], app);
    if (r.status !== 0 && /ENOTCACHED/.test(r.stderr + r.stdout)) {
      // node-addon-api (a dependency, for source builds only) is not in the npm cache:
      // the registry is the one network place allowed.
      r = npm(['--prefer-offline', ...args], app);
    }
    const out = check(r, 'npm install of the tarball');
    expect(out).toMatch(/using the prebuilt CPU addon prebuilds\/linux-x64\/kradagrad_cpu\.node/);
    const pkg = path.join(app, 'node_modules', 'kradagrad');
    expect(fs.existsSync(path.join(pkg, 'build'))).toBe(false);
    expect(fs.existsSync(path.join(app, 'node_modules', '@kradagrad', 'linux-x64-cuda13'))).toBe(false);

    const res = runStep();
    expect(res.resolved.startsWith(fs.realpathSync(pkg))).toBe(true);
    expect(res.backend).toBe('cpu');
    expect(fs.realpathSync(res.report.addonPath)).toBe(fs.realpathSync(path.join(pkg, 'prebuilds', 'linux-x64', 'kradagrad_cpu.node')));
    expect(res.report.cudaReason).toMatch(/@kradagrad\/linux-x64-cuda13: not installed/);
    expect(res.changed).toBe(true);
    expect(res.finite).toBe(true);
  });

  test('KRADAGRAD_CUDA_ADDON at a broken file: auto falls back to CPU and says why', () => {
    const broken = path.join(tmp, 'broken', 'kradagrad_cuda.node');
    const res = runStep({ KRADAGRAD_CUDA_ADDON: broken });
    expect(res.backend).toBe('cpu');
    expect(res.changed).toBe(true);
    expect(res.report.cudaReason).toContain(`KRADAGRAD_CUDA_ADDON: ${broken} failed to load`);
    expect(res.report.cudaReason).toMatch(/not a loadable shared library/);
    // 'cuda' requested explicitly: an error with the same reason, not a fallback.
    const r = spawnSync('node', ['-e', "try { require('kradagrad').getBackend('cuda'); } catch (e) { console.log(e.code + ': ' + e.message); }"], {
      cwd: app,
      env: { ...env, KRADAGRAD_CUDA_ADDON: broken },
      encoding: 'utf8',
    });
    expect(check(r, 'getBackend(cuda)')).toMatch(/^BACKEND_UNAVAILABLE: CUDA backend unavailable: .*KRADAGRAD_CUDA_ADDON/);
  });

  test('a broken or mismatched @kradagrad/linux-x64-cuda13 package: CPU, with the reason', () => {
    const out = check(npm(['install', '--offline', '--no-audit', '--no-fund', cudaTarball], app), 'npm install of the platform package');
    expect(out).toMatch(/added 1 package|changed 1 package/);
    const dir = path.join(app, 'node_modules', '@kradagrad', 'linux-x64-cuda13');
    expect(fs.existsSync(path.join(dir, 'kradagrad_cuda.node'))).toBe(true);

    let res = runStep();
    expect(res.backend).toBe('cpu');
    expect(res.changed).toBe(true);
    expect(res.report.cudaReason).toMatch(/@kradagrad\/linux-x64-cuda13@0\.1\.0: .*kradagrad_cuda\.node failed to load: .*not a loadable shared library/);

    const pj = path.join(dir, 'package.json');
    const meta = JSON.parse(fs.readFileSync(pj, 'utf8'));
    fs.writeFileSync(pj, JSON.stringify({ ...meta, version: '0.0.1' }));
    res = runStep();
    expect(res.backend).toBe('cpu');
    expect(res.report.cudaReason).toMatch(/@kradagrad\/linux-x64-cuda13@0\.0\.1: version 0\.0\.1 does not match kradagrad \d+\.\d+\.\d+; install @kradagrad\/linux-x64-cuda13@/);
  });
});
