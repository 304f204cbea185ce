/**
 * Reshaping and blocking plan of the Kronecker-factored optimizers: merge small adjacent
 * dims, cut large dims into blocks, and group same-shape blocks of all parameters so that
 * each group is one batched tensor (a step costs a few batched calls per group, not one
 * call per block).
 */

/**
 * Merges adjacent dims left to right while their running product stays <= blockSize
 * (dims of 1 vanish). [2,3,16,4] with 8 -> [6,16,4]; [8,5] with 128 -> [40]; [] -> [].
 */
export function mergeDims(shape: readonly number[], blockSize: number): number[] {
  const out: number[] = [];
  let prod = 1;
  for (const d of shape) {
    if (prod * d <= blockSize) {
      prod *= d;
    } else {
      if (prod > 1) out.push(prod);
      prod = d;
    }
  }
  if (prod > 1) out.push(prod);
  return out;
}

/** One block of a (transformed) parameter: its offsets and extents per dim. */
export interface Block {
  offset: number[];
  extent: number[];
}

/** Ranges [start, start+len) of size blockSize covering d (the last may be shorter). */
export function splitDim(d: number, blockSize: number): { start: number; len: number }[] {
  const out = [];
  for (let s = 0; s < d; s += blockSize) out.push({ start: s, len: Math.min(blockSize, d - s) });
  return out;
}

/** Blocks of `shape`: cartesian product of per-dim ranges, dim 0 slowest. */
export function partition(shape: readonly number[], blockSize: number): Block[] {
  let blocks: Block[] = [{ offset: [], extent: [] }];
  for (const d of shape) {
    const ranges = splitDim(d, blockSize);
    const next: Block[] = [];
    for (const b of blocks) {
      for (const r of ranges) next.push({ offset: [...b.offset, r.start], extent: [...b.extent, r.len] });
    }
    blocks = next;
  }
  return blocks;
}

/** Row-major offset in `full` (strides) of element q of block b. */
function elementOffset(b: Block, strides: number[], q: number): number {
  let rem = q;
  let off = 0;
  for (let i = b.extent.length - 1; i >= 0; i--) {
    off += (b.offset[i] + (rem % b.extent[i])) * strides[i];
    rem = Math.floor(rem / b.extent[i]);
  }
  return off;
}
const stridesOf = (shape: readonly number[]): number[] => shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
const sizeOf = (b: Block): number => b.extent.reduce((x, y) => x * y, 1);

/** Copies the blocks of `full` (row-major, shape) out into one array per block (a plain TS reference of ops.boxes). */
export function gatherBlocks(full: ArrayLike<number>, shape: readonly number[], blocks: Block[]): number[][] {
  const strides = stridesOf(shape);
  return blocks.map((b) => Array.from({ length: sizeOf(b) }, (_, q) => full[elementOffset(b, strides, q)]));
}

/** Inverse of gatherBlocks: writes each block back into `full`. */
export function scatterBlocks(parts: number[][], full: number[] | Float64Array | Float32Array, shape: readonly number[], blocks: Block[]): void {
  const strides = stridesOf(shape);
  blocks.forEach((b, j) => {
    for (let q = 0; q < sizeOf(b); q++) full[elementOffset(b, strides, q)] = parts[j][q];
  });
}

/** The plan of one parameter. */
export interface ParamPlan {
  name: string;
  shape: number[];
  /** Shape after merging (rank k; [] for a scalar parameter, which is not preconditioned). */
  transformed: number[];
  blocks: Block[];
}

/** A group of same-extent blocks (across parameters), stacked as one batch. */
export interface BlockGroup {
  /** Extents of every block in the group. */
  extent: number[];
  /** Members in batch order: which parameter, which of its blocks. */
  members: { param: number; block: number }[];
}

export function planParam(name: string, shape: number[], blockSize: number, merge: boolean): ParamPlan {
  const transformed = merge ? mergeDims(shape, blockSize) : shape.filter((d) => d > 1);
  return { name, shape, transformed, blocks: transformed.length ? partition(transformed, blockSize) : [] };
}

/**
 * Groups blocks by extent, in first-seen order (deterministic). `keep` restricts it to some
 * blocks (a rank's share in data-parallel mode); the groups keep the same relative order.
 */
export function groupBlocks(plans: ParamPlan[], keep?: (param: number, block: number) => boolean): BlockGroup[] {
  const groups = new Map<string, BlockGroup>();
  plans.forEach((p, pi) =>
    p.blocks.forEach((b, bi) => {
      if (keep && !keep(pi, bi)) return;
      const key = b.extent.join('x');
      let g = groups.get(key);
      if (!g) groups.set(key, (g = { extent: b.extent, members: [] }));
      g.members.push({ param: pi, block: bi });
    }),
  );
  return [...groups.values()];
}
