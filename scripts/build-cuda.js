#!/usr/bin/env node
'use strict';
// Builds the CUDA addon (build-cuda/Release/kradagrad_cuda.node) from CMakeLists.txt.
//
// The toolkit, first found wins: --cuda-root=<dir> or $CUDAToolkit_ROOT / $CUDA_HOME /
// $CUDA_PATH; nvcc on PATH; /usr/local/cuda, /usr/local/cuda-13.0; else the pinned CUDA
// 13.0 wheels from PyPI (scripts/cuda-wheels.sh, cached in .cache/cuda13), which compile
// and link the addon on machines without a GPU (CI). No GPU is needed to build.
//
// Configures through cmake-js when it is installed (with the local Node headers, so
// nothing is downloaded), else plain cmake with the headers passed in (the GPU machine has
// no npm: Node-API headers from .device-carry/include, node-addon-api from node_modules).
//
// NCCL (for the device collectives of kradagrad/distributed) is built as
// build-cuda/Release/kradagrad_nccl.so, a library the CUDA addon loads only when a program
// asks for NCCL. It is looked for in --nccl-root=<dir> or $KRAD_NCCL_ROOT (a folder with
// include/nccl.h and lib/libnccl.so*), beside the wheels' toolkit (the pinned
// nvidia-nccl-cu13 wheel), in the toolkit, in the system paths, and in Python's
// site-packages (the nvidia-nccl-cu13 wheel that PyTorch brings, as on the GPU machine).
// Without NCCL the CUDA addon is still built and NCCL is skipped, saying so; --require-nccl
// (CI) makes that an error.
//
// Options: --force (rebuild even when up to date), --targets=a,b (default kradagrad_cuda and
// kradagrad_nccl; kradagrad_cpu is the CPU addon from the same CMakeLists), --jobs=N,
// --cuda-root=<dir>, --no-wheels (fail instead of fetching wheels when no toolkit is
// found), --nccl-root=<dir>, --require-nccl, --no-nccl.
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { abiIsCurrent, nodeDir } = require('./nodedir');

const root = path.resolve(__dirname, '..');
const buildDir = path.join(root, 'build-cuda');
const args = process.argv.slice(2);
const opt = (name) => {
  const a = args.find((x) => x.startsWith(`--${name}=`));
  return a ? a.slice(name.length + 3) : undefined;
};
const flag = (name) => args.includes(`--${name}`);
const log = (m) => console.log(`[kradagrad] ${m}`);

function newest(dir, re) {
  let t = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newest(p, re));
    else if (re.test(e.name)) t = Math.max(t, fs.statSync(p).mtimeMs);
  }
  return t;
}

const hasNvcc = (dir) => !!dir && fs.existsSync(path.join(dir, 'bin', 'nvcc'));

