#!/usr/bin/env node
'use strict';
// Builds the CPU addon (build/Release/kradagrad_cpu.node) from source with node-gyp against
// the local Node headers (no download). Skips the build when the addon is newer than every
// native source, unless --force.
//
// Two places it runs:
//   - a checkout (binding.gyp at the root): node-gyp rebuild there (npm run build:native,
//     scripts/setup.js);
//   - an installed kradagrad package (`npx kradagrad build-native`, for platforms without a
//     prebuilt @kradagrad/<platform>-<arch> package, or to link your own BLAS): the package
//     ships the CPU sources (native/core, native/cpu, native/napi) and its binding.gyp as
//     native/kradagrad_cpu.gyp (a binding.gyp at a package's root would make npm and pnpm
//     treat it as an install script). They are staged in build/source/ and built there; the
//     addon lands in build/Release/, which the loader tries first.
// Needs a C++17 compiler, make, python3, OpenBLAS + LAPACKE headers, node-addon-api (a
// peer dependency: npm install node-addon-api) and node-gyp (npm's own copy is used when
// it is not installed).
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const { abiIsCurrent, nodeDir } = require('./nodedir');

const root = path.resolve(__dirname, '..');
const out = path.join(root, 'build', 'Release', 'kradagrad_cpu.node');
const checkout = fs.existsSync(path.join(root, 'binding.gyp'));
const gypFile = checkout ? path.join(root, 'binding.gyp') : path.join(root, 'native', 'kradagrad_cpu.gyp');
const log = (m) => console.log(`[kradagrad] ${m}`);

function newestSource(dir) {
  let newest = 0;
  if (!fs.existsSync(dir)) return 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestSource(p));
    else if (/\.(cc|h|cu|cuh)$/.test(e.name)) newest = Math.max(newest, fs.statSync(p).mtimeMs);
  }
  return newest;
}

function nodeGypBin() {
  try {
    return require.resolve('node-gyp/bin/node-gyp.js', { paths: [root, process.cwd()] });
  } catch {
    // npm ships node-gyp: npm_config_node_gyp points at it inside npm scripts, and it sits
    // in npm's own node_modules beside this node otherwise.
    if (process.env.npm_config_node_gyp) return process.env.npm_config_node_gyp;
    const bundled = path.resolve(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    if (fs.existsSync(bundled)) return bundled;
    throw new Error('node-gyp not found: npm install node-gyp (npm usually ships it)');
  }
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

/** The folder node-gyp runs in: the checkout itself, or build/source/ staged from the package. */
function sourceDir() {
  if (checkout) return root;
  if (!fs.existsSync(gypFile)) throw new Error(`${path.relative(root, gypFile)} is missing: this kradagrad package has no sources to build from`);
  const stage = path.join(root, 'build', 'source');
  fs.rmSync(stage, { recursive: true, force: true });
  fs.mkdirSync(stage, { recursive: true });
  fs.copyFileSync(gypFile, path.join(stage, 'binding.gyp'));
  // The gyp file reads the addon ABI number from package.json ("kradagrad": {"abi"}).
  fs.copyFileSync(path.join(root, 'package.json'), path.join(stage, 'package.json'));
  for (const d of ['core', 'cpu', 'napi']) copyTree(path.join(root, 'native', d), path.join(stage, 'native', d));
  return stage;
}

function main() {
  const force = process.argv.includes('--force');
  if (!force && fs.existsSync(out)) {
    const built = fs.statSync(out).mtimeMs;
    const src = Math.max(newestSource(path.join(root, 'native')), fs.existsSync(gypFile) ? fs.statSync(gypFile).mtimeMs : 0);
    if (built >= src && abiIsCurrent(out, root)) {
      log('CPU addon is up to date: ' + path.relative(process.cwd(), out));
      return;
    }
  }
  const gyp = nodeGypBin();
  const cwd = sourceDir();
  const args = [gyp, 'rebuild', '--release', `--jobs=${Math.max(1, require('os').cpus().length)}`];
  const dir = nodeDir();
  if (dir) args.push(`--nodedir=${dir}`);
  // Name the script by its file name, and show every other argument as given.
  log(`building the CPU addon${checkout ? '' : ` in ${path.relative(process.cwd(), cwd) || '.'}`}: node ${[path.basename(gyp), ...args.slice(1)].join(' ')}`);
  const r = spawnSync(process.execPath, args, { cwd, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error('[kradagrad] the CPU addon failed to build. It needs a C++17 compiler, make, python3, node-addon-api');
    console.error('            and OpenBLAS + LAPACKE headers (Debian/Ubuntu: apt-get install libopenblas-dev liblapacke-dev).');
    process.exit(r.status || 1);
  }
  if (!checkout) {
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.copyFileSync(path.join(cwd, 'build', 'Release', 'kradagrad_cpu.node'), out);
    const check = spawnSync(process.execPath, [path.join(__dirname, 'check-addon.js'), out], { encoding: 'utf8' });
    if (check.status !== 0) {
      console.error(`[kradagrad] the built addon does not work: ${(check.stdout || check.stderr).trim()}`);
      process.exit(1);
    }
    log(`built ${path.relative(process.cwd(), out)}; kradagrad uses it from now on (kradagrad info shows it)`);
  }
}

try {
  main();
} catch (e) {
  console.error(`[kradagrad] ${e.message}`);
  process.exit(1);
}
