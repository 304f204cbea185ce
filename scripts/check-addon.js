#!/usr/bin/env node
'use strict';
// Smoke test of one CPU addon file, run in a child process so that a binary that cannot
// load here (older glibc, missing library, wrong architecture) or that fails on its first
// BLAS/LAPACK call cannot take the caller down:
//   node scripts/check-addon.js <kradagrad_cpu.node>
// Loads it, then checks P = A^(1/2) (LAPACK syevd) and P P = A (BLAS gemm) on a 3x3 SPD
// matrix in float32 and float64. Prints one JSON line; exit status 0 when it works.
const path = require('path');

function check(file) {
  const addon = require(path.resolve(file));
  if (addon.flavor !== 'cpu') throw new Error(`expected a CPU addon but flavor is ${addon.flavor}`);
  const A = [4, 1, 0.5, 1, 3, 0.25, 0.5, 0.25, 2];
  for (const [dtype, Arr, tol] of [['float64', Float64Array, 1e-12], ['float32', Float32Array, 1e-5]]) {
    const a = addon.fromArray('cpu', Arr.from(A), 1, [3, 3]);
    const p = addon.tensor('cpu', dtype, 1, [3, 3]);
    const c = addon.tensor('cpu', dtype, 1, [3, 3]);
    const info = addon.matpow(a, 0.5, 0, 0, p);
    if (info[0] !== 0) throw new Error(`matpow (${dtype}) returned info ${info[0]}`);
    addon.gemm(p, p, c);
    const got = c.read();
    const err = Math.max(...A.map((x, i) => Math.abs(got[i] - x) / 4));
    for (const t of [a, p, c]) t.dispose();
    if (!(err < tol)) throw new Error(`matpow/gemm (${dtype}) wrong: relative error ${err}`);
  }
  return { ok: true, flavor: addon.flavor, abiVersion: addon.abiVersion, device: addon.backends().find((b) => b.name === 'cpu').device };
}

if (require.main === module) {
  try {
    console.log(JSON.stringify(check(process.argv[2])));
  } catch (e) {
    console.log(JSON.stringify({ ok: false, error: String(e && e.message ? e.message : e).split('\n')[0] }));
    process.exit(1);
  }
}

module.exports = { check };
