/** Merging and blocking: the golden README's examples, round trips, and ops.boxes against the TS reference. */
import { getBackend, ops } from '../lib';
import { gatherBlocks, groupBlocks, mergeDims, partition, planParam, scatterBlocks } from '../lib/optim/blocking';

describe('mergeDims', () => {
  test.each([
    [[2, 3, 16, 4], 8, [6, 16, 4]],
    [[8, 5], 128, [40]],
    [[8, 5], 8, [8, 5]],
    [[4, 3, 6], 6, [4, 3, 6]],
    [[1, 7, 1], 8, [7]],
    [[1, 1], 4, []],
    [[16, 3, 3, 3], 128, [48, 9]],
    [[64, 64, 3, 3], 128, [64, 64, 9]],
  ])('%j with block %d -> %j', (shape, b, want) => {
    expect(mergeDims(shape, b)).toEqual(want);
  });
});

describe('partition', () => {
  test('blocks are the cartesian product of ranges, dim 0 slowest', () => {
    const blocks = partition([12, 10], 5);
    expect(blocks.map((b) => b.extent)).toEqual([[5, 5], [5, 5], [5, 5], [5, 5], [2, 5], [2, 5]]);
    expect(blocks.map((b) => b.offset)).toEqual([[0, 0], [0, 5], [5, 0], [5, 5], [10, 0], [10, 5]]);
  });
  test.each([
    [[7], 3],
    [[12, 10], 5],
    [[5, 7, 3], 2],
    [[3, 4, 5, 6], 4],
  ])('gather/scatter round trip of %j with block %d, and ops.boxes agrees', (shape, bs) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const full = Float64Array.from({ length: n }, (_, i) => i + 0.5);
    const blocks = partition(shape, bs);
    const parts = gatherBlocks(full, shape, blocks);
    expect(parts.reduce((a, p) => a + p.length, 0)).toBe(n);
    const back = new Float64Array(n);
    scatterBlocks(parts, back, shape, blocks);
    expect(Array.from(back)).toEqual(Array.from(full));
    // Native gather/scatter per extent group.
    const B = getBackend('cpu');
    const t = B.fromArray(full, shape);
    const out = B.tensor('float64', shape);
    for (const g of groupBlocks([{ name: 'x', shape, transformed: shape, blocks }])) {
      const bt = B.tensor('float64', g.extent, g.members.length);
      const offs = g.members.map((m) => blocks[m.block].offset);
      ops.boxes(t, bt, offs);
      const got = bt.read();
      const per = g.extent.reduce((a, b) => a * b, 1);
      g.members.forEach((m, j) => expect(Array.from(got.subarray(j * per, (j + 1) * per))).toEqual(parts[m.block]));
      ops.boxes(out, bt, offs, true);
    }
    expect(Array.from(out.read())).toEqual(Array.from(full));
  });
  test('planParam and grouping over parameters', () => {
    const plans = [planParam('a', [12, 10], 5, true), planParam('b', [5, 5], 5, true)];
    const groups = groupBlocks(plans);
    expect(groups.map((g) => [g.extent, g.members.length])).toEqual([
      [[5, 5], 5],
      [[2, 5], 2],
    ]);
  });
});
