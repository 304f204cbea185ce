/**
 * The sharded optimizers (the `distributed` option) under a real MPI launcher; the ranks
 * run test/distributed/shard.js, which computes every expectation itself:
 *  - equivalence at `mpirun -np 2` and `-np 3` (oversubscribed): KrADagrad*, KrADagrad and
 *    Shampoo float32/float64 on rank-1, rank-2, rank-3 and blocked parameters, 30 steps with
 *    root refreshes, each rank its own gradients: parameters bitwise identical on every
 *    rank, equal to one process stepped with the mean gradient (float32 1e-5, float64 1e-12
 *    relative; bitwise with the all-reduce's mean), bitwise equal with gradientsAveraged;
 *    statistics and roots only for the rank's blocks; collective skips and rejections.
 *  - checkpoints: saved at world size 3 (byte-identical to one process's), loaded at 2 and
 *    into one process, continued: bitwise equal to the uninterrupted run.
 *  - tfjs: model.fit data-parallel at np 2 reaches one process's loss on the global batch.
 *  - faults: a rank killed (SIGKILL) or throwing while distributed steps are in flight ends
 *    the job non-zero within 30 s, naming the rank.
 *
 * Needs OpenMPI; skipped (saying so) without it unless KRADAGRAD_REQUIRE_MPI=1 (CI).
 */
import { ChildProcess, spawn, spawnSync, SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.resolve(__dirname, '..', '..');
const shardJs = path.join(__dirname, 'shard.js');

function which(prog: string): string | null {
  for (const d of (process.env.PATH || '').split(path.delimiter)) {
    if (d && fs.existsSync(path.join(d, prog))) return path.join(d, prog);
  }
  return null;
}

const missing = ['mpirun', 'mpicc'].filter((p) => !which(p));
const whyNot = missing.length ? `MPI is not installed (no ${missing.join(', ')}; apt-get install openmpi-bin libopenmpi-dev)` : '';
const required = process.env.KRADAGRAD_REQUIRE_MPI === '1';

/** Root allowed (CI containers), one BLAS thread per rank. */
function mpiEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, OPENBLAS_NUM_THREADS: '1', ...extra };
  if (process.getuid?.() === 0) {
    env.OMPI_ALLOW_RUN_AS_ROOT = '1';
    env.OMPI_ALLOW_RUN_AS_ROOT_CONFIRM = '1';
  }
  return env;
}

/** As mpi.test.ts: oversubscribed, unbound, no CMA single-copy transport (containers). */
function mpirunArgs(np: number, ...args: string[]): string[] {
  return ['--oversubscribe', '--bind-to', 'none', '--mca', 'btl_vader_single_copy_mechanism', 'none', '-np', String(np), process.execPath, shardJs, ...args];
}

function newest(p: string, re: RegExp): number {
  if (!fs.existsSync(p)) return 0;
  const st = fs.statSync(p);
  if (!st.isDirectory()) return re.test(p) ? st.mtimeMs : 0;
  return fs.readdirSync(p).reduce((t, e) => Math.max(t, newest(path.join(p, e), re)), 0);
}

