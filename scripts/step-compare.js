#!/usr/bin/env node
'use strict';
// Side-by-side table of several step-benchmark runs (scripts/gpu-check.sh: as shipped, the
// previous kernels, one switch off at a time, solver lanes, Newton roots), so that a change
// of step time can be put down to one switch. Plain node, no dependencies (the GPU machine
// has no npm).
//
//   node scripts/step-compare.js LABEL=DIR [LABEL=DIR ...]
//
// Each DIR holds a step.json from `kradagrad bench step`; a missing or unreadable one
// becomes a column of '-' with the reason below the table. Rows: every (set, optimizer)
// that any run has, in the order first seen. Cells: amortized ms per step, then the plain
// step and the step with a root refresh in parentheses. Prints markdown on stdout.
const fs = require('fs');
const path = require('path');

function fmt(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '-';
  return ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms >= 1 ? ms.toFixed(2) : ms.toFixed(3);
}

function load(spec) {
  const eq = spec.indexOf('=');
  if (eq <= 0) throw new Error(`expected LABEL=DIR, got '${spec}'`);
  const label = spec.slice(0, eq), dir = spec.slice(eq + 1);
  const file = path.join(dir, 'step.json');
  try {
    const j = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (!Array.isArray(j.rows)) throw new Error('no rows');
    return { label, rows: j.rows, device: (j.backends || []).map((b) => `${b.name}: ${b.device}`).join('; ') };
  } catch (e) {
    return { label, rows: [], why: `${file}: ${e.code === 'ENOENT' ? 'not written (step skipped, failed or timed out)' : e.message}` };
  }
}

function compare(specs) {
  const runs = specs.map(load);
  const keys = [];
  for (const r of runs)
    for (const x of r.rows) {
      const k = `${x.set}\u0000${x.backend}\u0000${x.optimizer}`;
      if (!keys.includes(k)) keys.push(k);
    }
  const out = [];
  out.push(`| set | backend | optimizer | ${runs.map((r) => r.label).join(' | ')} |`);
  out.push(`| --- | --- | --- | ${runs.map(() => '---:').join(' | ')} |`);
  for (const k of keys) {
    const [set, backend, optimizer] = k.split('\u0000');
    let label = optimizer;
    const cells = runs.map((r) => {
      const x = r.rows.find((y) => y.set === set && y.backend === backend && y.optimizer === optimizer);
      if (!x) return '-';
      label = x.label || label;
      if (x.error) return 'failed';
      const root = x.precision ? ` (${fmt(x.plainMs)} / ${fmt(x.rootMs)})` : '';
      return `${fmt(x.amortizedMs)}${root}`;
    });
    out.push(`| ${set} | ${backend} | ${label} | ${cells.join(' | ')} |`);
  }
  out.push('');
  out.push('Amortized ms per step (plain step / step with a root refresh, ms).');
  for (const r of runs) if (r.why) out.push(`- ${r.label}: ${r.why}`);
  const devices = [...new Set(runs.filter((r) => r.device).map((r) => r.device))];
  for (const d of devices) out.push(`- device: ${d}`);
  return out.join('\n');
}

module.exports = { compare };
if (require.main === module) {
  const specs = process.argv.slice(2);
  if (!specs.length) {
    console.error('usage: node scripts/step-compare.js LABEL=DIR [LABEL=DIR ...]');
    process.exit(2);
  }
  try {
    console.log(compare(specs));
  } catch (e) {
    console.error(`step-compare: ${e.message}`);
    process.exit(2);
  }
}
