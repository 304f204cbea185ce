#!/usr/bin/env python3
"""BLAS/LAPACK candidates for the CPU addon, measured side by side (issue 13).

    python3 bench/blas/run.py [--rounds 3] [--threads 1,2] [--out bench/results/blas-cpu]

Gets the two PyPI candidates with pip (pinned versions, into .cache/blas-wheels/), builds
bench/blas/blas_compare.cc against each of them and against Debian's OpenBLAS
(libopenblas-dev, liblapacke-dev), and runs the three programs alternately, `rounds`
times per thread count, each round in a rotated order; the table keeps the minimum per
case over all rounds and repetitions (the least disturbed run on a shared machine).
Writes <out>.json (every sample) and <out>.md.
"""
import argparse
import json
import os
import subprocess
import sys
import zipfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
SRC = os.path.join(ROOT, 'bench', 'blas', 'blas_compare.cc')
CACHE = os.path.join(ROOT, '.cache', 'blas-wheels')
WHEELS = {'scipy-openblas32': '0.3.34.481.3', 'mkl-static': '2026.2.0', 'mkl-include': '2026.2.0'}
CASES = [f'gemm:{dt}:{n}:5' for dt in ('float32', 'float64') for n in (128, 1024)] + [
    f'{op}:{dt}:{n}:{3 if n > 256 else 5}'
    for op in ('syevd', 'syevd_ws', 'syevr', 'syev')
    for dt in ('float32', 'float64')
    for n in (128, 1024)
]


def sh(cmd, **kw):
    print('+', ' '.join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, **kw)


def fetch():
    os.makedirs(CACHE, exist_ok=True)
    dirs = {}
    for name, ver in WHEELS.items():
        d = os.path.join(CACHE, f'{name}-{ver}')
        if not os.path.isdir(d):
            dl = os.path.join(CACHE, 'dl')
            sh([sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', f'{name}=={ver}', '-d', dl])
            whl = [f for f in os.listdir(dl) if f.startswith(name.replace('-', '_') + '-' + ver)]
            with zipfile.ZipFile(os.path.join(dl, whl[0])) as z:
                z.extractall(d + '.tmp')
            os.rename(d + '.tmp', d)
        dirs[name] = d
    return dirs


def build(dirs):
    out = os.path.join(CACHE, 'bin')
    os.makedirs(out, exist_ok=True)
    so = os.path.join(dirs['scipy-openblas32'], 'scipy_openblas32')
    mkl = os.path.join(dirs['mkl-static'], f"mkl_static-{WHEELS['mkl-static']}.data", 'data', 'lib')
    mkl_inc = os.path.join(dirs['mkl-include'], f"mkl_include-{WHEELS['mkl-include']}.data", 'data', 'include')
    cxx = [os.environ.get('CXX', 'g++'), '-O2', '-std=c++17', SRC]
    progs = {
        'openblas-debian': cxx + ['-I/usr/include/x86_64-linux-gnu/openblas-pthread', '-llapacke', '-lopenblas'],
        'scipy-openblas32': cxx + ['-DUSE_SCIPY', f'-I{so}/include', f'{so}/lib/libscipy_openblas.so', f'-Wl,-rpath,{so}/lib'],
        'mkl': cxx + ['-DUSE_MKL', f'-I{mkl_inc}', '-Wl,--start-group', f'{mkl}/libmkl_intel_lp64.a',
                      f'{mkl}/libmkl_gnu_thread.a', f'{mkl}/libmkl_core.a', '-Wl,--end-group', '-lgomp', '-lpthread', '-lm', '-ldl'],
    }
    paths = {}
    for name, cmd in progs.items():
        p = os.path.join(out, name)
        if not os.path.exists(p) or os.path.getmtime(p) < os.path.getmtime(SRC):
            sh(cmd + ['-o', p])
        paths[name] = p
    return paths


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--threads', default='1,2')
    ap.add_argument('--out', default=os.path.join(ROOT, 'bench', 'results', 'blas-cpu'))
    a = ap.parse_args()
    progs = build(fetch())
    names = list(progs)
    samples = []
    for t in [int(x) for x in a.threads.split(',')]:
        for r in range(a.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                # OMP/MKL/OpenBLAS read their env defaults; the program sets the count itself.
                env = dict(os.environ, OMP_NUM_THREADS=str(t), OPENBLAS_NUM_THREADS=str(t), MKL_NUM_THREADS=str(t))
                res = subprocess.run([progs[name], str(t)] + CASES, check=True, capture_output=True, text=True, env=env)
                rec = json.loads(res.stdout)
                rec['round'] = r
                samples.append(rec)
                print(f'threads {t} round {r} {name} done', file=sys.stderr)
    best = {}
    configs = {}
    for s in samples:
        configs[s['lib']] = s['config']
        for c in s['results']:
            k = (s['threads'], c['op'], c['dtype'], c['n'], s['lib'])
            best[k] = min(best.get(k, float('inf')), min(c['times_ms']))
    with open(a.out + '.json', 'w') as f:
        json.dump({'command': ' '.join(['python3', 'bench/blas/run.py'] + sys.argv[1:]), 'cases': CASES, 'configs': configs, 'samples': samples}, f, indent=1)
    lines = [f"Command: `python3 bench/blas/run.py {' '.join(sys.argv[1:])}`", '']
    for n, c in configs.items():
        lines.append(f'- {n}: {c}')
    lines += ['', 'min ms per call over all rounds and repetitions (lower is better); gemm: C = A B, n x n; eigensolvers: all eigenpairs, lower triangle, input copied each call', '']
    lines.append('| threads | op | dtype | n | ' + ' | '.join(names) + ' |')
    lines.append('|---|---|---|---:|' + '---:|' * len(names))
    for t in sorted({k[0] for k in best}):
        for case in CASES:
            op, dt, n, _ = case.split(':')
            vals = [best.get((t, op, dt, int(n), nm)) for nm in names]
            lines.append(f'| {t} | {op} | {dt} | {n} | ' + ' | '.join('-' if v is None else f'{v:.3f}' for v in vals) + ' |')
    with open(a.out + '.md', 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
