#!/usr/bin/env node
'use strict';
// Packs the optional platform package @kradagrad/linux-x64-cuda13 (packages/linux-x64-cuda13/)
// around the CUDA addon built by scripts/build-cuda.js:
//
//   node scripts/pack-cuda-package.js [--addon build-cuda/Release/kradagrad_cuda.node]
//                                     [--out out/packages] [--no-verify]
//
// The package's version is set to kradagrad's (the loader refuses a platform package of
// another version), and kradagrad_cuda.json beside the addon records what it links: its
// DT_NEEDED sonames and RUNPATH, the newest glibc symbol version, size and sha256.
// Verification (skipped with --no-verify, which the pack test uses to package a broken
// file on purpose): an x86-64 ELF shared object whose CUDA libraries are the CUDA 13
// family's sonames and not another release's. Prints the tarball's path last.
const { spawnSync } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const template = path.join(root, 'packages', 'linux-x64-cuda13');
const log = (m) => console.error(`[kradagrad pack-cuda] ${m}`);

// The CUDA 13.x sonames (cuSOLVER and cuSPARSE keep their own major: 12).
const CUDA13_SONAMES = {
  cudart: 'libcudart.so.13',
  cublas: 'libcublas.so.13',
  cublasLt: 'libcublasLt.so.13',
  cusolver: 'libcusolver.so.12',
  cusparse: 'libcusparse.so.12',
  nvJitLink: 'libnvJitLink.so.13',
  cuda: 'libcuda.so.1',
};

function fail(msg) {
  log(msg);
  process.exit(1);
}

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : dflt;
}

function readelf(args, file) {
  const r = spawnSync('readelf', [...args, file], { encoding: 'utf8', maxBuffer: 256 << 20 });
  return r.status === 0 ? r.stdout : null;
}

/** What the addon links against, read off its ELF headers (null fields when readelf is not installed). */
function describe(file) {
  const header = readelf(['-h'], file);
  const dyn = readelf(['-d', '-W'], file);
  const syms = readelf(['--dyn-syms', '-W'], file);
  const needed = dyn ? [...dyn.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]) : null;
  const runpath = dyn ? (/\((?:RUNPATH|RPATH)\)\s+Library (?:runpath|rpath): \[([^\]]+)\]/.exec(dyn)?.[1] ?? '') : null;
  let glibc = null;
  if (syms) {
    for (const m of syms.matchAll(/@GLIBC_([\d.]+)/g)) {
      if (!glibc || cmpVer(m[1], glibc) > 0) glibc = m[1];
    }
  }
  return {
    elf: header ? { class: /Class:\s+(\S+)/.exec(header)?.[1], type: /Type:\s+(\S+)/.exec(header)?.[1], machine: /Machine:\s+(.+)/.exec(header)?.[1].trim() } : null,
    needed,
    runpath,
    glibc,
  };
}

function cmpVer(a, b) {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] || 0) !== (y[i] || 0)) return (x[i] || 0) - (y[i] || 0);
  return 0;
}

function verify(info, file) {
  if (spawnSync('readelf', ['--version']).status !== 0) fail('readelf is needed to verify the addon (apt-get install binutils), or pass --no-verify');
  if (!info.elf || !info.needed) fail(`${file} is not an ELF shared object`);
  if (info.elf.class !== 'ELF64' || info.elf.type !== 'DYN' || !/X86-64/.test(info.elf.machine)) {
    fail(`not an x86-64 shared object: ${JSON.stringify(info.elf)}`);
  }
  const problems = [];
  for (const lib of info.needed) {
    const m = /^lib(cudart|cublas|cublasLt|cusolver|cusparse|nvJitLink|cuda)\.so(\.\d+)?$/.exec(lib);
    if (m && lib !== CUDA13_SONAMES[m[1]]) problems.push(`${lib} (CUDA 13 has ${CUDA13_SONAMES[m[1]]})`);
  }
  if (problems.length) fail(`the addon links CUDA libraries of another release: ${problems.join(', ')}`);
  // A RUNPATH into the build machine (the wheels' folder CMake adds) means nothing on a
  // user's machine; the loader path there comes from ld.so.conf or LD_LIBRARY_PATH.
  const stale = (info.runpath || '').split(':').filter((d) => d && !d.startsWith('$ORIGIN'));
  if (stale.length) log(`note: RUNPATH ${stale.join(':')} is a build-machine path; users' machines find the CUDA libraries through ld.so.conf or LD_LIBRARY_PATH`);
  const other = info.needed.filter((l) => !/^lib(c|m|dl|rt|pthread|gcc_s|stdc\+\+)\.so|^ld-linux|^lib(cu|nvJitLink)/.test(l));
  if (other.length) log(`note: the addon also needs ${other.join(' ')}; the README must name the packages that provide them`);
  if (!info.needed.some((l) => /^libcu(blas|solver)/.test(l))) {
    log(`warning: no cuBLAS/cuSOLVER among DT_NEEDED (${info.needed.join(' ')}): linked statically, or not the CUDA addon?`);
  }
}