function checked(r: SpawnSyncReturns<string>, what: string): void {
  if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status}):\n${r.stdout}\n${r.stderr}`);
}

/** Runs a scenario on np ranks; every rank must print `ok <check>` for every check and `done`. Returns the check names. */
function scenario(np: number, ...args: string[]): { names: string[]; out: string } {
  const r = spawnSync('mpirun', mpirunArgs(np, ...args), { cwd: root, env: mpiEnv(), encoding: 'utf8', timeout: 280000 });
  const out = `${r.stdout}\n${r.stderr}`;
  if (r.status !== 0) throw new Error(`mpirun -np ${np} shard.js ${args.join(' ')} exited ${r.status} (${r.signal ?? 'no signal'}):\n${out}`);
  const lines = r.stdout.split('\n');
  for (let rank = 0; rank < np; rank++) expect(lines).toContain(`done rank ${rank} of ${np}`);
  const counts = new Map<string, number>();
  for (const l of lines) if (l.startsWith('ok ')) counts.set(l, (counts.get(l) ?? 0) + 1);
  for (const [n, c] of counts) expect([n, c]).toEqual([n, np]);
  const info = lines.filter((l) => l.startsWith('info ') && / rank 0[: ]/.test(l));
  // eslint-disable-next-line no-console
  if (info.length) console.log(info.join('\n'));
  return { names: [...counts.keys()], out };
}

const suite = whyNot ? describe.skip : describe;
if (whyNot) {
  // eslint-disable-next-line no-console
  console.log(`sharded optimizer (MPI) tests skipped: ${whyNot}`);
  if (required) test('MPI is required here (KRADAGRAD_REQUIRE_MPI=1)', () => expect(whyNot).toBe(''));
}

const OPTIMIZERS = ['KradagradStar fp32', 'KradagradStar fp64', 'Kradagrad fp32', 'Shampoo fp32', 'Shampoo fp64'];

suite('sharded optimizers under mpirun', () => {
  beforeAll(() => {
    checked(spawnSync(process.execPath, ['scripts/build-mpi.js', '--quiet'], { cwd: root, encoding: 'utf8' }), 'scripts/build-mpi.js');
    const dist = path.join(root, 'dist', 'lib', 'optim', 'data_parallel.js');
    if (!fs.existsSync(dist) || fs.statSync(dist).mtimeMs < newest(path.join(root, 'lib'), /\.ts$/)) {
      checked(spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: root, encoding: 'utf8' }), 'tsc');
    }
  }, 300000);

  test.each([2, 3])('mpirun -np %i: equivalence, sharded memory, collective decisions', (np) => {
    const { names } = scenario(np, 'equivalence');
    for (const o of OPTIMIZERS) {
      expect(names.some((n) => n.startsWith(`ok ${o}: 30 steps, own gradients: bitwise identical on every rank`))).toBe(true);
      expect(names).toContain(`ok ${o}: with gradientsAveraged and the same gradients, bitwise equal to one process`);
    }
    expect(names).toEqual(
      expect.arrayContaining([
        'ok a non-finite statistic on one rank only: every rank skips (onNonFinite skip) or rejects (throw) together',
        'ok bad arguments, disagreeing ranks: every rank rejects with the same code, state unchanged, still in step',
        'ok Adam and Sgd take the communicator too: averaged gradients, identical parameters',
        'ok missingGradient skip (the same parameters on every rank): bitwise equal to one process',
        'ok device-mode parameters and mixed dtypes: one all-reduce per dtype, the same steps',
      ]),
    );
  }, 300000);

  test('checkpoints: saved at world size 3, loaded at 2 and into one process, continued bit for bit', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kradagrad-shard-'));
    try {
      const saved = scenario(3, 'ckpt-save', dir).names;
      for (const o of OPTIMIZERS) expect(saved).toContain(`ok ${o}: saved at world size 3, the checkpoint is byte-identical to one process's`);
      const loaded = scenario(2, 'ckpt-load', dir).names;
      for (const o of OPTIMIZERS) expect(loaded).toContain(`ok ${o}: loaded at world size 2 and into one process, continued: bitwise equal to the uninterrupted run`);
      expect(loaded).toContain('ok loading is collective: a rank that cannot load, or ranks given different files, reject everywhere with the state unchanged');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 300000);

  test('tfjs: model.fit data-parallel at np 2 reaches the loss of one process on the global batch', () => {
    const { names } = scenario(2, 'tfjs');
    expect(names).toEqual([
      "ok broadcastWeights: every rank starts from rank 0's weights",
      'ok model.fit data-parallel (np 2) reaches the loss of one process on the global batch',
      "ok minimizeAsync data-parallel: bitwise the steps of one process with the mean of the shards' gradients",
    ]);
  }, 300000);

  test('a rank that throws while distributed steps are in flight ends the job non-zero within 30 s, naming the rank', () => {
    const t0 = Date.now();
    const r = spawnSync('mpirun', mpirunArgs(2, 'throw-mid-step'), { cwd: root, env: mpiEnv(), encoding: 'utf8', timeout: 60000 });
    const seconds = (Date.now() - t0) / 1000;
    // eslint-disable-next-line no-console
    console.log(`throw mid-step (np 2): exit ${r.status}, ${seconds.toFixed(2)} s`);
    expect(r.status).toBe(1);
    expect(`${r.stdout}\n${r.stderr}`).toMatch(/\[kradagrad\] rank 1 of 2: uncaught exception; aborting the MPI job[\s\S]*boom during a step/);
    expect(seconds).toBeLessThan(30);
  }, 60000);

  test('kill -9 of a rank while distributed steps are in flight ends the job non-zero within 30 s', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kradagrad-shard-kill-'));
    const pidFile = path.join(tmp, 'rank1.pid');
    const child: ChildProcess = spawn('mpirun', mpirunArgs(2, 'kill-mid-step'), { cwd: root, env: mpiEnv({ KRADAGRAD_PID_FILE: pidFile }) });
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : null))));
    try {
      const deadline = Date.now() + 60000;
      while (!(fs.existsSync(pidFile) && fs.readFileSync(pidFile, 'utf8').trim() && (out.match(/ready/g) ?? []).length >= 2)) {
        if (Date.now() > deadline) throw new Error(`the ranks did not start:\n${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      await new Promise((r) => setTimeout(r, 300)); // mid-run: steps in flight
      const t0 = Date.now();
      process.kill(Number(fs.readFileSync(pidFile, 'utf8')), 'SIGKILL');
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 30000)));
      const status = await Promise.race([exited, timeout]);
      clearTimeout(timer);
      // eslint-disable-next-line no-console
      console.log(`kill -9 of rank 1 mid-step (np 2): mpirun exited ${status} after ${((Date.now() - t0) / 1000).toFixed(2)} s`);
      expect(status).not.toBe('timeout');
      expect(status).not.toBe(0);
      expect(out).toMatch(/process rank 1 with PID \d+ on node \S+ exited on signal 9/);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }, 120000);
});
