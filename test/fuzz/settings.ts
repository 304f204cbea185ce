/** Fuzz settings from the environment (shared by the Jest test and the command line). */
import type { FuzzOptions } from './harness';

/** The default seed: fixed, so CI runs the same inputs every time; KRADAGRAD_FUZZ_SEED changes it. */
export const DEFAULT_SEED = 20261211;
/** Enough cases for well over 1,000 bad inputs per run. */
export const DEFAULT_CASES = 3000;

export function fuzzSettings(env: NodeJS.ProcessEnv): FuzzOptions {
  const s = env.KRADAGRAD_FUZZ_SEED;
  const seed = s === undefined || s === '' ? DEFAULT_SEED : s === 'random' ? (Date.now() ^ (process.pid << 16)) >>> 0 : Number(s);
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`KRADAGRAD_FUZZ_SEED must be a non-negative integer or 'random', got ${s}`);
  const cases = env.KRADAGRAD_FUZZ_CASES ? Number(env.KRADAGRAD_FUZZ_CASES) : DEFAULT_CASES;
  if (!Number.isSafeInteger(cases) || cases < 1) throw new Error(`KRADAGRAD_FUZZ_CASES must be a positive integer, got ${env.KRADAGRAD_FUZZ_CASES}`);
  let only: number[] | undefined;
  if (env.KRADAGRAD_FUZZ_ONLY) {
    only = [];
    for (const part of env.KRADAGRAD_FUZZ_ONLY.split(',')) {
      const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
      if (!m) throw new Error(`KRADAGRAD_FUZZ_ONLY: expected case numbers like "12,40-45", got ${env.KRADAGRAD_FUZZ_ONLY}`);
      for (let i = Number(m[1]); i <= Number(m[2] ?? m[1]); i++) only.push(i);
    }
    only.sort((a, b) => a - b);
  }
  const families = env.KRADAGRAD_FUZZ_FAMILY ? env.KRADAGRAD_FUZZ_FAMILY.split(',') : undefined;
  return { seed, cases, only, families };
}