function npmCommand() {
  // Inside an npm script npm_execpath is npm's own cli.js; elsewhere npm is on PATH beside node.
  const cli = process.env.npm_execpath;
  if (cli && /npm-cli\.js$/.test(cli)) return [process.execPath, [cli]];
  const besideNode = path.join(path.dirname(process.execPath), 'npm');
  return [fs.existsSync(besideNode) ? besideNode : 'npm', []];
}

function main() {
  const addon = path.resolve(arg('--addon', path.join(root, 'build-cuda', 'Release', 'kradagrad_cuda.node')));
  const outDir = path.resolve(arg('--out', path.join(root, 'out', 'packages')));
  const noVerify = process.argv.includes('--no-verify');
  if (!fs.existsSync(addon)) fail(`${addon} not found: build the CUDA addon first (node scripts/build-cuda.js, needs the CUDA 13 toolkit)`);

  const pkg = JSON.parse(fs.readFileSync(path.join(template, 'package.json'), 'utf8'));
  const version = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version;
  pkg.version = version;

  const info = describe(addon);
  if (!noVerify) verify(info, addon);
  const bytes = fs.readFileSync(addon);
  const manifest = {
    file: 'kradagrad_cuda.node',
    package: `${pkg.name}@${version}`,
    platform: 'linux-x64',
    libc: 'glibc',
    verified: !noVerify,
    requires: {
      glibc: info.glibc ? `>= ${info.glibc}` : null,
      sharedLibraries: info.needed,
      cudaSonames: info.needed ? info.needed.filter((l) => /^lib(cu|nvJitLink)/.test(l)) : null,
      driver: 'NVIDIA driver R580 or newer (CUDA 13.0)',
    },
    runpath: info.runpath,
    bytes: bytes.length,
    sha256: crypto.createHash('sha256').update(bytes).digest('hex'),
  };

  const stage = path.join(root, '.cache', 'pkg', 'linux-x64-cuda13');
  fs.rmSync(stage, { recursive: true, force: true });
  fs.mkdirSync(stage, { recursive: true });
  fs.writeFileSync(path.join(stage, 'package.json'), JSON.stringify(pkg, null, 2) + '\n');
  fs.copyFileSync(path.join(template, 'README.md'), path.join(stage, 'README.md'));
  fs.copyFileSync(addon, path.join(stage, 'kradagrad_cuda.node'));
  // NCCL's library (kradagrad/distributed's device collectives) when it was built beside the
  // addon: the addon dlopens it from its own folder. libnccl.so.2 itself is not bundled
  // (about 200 MB): the user installs NCCL (e.g. the nvidia-nccl-cu13 wheel) or has it.
  const nccl = path.join(path.dirname(addon), 'kradagrad_nccl.so');
  if (fs.existsSync(nccl)) {
    fs.copyFileSync(nccl, path.join(stage, 'kradagrad_nccl.so'));
    pkg.files.push('kradagrad_nccl.so');
    manifest.nccl = { file: 'kradagrad_nccl.so', sharedLibraries: describe(nccl).needed, note: 'needs libnccl.so.2 at run time (not bundled)' };
    fs.writeFileSync(path.join(stage, 'package.json'), JSON.stringify(pkg, null, 2) + '\n');
  }
  fs.writeFileSync(path.join(stage, 'kradagrad_cuda.json'), JSON.stringify(manifest, null, 2) + '\n');

  fs.mkdirSync(outDir, { recursive: true });
  const [npm, pre] = npmCommand();
  const r = spawnSync(npm, [...pre, 'pack', '--json', '--pack-destination', outDir], { cwd: stage, encoding: 'utf8' });
  if (r.status !== 0) fail(`npm pack failed: ${r.stderr || r.error}`);
  const tarball = path.join(outDir, JSON.parse(r.stdout)[0].filename);
  log(`${pkg.name}@${version}: ${(bytes.length / 1048576).toFixed(1)} MiB addon, needs ${info.needed ? info.needed.join(' ') : '(not read)'}${info.runpath ? `, RUNPATH ${info.runpath}` : ''}`);
  console.log(tarball);
}

main();
