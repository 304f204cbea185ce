/**
 * The parts of the sharded optimizers that need no MPI: the `distributed` and
 * `gradientsAveraged` options (validated, and a single process never loads
 * kradagrad/distributed), the collective decision of a data-parallel step from the ranks'
 * verdicts (the same records give every rank the same outcome), and the block groups of a
 * rank's share. Under mpirun: shard.test.ts.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { KradagradError, KradagradStar, Shampoo, groupBlocks, planParam } from '../../lib';
import type { Communicator } from '../../lib/distributed';
import { DataParallel, type LocalVerdict } from '../../lib/optim/data_parallel';
import { resolveKradagradStar, resolveSgd } from '../../lib/optim/options';

const root = path.resolve(__dirname, '..', '..');

function code(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(KradagradError);
    return (e as KradagradError).code;
  }
  return undefined;
}

describe('options', () => {
  const params = () => ({ w: { data: new Float32Array(6), shape: [2, 3] } });

  test('distributed must be a communicator of kradagrad/distributed', () => {
    for (const bad of [{}, { rank: 0, size: 1, allReduce() {} }, 'mpi', 1, null]) {
      expect(code(() => new KradagradStar(params(), { distributed: bad as unknown as Communicator, backend: 'cpu' }))).toBe('INVALID_OPTION');
    }
    expect(() => new KradagradStar(params(), { distributed: {} as Communicator, backend: 'cpu' })).toThrow(/KradagradStar\.distributed/);
  });

  test('gradientsAveraged only with distributed, and a boolean', () => {
    expect(code(() => new Shampoo(params(), { gradientsAveraged: true, backend: 'cpu' }))).toBe('INVALID_OPTION');
    expect(() => new Shampoo(params(), { gradientsAveraged: false, backend: 'cpu' })).toThrow(/gradientsAveraged/);
  });

  test('without them, the resolved options (and so what checkpoints record) are as before', () => {
    expect(Object.keys(resolveSgd({}))).toEqual(['lr', 'momentum', 'nesterov', 'weightDecay', 'weightDecayMode', 'backend', 'onNonFinite', 'missingGradient']);
    expect(resolveKradagradStar({})).not.toHaveProperty('distributed');
    expect(resolveKradagradStar({})).not.toHaveProperty('gradientsAveraged');
    const o = new KradagradStar(params(), { backend: 'cpu' });
    const header = o.saveState().toString('utf8', 8, 2000);
    expect(header).not.toMatch(/distributed|gradientsAveraged/);
    o.dispose();
  });

  const distMain = path.join(root, 'dist', 'lib', 'index.js');
  (fs.existsSync(distMain) ? test : test.skip)('a single process never loads kradagrad/distributed (nor the MPI addon), checkpoints included', () => {
    const script = `
      const k = require(${JSON.stringify(path.join(root, 'dist', 'lib'))});
      const o = new k.KradagradStar({ w: { data: new Float32Array(6), shape: [2, 3] } }, { backend: 'cpu' });
      o.step({ w: new Float32Array(6).fill(1) });
      o.saveState();
      const loaded = Object.keys(require.cache).filter((f) => /[\\\\/]distributed[\\\\/]|kradagrad_mpi/.test(f));
      console.log(JSON.stringify(loaded));`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual([]);
  });
});

describe('the collective decision of a data-parallel step', () => {
  const names = ['a', 'b'];
  /** A DataParallel seen from `rank` of `size` (only allocate is used outside the collectives). */
  const dp = (rank: number, size: number) =>
    new DataParallel({ rank, size, allocate: (_dt: string, n: number) => new Float32Array(n) } as unknown as Communicator, [
      { dtype: 'float32', size: 3 },
      { dtype: 'float32', size: 2 },
    ]);
  type Rec = Parameters<DataParallel['decide']>[0][number];
  const ok = (over: Partial<Rec> = {}): Rec => ({ s: 'ok', a: '11', g: 7, p: -1, k: 1, ...over });
  const mine = (over: Partial<LocalVerdict> = {}): LocalVerdict => ({ status: 'ok', active: [true, true], gradCrc: 7, paramCrc: -1, ...over });

  test('all ranks ok: commit', () => {
    expect(dp(0, 3).decide([ok(), ok(), ok()], mine(), names, false, false)).toEqual({ kind: 'commit' });
  });

  test("a rank's rejected arguments come first: that rank throws its own error, the others name it, with its code", () => {
    const own = new KradagradError("Gradient of 'b' has 5 elements", 'SHAPE_MISMATCH');
    const recs = [ok({ s: 'abort', c: 'NONFINITE', m: 'x' }), ok({ s: 'invalid', c: 'SHAPE_MISMATCH', m: own.message, a: undefined }), ok()];
    const at1 = dp(1, 3).decide(recs, mine({ status: 'invalid', error: own, active: null }), names, true, false);
    expect(at1).toEqual({ kind: 'throw', error: own });
    const at0 = dp(0, 3).decide(recs, mine({ status: 'abort' }), names, true, false);
    expect(at0.kind).toBe('throw');
    const e = (at0 as { error: KradagradError }).error;
    expect([e.code, e.message, e.details]).toEqual(['SHAPE_MISMATCH', `Rank 1 of 3: ${own.message}`, { rank: 1 }]);
  });

  test('disagreements: optimizers, parameters with gradients, parameter values, gradients', () => {
    const d = dp(0, 2);
    const err = (x: ReturnType<DataParallel['decide']>) => (x as { error: KradagradError }).error;
    expect(err(d.decide([ok(), ok({ k: 2 })], mine(), names, false, false)).message).toMatch(/optimizers of rank 0 and rank 1 differ/);
    const masks = err(d.decide([ok(), ok({ a: '10' })], mine(), names, false, false));
    expect([masks.code, masks.message]).toEqual(['INVALID_ARGUMENT', expect.stringMatching(/rank 0: a, b; rank 1: a\)/)]);
    expect(err(d.decide([ok({ p: 5 }), ok({ p: 6 })], mine(), names, false, false)).message).toMatch(/parameters of rank 0 and rank 1 differ/);
    expect(d.decide([ok({ p: 5 }), ok({ p: 5 })], mine(), names, false, false)).toEqual({ kind: 'commit' });
    expect(err(d.decide([ok(), ok({ g: 8 })], mine(), names, false, true)).message).toMatch(/gradientsAveraged is set but the gradients/);
    expect(err(d.decide([ok(), ok({ g: 8 })], mine(), names, false, false)).code).toBe('COMM_FAILED');
    // An unknown fingerprint (-1: device tensors given as averaged) is not compared.
    expect(d.decide([ok(), ok({ g: -1 })], mine(), names, false, true)).toEqual({ kind: 'commit' });
  });

  test('a guard on one rank: all skip for NONFINITE with onNonFinite skip, all throw otherwise (NONFINITE_FACTOR always)', () => {
    const nf = [ok(), ok({ s: 'abort', c: 'NONFINITE', m: 'The statistics of factor 0 ... overflowed', d: { stage: 'statistics' } })];
    expect(dp(0, 2).decide(nf, mine(), names, true, false).kind).toBe('skip');
    const thrown = dp(0, 2).decide(nf, mine(), names, false, false) as { kind: string; error: KradagradError };
    expect([thrown.kind, thrown.error.code, thrown.error.details]).toEqual(['throw', 'NONFINITE', { stage: 'statistics', rank: 1 }]);
    const factor = [ok({ s: 'abort', c: 'NONFINITE_FACTOR', m: 'Root of factor 1 ... failed 4 times' }), ok()];
    const f = dp(1, 2).decide(factor, mine(), names, true, false) as { kind: string; error: KradagradError };
    expect([f.kind, f.error.code, f.error.message]).toEqual(['throw', 'NONFINITE_FACTOR', 'Rank 0 of 2: Root of factor 1 ... failed 4 times']);
    // The lowest failing rank decides, the same on every rank.
    const two = [ok(), ok({ s: 'error', c: 'OUT_OF_MEMORY', m: 'oom' }), ok({ s: 'abort', c: 'NONFINITE', m: 'nan' })];
    for (const r of [0, 1, 2]) {
      const x = dp(r, 3).decide(two, mine({ status: r === 1 ? 'error' : r === 2 ? 'abort' : 'ok', error: new KradagradError('oom', 'OUT_OF_MEMORY') }), names, true, false);
      expect([x.kind, (x as { error: KradagradError }).error.code]).toEqual(['throw', 'OUT_OF_MEMORY']);
    }
  });
});

describe("a rank's share of the blocks", () => {
  test('groupBlocks(plans, keep): only the kept blocks, groups in the same relative order', () => {
    const plans = [planParam('a', [20, 9], 8, false), planParam('b', [8, 8], 8, false)];
    const all = groupBlocks(plans);
    const even = groupBlocks(plans, (p, b) => (p + b) % 2 === 0);
    const odd = groupBlocks(plans, (p, b) => (p + b) % 2 === 1);
    const members = (gs: typeof all) => gs.flatMap((g) => g.members.map((m) => `${m.param}/${m.block}:${g.extent}`));
    expect([...members(even), ...members(odd)].sort()).toEqual(members(all).sort());
    const order = (gs: typeof all) => gs.map((g) => g.extent.join('x'));
    expect(order(even)).toEqual(order(all).filter((e) => order(even).includes(e)));
    expect(groupBlocks(plans, () => false)).toEqual([]);
  });
});
