#!/usr/bin/env node
'use strict';
// Builds the prebuilt CPU addon of the platform package @kradagrad/linux-x64 (packed by
// scripts/pack-cpu-package.js, an optional dependency of kradagrad), so that
// `npm install kradagrad` runs no install script and needs no compiler, no BLAS headers
// and no BLAS shared library:
//
//   prebuilds/linux-x64/kradagrad_cpu.node   OpenBLAS + LAPACKE linked in statically
//   prebuilds/linux-x64/kradagrad_cpu.json   what it was built from and what it needs
//
//   node scripts/prebuild.js [--force] [--strict]
//
// scripts/pack-cpu-package.js runs it first, so the platform package always carries a
// current prebuild. Skips when the prebuild is newer than every native source (unless
// --force). On a platform
// without a recipe (anything but linux-x64 glibc) it says so and exits 0, or 1 with
// --strict.
//
// How: binding.gyp and native/ are copied to .cache/prebuild/<platform>-<arch>/ (so the
// developer build in build/ is never touched) and built there with node-gyp plus a
// generated include (-I static.gypi) that swaps `-llapacke -lopenblas` for the static
// archives, adds a one-function libgfortran shim (scripts/prebuild/gfortran_shim.c), hides
// the archives' symbols (--exclude-libs) and strips. The result is then checked: its
// DT_NEEDED must be only glibc/libstdc++/libgcc, every undefined symbol must come from them
// or from Node-API, and scripts/check-addon.js must load it and get matpow/gemm right.
const { spawnSync } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { nodeDir } = require('./nodedir');

const root = path.resolve(__dirname, '..');
const tag = `${process.platform}-${process.arch}`;
const outDir = path.join(root, 'prebuilds', tag);
const out = path.join(outDir, 'kradagrad_cpu.node');
const manifestPath = path.join(outDir, 'kradagrad_cpu.json');
const stage = path.join(root, '.cache', 'prebuild', tag);
const shim = path.join(__dirname, 'prebuild', 'gfortran_shim.c');
// Progress goes to stderr: as `prepack` this runs inside `npm pack --json`, whose stdout is JSON.
const log = (m) => console.error(`[kradagrad prebuild] ${m}`);

// Shared libraries the prebuild may need: what every glibc system (and Node itself) has.
const ALLOWED_NEEDED = /^(libc\.so\.6|libm\.so\.6|libstdc\+\+\.so\.6|libgcc_s\.so\.1|libpthread\.so\.0|libdl\.so\.2|ld-linux-x86-64\.so\.2)$/;

function fail(msg) {
  console.error(`[kradagrad prebuild] ${msg}`);
  process.exit(1);
}

function newest(p) {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  let t = 0;
  for (const e of fs.readdirSync(p)) t = Math.max(t, newest(path.join(p, e)));
  return t;
}

function inputsTime() {
  // native/cuda is not part of the CPU addon.
  const native = fs.readdirSync(path.join(root, 'native')).filter((d) => d !== 'cuda').map((d) => newest(path.join(root, 'native', d)));
  return Math.max(...native, newest(path.join(root, 'binding.gyp')), newest(path.join(root, 'package.json')), newest(__filename), newest(shim));
}

/** The first existing file among dirs x names. */
function findFile(dirs, names) {
  for (const d of dirs) for (const n of names) {
    const p = path.join(d, n);
    if (fs.existsSync(p)) return fs.realpathSync(p);
  }
  return null;
}

function staticArchives() {
  const env = process.env.KRADAGRAD_STATIC_LIB_DIR;
  const multiarch = '/usr/lib/x86_64-linux-gnu';
  // The pthread flavour of OpenBLAS first: the OpenMP one would drag in libgomp.
  const blasDirs = [env, `${multiarch}/openblas-pthread`, multiarch, '/usr/lib64', '/usr/lib', '/usr/local/lib'].filter(Boolean);
  const lapacke = findFile([env, multiarch, '/usr/lib64', '/usr/lib', '/usr/local/lib'].filter(Boolean), ['liblapacke.a']);
  const openblas = findFile(blasDirs, ['libopenblas.a']);
  if (!lapacke || !openblas) {
    fail(
      `static OpenBLAS/LAPACKE archives not found (liblapacke.a: ${lapacke ?? 'missing'}, libopenblas.a: ${openblas ?? 'missing'}).\n` +
        '  Debian/Ubuntu: apt-get install libopenblas-dev liblapacke-dev (or set KRADAGRAD_STATIC_LIB_DIR).',
    );
  }
  return { lapacke, openblas };
}

/** libgfortran.a from the compiler, when gfortran is installed (only needed if the shim is not enough). */
function libgfortranArchive() {
  const r = spawnSync(process.env.CXX || 'g++', ['-print-file-name=libgfortran.a'], { encoding: 'utf8' });
  const p = (r.stdout || '').trim();
  return r.status === 0 && path.isAbsolute(p) && fs.existsSync(p) ? p : null;
}

