/**
 * `kradagrad info`: the backends found, why CUDA is or is not used, library versions
 * (Node, N-API, OpenBLAS as the addon reports it, kradagrad) and the devices.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { packageRoot, packageVersion as nativePackageVersion } from '../native';
import type { Backend } from '../tensor';
import { getBackend } from '../tensor';
import { Io, Opts, UsageError, parseArgs } from './args';
import { shippedFonts } from './plot';

export const infoHelp = `Usage: kradagrad info [options]

Prints the backends found (CPU addon, CUDA addon), which one 'auto' picks and why
CUDA is or is not used, the library versions (Node.js, N-API, OpenBLAS config as the
addon reports it, kradagrad) and the devices.

Options:
  --json          print the same as JSON
  -h, --help      this help
Exit codes: 0 ok (also when only the CPU backend loads), 1 when no backend loads,
2 usage error.`;

/** kradagrad's version, 'unknown' when its package.json cannot be read. */
export function packageVersion(): string {
  return nativePackageVersion() ?? 'unknown';
}

export interface InfoReport {
  kradagrad: string;
  node: string;
  napi: string | undefined;
  platform: string;
  cpu: { model: string; cores: number };
  auto: { backend: string; device: string; addonPath: string; cudaReason?: string } | { error: string };
  cpuAddon: { path: string; backends: { name: string; available: boolean; reason: string; device: string }[]; openblas?: string; threads?: number; kernels?: string } | { error: string };
  cuda: { available: boolean; device?: string; addonPath?: string; backends?: { name: string; available: boolean; reason: string; device: string }[]; reason?: string };
  env: Record<string, string>;
  resvg: string | null;
  /** The font files handed to resvg (shipped in the package). */
  fonts: string[];
}

function openblasOf(device: string): string | undefined {
  const m = /OpenBLAS ([^,)]*(?:\([^)]*\))?[^,)]*)/.exec(device);
  return m ? m[1].trim() : undefined;
}

function resvgVersion(): string | null {
  try {
    const p = require.resolve('@resvg/resvg-js/package.json', { paths: [packageRoot] });
    return JSON.parse(fs.readFileSync(p, 'utf8')).version;
  } catch {
    return null;
  }
}

export function collectInfo(): InfoReport {
  const cpus = os.cpus();
  const rep: InfoReport = {
    kradagrad: packageVersion(),
    node: process.versions.node,
    napi: process.versions.napi,
    platform: `${process.platform}-${process.arch}`,
    cpu: { model: cpus[0]?.model?.trim() ?? 'unknown', cores: cpus.length },
    auto: { error: 'not loaded' },
    cpuAddon: { error: 'not loaded' },
    cuda: { available: false },
    env: {},
    resvg: resvgVersion(),
    fonts: shippedFonts(),
  };
  for (const k of ['KRADAGRAD_CPU_ADDON', 'KRADAGRAD_CUDA_ADDON', 'KRADAGRAD_BUILD_FROM_SOURCE', 'KRADAGRAD_DISABLE_CUDA', 'KRADAGRAD_NUM_THREADS', 'KRADAGRAD_CPU_KERNELS', 'KRADAGRAD_CPU_CACHE_MB', 'OPENBLAS_NUM_THREADS', 'OPENBLAS_CORETYPE', 'CUDA_VISIBLE_DEVICES']) {
    if (process.env[k] !== undefined) rep.env[k] = process.env[k]!;
  }
  try {
    const b = getBackend('auto');
    rep.auto = { backend: b.name, device: b.device, addonPath: b.report.addonPath, ...(b.report.cudaReason ? { cudaReason: b.report.cudaReason } : {}) };
  } catch (e) {
    rep.auto = { error: (e as Error).message };
  }
  try {
    const c: Backend = getBackend('cpu');
    rep.cpuAddon = { path: c.report.addonPath, backends: c.addon.backends(), openblas: openblasOf(c.device), threads: c.addon.getThreads(), kernels: c.addon.cpuKernels() };
  } catch (e) {
    rep.cpuAddon = { error: (e as Error).message };
  }
  try {
    const g = getBackend('cuda');
    rep.cuda = { available: true, device: g.device, addonPath: g.report.addonPath, backends: g.addon.backends() };
  } catch (e) {
    rep.cuda = { available: false, reason: (e as Error).message };
  }
  return rep;
}

export async function runInfo(argv: string[], io: Io): Promise<number> {
  const p = parseArgs(argv, { json: { kind: 'flag' } }, 'info');
  const o = new Opts(p);
  if (o.flag('help')) {
    io.out(infoHelp);
    return 0;
  }
  if (p.positionals.length) throw new UsageError(`info takes no positional arguments, got '${p.positionals[0]}'`);
  const r = collectInfo();
  const ok = !('error' in r.auto);
  if (o.flag('json')) {
    io.out(JSON.stringify(r, null, 2));
    return ok ? 0 : 1;
  }
  const lines: string[] = [];
  lines.push(`kradagrad ${r.kradagrad}`);
  lines.push(`node ${r.node}, N-API ${r.napi ?? '?'}, ${r.platform}, ${r.cpu.cores} CPU threads (${r.cpu.model})`);
  lines.push('');
  if ('error' in r.auto) lines.push(`backend 'auto': FAILED: ${r.auto.error}`);
  else {
    lines.push(`backend 'auto' uses: ${r.auto.backend}`);
    lines.push(`  device: ${r.auto.device}`);
    lines.push(`  addon:  ${r.auto.addonPath}`);
  }
  lines.push('');
  lines.push(`CUDA: ${r.cuda.available ? 'available' : 'not used'}`);
  if (r.cuda.available) {
    lines.push(`  device: ${r.cuda.device}`);
    lines.push(`  addon:  ${r.cuda.addonPath}`);
  } else {
    lines.push(`  why:    ${r.cuda.reason}`);
  }
  lines.push('');
  if ('error' in r.cpuAddon) lines.push(`CPU addon: FAILED: ${r.cpuAddon.error}`);
  else {
    lines.push(`CPU addon: ${r.cpuAddon.path}`);
    lines.push(`  OpenBLAS: ${r.cpuAddon.openblas ?? 'unknown'}`);
    lines.push(`  threads:  ${r.cpuAddon.threads ?? '?'} (setThreads(n) / KRADAGRAD_NUM_THREADS), ${r.cpuAddon.kernels ?? '?'} kernels`);
    lines.push('  backends in this addon:');
    for (const b of r.cpuAddon.backends) lines.push(`    ${b.name.padEnd(5)} ${b.available ? 'available' : 'unavailable'}  ${b.device || b.reason}`);
  }
  if (r.cuda.available && r.cuda.backends) {
    lines.push('  backends in the CUDA addon:');
    for (const b of r.cuda.backends) lines.push(`    ${b.name.padEnd(5)} ${b.available ? 'available' : 'unavailable'}  ${b.device || b.reason}`);
  }
  lines.push('');
  lines.push(
    `plots: ${r.resvg ? `@resvg/resvg-js ${r.resvg} (SVG and PNG)` : '@resvg/resvg-js not installed (SVG only; it is an optional dependency: npm install @resvg/resvg-js for PNGs)'}`,
  );
  lines.push(`  font:  ${r.fonts.length ? r.fonts.join(', ') : 'the shipped font files are missing: PNG text depends on system fonts'}`);
  if (Object.keys(r.env).length) lines.push(`environment: ${Object.entries(r.env).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  io.out(lines.join('\n'));
  return ok ? 0 : 1;
}