function findToolkit() {
  const explicit = opt('cuda-root') || process.env.CUDAToolkit_ROOT || process.env.CUDA_HOME || process.env.CUDA_PATH;
  if (explicit) {
    if (!hasNvcc(explicit)) throw new Error(`no bin/nvcc under the CUDA toolkit ${explicit}`);
    return { root: path.resolve(explicit), how: 'given' };
  }
  for (const d of (process.env.PATH || '').split(path.delimiter)) {
    if (d && fs.existsSync(path.join(d, 'nvcc'))) return { root: path.resolve(d, '..'), how: 'nvcc on PATH' };
  }
  for (const d of ['/usr/local/cuda', '/usr/local/cuda-13.0']) if (hasNvcc(d)) return { root: d, how: 'system' };
  if (flag('no-wheels')) throw new Error('no CUDA toolkit found (and --no-wheels)');
  log('no system CUDA toolkit: using the pinned CUDA 13.0 wheels from PyPI');
  const r = spawnSync('bash', [path.join(root, 'scripts', 'cuda-wheels.sh')], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error('scripts/cuda-wheels.sh failed');
  const dir = r.stdout.trim().split('\n').pop();
  if (!hasNvcc(dir)) throw new Error(`scripts/cuda-wheels.sh printed ${dir}, which has no bin/nvcc`);
  return { root: dir, how: 'PyPI wheels' };
}

function run(cmd, argv, env) {
  log(`$ ${[cmd, ...argv].join(' ')}`);
  const r = spawnSync(cmd, argv, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${path.basename(cmd)} exited with ${r.status}`);
}

function which(prog) {
  for (const d of (process.env.PATH || '').split(path.delimiter)) {
    if (d && fs.existsSync(path.join(d, prog))) return path.join(d, prog);
  }
  return null;
}

const outputOf = (t) => path.join(buildDir, 'Release', t === 'kradagrad_nccl' ? `${t}.so` : `${t}.node`);
const ncclStatusFile = path.join(buildDir, 'nccl-status.txt');
/** The last configure's verdict on NCCL: { ok, text } or null when not configured yet. */
function ncclStatus() {
  if (!fs.existsSync(ncclStatusFile)) return null;
  const text = fs.readFileSync(ncclStatusFile, 'utf8').trim();
  return { ok: text.startsWith('ok '), text };
}

/** NCCL from Python's site-packages (the nvidia-nccl-cu13 wheel, e.g. PyTorch's), or null. */
function pythonNccl() {
  const py = which('python3') || which('python');
  if (!py) return null;
  const code =
    "import importlib.util as u\ns=u.find_spec('nvidia.nccl')\nprint(list(s.submodule_search_locations)[0] if s and s.submodule_search_locations else '')";
  const r = spawnSync(py, ['-c', code], { encoding: 'utf8', timeout: 20000 });
  const dir = r.status === 0 ? r.stdout.trim() : '';
  return dir && fs.existsSync(path.join(dir, 'include', 'nccl.h')) ? dir : null;
}

/** Ensures lib/libnccl.so (the development name the linker looks for) beside libnccl.so.2, when the folder is writable. */
function ncclDevLink(dir) {
  const lib = path.join(dir, 'lib');
  if (fs.existsSync(path.join(lib, 'libnccl.so.2')) && !fs.existsSync(path.join(lib, 'libnccl.so'))) {
    try {
      fs.symlinkSync('libnccl.so.2', path.join(lib, 'libnccl.so'));
    } catch {
      /* read-only: CMake also looks for libnccl.so.2 itself */
    }
  }
}

function main() {
  const explicitTargets = opt('targets');
  const wantNccl = !flag('no-nccl');
  const prev = ncclStatus();
  const targets = (explicitTargets || 'kradagrad_cuda').split(',').filter(Boolean);
  // Without --targets: kradagrad_nccl too, unless the last configure found no NCCL (then it
  // is only retried on --force or --require-nccl).
  if (!explicitTargets && wantNccl && (!prev || prev.ok || flag('force') || flag('require-nccl'))) targets.push('kradagrad_nccl');
  const jobs = Number(opt('jobs')) || Math.max(1, os.cpus().length);
  let outputs = targets.map(outputOf);
  if (!flag('force') && outputs.every((o) => fs.existsSync(o))) {
    const built = Math.min(...outputs.map((o) => fs.statSync(o).mtimeMs));
    const src = Math.max(newest(path.join(root, 'native'), /\.(cc|h|cu|cuh)$/), fs.statSync(path.join(root, 'CMakeLists.txt')).mtimeMs);
    const main = outputs.find((o) => path.basename(o) === 'kradagrad_cuda.node');
    if (built >= src && (!main || abiIsCurrent(main, root))) {
      log(`CUDA addon is up to date: ${outputs.map((o) => path.relative(process.cwd(), o)).join(', ')}`);
      return;
    }
  }
  const started = Date.now();
  const tk = findToolkit();
  log(`CUDA toolkit: ${tk.root} (${tk.how})`);
  const cmakeDefs = [`-DCUDAToolkit_ROOT=${tk.root}`, `-DCMAKE_CUDA_COMPILER=${path.join(tk.root, 'bin', 'nvcc')}`];
  if (!wantNccl) cmakeDefs.push('-DKRAD_NCCL=OFF');
  else {
    const wheelNccl = path.resolve(tk.root, '..', 'nccl');
    const ncclRoot =
      opt('nccl-root') || process.env.KRAD_NCCL_ROOT || (fs.existsSync(path.join(wheelNccl, 'include', 'nccl.h')) ? null : pythonNccl());
    if (ncclRoot) {
      ncclDevLink(ncclRoot);
      cmakeDefs.push(`-DKRAD_NCCL_ROOT=${path.resolve(ncclRoot)}`);
      log(`NCCL: ${ncclRoot}`);
    }
  }
  if (opt('archs')) cmakeDefs.push(`-DCMAKE_CUDA_ARCHITECTURES=${opt('archs')}`);
  // A cached configure from another toolkit would keep the old compiler: start clean.
  const cache = path.join(buildDir, 'CMakeCache.txt');
  const cached = fs.existsSync(cache) && /^CUDAToolkit_ROOT:[A-Z]+=(.*)$/m.exec(fs.readFileSync(cache, 'utf8'));
  if (fs.existsSync(cache) && (!cached || cached[1] !== tk.root)) {
    fs.rmSync(buildDir, { recursive: true, force: true });
  }
  // A cached "NCCL not found" would stick (find_path caches NOTFOUND): look again.
  if (fs.existsSync(cache)) {
    const c = fs.readFileSync(cache, 'utf8');
    if (/^KRAD_NCCL_(INCLUDE|LIB):[A-Z]+=.*NOTFOUND$/m.test(c)) {
      fs.writeFileSync(cache, c.replace(/^KRAD_NCCL_(INCLUDE|LIB):[A-Z]+=.*NOTFOUND\n/gm, ''));
    }
  }

  let cmakeJs = null;
  try {
    cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  } catch {
    /* not installed (e.g. the GPU machine): plain cmake below */
  }
  const generator = which('ninja') ? ['-G', 'Ninja'] : [];
  if (cmakeJs && !flag('plain-cmake')) {
    // npm_config_nodedir makes cmake-js use this Node's own headers instead of downloading.
    const env = {};
    const nd = nodeDir();
    if (nd) env.npm_config_nodedir = nd;
    run(process.execPath, [cmakeJs, 'configure', '--out', buildDir, ...cmakeDefs.map((d) => `--CD${d.slice(2)}`)], env);
    checkNccl(targets);
    outputs = targets.map(outputOf);
    for (const t of targets) run('cmake', ['--build', buildDir, '--config', 'Release', '--target', t, '--parallel', String(jobs)]);
  } else {
    const defs = ['-DCMAKE_BUILD_TYPE=Release', ...cmakeDefs];
    const nd = nodeDir();
    if (nd) defs.push(`-DNODE_API_HEADERS_DIR=${path.join(nd, 'include', 'node')}`);
    else if (fs.existsSync(path.join(root, '.device-carry', 'include', 'node_api.h')))
      defs.push(`-DNODE_API_HEADERS_DIR=${path.join(root, '.device-carry', 'include')}`);
    run('cmake', ['-S', root, '-B', buildDir, ...generator, ...defs]);
    checkNccl(targets);
    outputs = targets.map(outputOf);
    for (const t of targets) run('cmake', ['--build', buildDir, '--target', t, '--parallel', String(jobs)]);
  }
  for (const o of outputs) {
    if (!fs.existsSync(o)) throw new Error(`the build finished but ${o} is missing (was the CUDA addon skipped? see the configure log)`);
  }
  log(`built ${outputs.map((o) => path.relative(process.cwd(), o)).join(', ')} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

/** After configure: drops kradagrad_nccl from the targets when NCCL was not found (an error with --require-nccl). */
function checkNccl(targets) {
  const i = targets.indexOf('kradagrad_nccl');
  if (i < 0) return;
  const st = ncclStatus();
  if (st && st.ok) return;
  const why = st ? st.text : 'the configure step wrote no nccl-status.txt';
  if (flag('require-nccl') || opt('targets')) throw new Error(`NCCL is required but ${why}`);
  log(`NCCL ${why}: building the CUDA addon without kradagrad_nccl (device collectives unavailable)`);
  targets.splice(i, 1);
}

try {
  main();
} catch (e) {
  console.error(`[kradagrad] the CUDA addon failed to build: ${e.message}`);
  console.error('            It needs cmake, a C++17 compiler, OpenBLAS + LAPACKE, and a CUDA 13 toolkit with cuBLAS and');
  console.error('            cuSOLVER (or python3 + pip to fetch the pinned wheels). The CPU addon does not need any of this.');
  process.exit(1);
}
