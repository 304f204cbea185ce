/**
 * `kradagrad golden <file.json> [--backend cpu|cuda|auto] [--json out.json] [--case NAME]`:
 * replays every case of a golden file (format 1) and prints each case's max relative
 * error and PASS/FAIL. Exit code 0 when all pass, 1 otherwise, 2 on usage errors.
 */
import * as fs from 'fs';
import { GoldenResult, loadGolden, replayCase } from '../golden';
import type { BackendRequest } from '../native';
import { getBackend } from '../tensor';

export const goldenHelp = `Usage: kradagrad golden <file.json> [options]

Replays the optimizer trajectories of a golden file (format 1, see
test/fixtures/golden-reference.json) under the reference settings and prints each
case's max relative error |ours - ref| / max|ref| with PASS/FAIL.

Options:
  --backend <auto|cpu|cuda>  where to run (default cpu)
  --case <name>              only this case (repeatable)
  --json <path>              also write the results as JSON
  -h, --help                 this help
Exit codes: 0 all pass, 1 some case failed, 2 usage error.`;

export async function runGolden(argv: string[]): Promise<number> {
  let file: string | undefined;
  let backend: BackendRequest = 'cpu';
  let json: string | undefined;
  const only: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined || v.startsWith('--')) throw new UsageError(`${a} expects a value`);
      return v;
    };
    if (a === '-h' || a === '--help') {
      console.log(goldenHelp);
      return 0;
    } else if (a === '--backend') {
      const v = val();
      if (v !== 'auto' && v !== 'cpu' && v !== 'cuda') throw new UsageError(`--backend expects auto, cpu or cuda, got '${v}'`);
      backend = v;
    } else if (a === '--json') json = val();
    else if (a === '--case') only.push(val());
    else if (a.startsWith('-')) throw new UsageError(`unknown option '${a}' for golden (see kradagrad golden --help)`);
    else if (file === undefined) file = a;
    else throw new UsageError(`golden takes one file, got '${file}' and '${a}'`);
  }
  if (!file) throw new UsageError('golden needs a file: kradagrad golden <file.json>');
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

/** A usage error: the CLI prints it and exits with code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}
