#!/usr/bin/env node
'use strict';
// npm "prepack" of the kradagrad package (npm pack / npm publish): makes what `files` ships
// from the sources, so a tarball never carries a stale build:
//   - dist/lib: tsc -p tsconfig.build.json (source maps with the sources inlined);
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

const tsc = require.resolve('typescript/bin/tsc', { paths: [root] });
log('tsc -p tsconfig.build.json');
const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: root, stdio: ['ignore', process.stderr, process.stderr] });
if (r.status !== 0) {
  log('tsc failed');
  process.exit(1);
}
copyFonts({ quiet: true });
fs.copyFileSync(path.join(root, 'binding.gyp'), path.join(root, 'native', 'kradagrad_cpu.gyp'));
log('dist/lib, fonts/ and native/kradagrad_cpu.gyp are ready');
