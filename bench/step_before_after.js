#!/usr/bin/env node
'use strict';
// Before/after table of `kradagrad bench step` runs (issue 13): amortized, plain and root
// step times from the min of each row's timed samples (so runs made with --stat median, or
// by a version without --stat, compare on the same statistic), per set, optimizer and thread
// count. Several runs per side are merged by taking the min of each cell (interleaved runs on
// a shared machine: the least disturbed one).
//
//   node bench/step_before_after.js --before T=DIR[,DIR...] ... --after T=DIR[,DIR...] ... [--root-every 20]
//
// T is the thread count a directory was measured at when its step.json has no per-row
// `threads` (older versions: set with OPENBLAS_NUM_THREADS); use T=- for runs that have it.
const fs = require('fs');
const path = require('path');

function parse(argv) {
  const o = { before: [], after: [], rootEvery: 20 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--before' || a === '--after') o[a.slice(2)].push(argv[++i]);
    else if (a === '--root-every') o.rootEvery = Number(argv[++i]);
    else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

function rows(specs) {
  const cells = new Map();
  for (const spec of specs) {
    const [t, dirs] = spec.split('=');
    for (const dir of dirs.split(',')) {
      const j = JSON.parse(fs.readFileSync(path.join(dir, 'step.json'), 'utf8'));
      for (const x of j.rows) {
        if (x.error || x.backend !== 'cpu') continue;
        const threads = x.threads ?? Number(t);
        const key = `${x.set}\u0000${threads}\u0000${x.optimizer}`;
        const plain = Math.min(...x.plainSamples);
        const root = x.rootSamples && x.rootSamples.length ? Math.min(...x.rootSamples) : plain;
        const c = cells.get(key) || { set: x.set, threads, label: x.label, plain: Infinity, root: Infinity };
        c.plain = Math.min(c.plain, plain);
        c.root = Math.min(c.root, root);
        cells.set(key, c);
      }
    }
  }
  return cells;
}

const fmt = (x) => (!Number.isFinite(x) ? '-' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

function main() {
  const o = parse(process.argv.slice(2));
  const before = rows(o.before);
  const after = rows(o.after);
  const am = (c) => c.plain + (c.root - c.plain) / o.rootEvery;
  const out = [
    `| set | threads | optimizer | before step / root step ms | after step / root step ms | before amortized ms | after amortized ms | after / before |`,
    '|---|---:|---|---:|---:|---:|---:|---:|',
  ];
  for (const [k, a] of after) {
    const b = before.get(k);
    out.push(
      `| ${a.set} | ${a.threads} | ${a.label} | ${b ? `${fmt(b.plain)} / ${fmt(b.root)}` : '-'} | ${fmt(a.plain)} / ${fmt(a.root)} | ${b ? fmt(am(b)) : '-'} | ${fmt(am(a))} | ${b ? (am(a) / am(b)).toFixed(2) : '-'} |`,
    );
  }
  out.push('', `Min of the timed steps of each row (and of the runs merged); amortized = step + (root step - step) / ${o.rootEvery}.`);
  console.log(out.join('\n'));
}

main();
