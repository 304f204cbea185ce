#!/usr/bin/env node
'use strict';
// Builds the CPU addon (build/Release/kradagrad_cpu.node) with node-gyp against the
// local Node headers. Skips the build when the addon is newer than every native source,
// unless --force.
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const { nodeDir } = require('./nodedir');

const root = path.resolve(__dirname, '..');
const out = path.join(root, 'build', 'Release', 'kradagrad_cpu.node');

function newestSource(dir) {
  let newest = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestSource(p));
    else if (/\.(cc|h|cu|cuh)$/.test(e.name)) newest = Math.max(newest, fs.statSync(p).mtimeMs);
  }
  return newest;
}

function nodeGypBin() {
  try {
    return require.resolve('node-gyp/bin/node-gyp.js');
  } catch {
    // npm ships node-gyp; npm_config_node_gyp points at it inside npm scripts.
    if (process.env.npm_config_node_gyp) return process.env.npm_config_node_gyp;
    throw new Error('node-gyp not found: run `npm install` or install node-gyp');
  }
}

function main() {
  const force = process.argv.includes('--force');
  if (!force && fs.existsSync(out)) {
    const built = fs.statSync(out).mtimeMs;
    const src = Math.max(newestSource(path.join(root, 'native')), fs.statSync(path.join(root, 'binding.gyp')).mtimeMs);
    if (built >= src) {
      console.log('[kradagrad] CPU addon is up to date: ' + path.relative(process.cwd(), out));
      return;
    }
  }
  const args = [nodeGypBin(), 'rebuild', '--release', `--jobs=${Math.max(1, require('os').cpus().length)}`];
  const dir = nodeDir();
  if (dir) args.push(`--nodedir=${dir}`);
  console.log('[kradagrad] building the CPU addon: node ' + args.map((a) => path.basename(a)).join(' '));
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error('[kradagrad] the CPU addon failed to build. It needs a C++17 compiler, make, python3,');
    console.error('            and OpenBLAS + LAPACKE headers (Debian/Ubuntu: apt-get install libopenblas-dev liblapacke-dev).');
    process.exit(r.status || 1);
  }
}

main();
