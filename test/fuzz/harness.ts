/**
 * The fuzz parent: runs the cases in child processes (a batch of cases per child, two
 * children at a time), so that a crash is counted instead of ending the run. When a child
 * dies (a signal, an exit code, or a hang that the parent ends), the case it had begun is
 * re-run alone; if that does not reproduce it, the cases before it in the batch are
 * bisected to the first one needed. The rest of the batch continues in a fresh child.
 */
import { spawn } from 'child_process';
import * as path from 'path';
import type { Outcome } from './support';

export interface FuzzOptions {
  seed: number;
  /** Cases 0 .. cases-1 (ignored when `only` is given). */
  cases: number;
  only?: number[];
  /** Cases per child. Default 150. */
  batch?: number;
  /** Children at a time. Default 2. */
  workers?: number;
  /** Families to run (others are skipped), e.g. ['ops']. */
  families?: string[];
  /** A child running longer than this is ended and its case counted as a hang. Default 20 s + 0.5 s per case. */
  timeoutMs?: (cases: number) => number;
}

/** A child that died, and what re-running named. */
export interface Death {
  case: number | undefined;
  family: string | undefined;
  signal: string | null;
  exitCode: number | null;
  hang: boolean;
  /** 'alone': the case reproduces by itself; 'after': it needs the earlier case `culprit`; undefined: not reproduced. */
  reproduced?: 'alone' | 'after';
  culprit?: number;
  stderr: string;
}

export interface FuzzReport {
  seed: number;
  cases: number;
  /** Bad inputs run (outcome lines). */
  inputs: number;
  rejected: number;
  accepted: number;
  skipped: number;
  byCode: Record<string, number>;
  byFamily: Record<string, { cases: number; inputs: number; rejected: number; accepted: number; skipped: number }>;
  /** Inputs (or cases) that broke an invariant. */
  failures: Outcome[];
  deaths: Death[];
  /** Children that died by a signal they got from elsewhere than the parent's hang timeout. */
  signals: number;
  children: number;
  wallMs: number;
}

interface ChildRun {
  outcomes: Outcome[];
  begun: Map<number, string>;
  ended: Set<number>;
  signal: NodeJS.Signals | null;
  exitCode: number | null;
  hang: boolean;
  stderr: string;
}

const here = __dirname;
const register = path.join(here, 'register.js');
const childTs = path.join(here, 'child.ts');

/** "0-9,12,14-15" for a sorted list of case numbers. */
function ranges(xs: number[]): string {
  const out: string[] = [];
  for (let i = 0; i < xs.length; ) {
    let j = i;
    while (j + 1 < xs.length && xs[j + 1] === xs[j] + 1) j++;
    out.push(i === j ? `${xs[i]}` : `${xs[i]}-${xs[j]}`);
    i = j + 1;
  }
  return out.join(',');
}

function runChild(seed: number, cases: number[], opts: FuzzOptions): Promise<ChildRun> {
  return new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = { ...process.env, KRADAGRAD_FUZZ_FAMILY: opts.families?.join(',') ?? '' };
    // One BLAS thread per child: two children share the two cores.
    env.OPENBLAS_NUM_THREADS = env.OPENBLAS_NUM_THREADS ?? '1';
    const p = spawn(process.execPath, ['-r', register, childTs, String(seed), ranges(cases)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const run: ChildRun = { outcomes: [], begun: new Map(), ended: new Set(), signal: null, exitCode: null, hang: false, stderr: '' };
    let buf = '';
    p.stdout.setEncoding('utf8');
    p.stdout.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const tag = line.slice(0, 2);
        if (tag === 'B ') {
          const [, c, fam] = line.split(' ');
          run.begun.set(Number(c), fam);
        } else if (tag === 'E ') run.ended.add(Number(line.slice(2)));
        else if (tag === 'R ' || tag === 'F ') {
          try {
            const o = JSON.parse(line.slice(2)) as Outcome;
            if (tag === 'F ' && !o.failure) o.failure = 'failure';
            run.outcomes.push(o);
          } catch {
            run.stderr += `unparsable line: ${line.slice(0, 200)}\n`;
          }
        }
      }
    });
    p.stderr.setEncoding('utf8');
    p.stderr.on('data', (d: string) => {
      if (run.stderr.length < 20000) run.stderr += d;
    });
    const limit = (opts.timeoutMs ?? ((n) => 20000 + 500 * n))(cases.length);
    const timer = setTimeout(() => {
      run.hang = true;
      p.kill('SIGKILL');
    }, limit);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      run.exitCode = code;
      run.signal = signal;
      resolve(run);
    });
  });
}

const abnormal = (r: ChildRun): boolean => r.hang || r.signal !== null || r.exitCode !== 0;
/** The case a dead child had begun and not ended. */
const diedIn = (r: ChildRun): number | undefined => [...r.begun.keys()].find((c) => !r.ended.has(c));

