#!/usr/bin/env node
'use strict';
// npm "prepack" of the kradagrad package (npm pack / npm publish): makes what `files` ships
// from the sources, so a tarball never carries a stale build:
//   - dist/lib: tsc -p tsconfig.build.json when a source is newer than the build (source maps
//     with the sources inlined), and no file whose source is gone;
//   - fonts/: the plots' font (scripts/fonts.js);
//   - native/kradagrad_cpu.gyp: binding.gyp under a name npm and pnpm do not read as an
//     install script, for `npx kradagrad build-native` (scripts/build-native.js).
// The prebuilt CPU addon is not in this package: it is the platform package
// @kradagrad/linux-x64 (npm run pack:cpu). Progress goes to stderr (npm pack --json's
// stdout is JSON).
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const { copyFonts } = require('./fonts');

const root = path.resolve(__dirname, '..');
const log = (m) => console.error(`[kradagrad prepack] ${m}`);

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

/** Files under dist/lib whose lib/ source is gone (a module removed since the last build): not shipped. */
function removeOrphans(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      removeOrphans(p);
      continue;
    }
    const rel = path.relative(path.join(root, 'dist'), p).replace(/(\.d\.ts|\.js|\.js\.map|\.d\.ts\.map)$/, '.ts');
    if (!fs.existsSync(path.join(root, rel))) {
      fs.rmSync(p);
      log(`removed ${path.relative(root, p)} (no ${rel})`);
    }
  }
}

// Compiles when any input is newer than the build (tsc rewrites every file, which other
// processes reading dist/ at that moment, e.g. a parallel test, would notice).
const dist = path.join(root, 'dist', 'lib', 'index.js');
const inputs = Math.max(newest(path.join(root, 'lib'), /\.ts$/), ...['tsconfig.json', 'tsconfig.build.json'].map((f) => fs.statSync(path.join(root, f)).mtimeMs));
if (!fs.existsSync(dist) || fs.statSync(dist).mtimeMs < inputs) {
  const tsc = require.resolve('typescript/bin/tsc', { paths: [root] });
  log('tsc -p tsconfig.build.json');
  const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: root, stdio: ['ignore', process.stderr, process.stderr] });
  if (r.status !== 0) {
    log('tsc failed');
    process.exit(1);
  }
  fs.utimesSync(dist, new Date(), new Date());
}
removeOrphans(path.join(root, 'dist', 'lib'));
copyFonts({ quiet: true });
fs.copyFileSync(path.join(root, 'binding.gyp'), path.join(root, 'native', 'kradagrad_cpu.gyp'));
log('dist/lib, fonts/ and native/kradagrad_cpu.gyp are ready');