function copyTree(src, dst) {
  fs.mkdirSync(dst, { recursive: true });
  for (const e of fs.readdirSync(src, { withFileTypes: true })) {
    const s = path.join(src, e.name);
    const d = path.join(dst, e.name);
    if (e.isDirectory()) copyTree(s, d);
    else if (e.isFile()) fs.copyFileSync(s, d);
  }
}

function nodeGypBin() {
  try {
    return require.resolve('node-gyp/bin/node-gyp.js');
  } catch {
    if (process.env.npm_config_node_gyp) return process.env.npm_config_node_gyp;
    fail('node-gyp not found: run `npm install` first');
  }
}

function build(libs, extraArchives) {
  fs.rmSync(stage, { recursive: true, force: true });
  fs.mkdirSync(stage, { recursive: true });
  fs.copyFileSync(path.join(root, 'binding.gyp'), path.join(stage, 'binding.gyp'));
  // binding.gyp reads the addon ABI number from package.json ("kradagrad": {"abi"}).
  fs.copyFileSync(path.join(root, 'package.json'), path.join(stage, 'package.json'));
  copyTree(path.join(root, 'native'), path.join(stage, 'native'));
  fs.copyFileSync(shim, path.join(stage, 'gfortran_shim.c'));
  const gypi = {
    target_defaults: {
      sources: ['gfortran_shim.c'],
      'libraries!': ['-llapacke', '-lopenblas'],
      // Order matters for static archives: LAPACKE calls LAPACK, which lives in OpenBLAS.
      libraries: [libs.lapacke, libs.openblas, ...extraArchives],
      // Keep the archives' symbols (cblas_*, dsyevd_, ...) local to the addon, so they
      // neither clash with nor bind to another BLAS loaded in the same process; strip.
      ldflags: ['-Wl,--exclude-libs,ALL', '-s'],
    },
  };
  fs.writeFileSync(path.join(stage, 'static.gypi'), JSON.stringify(gypi, null, 2) + '\n');
  const args = [nodeGypBin(), 'rebuild', '--release', `--jobs=${Math.max(1, os.cpus().length)}`];
  const dir = nodeDir();
  if (dir) args.push(`--nodedir=${dir}`);
  args.push('--', '-I', 'static.gypi');
  log(`node-gyp rebuild in ${path.relative(root, stage)} (static ${path.basename(libs.lapacke)} + ${path.basename(libs.openblas)}${extraArchives.length ? ' + ' + extraArchives.map((a) => path.basename(a)).join(' + ') : ''})`);
  const r = spawnSync(process.execPath, args, { cwd: stage, stdio: ['ignore', process.stderr, process.stderr] });
  if (r.status !== 0) fail('node-gyp failed (see above)');
  return path.join(stage, 'build', 'Release', 'kradagrad_cpu.node');
}

function readelf(args, file) {
  const r = spawnSync('readelf', [...args, file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) fail(`readelf ${args.join(' ')} failed: ${r.stderr || r.error}`);
  return r.stdout;
}

/** DT_NEEDED, undefined symbols that no allowed library versions, and the newest glibc/libstdc++ versions used. */
function inspect(file) {
  const needed = [...readelf(['-d', '-W'], file).matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
  const unresolved = [];
  const versions = { GLIBC: '0', GLIBCXX: '0', CXXABI: '0' };
  for (const line of readelf(['--dyn-syms', '-W'], file).split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || f[6] !== 'UND' || !f[7]) continue;
    const [name, ver] = f[7].split('@');
    if (ver) {
      const m = /^(GLIBC|GLIBCXX|CXXABI)_([\d.]+)/.exec(ver);
      if (m && cmpVer(m[2], versions[m[1]]) > 0) versions[m[1]] = m[2];
      continue;
    }
    if (f[4] === 'WEAK' || /^(napi_|node_api_)/.test(name)) continue;
    unresolved.push(name);
  }
  return { needed, unresolved, versions };
}

function cmpVer(a, b) {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] || 0) !== (y[i] || 0)) return (x[i] || 0) - (y[i] || 0);
  return 0;
}

function smoke(file) {
  const r = spawnSync(process.execPath, [path.join(__dirname, 'check-addon.js'), file], { encoding: 'utf8' });
  const line = (r.stdout || '').trim().split('\n').pop() || '';
  let res;
  try {
    res = JSON.parse(line);
  } catch {
    res = { ok: false, error: (r.stderr || r.stdout || `exit ${r.status}`).trim().split('\n')[0] };
  }
  if (r.status !== 0 || !res.ok) fail(`the built addon does not work: ${res.error}`);
  return res;
}

function pkgVersion(name) {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Version}', name], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/**
 * Serializes prebuild runs (two `npm test`s in one checkout would otherwise share the
 * staging folder): a lock folder holding the owner's pid; a dead owner's lock is taken over.
 */
