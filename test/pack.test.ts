/**
 * The npm packages as a user gets them. `npm pack`s kradagrad (its prepack compiles dist/,
 * copies the plots' font and the source-build gyp file) and the platform package
 * @kradagrad/linux-x64 (scripts/pack-cpu-package.js: the static CPU prebuild), then
 * installs both tarballs into empty projects, offline, with a PATH that holds only node,
 * npm, pnpm and sh (no cc, g++, make or python):
 *   - under npm and under pnpm 10, with every install script allowed but routed through
 *     a script shell that records what it is asked to run: nothing may run (a control
 *     package with an install script shows that the recorder sees scripts);
 *   - the installed package loads the prebuilt addon from the platform package and steps
 *     an optimizer;
 *   - the file list holds no bench, GPU script, CUDA source or CMake file, and every file
 *     the README or a `--help` names exists in the installed package;
 *   - CUDA trouble never stops the CPU path (a broken KRADAGRAD_CUDA_ADDON, a broken or
 *     mismatched @kradagrad/linux-x64-cuda13 package), and KRADAGRAD_BUILD_FROM_SOURCE=1
 *     refuses the prebuild;
 *   - the documented source build (`npx kradagrad build-native`) works in the installed
 *     package (with the compiler on PATH) and is then what loads.
 * pnpm 10 is used from PATH when there, else installed with npm into .cache/pnpm10.
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

function check(r: SpawnSyncReturns<string>, what: string): string {
  if (r.status !== 0) {
    throw new Error(`${what} failed (exit ${r.status}${r.error ? `, ${r.error.message}` : ''}):\n${r.stdout}\n${r.stderr}`);
  }
  return r.stdout;
}

/** pnpm 10's entry script: from PATH when it is pnpm 10, else installed with npm into .cache/pnpm10. */
function pnpmEntry(cli: string): string {
  for (const d of (process.env.PATH || '').split(path.delimiter)) {
    const p = d && path.join(d, 'pnpm');
    if (!p || !fs.existsSync(p)) continue;
    const real = fs.realpathSync(p);
    const v = spawnSync(process.execPath, [real, '--version'], { encoding: 'utf8' });
    if (v.status === 0 && /^10\./.test(v.stdout.trim()) && /\.c?js$/.test(real)) return real;
  }
  const prefix = path.join(root, '.cache', 'pnpm10');
  const entry = path.join(prefix, 'node_modules', 'pnpm', 'bin', 'pnpm.cjs');
  if (!fs.existsSync(entry)) {
    check(
      spawnSync(process.execPath, [cli, 'install', '--prefer-offline', '--no-audit', '--no-fund', '--no-save', '--prefix', prefix, 'pnpm@10'], { encoding: 'utf8' }),
      'npm install pnpm@10',
    );
  }
  return entry;
}

/**
 * The package files a text names: path-like words (with a '/', and a file extension or a
 * trailing '/') in backticks, link targets, or plain text, minus URLs, placeholders
 * (`<out>`, `{a,b}`, `*`) and what commands write (kradagrad-out/, build/).
 */
