/**
 * The fuzz from the command line (what the Jest test runs, with a report):
 *   node -r ./test/fuzz/register.js test/fuzz/main.ts [--json out.json]
 * Environment: KRADAGRAD_FUZZ_SEED (a number, or 'random'), KRADAGRAD_FUZZ_CASES,
 * KRADAGRAD_FUZZ_ONLY (case numbers, e.g. "12,40-45"), KRADAGRAD_FUZZ_FAMILY (e.g. "ops,raw").
 * Exit status 1 when anything failed.
 */
import * as fs from 'fs';
import { fuzzSettings } from './settings';
import { runFuzz, summarize } from './harness';

async function main(): Promise<void> {
  const s = fuzzSettings(process.env);
  console.log(`kradagrad fuzz: seed ${s.seed} (KRADAGRAD_FUZZ_SEED to change), ${s.only ? `cases ${s.only.join(',')}` : `${s.cases} cases`}`);
  const r = await runFuzz(s);
  console.log(summarize(r));
  const i = process.argv.indexOf('--json');
  if (i > 0 && process.argv[i + 1]) fs.writeFileSync(process.argv[i + 1], JSON.stringify(r, null, 1));
  process.exit(r.failures.length || r.deaths.length ? 1 : 0);
}
void main();
