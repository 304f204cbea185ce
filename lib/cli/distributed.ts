/**
 * `kradagrad bench distributed`: the sharded optimizers (the `distributed` option) at the
 * world size it is launched with (`mpirun -np P kradagrad bench distributed`; alone, MPI's
 * singleton world of size 1). Per rank and optimizer: the step time with and without a
 * root refresh and its phases (gradient all-reduce, this rank's share, waiting for the
 * verdicts, the direction all-gather, the replicated rest), the root-refresh time per rank
 * (the share's time with a refresh minus without), bytes sent per step, and the all-reduce
 * and all-gather bandwidth measured at the step's message sizes (measureBandwidth).
 *
 * Each run writes <out>/distributed-np<P>.json; the summary <out>/distributed.md compares
 * every world size found there, with the ratios to world size 1.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { Communicator } from '../distributed/communicator';
import { Kradagrad, KradagradStar, Shampoo } from '../optim';
import type { Grads, NamedParams, Optimizer, PreconditionerOptions } from '../optim';
import type { StepProfile } from '../optim/data_parallel';
import { Backend, Tensor, getBackend } from '../tensor';
import { Io, Opts, UsageError, parseArgs, prepareOutDir } from './args';
import { packageVersion } from './info';
import { Rng } from './linalg';
import { PARAM_SETS } from './step';
import { fmtMs, fmtSeconds, formatTable } from './table';

export const distributedHelp = `Usage: mpirun -np <P> kradagrad bench distributed [options]

Step time and root-refresh time per rank of the sharded optimizers (the distributed
option) at the world size mpirun gives (alone: a world of size 1), bytes sent per step,
and the all-reduce / all-gather bandwidth measured at the step's message sizes. Run it
once per world size with the same --out, one BLAS thread per rank:

  OPENBLAS_NUM_THREADS=1 mpirun -np 1 kradagrad bench distributed --out d
  OPENBLAS_NUM_THREADS=1 mpirun -np 2 kradagrad bench distributed --out d

(as root add OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1). Every rank
runs the same command; rank 0 prints and writes.

Options:
  --sets <ids>          comma list of mlp (default), resnet32, tiny
  --optimizers <ids>    comma list of kradstar32 (default), kradstar64, shampoo32,
                        shampoo64, krad32
  --warmup <n>          untimed steps per instance (default 1)
  --steps <n>           timed steps per instance, median taken (default 3)
  --out <dir>           output directory (default ./kradagrad-out)
  --quiet               no progress on stderr
  -h, --help            this help

Per optimizer two instances: roots never refreshed after the warm-up (plain) and
refreshed every step (refresh). Root refresh per rank = this rank's share of a refresh
step minus its share of a plain step. Times are per rank; the tables give the slowest
rank. Writes <out>/distributed-np<P>.json and <out>/distributed.md (every world size
found in <out>, with ratios to world size 1).
Exit codes: 0 ok, 1 failure, 2 usage error.`;

type OptId = 'kradstar32' | 'kradstar64' | 'shampoo32' | 'shampoo64' | 'krad32';
const OPTS: Record<OptId, { label: string; make: (p: NamedParams, o: PreconditionerOptions) => Optimizer; dtype: 'float32' | 'float64' }> = {
  kradstar32: { label: 'KrADagrad* fp32', make: (p, o) => new KradagradStar(p, o), dtype: 'float32' },
  kradstar64: { label: 'KrADagrad* fp64', make: (p, o) => new KradagradStar(p, o), dtype: 'float64' },
  shampoo32: { label: 'Shampoo fp32', make: (p, o) => new Shampoo(p, o), dtype: 'float32' },
  shampoo64: { label: 'Shampoo fp64', make: (p, o) => new Shampoo(p, o), dtype: 'float64' },
  krad32: { label: 'KrADagrad fp32', make: (p, o) => new Kradagrad(p, o), dtype: 'float32' },
};

export interface DistributedArgs {
  help: boolean;
  sets: string[];
  optimizers: OptId[];
  warmup: number;
  steps: number;
  out: string;
  quiet: boolean;
}

export function parseDistributed(argv: readonly string[]): DistributedArgs {
  const p = parseArgs(argv, { sets: { kind: 'value' }, optimizers: { kind: 'value' }, warmup: { kind: 'value' }, steps: { kind: 'value' }, out: { kind: 'value' }, quiet: { kind: 'flag' } }, 'bench distributed');
  const o = new Opts(p);
  if (p.positionals.length) throw new UsageError(`bench distributed takes no positional arguments, got '${p.positionals[0]}'`);
  const list = <T extends string>(name: string, allowed: readonly T[], dflt: T[]): T[] => {
    const v = o.str(name);
    if (v === undefined) return dflt;
    const xs = v.split(',').map((s) => s.trim()).filter(Boolean);
    const bad = xs.filter((x) => !(allowed as readonly string[]).includes(x));
    if (!xs.length || bad.length) throw new UsageError(`--${name} expects a comma list of ${allowed.join(', ')}, got '${v}'`);
    return [...new Set(xs)] as T[];
  };
  return {
    help: o.flag('help'),
    sets: list('sets', ['mlp', 'resnet32', 'tiny'], ['mlp']),
    optimizers: list('optimizers', Object.keys(OPTS) as OptId[], ['kradstar32']),
    warmup: o.posInt('warmup', 1, 0),
    steps: o.posInt('steps', 3),
    out: o.str('out') ?? 'kradagrad-out',
    quiet: o.flag('quiet'),
  };
}

/** Median of each phase over the timed steps of one instance on one rank. */
type Phases = Omit<StepProfile, 'allReduceBytes' | 'allGatherBytes'>;
const PHASES: (keyof Phases)[] = ['allReduceMs', 'localMs', 'localCpuMs', 'verdictMs', 'allGatherMs', 'replicatedMs', 'totalMs'];

