#!/usr/bin/env node
/**
 * The `kradagrad` command line: benchmarks (`bench conditioning`, `bench step`, `bench distributed`), `info`,
 * `golden [file.json]`, `build-native`, `build-mpi` and `help`. Exit codes: 0 ok, 1 failure, 2 usage error.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Io, UsageError, parseArgs, processIo } from './args';

export const mainHelp = `Usage: kradagrad <command> [options]

Second-order optimizers (KrADagrad*, KrADagrad, Shampoo fp32/fp64) for Node.js.

Commands:
  bench conditioning    the paper's ill-conditioned quadratic (Section 5.1, Figure 1):
                        learning-rate sweeps, loss table, plot (SVG/PNG), JSON
  bench step            amortized per-step time per optimizer and precision on the
                        ResNet-32, MLP and 4096x4096 parameter sets, per backend
  bench distributed     the sharded optimizers under mpirun: step and root-refresh
                        time per rank, bytes per step, measured bandwidth
  info                  backends found, why CUDA is or is not used, versions, device
  golden [file.json]    replay golden optimizer trajectories (default: the shipped
                        reference file), PASS/FAIL per case
  build-native          build the CPU addon from source (platforms without a
                        prebuilt package, or to link your own BLAS)
  build-mpi             build the optional MPI addon of kradagrad/distributed
                        against the system's MPI
  help [command]        this help, or a command's help

Run 'kradagrad <command> --help' for a command's options.
Exit codes: 0 ok, 1 failure, 2 usage error.`;

export const benchHelp = `Usage: kradagrad bench <conditioning|step|distributed> [options]

  conditioning   the paper's synthetic ill-conditioned quadratic (kradagrad bench conditioning --help)
  step           amortized per-step time per optimizer (kradagrad bench step --help)
  distributed    the sharded optimizers under mpirun (kradagrad bench distributed --help)`;

export const buildNativeHelp = `Usage: kradagrad build-native [--force]

Builds the CPU addon from the C++ sources shipped in the package, with node-gyp
against this Node's own headers, into build/Release/kradagrad_cpu.node inside the
kradagrad package folder; kradagrad uses that build before any prebuilt one.
Needed where no prebuilt @kradagrad/<platform>-<arch> package exists (today there
is one for linux-x64 with glibc >= 2.34), or to link your own BLAS.

Needs: a C++17 compiler, make, python3, OpenBLAS + LAPACKE headers (Debian/Ubuntu:
apt-get install libopenblas-dev liblapacke-dev) and node-addon-api in your project
(npm install node-addon-api). node-gyp: the one npm ships is used when it is not
installed. Set KRADAGRAD_BUILD_FROM_SOURCE=1 to make kradagrad use only this build.

Options:
  --force       rebuild even when the build is newer than the sources
  -h, --help    this help
Exit codes: 0 built (or up to date), 1 the build failed, 2 usage error.`;

export const buildMpiHelp = `Usage: kradagrad build-mpi [--force]

Builds the optional MPI addon that kradagrad/distributed needs, from the C++ sources
shipped in the package, with the compiler flags of the system MPI (mpicc --showme)
and this Node's own headers, into build-mpi/Release/kradagrad_mpi.node inside the
kradagrad package folder. Single-process use never needs it.

Needs: OpenMPI (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev), a C++17
compiler and node-addon-api in your project (npm install node-addon-api).

Options:
  --force       rebuild even when the build is newer than the sources
  -h, --help    this help
Exit codes: 0 built (or up to date), 1 the build failed, 2 usage error.`;

type Handler = (argv: string[], io: Io) => Promise<number>;

/** \`kradagrad build-native\` / \`build-mpi\`: runs the package's build script, output passed through. */
async function runBuild(cmd: 'build-native' | 'build-mpi', argv: string[], io: Io): Promise<number> {
  const p = parseArgs(argv, { force: { kind: 'flag' } }, cmd);
  if (p.options.get('help') === true) {
    io.out(cmd === 'build-native' ? buildNativeHelp : buildMpiHelp);
    return 0;
  }
  if (p.positionals.length) throw new UsageError(`${cmd} takes no positional arguments, got '${p.positionals[0]}'`);
  const { packageRoot } = require('../native') as { packageRoot: string };
  const script = path.join(packageRoot, 'scripts', `${cmd}.js`);
  if (!fs.existsSync(script)) {
    io.err(`kradagrad ${cmd}: ${script} is missing from this package\n`);
    return 1;
  }
  const { spawnSync } = require('child_process') as typeof import('child_process');
  const r = spawnSync(process.execPath, [script, ...(p.options.has('force') ? ['--force'] : [])], { stdio: 'inherit' });
  return r.status === 0 ? 0 : 1;
}

