/**
 * Reshaping and blocking plan of the Kronecker-factored optimizers: merge small adjacent
 * dims, cut large dims into blocks, and group same-shape blocks of all parameters so that
 * each group is one batched tensor (a step costs a few batched calls per group, not one
 * call per block).
 *
 * These functions are exported, so their arguments are checked (INVALID_ARGUMENT): shapes
 * are arrays of positive safe integers, block sizes positive safe integers, and a
 * partition may hold at most MAX_BLOCKS blocks (a bad block size must not make it build
 * billions of objects).
 */
import { KradagradError, describe } from '../errors';

/** The most blocks one parameter may be cut into. */
export const MAX_BLOCKS = 1 << 22;

const bad = (where: string, what: string, v: unknown): never => {
  throw new KradagradError(`${where}: expected ${what} but received ${describe(v)}`, 'INVALID_ARGUMENT');
};
function checkShape(shape: unknown, where: string): readonly number[] {
  if (!Array.isArray(shape) || shape.length > 64) bad(where, 'a shape (an array of at most 64 positive integers)', shape);
  for (let i = 0; i < (shape as unknown[]).length; i++) {
    const d = (shape as unknown[])[i];
    if (!Number.isSafeInteger(d) || (d as number) < 1) bad(where, `positive integer dims, dim ${i} is not one`, d);
  }
  return shape as number[];
}
function checkBlockSize(b: unknown, where: string): number {
  if (!Number.isSafeInteger(b) || (b as number) < 1) bad(where, 'a block size (a positive integer)', b);
  return b as number;
}

/**
 * Merges adjacent dims left to right while their running product stays <= blockSize
 * (dims of 1 vanish). [2,3,16,4] with 8 -> [6,16,4]; [8,5] with 128 -> [40]; [] -> [].
 */
export function mergeDims(shape: readonly number[], blockSize: number): number[] {
  checkShape(shape, 'mergeDims');
  checkBlockSize(blockSize, 'mergeDims');
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
  checkShape(shape, 'partition');
  checkBlockSize(blockSize, 'partition');
  const count = shape.reduce((n, d) => n * Math.ceil(d / blockSize), 1);
  if (count > MAX_BLOCKS) {
    throw new KradagradError(`partition: [${shape}] in blocks of ${blockSize} makes ${count} blocks, more than ${MAX_BLOCKS}; use a larger blockSize`, 'INVALID_ARGUMENT');
  }
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
  if (typeof name !== 'string') bad('planParam', 'a parameter name (a string)', name);
  checkShape(shape, 'planParam');
  checkBlockSize(blockSize, 'planParam');
  if (typeof merge !== 'boolean') bad('planParam', 'a boolean for merge', merge);
  const transformed = merge ? mergeDims(shape, blockSize) : shape.filter((d) => d > 1);
  return { name, shape, transformed, blocks: transformed.length ? partition(transformed, blockSize) : [] };
}

/**
 * Groups blocks by extent, in first-seen order (deterministic). `keep` restricts it to some
 * blocks (a rank's share in data-parallel mode); the groups keep the same relative order.
 */
export function groupBlocks(plans: ParamPlan[], keep?: (param: number, block: number) => boolean): BlockGroup[] {
  if (!Array.isArray(plans)) bad('groupBlocks', 'an array of parameter plans', plans);
  if (keep !== undefined && typeof keep !== 'function') bad('groupBlocks', 'a function (param, block) => boolean, or nothing', keep);
  plans.forEach((p, i) => {
    if (!p || typeof p !== 'object' || !Array.isArray(p.blocks)) bad('groupBlocks', `a plan (with blocks) at ${i}`, p);
    for (const b of p.blocks) if (!b || typeof b !== 'object' || !Array.isArray(b.extent)) bad('groupBlocks', `blocks with extents in plan ${i}`, b);
  });
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
