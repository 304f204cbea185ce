#!/usr/bin/env node
'use strict';
// One-stop set-up run before `npm start` and `npm test`: npm dependencies, OpenBLAS and
// LAPACKE (apt-get, when missing and permitted), the CPU addon, the TypeScript build and
// the plots' font (fonts/).
// Each step is skipped when already done, and says what it does when it acts.
// KRADAGRAD_NO_APT=1 forbids apt-get.
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const log = (m) => console.log(`[kradagrad setup] ${m}`);

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts });
  if (r.status !== 0) {
    console.error(`[kradagrad setup] failed: ${cmd} ${args.join(' ')}`);
    process.exit(r.status || 1);
  }
}

function newest(dir, re) {
  let t = 0;
  if (!fs.existsSync(dir)) return 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newest(p, re));
    else if (re.test(e.name)) t = Math.max(t, fs.statSync(p).mtimeMs);
  }
  return t;
}

function npmDeps() {
  const marker = path.join(root, 'node_modules', '.package-lock.json');
  const pkgTime = fs.statSync(path.join(root, 'package.json')).mtimeMs;
  if (fs.existsSync(marker) && fs.statSync(marker).mtimeMs >= pkgTime && fs.existsSync(path.join(root, 'node_modules', 'typescript'))) return;
  log('installing npm dependencies (npm install --ignore-scripts; the addon is built next)');
  run('npm', ['install', '--ignore-scripts', '--no-audit', '--no-fund']);
}

const blasHeaders = ['/usr/include/x86_64-linux-gnu/cblas.h', '/usr/include/cblas.h', '/usr/include/openblas/cblas.h'];
function systemLibs() {
  const haveCblas = blasHeaders.some((p) => fs.existsSync(p));
  const haveLapacke = fs.existsSync('/usr/include/lapacke.h');
  if (haveCblas && haveLapacke) return;
  const pkgs = ['libopenblas-dev', 'liblapacke-dev'];
  const canApt = process.platform === 'linux' && process.getuid && process.getuid() === 0 && fs.existsSync('/usr/bin/apt-get');
  if (!canApt || process.env.KRADAGRAD_NO_APT === '1') {
    console.error(`[kradagrad setup] OpenBLAS/LAPACKE headers are missing. Install them, e.g. apt-get install ${pkgs.join(' ')}`);
    process.exit(1);
  }
  log(`installing ${pkgs.join(', ')} with apt-get (OpenBLAS + LAPACKE headers are missing)`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  run('apt-get', ['update', '-qq'], { env });
  run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...pkgs], { env });
}

function fonts() {
  // The plots' font (fonts/, shipped in the package): see scripts/fonts.js.
  try {
    require('./fonts').copyFonts();
  } catch (e) {
    console.error(`[kradagrad setup] ${e.message}; PNG plots will use system fonts`);
  }
}

function nativeAddon() {
  run(process.execPath, [path.join(__dirname, 'build-native.js')]);
}

function typescript() {
  const dist = path.join(root, 'dist', 'lib', 'index.js');
  const src = Math.max(newest(path.join(root, 'lib'), /\.ts$/), newest(path.join(root, 'bench'), /\.ts$/));
  if (fs.existsSync(dist) && fs.statSync(dist).mtimeMs >= src) return;
  log('compiling TypeScript (tsc -p tsconfig.build.json)');
  run(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json']);
  fs.utimesSync(dist, new Date(), new Date());
}

npmDeps();
systemLibs();
nativeAddon();
typescript();
fonts();
