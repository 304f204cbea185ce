/**
 * Native calls per optimizer step, by op: the count that bounds the small-parameter sets
 * on a GPU, where every native call costs microseconds of launch and binding overhead
 * whatever its size. Deterministic (no timing): it counts the calls one steady step makes
 * (after two warm-up steps, no root refresh) on the step benchmark's parameter sets.
 *
 *   node dist/bench/calls.js [--sets=resnet32,mlp,tiny] [--lib=dist/lib] [--out=FILE.md]
 *
 * --lib points at another build's dist/lib (e.g. an older checkout) to count its calls
 * with the same sets and options, for a before/after table.
 */
import * as fs from 'fs';
import * as path from 'path';

type Lib = typeof import('../lib');
type NamedParams = import('../lib').NamedParams;
type Optimizer = import('../lib').Optimizer;

const arg = (name: string, dflt: string): string => {
  const a = process.argv.slice(2).find((x) => x.startsWith(`--${name}=`));
  return a ? a.slice(name.length + 3) : dflt;
};

const SETS: Record<string, { shapes: number[][]; blockSize: number }> = {
  resnet32: {
    shapes: [[16, 3, 3, 3], ...Array(10).fill([16, 16, 3, 3]), [32, 16, 3, 3], ...Array(9).fill([32, 32, 3, 3]), [64, 32, 3, 3], ...Array(9).fill([64, 64, 3, 3]), [10, 64], [10]],
    blockSize: 128,
  },
  mlp: { shapes: [...Array(4).fill([1024, 1024]), [4096, 1024], [1024, 4096]], blockSize: 1024 },
  tiny: { shapes: [[32, 16], [16, 8], [16]], blockSize: 16 },
};

export function countCalls(lib: Lib, sets: string[]): { set: string; optimizer: string; calls: number; byOp: Record<string, number> }[] {
  const base = lib.getBackend('cpu');
  const counts: Record<string, number> = {};
  const counting = new Proxy(base.addon, {
    get(target, prop) {
      const v = (target as unknown as Record<string | symbol, unknown>)[prop];
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        counts[String(prop)] = (counts[String(prop)] ?? 0) + 1;
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  const B = new lib.Backend(counting, base.report);
  const out: { set: string; optimizer: string; calls: number; byOp: Record<string, number> }[] = [];
  for (const set of sets) {
    const spec = SETS[set];
    if (!spec) throw new Error(`unknown set '${set}' (known: ${Object.keys(SETS).join(', ')})`);
    const tensors = (): Record<string, InstanceType<Lib['Tensor']>> =>
      Object.fromEntries(spec.shapes.map((s, i) => [`p${i}`, B.fromArray(Float32Array.from({ length: s.reduce((a, b) => a * b, 1) }, (_, k) => Math.sin(k + i)), s)]));
    const pre = { lr: 1e-4, backend: B, blockSize: spec.blockSize, rootFrequency: 1000, startStep: 1, epsilon: 1e-6 };
    const opts: [string, (p: NamedParams) => Optimizer][] = [
      ['Adam', (p) => new lib.Adam(p, { lr: 1e-4, backend: B })],
      ['SGD (momentum 0.9)', (p) => new lib.Sgd(p, { lr: 1e-2, momentum: 0.9, backend: B })],
      ['Shampoo fp32', (p) => new lib.Shampoo(p, pre)],
      ['KrADagrad* fp32', (p) => new lib.KradagradStar(p, pre)],
      ['KrADagrad fp32', (p) => new lib.Kradagrad(p, pre)],
    ];
    for (const [name, make] of opts) {
      const params = tensors();
      const grads = tensors();
      const opt = make(params);
      opt.step(grads);
      opt.step(grads);
      for (const k of Object.keys(counts)) delete counts[k];
      opt.step(grads);
      const byOp = { ...counts };
      out.push({ set, optimizer: name, calls: Object.values(byOp).reduce((a, b) => a + b, 0), byOp });
      opt.dispose();
      [...Object.values(params), ...Object.values(grads)].forEach((t) => t.dispose());
    }
  }
  return out;
}

if (require.main === module) {
  const libDir = path.resolve(arg('lib', path.join(__dirname, '..', 'lib')));
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const lib = require(libDir) as Lib;
  const sets = arg('sets', 'resnet32,mlp,tiny').split(',');
  const rows = countCalls(lib, sets);
  const lines = [
    `Native calls per steady optimizer step (no root refresh), counted at the addon boundary.`,
    `Library: ${libDir}`,
    '',
    '| set | optimizer | calls/step | by op |',
    '|---|---|---:|---|',
    ...rows.map((r) => `| ${r.set} | ${r.optimizer} | ${r.calls} | ${Object.entries(r.byOp).map(([k, v]) => `${k} ${v}`).join(', ')} |`),
  ];
  const text = lines.join('\n') + '\n';
  process.stdout.write(text);
  const out = arg('out', '');
  if (out) fs.writeFileSync(out, text);
}