export function namedFiles(text: string): string[] {
  const words = text
    .split(/[\s`()[\]"',;]+/)
    .map((w) => w.replace(/[.:]+$/, ''))
    .filter((w) => w.includes('/') && !/^[a-z]+:\/\//.test(w) && !/[<>{}*$=|]/.test(w) && !w.startsWith('@'));
  return [
    ...new Set(
      words.filter(
        (w) => (/^(\.\/)?[\w.-]+(\/[\w.-]+)*\.[A-Za-z]{1,5}$/.test(w) || /^[\w.-]+(\/[\w.-]+)*\/$/.test(w)) && !/^(\.\/)?(kradagrad-out|build|node_modules)\//.test(w),
      ),
    ),
  ];
}

/** The script run inside an installed project: load, report, one KradagradStar step. */
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
  backends: k.listBackends().map((x) => [x.name, x.available]),
}));
`;
type StepResult = {
  backend: string;
  report: { backend: string; addonPath: string; cudaReason?: string };
  resolved: string;
  changed: boolean;
  finite: boolean;
  backends: [string, boolean][];
};

suite('npm package: pack, install with no install script and no compiler (npm, pnpm 10), load, step', () => {
  let tmp = '';
  let bin = '';
  let tarball = '';
  let cpuTarball = '';
  let cudaTarball = '';
  let pnpm = '';
  let env: NodeJS.ProcessEnv = {};
  const apps = { npm: '', pnpm: '' };
  const t0 = Date.now();
  const cli = supported ? npmCli() : '';
  const npm = (args: string[], cwd: string, extra: NodeJS.ProcessEnv = env): SpawnSyncReturns<string> =>
    spawnSync(process.execPath, [cli, ...args], { cwd, env: extra, encoding: 'utf8', maxBuffer: 64 << 20 });
  const runPnpm = (args: string[], cwd: string): SpawnSyncReturns<string> =>
    spawnSync(process.execPath, [pnpm, ...args, '--store-dir', path.join(tmp, 'pnpm-store')], { cwd, env, encoding: 'utf8', maxBuffer: 64 << 20 });
  const runStep = (app: string, extraEnv: NodeJS.ProcessEnv = {}): StepResult => {
    const r = spawnSync('node', ['-e', stepScript], { cwd: app, env: { ...env, ...extraEnv }, encoding: 'utf8' });
    return JSON.parse(check(r, 'loading kradagrad in the installed project').trim().split('\n').pop()!);
  };
  const recorded = (app: string): string => {
    const log = path.join(app, 'scripts-run.log');
    return fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '';
  };
  const tarList = (file: string): string[] =>
    check(spawnSync('tar', ['tzf', file], { encoding: 'utf8', maxBuffer: 64 << 20 }), 'tar')
      .split('\n')
      .filter(Boolean)
      .map((f) => f.replace(/^package\//, ''));

  /**
   * An empty project whose .npmrc routes every lifecycle script through a recorder (npm
   * and pnpm both read `script-shell`). For pnpm (`pnpm` set: its overrides), a
   * pnpm-workspace.yaml allows every package's build scripts and turns off pnpm's cache of
   * build results, so a script in a package would run, and be seen.
   */
  const makeApp = (name: string, deps: Record<string, string>, pnpm?: { overrides?: Record<string, string> }): string => {
    const app = path.join(tmp, name);
    fs.mkdirSync(app);
    const recorder = path.join(app, 'record-script.sh');
    fs.writeFileSync(recorder, `#!/bin/sh\necho "$PWD: $*" >> ${JSON.stringify(path.join(app, 'scripts-run.log'))}\nexit 0\n`, { mode: 0o755 });
    fs.writeFileSync(path.join(app, '.npmrc'), `script-shell=${recorder}\n`);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true, dependencies: deps }, null, 2) + '\n');
    if (pnpm) {
      const overrides = Object.entries(pnpm.overrides ?? {}).map(([k, v]) => `  ${JSON.stringify(k)}: ${JSON.stringify(v)}\n`).join('');
      fs.writeFileSync(path.join(app, 'pnpm-workspace.yaml'), `dangerouslyAllowAllBuilds: true\nsideEffectsCache: false\n${overrides ? `overrides:\n${overrides}` : ''}`);
    }
    return app;
  };

  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kradagrad-pack-'));
    // 1. The tarballs: kradagrad (prepack: tsc, fonts, gyp file), the CPU platform package
    //    (the static prebuild), and a CUDA platform package around a file that is no addon.
    const packOut = check(npm(['pack', '--json', '--pack-destination', tmp], root, process.env), 'npm pack');
    tarball = path.join(tmp, JSON.parse(packOut.slice(packOut.indexOf('[\n')))[0].filename);
    const cpuOut = check(spawnSync(process.execPath, ['scripts/pack-cpu-package.js', '--out', tmp], { cwd: root, encoding: 'utf8' }), 'scripts/pack-cpu-package.js');
    cpuTarball = cpuOut.trim().split('\n').pop()!;
    const broken = path.join(tmp, 'broken', 'kradagrad_cuda.node');
    fs.mkdirSync(path.dirname(broken));
    fs.writeFileSync(broken, 'this is not an ELF file\n');
    const out = check(
      spawnSync(process.execPath, ['scripts/pack-cuda-package.js', '--addon', broken, '--no-verify', '--out', tmp], { cwd: root, encoding: 'utf8' }),
      'scripts/pack-cuda-package.js',
    );
    cudaTarball = out.trim().split('\n').pop()!;
    pnpm = pnpmEntry(cli);

    // 2. A PATH with node, npm, pnpm and sh only, and an environment without compiler settings.
    bin = path.join(tmp, 'bin');
    fs.mkdirSync(bin);
    fs.symlinkSync(process.execPath, path.join(bin, 'node'));
    fs.symlinkSync(cli, path.join(bin, 'npm'));
    fs.writeFileSync(path.join(bin, 'pnpm'), `#!/bin/sh\nexec node ${JSON.stringify(pnpm)} "$@"\n`, { mode: 0o755 });
    fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));
    const cache = process.env.npm_config_cache || path.join(os.homedir(), '.npm');
    env = { PATH: bin, HOME: os.homedir(), TMPDIR: os.tmpdir(), npm_config_cache: cache, npm_config_update_notifier: 'false', CI: 'true' };

    // 3. The projects. npm: both tarballs as dependencies (kradagrad's optional dependency
    //    @kradagrad/linux-x64@<version> is then satisfied by the local one); pnpm: the same,
    //    with an override so kradagrad's own dependency resolves to the local tarball.
    const deps = { kradagrad: `file:${tarball}`, '@kradagrad/linux-x64': `file:${cpuTarball}` };
    apps.npm = makeApp('app-npm', deps);
    apps.pnpm = makeApp('app-pnpm', deps, { overrides: { '@kradagrad/linux-x64': `file:${cpuTarball}` } });
  }, 600_000);

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

  test('kradagrad: dist/lib, font, sources for the explicit source build, golden file; no install script, bench, GPU script, CUDA source or prebuild', () => {
    const files = tarList(tarball);
    for (const f of [
      'package.json', 'README.md', 'LICENSE', 'dist/lib/index.js', 'dist/lib/index.d.ts', 'dist/lib/tfjs/index.js', 'dist/lib/cli/main.js',
      'dist/lib/optim/types.d.ts', 'fonts/SourceSans3-Regular.ttf', 'fonts/SourceSans3-Bold.ttf', 'fonts/OFL.txt',
      'native/core/ops.cc', 'native/cpu/cpu_backend.cc', 'native/napi/addon.cc', 'native/kradagrad_cpu.gyp',
      'scripts/build-native.js', 'scripts/nodedir.js', 'scripts/check-addon.js', 'test/fixtures/golden-reference.json',
    ]) {
      expect(files).toContain(f);
    }
    const unwanted = files.filter(
      (f) =>
        /^(bench|dist\/bench|build|build-cuda|prebuilds|packages|node_modules|\.cache|\.ci|native\/cuda)\//.test(f) ||
        /^test\//.test(f) && f !== 'test/fixtures/golden-reference.json' ||
        /\.(cu|cuh|node)$/.test(f) ||
        /^(binding\.gyp|CMakeLists\.txt)$/.test(f) ||
        /^scripts\/(gpu-check|memcheck|cuda-wheels)\.sh$|^scripts\/(build-cuda|pack-cuda-package|prebuild|install)\.js$/.test(f),
    );
    expect(unwanted).toEqual([]);
    const pkg = JSON.parse(check(spawnSync('tar', ['xzOf', tarball, 'package/package.json'], { encoding: 'utf8' }), 'tar'));
    expect(Object.keys(pkg.scripts ?? {}).filter((s) => /^(pre|post)?install$/.test(s))).toEqual([]);
    expect(pkg.gypfile).toBe(false);
    expect(pkg.dependencies ?? {}).toEqual({});
    expect(pkg.optionalDependencies).toEqual({ '@kradagrad/linux-x64': pkg.version });
    expect(Object.keys(pkg.exports).sort()).toEqual(['.', './distributed', './package.json', './tfjs']);
    for (const k of ['repository', 'homepage', 'bugs', 'keywords']) expect(pkg[k]).toBeTruthy();
    // Source maps carry their sources (lib/ is not shipped).
    const map = JSON.parse(check(spawnSync('tar', ['xzOf', tarball, 'package/dist/lib/index.js.map'], { encoding: 'utf8' }), 'tar'));
    expect(map.sourcesContent?.[0]).toContain('listBackends');
    expect(fs.statSync(tarball).size).toBeLessThan(4 << 20);
  });

  test('@kradagrad/linux-x64: the addon, its manifest, README and LICENSE only; no scripts', () => {
    expect(tarList(cpuTarball).sort()).toEqual(['LICENSE', 'README.md', 'kradagrad_cpu.json', 'kradagrad_cpu.node', 'package.json']);
    const pkg = JSON.parse(check(spawnSync('tar', ['xzOf', cpuTarball, 'package/package.json'], { encoding: 'utf8' }), 'tar'));
    expect(pkg).toMatchObject({ name: '@kradagrad/linux-x64', os: ['linux'], cpu: ['x64'], libc: ['glibc'] });
    expect(pkg.scripts).toBeUndefined();
  });

  test('the recorder sees install scripts: a control package with one is recorded under npm and pnpm', () => {
    const dir = path.join(tmp, 'control-src');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'control', version: '1.0.0', scripts: { install: 'echo control-install' } }));
    const packed = JSON.parse(check(npm(['pack', '--json', '--pack-destination', tmp], dir), 'npm pack control'))[0].filename;
    const ctl = path.join(tmp, packed);
    const a = makeApp('control-npm', { control: `file:${ctl}` });
    check(npm(['install', '--offline', '--no-audit', '--no-fund'], a), 'npm install control');
    expect(recorded(a)).toMatch(/control-install/);
    const b = makeApp('control-pnpm', { control: `file:${ctl}` }, {});
    check(runPnpm(['install', '--offline'], b), 'pnpm install control');
    expect(recorded(b)).toMatch(/control-install/);
  });

  test('npm install --offline: no install script runs, nothing is compiled, the prebuilt addon loads and a step runs', () => {
    const r = npm(['install', '--offline', '--no-audit', '--no-fund', '--foreground-scripts'], apps.npm);
    check(r, 'npm install of the tarballs');
    expect(recorded(apps.npm)).toBe('');
    const pkg = path.join(apps.npm, 'node_modules', 'kradagrad');
    expect(fs.existsSync(path.join(pkg, 'build'))).toBe(false);
    expect(fs.existsSync(path.join(apps.npm, 'node_modules', '@kradagrad', 'linux-x64-cuda13'))).toBe(false);

    const res = runStep(apps.npm);
    expect(res.resolved.startsWith(fs.realpathSync(pkg))).toBe(true);
    expect(res.backend).toBe('cpu');
    expect(fs.realpathSync(res.report.addonPath)).toBe(fs.realpathSync(path.join(apps.npm, 'node_modules', '@kradagrad', 'linux-x64', 'kradagrad_cpu.node')));
    expect(res.report.cudaReason).toMatch(/@kradagrad\/linux-x64-cuda13: not installed \(it is not published on npm/);
    expect(res.changed).toBe(true);
    expect(res.finite).toBe(true);
    expect(res.backends).toEqual([['cpu', true], ['cuda', false]]);
  });

  test('pnpm 10 install --offline: no install script runs, no build is ignored, the prebuilt addon loads and a step runs', () => {
    const r = runPnpm(['install', '--offline'], apps.pnpm);
    const out = check(r, 'pnpm install of the tarballs');
    expect(recorded(apps.pnpm)).toBe('');
    expect(out + r.stderr).not.toMatch(/Ignored build scripts/);
    const res = runStep(apps.pnpm);
    expect(res.backend).toBe('cpu');
    expect(fs.realpathSync(res.report.addonPath)).toBe(fs.realpathSync(path.join(apps.pnpm, 'node_modules', '@kradagrad', 'linux-x64', 'kradagrad_cpu.node')));
    expect(res.changed).toBe(true);
    expect(res.finite).toBe(true);
  });

  test('every file the README or a --help names exists in the installed package', () => {
    // The check can fail: a path that is not shipped is found and reported.
    expect(namedFiles('see `lib/optim/types.ts` and [x](dist/lib/index.d.ts), https://a.b/c.md, <out>/x.json, kradagrad-out/a.md')).toEqual([
      'lib/optim/types.ts',
      'dist/lib/index.d.ts',
    ]);
    const pkg = path.join(apps.npm, 'node_modules', 'kradagrad');
    const main = path.join(pkg, 'dist', 'lib', 'cli', 'main.js');
    const helps = [['help'], ['bench', '--help'], ['bench', 'conditioning', '--help'], ['bench', 'step', '--help'], ['info', '--help'], ['golden', '--help'], ['build-native', '--help']].map(
      (argv) => check(spawnSync('node', [main, ...argv], { cwd: apps.npm, env, encoding: 'utf8' }), `kradagrad ${argv.join(' ')}`),
    );
    const readme = fs.readFileSync(path.join(pkg, 'README.md'), 'utf8');
    const named = { readme: namedFiles(readme), help: namedFiles(helps.join('\n')) };
    expect(named.readme).toEqual(expect.arrayContaining(['dist/lib/optim/types.d.ts', 'test/fixtures/golden-reference.json', 'fonts/OFL.txt']));
    expect(named.help).toContain('test/fixtures/golden-reference.json');
    const missing = [...named.readme, ...named.help].filter((f) => !fs.existsSync(path.join(pkg, f)));
    expect(missing).toEqual([]);
    // The golden file the help names replays from the installed package, default file included.
    const g = spawnSync('node', [main, 'golden', '--case', 'shampoo_matrix'], { cwd: apps.npm, env, encoding: 'utf8' });
    expect(`${g.status} ${g.stdout}`).toMatch(/^0 golden replay of .*test\/fixtures\/golden-reference\.json \(1 cases\)[\s\S]*1 passed, 0 failed/);
  });

  test('KRADAGRAD_CUDA_ADDON at a broken file: auto falls back to CPU and says why', () => {
    const broken = path.join(tmp, 'broken', 'kradagrad_cuda.node');
    const res = runStep(apps.npm, { KRADAGRAD_CUDA_ADDON: broken });
    expect(res.backend).toBe('cpu');
    expect(res.changed).toBe(true);
    expect(res.report.cudaReason).toContain(`KRADAGRAD_CUDA_ADDON: ${broken} failed to load`);
    expect(res.report.cudaReason).toMatch(/not a loadable shared library/);
    // 'cuda' requested explicitly: an error with the same reason, not a fallback.
    const r = spawnSync('node', ['-e', "try { require('kradagrad').getBackend('cuda'); } catch (e) { console.log(e.code + ': ' + e.message); }"], {
      cwd: apps.npm,
      env: { ...env, KRADAGRAD_CUDA_ADDON: broken },
      encoding: 'utf8',
    });
    expect(check(r, 'getBackend(cuda)')).toMatch(/^BACKEND_UNAVAILABLE: CUDA backend unavailable: .*KRADAGRAD_CUDA_ADDON/);
  });

  test('a broken or mismatched @kradagrad/linux-x64-cuda13 package: CPU, with the reason', () => {
    const out = check(npm(['install', '--offline', '--no-audit', '--no-fund', cudaTarball], apps.npm), 'npm install of the platform package');
    expect(out).toMatch(/added 1 package|changed 1 package/);
    expect(recorded(apps.npm)).toBe('');
    const dir = path.join(apps.npm, 'node_modules', '@kradagrad', 'linux-x64-cuda13');
    expect(fs.existsSync(path.join(dir, 'kradagrad_cuda.node'))).toBe(true);

    let res = runStep(apps.npm);
    expect(res.backend).toBe('cpu');
    expect(res.changed).toBe(true);
    expect(res.report.cudaReason).toMatch(/@kradagrad\/linux-x64-cuda13@0\.1\.0: .*kradagrad_cuda\.node failed to load: .*not a loadable shared library/);

    const pj = path.join(dir, 'package.json');
    const meta = JSON.parse(fs.readFileSync(pj, 'utf8'));
    fs.writeFileSync(pj, JSON.stringify({ ...meta, version: '0.0.1' }));
    res = runStep(apps.npm);
    expect(res.backend).toBe('cpu');
    expect(res.report.cudaReason).toMatch(/@kradagrad\/linux-x64-cuda13@0\.0\.1: version 0\.0\.1 does not match kradagrad \d+\.\d+\.\d+; install @kradagrad\/linux-x64-cuda13@/);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('KRADAGRAD_BUILD_FROM_SOURCE=1 without a source build: BACKEND_UNAVAILABLE naming the build command', () => {
    const r = spawnSync('node', ['-e', "try { require('kradagrad').getBackend('cpu'); console.log('loaded'); } catch (e) { console.log(e.code + ': ' + e.message); }"], {
      cwd: apps.npm,
      env: { ...env, KRADAGRAD_BUILD_FROM_SOURCE: '1' },
      encoding: 'utf8',
    });
    const out = check(r, 'getBackend(cpu)');
    expect(out).toMatch(/^BACKEND_UNAVAILABLE: CPU addon not found .*local build: .*build\/Release\/kradagrad_cpu\.node \(missing\).*npx kradagrad build-native/);
    expect(out).not.toMatch(/@kradagrad\/linux-x64[^-]/);
  });

  test('npx kradagrad build-native (compiler on PATH, node-addon-api installed) builds from the shipped sources, and that build loads first', () => {
    const full = { ...env, PATH: process.env.PATH };
    const na = npm(['install', '--offline', '--no-audit', '--no-fund', 'node-addon-api@8'], apps.npm, full);
    if (na.status !== 0) check(npm(['install', '--prefer-offline', '--no-audit', '--no-fund', 'node-addon-api@8'], apps.npm, full), 'npm install node-addon-api');
    const main = path.join(apps.npm, 'node_modules', '.bin', 'kradagrad');
    const r = spawnSync(main, ['build-native'], { cwd: apps.npm, env: full, encoding: 'utf8', maxBuffer: 64 << 20 });
    check(r, 'kradagrad build-native');
    expect(r.stdout).toMatch(/building the CPU addon in .*build\/source: node node-gyp\.js rebuild --release --jobs=\d+( --nodedir=\/\S+)?\n/);
    const pkg = path.join(apps.npm, 'node_modules', 'kradagrad');
    const built = path.join(pkg, 'build', 'Release', 'kradagrad_cpu.node');
    expect(fs.existsSync(built)).toBe(true);
    for (const v of [{}, { KRADAGRAD_BUILD_FROM_SOURCE: '1' }]) {
      const res = runStep(apps.npm, v);
      expect(fs.realpathSync(res.report.addonPath)).toBe(fs.realpathSync(built));
      expect(res.changed).toBe(true);
    }
  });
});