export async function runFuzz(opts: FuzzOptions): Promise<FuzzReport> {
  const t0 = Date.now();
  const all = opts.only ?? Array.from({ length: opts.cases }, (_, i) => i);
  const batch = opts.batch ?? 150;
  const queue: number[][] = [];
  for (let i = 0; i < all.length; i += batch) queue.push(all.slice(i, i + batch));
  const report: FuzzReport = {
    seed: opts.seed,
    cases: 0,
    inputs: 0,
    rejected: 0,
    accepted: 0,
    skipped: 0,
    byCode: {},
    byFamily: {},
    failures: [],
    deaths: [],
    signals: 0,
    children: 0,
    wallMs: 0,
  };
  const fam = (f: string) => (report.byFamily[f] ??= { cases: 0, inputs: 0, rejected: 0, accepted: 0, skipped: 0 });

  const absorb = (r: ChildRun) => {
    for (const [c, f] of r.begun) if (r.ended.has(c) || diedIn(r) === c) (report.cases++, fam(f).cases++);
    for (const o of r.outcomes) {
      if (o.input >= 0 && o.what !== '(case check)') {
        report.inputs++;
        report[o.result]++;
        const F = fam(o.family);
        F.inputs++;
        F[o.result]++;
        if (o.result !== 'accepted') {
          const key = o.result === 'skipped' ? `${o.code} (skipped)` : String(o.code);
          report.byCode[key] = (report.byCode[key] ?? 0) + 1;
        }
      }
      if (o.failure) report.failures.push(o);
    }
  };

  const isolate = async (c: number, before: number[]): Promise<Pick<Death, 'reproduced' | 'culprit'>> => {
    const dies = async (cases: number[]) => {
      report.children++;
      return abnormal(await runChild(opts.seed, cases, opts));
    };
    if (await dies([c])) return { reproduced: 'alone', culprit: c };
    // Not alone: bisect the earlier cases of the batch for the shortest tail that still
    // kills the child at c. dies(before[lo..] + c) holds, dies(before[hi..] + c) does not.
    if (before.length === 0 || !(await dies([...before, c]))) return {};
    let lo = 0;
    let hi = before.length;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (await dies([...before.slice(mid), c])) lo = mid;
      else hi = mid;
    }
    return { reproduced: 'after', culprit: before[lo] };
  };

  const work = async (): Promise<void> => {
    for (let cases = queue.shift(); cases; cases = queue.shift()) {
      report.children++;
      const r = await runChild(opts.seed, cases, opts);
      absorb(r);
      if (!abnormal(r)) continue;
      const c = diedIn(r);
      const death: Death = {
        case: c,
        family: c === undefined ? undefined : r.begun.get(c),
        signal: r.hang ? null : r.signal,
        exitCode: r.exitCode,
        hang: r.hang,
        stderr: r.stderr.slice(-4000),
      };
      if (!r.hang && r.signal) report.signals++;
      if (c !== undefined) {
        const at = cases.indexOf(c);
        Object.assign(death, await isolate(c, cases.slice(0, at)));
        const rest = cases.slice(at + 1);
        if (rest.length) queue.unshift(rest);
      }
      report.deaths.push(death);
    }
  };
  await Promise.all(Array.from({ length: opts.workers ?? 2 }, work));
  report.wallMs = Date.now() - t0;
  return report;
}

/** A short text summary (for the test log and bench/results/fuzz.md). */
export function summarize(r: FuzzReport): string {
  const lines = [
    `seed ${r.seed}: ${r.cases} cases, ${r.inputs} bad inputs in ${r.children} child processes, ${(r.wallMs / 1000).toFixed(1)} s`,
    `  rejected ${r.rejected}, skipped (onNonFinite 'skip') ${r.skipped}, accepted ${r.accepted} (inputs that may be valid)`,
    `  by code: ${Object.entries(r.byCode)
      .sort((a, b) => b[1] - a[1])
      .map(([c, n]) => `${c} ${n}`)
      .join(', ')}`,
    `  by family: ${Object.entries(r.byFamily)
      .map(([f, x]) => `${f} ${x.cases} cases / ${x.inputs} inputs`)
      .join(', ')}`,
    `  signals ${r.signals}, hangs ${r.deaths.filter((d) => d.hang).length}, other child deaths ${r.deaths.filter((d) => !d.hang && !d.signal).length}, invariant failures ${r.failures.length}`,
  ];
  for (const d of r.deaths) {
    lines.push(
      `  DEATH case ${d.case} (${d.family}): ${d.hang ? 'hang' : d.signal ? `signal ${d.signal}` : `exit ${d.exitCode}`}; ${
        d.reproduced === 'alone' ? 'reproduced alone' : d.reproduced === 'after' ? `reproduced after case ${d.culprit}` : 'not reproduced'
      }; reproduce: KRADAGRAD_FUZZ_SEED=${r.seed} KRADAGRAD_FUZZ_ONLY=${d.culprit ?? d.case}${d.reproduced === 'after' ? `,${d.case}` : ''}${d.stderr ? `\n    stderr: ${d.stderr.trim().split('\n').slice(-6).join('\n    ')}` : ''}`,
    );
  }
  for (const f of r.failures.slice(0, 60)) lines.push(`  FAIL case ${f.case} input ${f.input} [${f.family}] ${f.what}: ${f.failure}`);
  if (r.failures.length > 60) lines.push(`  ... and ${r.failures.length - 60} more failures`);
  return lines.join('\n');
}