export interface DistributedRow {
  set: string;
  optimizer: OptId;
  label: string;
  /** Per rank: the phase medians of the plain and the refresh instance. */
  plain: Phases[];
  refresh: Phases[];
  /** Per rank: refresh.localMs - plain.localMs (wall), and the same in CPU time. */
  refreshPerRankMs: number[];
  refreshPerRankCpuMs: number[];
  /** Bytes per step: the all-reduced gradients; per rank, what it contributes to the direction all-gather. */
  allReduceBytes: number;
  allGatherBytes: number[];
  /** Per rank: statistics, roots and replicated state in bytes. */
  stateBytes: number[];
  /** World size 1 only: the same plain and refresh steps without the distributed option (step()). */
  singleProcessMs?: { plain: number; refresh: number };
  error?: string;
}

export interface DistributedReport {
  benchmark: 'distributed';
  version: string;
  command: string;
  worldSize: number;
  library: string;
  device: string;
  blasThreads: string;
  loadAverage: number[];
  config: { sets: string[]; optimizers: string[]; warmup: number; steps: number };
  rows: DistributedRow[];
  bandwidth: { bytes: number; allReduce: { seconds: number; busBandwidth: number }; allGather: { seconds: number; busBandwidth: number } }[];
  totalMs: number;
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
const size = (s: number[]): number => s.reduce((a, b) => a * b, 1);

/** float32 parameters (device tensors, the same on every rank) and this rank's gradients of a set. */
function makeData(shapes: number[][], b: Backend, rank: number): { params: () => NamedParams; grads: Grads; free: () => void } {
  const rng = new Rng(7);
  const hostParams = shapes.map((s) => Float32Array.from(rng.normals(size(s)), (x) => 0.1 * x));
  const g = new Rng(1000 + rank);
  const tensors: Tensor[] = [];
  const grads: Grads = {};
  const names = shapes.map((s, i) => `p${i}_${s.join('x')}`);
  names.forEach((n, i) => {
    const t = b.fromArray(Float32Array.from(g.normals(size(shapes[i])), (x) => 1e-2 * x), [size(shapes[i])]);
    tensors.push(t);
    grads[n] = t;
  });
  const params = (): NamedParams => {
    const p: NamedParams = {};
    names.forEach((n, i) => {
      const t = b.fromArray(hostParams[i], shapes[i]);
      tensors.push(t);
      p[n] = t;
    });
    return p;
  };
  return { params, grads, free: () => tensors.forEach((t) => t.dispose()) };
}

async function timeInstance(opt: Optimizer, grads: Grads, warmup: number, steps: number, profile: () => StepProfile | null, tick: () => void): Promise<Phases> {
  for (let i = 0; i < warmup; i++) {
    await opt.stepAsync(grads);
    tick();
  }
  const samples: Phases[] = [];
  for (let i = 0; i < steps; i++) {
    await opt.stepAsync(grads);
    samples.push(profile()!);
    tick();
  }
  return Object.fromEntries(PHASES.map((k) => [k, median(samples.map((s) => s[k]))])) as unknown as Phases;
}

function timeSingle(opt: Optimizer, grads: Grads, warmup: number, steps: number): number {
  for (let i = 0; i < warmup; i++) opt.step(grads);
  const out: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    opt.step(grads);
    out.push(performance.now() - t0);
  }
  return median(out);
}

