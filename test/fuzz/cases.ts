/**
 * The fuzz families and how a case picks one: case i of a run seeded with `seed` draws its
 * family and everything else from its own generator (caseSeed(seed, i)), so any case can
 * be re-run alone, in any order, and gives the same inputs.
 */
import { asyncCase, planningCase, rawCase, tensorCase } from './misc_cases';
import { opsCase } from './ops_cases';
import { constructorCase, extremeCase, optimSession } from './optim_cases';
import { Ctx, Rng } from './support';

export type Family = (ctx: Ctx) => Promise<void>;

/** [name, weight, run]: the share of cases of each family. */
export const FAMILIES: [string, number, Family][] = [
  ['ops', 30, opsCase],
  ['optim.session', 20, optimSession],
  ['optim.constructor', 12, constructorCase],
  ['optim.extreme', 6, extremeCase],
  ['tensor', 14, tensorCase],
  ['raw', 10, rawCase],
  ['planning', 4, planningCase],
  ['async', 4, asyncCase],
];

export function familyOf(r: Rng): [string, Family] {
  const total = FAMILIES.reduce((a, [, w]) => a + w, 0);
  let u = r.next() * total;
  for (const [name, w, f] of FAMILIES) {
    if ((u -= w) < 0) return [name, f];
  }
  const [name, , f] = FAMILIES[FAMILIES.length - 1];
  return [name, f];
}
