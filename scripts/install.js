#!/usr/bin/env node
'use strict';
// npm "install" script. Uses the prebuilt CPU addon shipped in the package
// (prebuilds/<platform>-<arch>/kradagrad_cpu.node, see scripts/prebuild.js) when one
// matches this machine and loads here, so installing needs no compiler; otherwise builds
// from source with node-gyp (scripts/build-native.js).
//
// Builds from source instead when
//   - asked: `npm install kradagrad --build-from-source` (npm_config_build_from_source)
//     or KRADAGRAD_BUILD_FROM_SOURCE=1;
//   - this is a git checkout (development: the sources are what is being worked on);
//   - no prebuild exists for this platform/arch/libc, or it does not load here (e.g. a
//     glibc older than the one it needs): the reason is printed first.
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const tag = `${process.platform}-${process.arch}`;
const prebuilt = path.join(root, 'prebuilds', tag, 'kradagrad_cpu.node');
const log = (m) => console.log(`[kradagrad] ${m}`);

/** `--build-from-source` reaches scripts as npm_config_build_from_source=true; a list of package names also counts when it names us. */
function fromSourceRequested() {
  const v = process.env.npm_config_build_from_source;
  if (v === 'true' || (v && v.split(',').map((s) => s.trim()).includes('kradagrad'))) return true;
  const k = process.env.KRADAGRAD_BUILD_FROM_SOURCE;
  return k !== undefined && k !== '' && k !== '0' && k !== 'false';
}

/** Why the shipped prebuild cannot be used here, or null when it can. */
function prebuildProblem() {
  if (!fs.existsSync(prebuilt)) return `no prebuilt addon for ${tag} in this package`;
  if (process.platform === 'linux') {
    const glibc = process.report?.getReport().header.glibcVersionRuntime;
    if (!glibc) return 'the prebuilt addon is for glibc; this system uses another C library (musl?)';
  }
  const r = spawnSync(process.execPath, [path.join(__dirname, 'check-addon.js'), prebuilt], { encoding: 'utf8' });
  if (r.status === 0) return null;
  let why = (r.stderr || '').trim().split('\n').pop() || (r.signal ? `it crashed (${r.signal})` : `exit status ${r.status}`);
  try {
    why = JSON.parse((r.stdout || '').trim().split('\n').pop()).error;
  } catch {
    /* not JSON: a crash or a symbol lookup error on stderr */
  }
  try {
    const need = JSON.parse(fs.readFileSync(prebuilt.replace(/\.node$/, '.json'), 'utf8')).requires;
    why += ` (the prebuild needs glibc ${need.glibc} and libstdc++ with ${need.libstdcxx})`;
  } catch {
    /* no manifest */
  }
  return `the prebuilt addon ${path.relative(root, prebuilt)} does not load here: ${why}`;
}

function buildFromSource(why) {
  log(`building the CPU addon from source: ${why}`);
  const r = spawnSync(process.execPath, [path.join(__dirname, 'build-native.js')], { cwd: root, stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

function main() {
  if (fromSourceRequested()) {
    return buildFromSource('--build-from-source requested');
  }
  if (fs.existsSync(path.join(root, '.git'))) return buildFromSource('git checkout (development)');
  const problem = prebuildProblem();
  if (problem) return buildFromSource(problem);
  log(`using the prebuilt CPU addon ${path.relative(root, prebuilt)} (no compiler needed)`);
}

main();
