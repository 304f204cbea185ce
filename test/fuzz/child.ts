/**
 * A fuzz child: runs the cases it is given and reports on stdout, one line per event,
 * written synchronously so that the parent knows where it was if it dies:
 *   B <case> <family>   a case begins
 *   I <case> <input>    an input begins
 *   R <json>            an input's outcome (support.ts Outcome)
 *   F <json>            a failure of the case outside its inputs
 *   E <case>            a case ended
 * Usage: node -r ./test/fuzz/register.js test/fuzz/child.ts <seed> <cases: "a-b" or "i,j,k">
 */
import * as lib from '../../lib';
import { familyOf } from './cases';
import { Ctx, Rng, caseSeed, emit, errText, errorCodes } from './support';

function parseCases(spec: string): number[] {
  const out: number[] = [];
  for (const part of spec.split(',')) {
    const m = /^(\d+)-(\d+)$/.exec(part);
    if (m) for (let i = Number(m[1]); i <= Number(m[2]); i++) out.push(i);
    else if (/^\d+$/.test(part)) out.push(Number(part));
  }
  return out;
}

let current = -1;
let currentFamily = '';
const late = (what: string) => (e: unknown) => {
  emit('F ' + JSON.stringify({ case: current, input: -1, family: currentFamily, what, result: 'accepted', failure: `${what}: ${errText(e)}` }));
};
process.on('uncaughtException', late('uncaught exception'));
process.on('unhandledRejection', late('unhandled rejection'));

async function main(): Promise<void> {
  const seed = Number(process.argv[2]);
  const cases = parseCases(process.argv[3] ?? '');
  const only = process.env.KRADAGRAD_FUZZ_FAMILY;
  const B = lib.getBackend('cpu');
  const codes = errorCodes();
  for (const i of cases) {
    const r = new Rng(caseSeed(seed, i));
    const [family, run] = familyOf(r);
    if (only && !only.split(',').includes(family)) continue;
    current = i;
    currentFamily = family;
    emit(`B ${i} ${family}`);
    const ctx = new Ctx(lib, B, r, codes, i, family);
    try {
      await run(ctx);
    } catch (e) {
      ctx.fail(`the case itself threw (a harness bug or an escape): ${errText(e)}${e instanceof Error && e.stack ? ' ' + e.stack.split('\n').slice(1, 4).join(' | ') : ''}`);
    }
    await ctx.cleanup();
    emit(`E ${i}`);
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    emit('F ' + JSON.stringify({ case: current, input: -1, family: currentFamily, what: 'child', result: 'accepted', failure: `the child failed: ${errText(e)}` }));
    process.exit(3);
  },
);
