/**
 * The per-parameter work of every optimizer is one native call per stage for all
 * parameters (multi-tensor ops), so the native calls of a step do not grow with the number
 * of parameters: on a GPU each call costs microseconds whatever its size.
 */
import * as lib from '../lib';
import { countCalls } from '../bench/calls';

describe('native calls per step', () => {
  const rows = countCalls(lib, ['tiny', 'resnet32']);
  const of = (set: string, opt: string): { calls: number; byOp: Record<string, number> } => rows.find((r) => r.set === set && r.optimizer === opt)!;

  test.each(['Adam', 'SGD (momentum 0.9)'])('%s: the same count for 3 and 33 parameters', (opt) => {
    expect(of('tiny', opt).calls).toBe(of('resnet32', opt).calls);
    expect(of('resnet32', opt).calls).toBeLessThanOrEqual(6);
  });

  test.each(['Shampoo fp32', 'KrADagrad* fp32', 'KrADagrad fp32'])('%s: per-parameter stages are single calls', (opt) => {
    const r = of('resnet32', opt).byOp;
    for (const op of ['copy', 'axpby', 'scaleByNormRatio', 'boxes', 'mulAcc', 'divSqrt']) {
      // Single-tensor forms appear only for per-group work (KrADagrad's damping axpby), never once per parameter.
      expect(r[op] ?? 0).toBeLessThan(33);
    }
    expect(r.copyMany ?? 0).toBeLessThanOrEqual(2);
    expect(r.axpbyMany ?? 0).toBeLessThanOrEqual(3);
  });
});