/** Every rank's numbers, in rank order (an all-gather of a fixed-length Float64Array). */
async function gatherNumbers(comm: Communicator, xs: number[]): Promise<number[][]> {
  const all = await comm.allGather(Float64Array.from(xs));
  return Array.from({ length: comm.size }, (_, r) => Array.from(all.subarray(r * xs.length, (r + 1) * xs.length)));
}

export async function runDistributedBench(comm: Communicator, a: DistributedArgs, io: Io, command: string): Promise<DistributedReport> {
  const t0 = performance.now();
  const b = getBackend('cpu');
  const lead = comm.rank === 0;
  const note = (s: string): void => {
    if (lead && !a.quiet) io.err(`${s}\n`);
  };
  const rows: DistributedRow[] = [];
  const bandwidth: DistributedReport['bandwidth'] = [];
  const { measureBandwidth } = await import('../distributed/bandwidth');
  for (const setId of a.sets) {
    const set = PARAM_SETS.find((s) => s.id === setId)!;
    for (const id of a.optimizers) {
      const def = OPTS[id];
      // float32 parameters, as `bench step`; the optimizer's dtype is that of its statistics.
      const data = makeData(set.shapes, b, comm.rank);
      const row: DistributedRow = { set: set.id, optimizer: id, label: def.label, plain: [], refresh: [], refreshPerRankMs: [], refreshPerRankCpuMs: [], allReduceBytes: 0, allGatherBytes: [], stateBytes: [] };
      try {
        const base: PreconditionerOptions = { backend: b, lr: 1e-4, blockSize: set.blockSize, startStep: 1, epsilon: 1e-6, statisticsDtype: def.dtype };
        const run = async (rootFrequency: number, what: string): Promise<{ phases: Phases; prof: StepProfile; state: number }> => {
          const opt = def.make(data.params(), { ...base, rootFrequency, distributed: comm });
          try {
            let k = 0;
            const phases = await timeInstance(opt, data.grads, Math.max(a.warmup, 1), a.steps, () => (opt as unknown as { distributedProfile: StepProfile | null }).distributedProfile, () =>
              note(`  ${set.id} ${def.label} ${what}: step ${++k} of ${Math.max(a.warmup, 1) + a.steps}`),
            );
            return { phases, prof: (opt as unknown as { distributedProfile: StepProfile }).distributedProfile, state: opt.stateBytes() };
          } finally {
            opt.dispose();
          }
        };
        note(`${set.id} ${def.label} at world size ${comm.size}`);
        // KrADagrad refreshes at its step 1 (count 0): the warm-up takes that one.
        const plain = await run(1e9, 'plain');
        const refresh = await run(1, 'refresh');
        const mine = [...PHASES.map((k) => plain.phases[k]), ...PHASES.map((k) => refresh.phases[k]), refresh.prof.allGatherBytes, refresh.state];
        const all = await gatherNumbers(comm, mine);
        const n = PHASES.length;
        row.plain = all.map((x) => Object.fromEntries(PHASES.map((k, i) => [k, x[i]])) as unknown as Phases);
        row.refresh = all.map((x) => Object.fromEntries(PHASES.map((k, i) => [k, x[n + i]])) as unknown as Phases);
        row.refreshPerRankMs = row.refresh.map((r, i) => r.localMs - row.plain[i].localMs);
        row.refreshPerRankCpuMs = row.refresh.map((r, i) => r.localCpuMs - row.plain[i].localCpuMs);
        row.allGatherBytes = all.map((x) => x[2 * n]);
        row.stateBytes = all.map((x) => x[2 * n + 1]);
        row.allReduceBytes = refresh.prof.allReduceBytes;
        if (comm.size === 1) {
          const single = (rf: number): number => {
            const o = def.make(data.params(), { ...base, rootFrequency: rf });
            try {
              return timeSingle(o, data.grads, Math.max(a.warmup, 1), a.steps);
            } finally {
              o.dispose();
            }
          };
          note(`  ${set.id} ${def.label}: the same steps without the distributed option`);
          row.singleProcessMs = { plain: single(1e9), refresh: single(1) };
        }
        if (!bandwidth.some((x) => x.bytes === row.allReduceBytes)) {
          for (const bytes of [row.allReduceBytes, row.allGatherBytes.reduce((x, y) => x + y, 0)]) {
            if (bandwidth.some((x) => x.bytes === bytes) || bytes < 8 * comm.size) continue;
            const r = await measureBandwidth(comm, { bytes, iterations: 5, warmup: 1 });
            bandwidth.push({ bytes, allReduce: { seconds: r.allReduce.seconds, busBandwidth: r.allReduce.busBandwidth }, allGather: { seconds: r.allGather.seconds, busBandwidth: r.allGather.busBandwidth } });
          }
        }
      } catch (e) {
        row.error = `${(e as { code?: string }).code ? (e as { code: string }).code + ': ' : ''}${(e as Error).message}`;
        note(`${set.id} ${def.label}: failed: ${row.error}`);
      } finally {
        data.free();
      }
      rows.push(row);
    }
  }
  return {
    benchmark: 'distributed',
    version: packageVersion(),
    command,
    worldSize: comm.size,
    library: comm.library,
    device: b.device,
    blasThreads: process.env.OPENBLAS_NUM_THREADS ?? '(unset: all cores)',
    loadAverage: os.loadavg(),
    config: { sets: a.sets, optimizers: a.optimizers, warmup: a.warmup, steps: a.steps },
    rows,
    bandwidth,
    totalMs: Math.round(performance.now() - t0),
  };
}

