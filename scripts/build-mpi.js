#!/usr/bin/env node
'use strict';
// Builds the optional MPI addon (build-mpi/Release/kradagrad_mpi.node) from native/mpi/
// against the system MPI. `npm run build:mpi`; nothing else needs it, and the CPU addon
// and single-process users never do.
//
// The compile and link flags come from the MPI compiler wrapper (`mpicc --showme:compile`
// and `--showme:link`, OpenMPI's spelling; MPICH's `-compile_info`/`-link_info` are tried
// next), so any MPI installation works: pick one with MPICC=/path/to/mpicc. The C++
// compiler is $CXX or g++. Node-API headers come from Node's own install (no download),
// node-addon-api from node_modules. The MPI library directories are added as rpaths so the
// addon finds libmpi without LD_LIBRARY_PATH.
//
// Options: --force (rebuild even when up to date), --quiet.
const { spawnSync, spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { nodeDir } = require('./nodedir');

const root = path.resolve(__dirname, '..');
const srcDir = path.join(root, 'native', 'mpi');
const outDir = path.join(root, 'build-mpi', 'Release');
const objDir = path.join(root, 'build-mpi', 'obj');
const out = path.join(outDir, 'kradagrad_mpi.node');
const args = process.argv.slice(2);
const quiet = args.includes('--quiet');
const log = (m) => {
  if (!quiet) console.log(`[kradagrad] ${m}`);
};
const FIX = 'Install OpenMPI and its headers (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev), or point MPICC at your MPI\'s mpicc';

function fail(msg) {
  console.error(`[kradagrad] ${msg}`);
  process.exit(1);
}

function which(prog) {
  for (const d of (process.env.PATH || '').split(path.delimiter)) {
    const p = d && path.join(d, prog);
    if (p && fs.existsSync(p)) return p;
  }
  return null;
}

/** Splits a flag string from the wrapper (no quoting in practice; paths with spaces are not supported by these wrappers either). */
const words = (s) => s.trim().split(/\s+/).filter(Boolean);

function mpiFlags() {
  const mpicc = process.env.MPICC || which('mpicc');
  if (!mpicc) fail(`no MPI compiler wrapper (mpicc) found. ${FIX}.`);
  const ask = (flag) => {
    const r = spawnSync(mpicc, [flag], { encoding: 'utf8' });
    return r.status === 0 ? r.stdout : null;
  };
  let compile = ask('--showme:compile');
  let link = ask('--showme:link');
  if (compile === null || link === null) {
    // MPICH: `mpicc -compile_info` prints the whole command line, compiler first.
    const c = ask('-compile_info');
    const l = ask('-link_info');
    if (c === null || l === null) fail(`${mpicc} did not report its flags (--showme:compile / -compile_info). ${FIX}.`);
    compile = words(c).slice(1).filter((w) => /^-[ID]/.test(w)).join(' ');
    link = words(l).slice(1).filter((w) => /^-(L|l|Wl)/.test(w)).join(' ');
  }
  const cflags = words(compile);
  const ldflags = words(link);
  const rpaths = ldflags.filter((w) => w.startsWith('-L')).map((w) => `-Wl,-rpath,${w.slice(2)}`);
  const mpiH = cflags.filter((w) => w.startsWith('-I')).map((w) => path.join(w.slice(2), 'mpi.h'));
  if (mpiH.length && !mpiH.some((p) => fs.existsSync(p))) fail(`mpi.h not found in ${mpiH.map(path.dirname).join(', ')}. ${FIX}.`);
  return { mpicc, cflags, ldflags: [...ldflags, ...rpaths] };
}

function nodeHeaders() {
  const dir = nodeDir();
  if (!dir) fail(`Node's headers (include/node/node_api.h) are not beside ${process.execPath}; install a Node.js build that ships them.`);
  let addonApi;
  try {
    addonApi = path.dirname(require.resolve('node-addon-api/package.json', { paths: [root] }));
  } catch {
    fail('node-addon-api is not installed: run `npm install` first.');
  }
  return [`-I${path.join(dir, 'include', 'node')}`, `-I${addonApi}`];
}

function runAll(jobs, parallel) {
  return new Promise((resolve) => {
    let next = 0;
    let running = 0;
    let failed = false;
    const launch = () => {
      while (running < parallel && next < jobs.length) {
        const j = jobs[next++];
        running++;
        log(`compiling ${path.relative(root, j.src)}`);
        const p = spawn(j.cmd[0], j.cmd.slice(1), { cwd: root, stdio: 'inherit' });
        p.on('close', (code) => {
          running--;
          if (code !== 0) failed = true;
          if (next >= jobs.length && running === 0) resolve(!failed);
          else launch();
        });
        p.on('error', (e) => {
          console.error(`[kradagrad] ${j.cmd[0]}: ${e.message}`);
        });
      }
      if (jobs.length === 0) resolve(true);
    };
    launch();
  });
}

async function main() {
  const force = args.includes('--force');
  const sources = fs.readdirSync(srcDir).filter((f) => f.endsWith('.cc')).map((f) => path.join(srcDir, f));
  const headers = fs.readdirSync(srcDir).filter((f) => f.endsWith('.h')).map((f) => path.join(srcDir, f));
  const newestHeader = Math.max(0, ...headers.map((h) => fs.statSync(h).mtimeMs), fs.statSync(__filename).mtimeMs);
  const newestSource = Math.max(newestHeader, ...sources.map((s) => fs.statSync(s).mtimeMs));
  if (!force && fs.existsSync(out) && fs.statSync(out).mtimeMs >= newestSource) {
    log(`MPI addon is up to date: ${path.relative(process.cwd(), out)}`);
    return;
  }
  const mpi = mpiFlags();
  const cxx = process.env.CXX || 'g++';
  const cxxflags = [
    '-std=c++17', '-O2', '-fPIC', '-fexceptions', '-fvisibility=hidden', '-pthread',
    '-Wall', '-Wextra', '-Wno-unused-parameter',
    '-DNAPI_VERSION=8', '-DNAPI_CPP_EXCEPTIONS', '-DNODE_ADDON_API_DISABLE_DEPRECATED',
    '-DOMPI_SKIP_MPICXX=1', '-DMPICH_SKIP_MPICXX=1',
    ...nodeHeaders(), ...mpi.cflags,
  ];
  fs.mkdirSync(objDir, { recursive: true });
  fs.mkdirSync(outDir, { recursive: true });
  const jobs = [];
  const objects = [];
  for (const src of sources) {
    const obj = path.join(objDir, path.basename(src, '.cc') + '.o');
    objects.push(obj);
    const stale = force || !fs.existsSync(obj) || fs.statSync(obj).mtimeMs < Math.max(fs.statSync(src).mtimeMs, newestHeader);
    if (stale) jobs.push({ src, cmd: [cxx, ...cxxflags, '-c', src, '-o', obj] });
  }
  log(`building the MPI addon with ${cxx} and the flags of ${mpi.mpicc}`);
  const ok = await runAll(jobs, Math.max(1, os.cpus().length));
  if (!ok) fail(`the MPI addon failed to compile. It needs a C++17 compiler and the MPI headers. ${FIX}.`);
  const link = [cxx, '-shared', '-pthread', '-o', out, ...objects, ...mpi.ldflags];
  log(`linking ${path.relative(root, out)}`);
  const r = spawnSync(link[0], link.slice(1), { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) fail(`linking the MPI addon failed. ${FIX}.`);
  log(`built ${path.relative(process.cwd(), out)}`);
}

main().catch((e) => fail(e.stack || String(e)));
