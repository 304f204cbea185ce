#!/usr/bin/env node
'use strict';
// Copies the font the plots use into fonts/ (shipped in the package, handed to resvg by
// file so PNGs have text on machines without system fonts): Source Sans 3 regular and
// bold, SIL Open Font License 1.1 (fonts/OFL.txt), from the npm package
// @expo-google-fonts/source-sans-3 (a devDependency). Run by scripts/setup.js and before
// packing; skips files that are up to date.
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const PKG = '@expo-google-fonts/source-sans-3';
const FILES = [
  ['400Regular/SourceSans3_400Regular.ttf', 'SourceSans3-Regular.ttf'],
  ['700Bold/SourceSans3_700Bold.ttf', 'SourceSans3-Bold.ttf'],
  ['LICENSE_FONT', 'OFL.txt'],
];

function copyFonts({ quiet = false } = {}) {
  let dir;
  try {
    dir = path.dirname(require.resolve(`${PKG}/package.json`, { paths: [root] }));
  } catch {
    throw new Error(`${PKG} is not installed (a devDependency: npm install)`);
  }
  const outDir = path.join(root, 'fonts');
  fs.mkdirSync(outDir, { recursive: true });
  const copied = [];
  for (const [from, to] of FILES) {
    const src = path.join(dir, from);
    const dst = path.join(outDir, to);
    if (fs.existsSync(dst) && fs.statSync(dst).size === fs.statSync(src).size && fs.statSync(dst).mtimeMs >= fs.statSync(src).mtimeMs) continue;
    fs.copyFileSync(src, dst);
    copied.push(to);
  }
  if (copied.length && !quiet) console.log(`[kradagrad] fonts/: ${copied.join(', ')} from ${PKG} (SIL Open Font License 1.1)`);
  return copied;
}

module.exports = { copyFonts };
if (require.main === module) {
  try {
    copyFonts();
  } catch (e) {
    console.error(`[kradagrad] ${e.message}`);
    process.exit(1);
  }
}
