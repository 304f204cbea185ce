/**
 * `kradagrad golden [file.json] [--backend cpu|cuda|auto] [--json out.json] [--case NAME]`:
 * replays every case of a golden file (format 1; default: the one shipped in the package)
 * and prints each case's max relative error and PASS/FAIL. Exit code 0 when all pass, 1 otherwise, 2 on usage errors.
 */
import * as fs from 'fs';
import * as path from 'path';
import { GoldenResult, loadGolden, replayCase } from '../golden';
import { packageRoot } from '../native';
import type { BackendRequest } from '../native';
import { getBackend } from '../tensor';
import { Opts, UsageError, parseArgs } from './args';

export const goldenHelp = `Usage: kradagrad golden [file.json] [options]

Replays the optimizer trajectories of a golden file (format 1) under the reference
settings and prints each case's max relative error |ours - ref| / max|ref| with
PASS/FAIL. Without a file it replays the 24 trajectories recorded from the paper
authors' PyTorch code that ship with the package (test/fixtures/golden-reference.json
in the package folder).

Options:
  --backend <auto|cpu|cuda>  where to run (default cpu)
  --case <name>              only this case (repeatable)
  --json <path>              also write the results as JSON
  -h, --help                 this help
Exit codes: 0 all pass, 1 some case failed, 2 usage error.`;

/** The golden file shipped in the package. */
export const SHIPPED_GOLDEN = 'test/fixtures/golden-reference.json';

export async function runGolden(argv: string[]): Promise<number> {
  const p = parseArgs(argv, { backend: { kind: 'value' }, case: { kind: 'list' }, json: { kind: 'value' } }, 'golden');
  const o = new Opts(p);
  if (o.flag('help')) {
    console.log(goldenHelp);
    return 0;
  }
  const backend = o.choice<BackendRequest>('backend', 'cpu', ['auto', 'cpu', 'cuda']);
  const json = o.str('json');
  const only = o.list('case');
  if (p.positionals.length > 1) throw new UsageError(`golden takes one file, got '${p.positionals[0]}' and '${p.positionals[1]}'`);
  const file = p.positionals[0] ?? path.join(packageRoot, SHIPPED_GOLDEN);
  if (!fs.existsSync(file)) throw new UsageError(`no such file: ${file}`);
  const g = loadGolden(file);
  const cases = only.length ? g.cases.filter((c) => only.includes(c.name)) : g.cases;
  if (only.length && cases.length !== only.length) throw new UsageError(`unknown case name among ${only.join(', ')}`);
  const b = getBackend(backend);
  console.log(`golden replay of ${file} (${cases.length} cases) on ${b.name}: ${b.device}`);
  const results: GoldenResult[] = [];
  const w = Math.max(...cases.map((c) => c.name.length), 4);
  for (const c of cases) {
    const r = replayCase(c, b);
    results.push(r);
    console.log(
      `${r.pass ? 'PASS' : 'FAIL'}  ${c.name.padEnd(w)}  ${c.optimizer.padEnd(14)} ${c.dtype.padEnd(7)}  max rel err ${r.maxRelError.toExponential(2)}  (tol ${r.tolerance.toExponential(0)})` +
        (r.firstBadStep ? `  first bad step ${r.firstBadStep}` : ''),
    );
  }
  const passed = results.filter((r) => r.pass).length;
  console.log(`${passed} passed, ${results.length - passed} failed`);
  if (json) fs.writeFileSync(json, JSON.stringify({ file, backend: b.name, device: b.device, results }, null, 2));
  return passed === results.length ? 0 : 1;
}
