/**
 * Block assignment for the sharded optimizers (lib/distributed/assign.ts): greedy by cost
 * (sum of n^3 over a block's factors), largest first, to the least-loaded rank, ties to
 * the lowest rank and the lowest block index.
 */
import { KradagradError } from '../../lib';
import { assignBlocks, blockCost } from '../../lib/distributed';

/** mulberry32, seeded: the same block lists on every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('blockCost', () => {
  test('sums n^3 over the factors', () => {
    expect(blockCost([])).toBe(0);
    expect(blockCost([4, 3])).toBe(4 * 4 * 4 + 3 * 3 * 3);
    expect(blockCost([1024])).toBe(1024 ** 3);
  });
});

describe('assignBlocks', () => {
  test('a worked example: largest first, least-loaded rank, ties to the lower rank', () => {
    // Costs 27, 8, 64, 1, 64. Order: #2 (64), #4 (64), #0 (27), #1 (8), #3 (1).
    // #2 -> r0 (tie), #4 -> r1, #0 -> r0 (tie 64/64), #1 -> r1 (91/64), #3 -> r1 (91/72).
    const a = assignBlocks([[3], [2], [4], [1], [4]], 2);
    expect(a.costs).toEqual([27, 8, 64, 1, 64]);
    expect(a.owner).toEqual([0, 1, 0, 1, 1]);
    expect(a.blocks).toEqual([
      [0, 2],
      [1, 3, 4],
    ]);
    expect(a.loads).toEqual([91, 73]);
  });

  test('equal costs go round the ranks in block order', () => {
    const a = assignBlocks(Array.from({ length: 5 }, () => [2, 2]), 3);
    expect(a.owner).toEqual([0, 1, 2, 0, 1]);
    expect(a.loads).toEqual([32, 32, 16]);
  });

  test('one rank takes everything; more ranks than blocks leaves ranks empty', () => {
    const blocks = [[5], [3, 3], [], [7]];
    const one = assignBlocks(blocks, 1);
    expect(one.blocks).toEqual([[0, 1, 2, 3]]);
    expect(one.loads).toEqual([blocks.reduce((s, b) => s + blockCost(b), 0)]);
    const many = assignBlocks([[5], [7]], 4);
    expect(many.owner).toEqual([1, 0]);
    expect(many.blocks).toEqual([[1], [0], [], []]);
    expect(many.loads).toEqual([343, 125, 0, 0]);
    expect(assignBlocks([], 3)).toEqual({ owner: [], blocks: [[], [], []], loads: [0, 0, 0], costs: [] });
  });

  test('random block lists: a partition, loads are the sums, the LPT bound holds, deterministic', () => {
    const next = rng(12);
    for (let trial = 0; trial < 200; trial++) {
      const nBlocks = Math.floor(next() * 60);
      const blocks = Array.from({ length: nBlocks }, () =>
        Array.from({ length: Math.floor(next() * 4) }, () => 1 + Math.floor(next() * 256)),
      );
      const size = 1 + Math.floor(next() * 9);
      const a = assignBlocks(blocks, size);
      const seen = new Array(nBlocks).fill(0);
      a.blocks.forEach((list, r) => {
        expect([...list].sort((x, y) => x - y)).toEqual(list);
        for (const i of list) {
          seen[i]++;
          expect(a.owner[i]).toBe(r);
        }
        expect(a.loads[r]).toBe(list.reduce((s, i) => s + blockCost(blocks[i]), 0));
      });
      expect(seen.every((c) => c === 1)).toBe(true);
      const total = a.costs.reduce((s, c) => s + c, 0);
      const maxCost = Math.max(0, ...a.costs);
      // Greedy list scheduling: no rank ends above the average by more than one block.
      expect(Math.max(...a.loads)).toBeLessThanOrEqual(total / size + maxCost);
      expect(assignBlocks(blocks, size)).toEqual(a);
    }
  });

  test('beats one block per rank in turn on a mixed parameter set (a ResNet-like shape list)', () => {
    // Factor sizes of blocked conv/dense parameters: many small factors and a few large.
    const blocks: number[][] = [];
    for (let i = 0; i < 30; i++) blocks.push([16, 144]);
    for (let i = 0; i < 10; i++) blocks.push([64, 128]);
    for (let i = 0; i < 4; i++) blocks.push([128, 128]);
    blocks.push([10, 64]);
    const size = 3;
    const a = assignBlocks(blocks, size);
    const roundRobin = new Array(size).fill(0);
    blocks.forEach((b, i) => (roundRobin[i % size] += blockCost(b)));
    expect(Math.max(...a.loads)).toBeLessThan(Math.max(...roundRobin));
  });

  test('bad input is an INVALID_ARGUMENT KradagradError', () => {
    const bad: [unknown, unknown, RegExp][] = [
      [[[2]], 0, /positive integer for size/],
      [[[2]], 1.5, /positive integer for size/],
      [[[2]], '2', /positive integer for size/],
      ['blocks', 2, /array of blocks/],
      [[[2, 0]], 2, /blocks\[0\]/],
      [[[2], [2.5]], 2, /blocks\[1\]/],
      [[['3']], 2, /blocks\[0\]/],
      [[3], 2, /blocks\[0\]/],
    ];
    for (const [blocks, size, msg] of bad) {
      let err: unknown;
      try {
        assignBlocks(blocks as number[][], size as number);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(KradagradError);
      expect((err as KradagradError).code).toBe('INVALID_ARGUMENT');
      expect((err as KradagradError).message).toMatch(msg);
    }
  });
});
