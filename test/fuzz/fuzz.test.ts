/**
 * The fuzz suite (issue 11): thousands of generated bad inputs through the public API and
 * the raw addon, run in child processes so that a crash is counted instead of ending the
 * run (harness.ts). It passes when no child died (no signal, no hang, no exit code), every
 * rejection was a KradagradError with a code of the ErrorCode union (and the code the case
 * expects where it names one), no certainly-bad input was accepted, no rejection changed
 * the watched state (state bytes, parameters, step counter, tensors), and the valid
 * controls between bad inputs matched a fresh run of the same valid inputs.
 *
 * Seeded and reproducible: the seed is printed; KRADAGRAD_FUZZ_SEED changes it ('random'
 * draws one), KRADAGRAD_FUZZ_CASES the number of cases, KRADAGRAD_FUZZ_ONLY re-runs
 * chosen cases, KRADAGRAD_FUZZ_FAMILY chosen families. The same from the command line:
 *   node -r ./test/fuzz/register.js test/fuzz/main.ts
 */
import { runFuzz, summarize } from './harness';
import { fuzzSettings } from './settings';
import { errorCodes } from './support';

test('fuzz: no signal, only coded rejections, rejected inputs change nothing, controls stay right', async () => {
  const settings = fuzzSettings(process.env);
  const r = await runFuzz(settings);
  const text = summarize(r);
  console.log(`kradagrad fuzz (KRADAGRAD_FUZZ_SEED=${r.seed} reproduces this run)\n${text}`);
  expect({ signals: r.signals, deaths: r.deaths.length, failures: r.failures.length }).toEqual({ signals: 0, deaths: 0, failures: 0 });
  if (!settings.only && !settings.families) {
    expect(r.inputs).toBeGreaterThanOrEqual(1000);
    // Every family ran, and the rejections carry codes of the union only.
    expect(Object.keys(r.byFamily).sort()).toEqual(['async', 'ops', 'optim.constructor', 'optim.extreme', 'optim.session', 'planning', 'raw', 'tensor']);
    const codes = errorCodes();
    for (const c of Object.keys(r.byCode)) expect(codes.has(c.replace(' (skipped)', ''))).toBe(true);
  }
}, 300000);
