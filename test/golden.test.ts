/**
 * Replays every recorded trajectory of the paper authors' code (copied from
 * ../shared/golden/reference.json into test/fixtures) on the CPU backend. Tolerances are
 * the golden README's: float64 1e-9, float32 1e-4, KrADagrad 1e-6 (its float32 rounding).
 */
import * as path from 'path';
import { loadGolden, replayCase, toleranceOf } from '../lib/golden';

const file = path.join(__dirname, 'fixtures', 'golden-reference.json');
const golden = loadGolden(file);

describe('golden trajectories (CPU)', () => {
  test('the fixture holds the 24 recorded cases', () => {
    expect(golden.cases).toHaveLength(24);
  });
  test.each(golden.cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const r = replayCase(c, 'cpu');
    console.log(`${r.pass ? 'PASS' : 'FAIL'} ${c.name}: max rel err ${r.maxRelError.toExponential(2)} (tol ${toleranceOf(c)})`);
    expect(r.maxRelError).toBeLessThanOrEqual(toleranceOf(c));
  });
  test('a corrupted trajectory is detected (the replay can fail)', () => {
    const c = JSON.parse(JSON.stringify(golden.cases[0]));
    c.params[3][2] += 1e-6 * Math.max(...c.params[3].map(Math.abs));
    const r = replayCase(c, 'cpu');
    expect(r.pass).toBe(false);
    expect(r.firstBadStep).toBe(4);
  });
});
