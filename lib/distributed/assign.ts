/**
 * Assignment of preconditioner blocks to ranks, for the sharded optimizers: each rank
 * keeps statistics and roots only for its own blocks, so the work (dominated by the root
 * computations, O(n^3) per factor of size n) should be balanced. Pure and deterministic:
 * every rank computes the same assignment from the same block list, with no communication.
 */
import { KradagradError, describe } from '../errors';

/** The factor sizes of one block (one per preconditioned dimension; may be empty). */
export type BlockFactors = readonly number[];

/** The result of {@link assignBlocks}. */
export interface BlockAssignment {
  /** `owner[i]`: the rank that owns block i. */
  owner: number[];
  /** `blocks[r]`: rank r's block indices, ascending. */
  blocks: number[][];
  /** `loads[r]`: the summed cost of rank r's blocks. */
  loads: number[];
  /** `costs[i]`: the cost of block i ({@link blockCost}). */
  costs: number[];
}

/** The cost of a block: the sum over its factors of n^3 (an eigendecomposition or root of an n×n factor). */
export function blockCost(factors: BlockFactors): number {
  let c = 0;
  for (const n of factors) c += n * n * n;
  return c;
}

/**
 * Assigns blocks to `size` ranks greedily by cost: blocks in decreasing cost (equal costs
 * in increasing index), each to the currently least-loaded rank (equal loads: the lowest
 * rank). This is the LPT rule: the largest load is at most the average plus the largest
 * block cost, and within 4/3 of the best possible.
 * @param blocks the factor sizes of each block (positive integers).
 * @param size the number of ranks, a positive integer.
 */
export function assignBlocks(blocks: readonly BlockFactors[], size: number): BlockAssignment {
  if (!Number.isInteger(size) || size < 1) {
    throw new KradagradError(`Expected a positive integer for size but received ${describe(size)}`, 'INVALID_ARGUMENT');
  }
  if (!Array.isArray(blocks)) {
    throw new KradagradError(`Expected an array of blocks for blocks but received ${describe(blocks)}`, 'INVALID_ARGUMENT');
  }
  const costs = blocks.map((f, i) => {
    if (!Array.isArray(f) || f.some((n) => !Number.isInteger(n) || n < 1)) {
      throw new KradagradError(
        `Expected an array of positive integer factor sizes for blocks[${i}] but received ${describe(f)}`,
        'INVALID_ARGUMENT',
      );
    }
    return blockCost(f);
  });
  const order = costs.map((_, i) => i).sort((a, b) => costs[b] - costs[a] || a - b);
  const loads = new Array<number>(size).fill(0);
  const owner = new Array<number>(blocks.length).fill(0);
  for (const i of order) {
    // A linear scan: block lists are hundreds to thousands long and sizes small; a heap
    // would need the same lowest-rank tie rule spelled out.
    let best = 0;
    for (let r = 1; r < size; r++) if (loads[r] < loads[best]) best = r;
    owner[i] = best;
    loads[best] += costs[i];
  }
  const perRank: number[][] = Array.from({ length: size }, () => []);
  owner.forEach((r, i) => perRank[r].push(i));
  return { owner, blocks: perRank, loads, costs };
}