const max = (xs: number[]): number => Math.max(...xs);
const mb = (x: number): string => (x / 2 ** 20).toFixed(1);

/** The tables of one or more reports (one per world size), with ratios to world size 1 when present. */
export function distributedTables(reports: DistributedReport[]): string {
  const sorted = reports.slice().sort((x, y) => x.worldSize - y.worldSize);
  const one = sorted.find((r) => r.worldSize === 1);
  const ref = (row: DistributedRow) => one?.rows.find((x) => x.set === row.set && x.optimizer === row.optimizer && !x.error);
  const main = formatTable(
    [
      { header: 'set', align: 'left' },
      { header: 'optimizer', align: 'left' },
      { header: 'P' },
      { header: 'plain step ms' },
      { header: 'refresh step ms' },
      { header: 'refresh per rank ms' },
      { header: 'refresh per rank / P=1' },
      { header: 'refresh per rank CPU ms' },
      { header: 'CPU / P=1' },
      { header: 'refresh step / P=1' },
      { header: 'state MB per rank' },
    ],
    sorted.flatMap((r) =>
      r.rows.map((x) => {
        if (x.error) return [x.set, x.label, String(r.worldSize), 'failed', '-', '-', '-', '-', '-', '-', '-'];
        const base = ref(x);
        const refreshPerRank = max(x.refreshPerRankMs);
        const cpu = max(x.refreshPerRankCpuMs);
        return [
          x.set,
          x.label,
          String(r.worldSize),
          fmtMs(max(x.plain.map((p) => p.totalMs))),
          fmtMs(max(x.refresh.map((p) => p.totalMs))),
          fmtMs(refreshPerRank),
          base ? (refreshPerRank / max(base.refreshPerRankMs)).toFixed(2) : '-',
          fmtMs(cpu),
          base ? (cpu / max(base.refreshPerRankCpuMs)).toFixed(2) : '-',
          base ? (max(x.refresh.map((p) => p.totalMs)) / max(base.refresh.map((p) => p.totalMs))).toFixed(2) : '-',
          x.stateBytes.map(mb).join(' / '),
        ];
      }),
    ),
  );
  const phases = formatTable(
    [
      { header: 'set', align: 'left' },
      { header: 'optimizer', align: 'left' },
      { header: 'P' },
      { header: 'step', align: 'left' },
      { header: 'all-reduce ms' },
      { header: 'own share ms' },
      { header: 'own share CPU ms' },
      { header: 'verdict wait ms' },
      { header: 'all-gather ms' },
      { header: 'replicated ms' },
      { header: 'total ms' },
    ],
    sorted.flatMap((r) =>
      r.rows
        .filter((x) => !x.error)
        .flatMap((x) =>
          (['plain', 'refresh'] as const).map((k) => [
            x.set,
            x.label,
            String(r.worldSize),
            k,
            ...PHASES.map((ph) => x[k].map((p) => fmtMs(p[ph])).join(' / ')),
          ]),
        ),
    ),
  );
  const bytes = formatTable(
    [
      { header: 'set', align: 'left' },
      { header: 'optimizer', align: 'left' },
      { header: 'P' },
      { header: 'all-reduce MB' },
      { header: 'all-gather MB per rank' },
      { header: 'MB sent per rank (ring model)' },
    ],
    sorted.flatMap((r) =>
      r.rows
        .filter((x) => !x.error)
        .map((x) => {
          const P = r.worldSize;
          const gathered = x.allGatherBytes.reduce((s, v) => s + v, 0);
          // A ring all-reduce sends 2 (P-1)/P of the array per rank; a ring all-gather sends every other rank's share once.
          const sent = P > 1 ? (2 * (P - 1) * x.allReduceBytes) / P + max(x.allGatherBytes.map((v) => v * (P - 1))) : 0;
          return [x.set, x.label, String(P), mb(x.allReduceBytes), x.allGatherBytes.map(mb).join(' / ') + ` (of ${mb(gathered)})`, mb(sent)];
        }),
    ),
  );
  const bw = formatTable(
    [{ header: 'P' }, { header: 'MB' }, { header: 'all-reduce ms' }, { header: 'all-reduce bus GB/s' }, { header: 'all-gather ms' }, { header: 'all-gather bus GB/s' }],
    sorted.flatMap((r) =>
      r.bandwidth.map((x) => [
        String(r.worldSize),
        mb(x.bytes),
        fmtMs(x.allReduce.seconds * 1e3),
        (x.allReduce.busBandwidth / 1e9).toFixed(2),
        fmtMs(x.allGather.seconds * 1e3),
        (x.allGather.busBandwidth / 1e9).toFixed(2),
      ]),
    ),
  );
  const singles = sorted
    .flatMap((r) => r.rows.filter((x) => x.singleProcessMs).map((x) => `${x.set} ${x.label}: plain ${fmtMs(x.singleProcessMs!.plain)} ms, refresh ${fmtMs(x.singleProcessMs!.refresh)} ms`))
    .join('; ');
  const env = sorted.map((r) => `P=${r.worldSize}: ${r.device}, OPENBLAS_NUM_THREADS=${r.blasThreads}, load average ${r.loadAverage.map((x) => x.toFixed(2)).join(' ')} at the end, ${fmtSeconds(r.totalMs)}; ${r.library}`).join('\n- ');
  return [
    main.markdown,
    '',
    'Times are the slowest rank\'s (medians over the timed steps); "refresh per rank" is a rank\'s own share of a refresh step minus that of a plain step (its statistics and preconditioning are in both), in wall time and in the process\'s CPU time meanwhile (which other processes on a shared machine barely change).',
    singles ? `\nWorld size 1 without the distributed option (step()): ${singles}.` : '',
    '',
    'Phases per rank (rank 0 / rank 1 / ...), ms:',
    '',
    phases.markdown,
    '',
    'Bytes per step:',
    '',
    bytes.markdown,
    '',
    'Measured bandwidth (measureBandwidth, addon-owned buffers, at the step\'s message sizes):',
    '',
    bw.markdown,
    '',
    `- ${env}`,
  ].join('\n');
}