const lazy = {
  conditioning: (): Handler => require('./conditioning').benchConditioning,
  step: (): Handler => require('./step').benchStep,
  distributed: (): Handler => require('./distributed').benchDistributed,
  info: (): Handler => require('./info').runInfo,
};

function helpOf(topic: string[]): string | undefined {
  const key = topic.join(' ');
  if (key === '' ) return mainHelp;
  if (key === 'bench') return benchHelp;
  if (key === 'bench conditioning') return require('./conditioning').conditioningHelp;
  if (key === 'bench step') return require('./step').stepHelp;
  if (key === 'bench distributed') return require('./distributed').distributedHelp;
  if (key === 'info') return require('./info').infoHelp;
  if (key === 'golden') {
    const g = goldenModule();
    return g?.goldenHelp ?? 'Usage: kradagrad golden [file.json] [options]';
  }
  if (key === 'build-native') return buildNativeHelp;
  if (key === 'build-mpi') return buildMpiHelp;
  if (key === 'help') return mainHelp;
  return undefined;
}

function goldenModule(): { runGolden: (argv: string[]) => Promise<number>; goldenHelp?: string } | undefined {
  const file = path.join(__dirname, `golden${path.extname(__filename)}`);
  if (!fs.existsSync(file)) return undefined;
  return require('./golden');
}

/** Runs the CLI on `argv` (without node and script) and returns the exit code. */
export async function main(argv: string[], io: Io = processIo): Promise<number> {
  try {
    const [cmd, ...rest] = argv;
    if (cmd === undefined || cmd === '-h' || cmd === '--help') {
      io.out(mainHelp);
      return cmd === undefined ? 2 : 0;
    }
    if (cmd === 'help') {
      const h = helpOf(rest);
      if (h === undefined) throw new UsageError(`no help for '${rest.join(' ')}'; commands: bench conditioning, bench step, info, golden, build-native, build-mpi, help`);
      io.out(h);
      return 0;
    }
    if (cmd === '--version' || cmd === '-v') {
      io.out(require('./info').packageVersion());
      return 0;
    }
    if (cmd === 'bench') {
      const [sub, ...args] = rest;
      if (sub === undefined || sub === '-h' || sub === '--help') {
        io.out(benchHelp);
        return sub === undefined ? 2 : 0;
      }
      if (sub === 'conditioning') return await lazy.conditioning()(args, io);
      if (sub === 'step') return await lazy.step()(args, io);
      if (sub === 'distributed') return await lazy.distributed()(args, io);
      throw new UsageError(`unknown benchmark '${sub}'; expected conditioning, step or distributed`);
    }
    if (cmd === 'info') return await lazy.info()(rest, io);
    if (cmd === 'build-native' || cmd === 'build-mpi') return await runBuild(cmd, rest, io);
    if (cmd === 'golden') {
      const g = goldenModule();
      if (!g) {
        io.err('kradagrad golden: not available in this build (lib/cli/golden is missing)\n');
        return 1;
      }
      return await g.runGolden(rest);
    }
    throw new UsageError(`unknown command '${cmd}'; expected bench, info, golden, build-native, build-mpi or help`);
  } catch (e) {
    const err = e as Error;
    if (err && err.name === 'UsageError') {
      io.err(`kradagrad: ${err.message}\nRun 'kradagrad help' or add --help for usage.\n`);
      return 2;
    }
    const code = (err as { code?: string })?.code;
    io.err(`kradagrad: ${code ? `[${code}] ` : ''}${err?.message ?? String(e)}\n`);
    if (process.env.KRADAGRAD_DEBUG) io.err(`${err?.stack}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`kradagrad: ${String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
