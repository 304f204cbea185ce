/**
 * A worker thread that exits (process.exit inside it) or is terminated (worker.terminate())
 * while async work of kradagrad is in flight (a stepAsync, eighAsync, matpowAsync and
 * crc32cAsync) must not take the process down: the work finishes on the libuv pool after
 * the worker's environment is gone, and whatever the addon would report then is dropped.
 * Before the addon was built with NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS, terminate()
 * aborted the process (exit 134: an N-API error thrown into the dying environment became a
 * C++ exception out of a V8 callback).
 *
 * Each run is a child process (support/worker_exit_child.js): its worker starts the work and
 * keeps calling into the addon until it exits or is terminated, at once or after a short
 * random delay; the main thread waits for the pool work to drain and exits 0. 20 runs,
 * every exit code counted. (With the addon built without that define, 4 of 5 terminated
 * runs aborted here.)
 */
import { spawn } from 'child_process';
import * as path from 'path';
import { mulberry32 } from './support/rand';

const child = path.resolve(__dirname, 'support', 'worker_exit_child.js');

function run(mode: string, delay: number): Promise<{ code: number | null; signal: string | null; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [child, mode, String(delay)], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, OPENBLAS_NUM_THREADS: '1' } });
    let stderr = '';
    p.stderr.on('data', (d) => (stderr += d));
    // A run that hangs is a failure too (killed here, reported as a signal).
    const timer = setTimeout(() => {
      stderr += '\n(hung: killed after 30 s)';
      p.kill('SIGKILL');
    }, 30000);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stderr });
    });
  });
}

test('20 workers that exit or are terminated with async work in flight: every process exits cleanly', async () => {
  const r = mulberry32(11);
  const plan = Array.from({ length: 20 }, (_, i) => ({ mode: i % 2 ? 'terminate' : 'exit', delay: i < 4 ? 0 : Math.floor(r() * 60) }));
  const results: { mode: string; delay: number; code: number | null; signal: string | null; stderr: string }[] = [];
  // Two at a time (two cores).
  for (let i = 0; i < plan.length; i += 2) {
    const batch = plan.slice(i, i + 2);
    results.push(...(await Promise.all(batch.map(async (p) => ({ ...p, ...(await run(p.mode, p.delay)) })))));
  }
  const counts: Record<string, number> = {};
  for (const x of results) {
    const k = `${x.mode}: ${x.signal ? `signal ${x.signal}` : `exit ${x.code}`}`;
    counts[k] = (counts[k] ?? 0) + 1;
  }
  console.log(`worker exit/terminate with async work in flight, 20 runs: ${JSON.stringify(counts)}`);
  const bad = results.filter((x) => x.code !== 0 || x.signal);
  expect(bad.map((x) => `${x.mode} after ${x.delay} ms: ${x.signal ?? x.code} ${x.stderr.slice(-300)}`)).toEqual([]);
  expect(counts).toEqual({ 'exit: exit 0': 10, 'terminate: exit 0': 10 });
}, 120000);
