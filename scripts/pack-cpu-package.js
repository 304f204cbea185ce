#!/usr/bin/env node
'use strict';
// Packs the platform package @kradagrad/linux-x64 (packages/linux-x64/): the prebuilt CPU
// addon with OpenBLAS and LAPACKE linked in (scripts/prebuild.js), which kradagrad lists as
// an optional dependency so that installing on linux-x64 (glibc) runs no install script
// and needs no compiler:
//
//   node scripts/pack-cpu-package.js [--out out/packages] [--force]
//
// Builds the prebuild first when it is missing or older than the native sources
// (--force: always), then stages package.json (its version set to kradagrad's: the loader
// refuses another), README.md, LICENSE, kradagrad_cpu.node and kradagrad_cpu.json, and
// runs npm pack there. Prints the tarball's path last (progress goes to stderr).
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const tag = `${process.platform}-${process.arch}`;
const template = path.join(root, 'packages', tag);
const log = (m) => console.error(`[kradagrad pack-cpu] ${m}`);

function fail(msg) {
  log(msg);
  process.exit(1);
}

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : dflt;
}

function npmCommand() {
  // Inside an npm script npm_execpath is npm's own cli.js; elsewhere npm is on PATH beside node.
  const cli = process.env.npm_execpath;
  if (cli && /npm-cli\.js$/.test(cli)) return [process.execPath, [cli]];
  const besideNode = path.join(path.dirname(process.execPath), 'npm');
  return [fs.existsSync(besideNode) ? besideNode : 'npm', []];
}

function main() {
  if (!fs.existsSync(path.join(template, 'package.json'))) fail(`no platform package template for ${tag} (packages/${tag}/); only linux-x64 has a prebuild recipe`);
  const outDir = path.resolve(arg('--out', path.join(root, 'out', 'packages')));
  const prebuild = spawnSync(process.execPath, [path.join(__dirname, 'prebuild.js'), '--strict', ...(process.argv.includes('--force') ? ['--force'] : [])], {
    cwd: root,
    stdio: ['ignore', process.stderr, process.stderr],
  });
  if (prebuild.status !== 0) fail('scripts/prebuild.js failed (see above)');
  const addon = path.join(root, 'prebuilds', tag, 'kradagrad_cpu.node');
  const manifest = path.join(root, 'prebuilds', tag, 'kradagrad_cpu.json');
  for (const f of [addon, manifest]) if (!fs.existsSync(f)) fail(`${path.relative(root, f)} is missing after the prebuild`);

  const pkg = JSON.parse(fs.readFileSync(path.join(template, 'package.json'), 'utf8'));
  const version = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version;
  pkg.version = version;
  const stage = path.join(root, '.cache', 'pkg', tag);
  fs.rmSync(stage, { recursive: true, force: true });
  fs.mkdirSync(stage, { recursive: true });
  fs.writeFileSync(path.join(stage, 'package.json'), JSON.stringify(pkg, null, 2) + '\n');
  fs.copyFileSync(path.join(template, 'README.md'), path.join(stage, 'README.md'));
  fs.copyFileSync(path.join(root, 'LICENSE'), path.join(stage, 'LICENSE'));
  fs.copyFileSync(addon, path.join(stage, 'kradagrad_cpu.node'));
  fs.copyFileSync(manifest, path.join(stage, 'kradagrad_cpu.json'));

  fs.mkdirSync(outDir, { recursive: true });
  const [npm, pre] = npmCommand();
  const r = spawnSync(npm, [...pre, 'pack', '--json', '--pack-destination', outDir], { cwd: stage, encoding: 'utf8' });
  if (r.status !== 0) fail(`npm pack failed: ${r.stderr || r.error}`);
  const tarball = path.join(outDir, JSON.parse(r.stdout.slice(r.stdout.indexOf('['))).pop().filename);
  log(`${pkg.name}@${version}: ${(fs.statSync(addon).size / 1048576).toFixed(1)} MiB addon -> ${tarball}`);
  console.log(tarball);
}

main();