function lock() {
  const dir = `${stage}.lock`;
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  const deadline = Date.now() + 10 * 60 * 1000;
  for (let waited = false; ; ) {
    try {
      fs.mkdirSync(dir);
      fs.writeFileSync(path.join(dir, 'pid'), String(process.pid));
      const release = () => fs.rmSync(dir, { recursive: true, force: true });
      process.on('exit', release);
      return;
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
    }
    let owner = NaN;
    try {
      owner = Number(fs.readFileSync(path.join(dir, 'pid'), 'utf8'));
    } catch {
      /* being created or removed */
    }
    let alive = true;
    if (owner > 0) {
      try {
        process.kill(owner, 0);
      } catch (e) {
        alive = e.code === 'EPERM';
      }
    }
    if (!alive) {
      fs.rmSync(dir, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) fail(`another prebuild (pid ${owner}) holds ${dir} for over 10 minutes; remove it if that process is gone`);
    if (!waited) log(`waiting for another prebuild (pid ${owner})`);
    waited = true;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 500);
  }
}

function upToDate() {
  return fs.existsSync(out) && fs.existsSync(manifestPath) && fs.statSync(out).mtimeMs >= inputsTime();
}

function main() {
  const force = process.argv.includes('--force');
  const strict = process.argv.includes('--strict');
  const glibc = process.platform === 'linux' && process.report?.getReport().header.glibcVersionRuntime;
  if (tag !== 'linux-x64' || !glibc) {
    const msg = `no prebuild recipe for ${tag}${process.platform === 'linux' && !glibc ? ' (musl)' : ''}; only linux-x64 (glibc) has one`;
    if (strict) fail(msg);
    log(msg + ' - skipped');
    return;
  }
  if (!force && upToDate()) {
    log(`up to date: ${path.relative(process.cwd(), out)}`);
    return;
  }
  lock();
  if (!force && upToDate()) {
    log(`up to date (built meanwhile by another run): ${path.relative(process.cwd(), out)}`);
    return;
  }
  const t0 = Date.now();
  const libs = staticArchives();
  let extra = [];
  let built = build(libs, extra);
  let info = inspect(built);
  if (info.unresolved.some((s) => s.startsWith('_gfortran_'))) {
    const gf = libgfortranArchive();
    if (!gf) {
      fail(
        `undefined libgfortran symbols the shim does not provide: ${info.unresolved.join(', ')}.\n` +
          '  Extend scripts/prebuild/gfortran_shim.c or install gfortran (apt-get install libgfortran-12-dev) for libgfortran.a.',
      );
    }
    log(`the shim is not enough (${info.unresolved.join(', ')}); relinking with ${gf}`);
    const quadmath = spawnSync(process.env.CXX || 'g++', ['-print-file-name=libquadmath.a'], { encoding: 'utf8' }).stdout.trim();
    extra = [gf, ...(fs.existsSync(quadmath) ? [quadmath] : [])];
    built = build(libs, extra);
    info = inspect(built);
  }
  const badNeeded = info.needed.filter((n) => !ALLOWED_NEEDED.test(n));
  if (badNeeded.length) fail(`the prebuild still needs shared libraries a bare system may lack: ${badNeeded.join(', ')}`);
  if (info.unresolved.length) fail(`the prebuild has undefined symbols no allowed library provides: ${info.unresolved.join(', ')}`);
  const check = smoke(built);

  fs.mkdirSync(outDir, { recursive: true });
  const tmp = `${out}.${process.pid}.tmp`;
  fs.copyFileSync(built, tmp);
  fs.renameSync(tmp, out);
  const bytes = fs.statSync(out).size;
  const manifest = {
    file: 'kradagrad_cpu.node',
    platform: tag,
    libc: 'glibc',
    napiVersion: 8,
    abiVersion: check.abiVersion,
    requires: {
      glibc: `>= ${info.versions.GLIBC}`,
      libstdcxx: `GLIBCXX_${info.versions.GLIBCXX}, CXXABI_${info.versions.CXXABI}`,
      sharedLibraries: info.needed,
    },
    linkedStatically: {
      openblas: { archive: libs.openblas, version: pkgVersion('libopenblas-pthread-dev') ?? pkgVersion('libopenblas-dev') },
      lapacke: { archive: libs.lapacke, version: pkgVersion('liblapacke-dev') },
      extra,
    },
    builtOn: { glibc, node: process.version, compiler: spawnSync(process.env.CXX || 'g++', ['--version'], { encoding: 'utf8' }).stdout?.split('\n')[0] },
    device: check.device,
    bytes,
    sha256: crypto.createHash('sha256').update(fs.readFileSync(out)).digest('hex'),
  };
  fs.writeFileSync(manifestPath, JSON.stringify(manifest, null, 2) + '\n');
  log(
    `wrote ${path.relative(root, out)}: ${(bytes / 1048576).toFixed(1)} MiB, needs ${info.needed.join(' ')}, glibc >= ${info.versions.GLIBC}, ` +
      `GLIBCXX_${info.versions.GLIBCXX} (${((Date.now() - t0) / 1000).toFixed(1)} s)`,
  );
}

main();