export async function benchDistributed(argv: string[], io: Io): Promise<number> {
  const a = parseDistributed(argv);
  if (a.help) {
    io.out(distributedHelp);
    return 0;
  }
  const { init } = await import('../distributed');
  const comm = await init();
  if (comm.rank === 0) prepareOutDir(a.out);
  const command = ['kradagrad bench distributed', ...argv].join(' ');
  let failed = false;
  try {
    const r = await runDistributedBench(comm, a, io, command);
    failed = r.rows.some((x) => x.error);
    if (comm.rank === 0) {
      fs.writeFileSync(path.join(a.out, `distributed-np${comm.size}.json`), JSON.stringify(r, null, 1));
      const reports = fs
        .readdirSync(a.out)
        .filter((f) => /^distributed-np\d+\.json$/.test(f))
        .map((f) => JSON.parse(fs.readFileSync(path.join(a.out, f), 'utf8')) as DistributedReport);
      const md = `Command: \`${command}\` under \`mpirun -np <P>\` (one run per world size)\n\n${distributedTables(reports)}\n`;
      fs.writeFileSync(path.join(a.out, 'distributed.md'), md);
      io.out(distributedTables([r]));
      io.out('');
      io.out(`results: ${path.join(a.out, `distributed-np${comm.size}.json`)}`);
      io.out(`table:   ${path.join(a.out, 'distributed.md')} (world sizes ${reports.map((x) => x.worldSize).sort().join(', ')})`);
    }
  } finally {
    await comm.finalize();
  }
  return failed ? 1 : 0;
}
