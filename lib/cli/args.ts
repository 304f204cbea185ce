/**
 * Argument parsing for the CLI on Node's own `util.parseArgs` (tokens mode), with the
 * checks it leaves to us: `--name value`, `--name=value`, boolean flags, repeatable
 * options, positional arguments, and usage errors that say what was expected. A usage
 * error makes the CLI exit with code 2.
 */
import * as fs from 'fs';
import { parseArgs as nodeParseArgs } from 'util';

/** A usage error: the CLI prints it (with a pointer to --help) and exits with code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Where the commands write: stdout for results, stderr for progress and diagnostics. */
export interface Io {
  out(s: string): void;
  err(s: string): void;
  /** Whether stderr is a terminal (progress bar vs periodic lines). */
  isTTY: boolean;
}

export const processIo: Io = {
  out: (s) => process.stdout.write(s.endsWith('\n') ? s : s + '\n'),
  err: (s) => process.stderr.write(s),
  isTTY: Boolean(process.stderr.isTTY),
};

export interface OptionSpec {
  /** 'flag' takes no value; 'value' takes one; 'list' is repeatable and collects values. */
  kind: 'flag' | 'value' | 'list';
}

export interface Parsed {
  options: Map<string, string | true | string[]>;
  positionals: string[];
}

/**
 * Parses argv against `spec` (names without the leading dashes). `-h` is `--help`.
 * Node's parser splits the arguments (non-strict, so that every problem reaches us as a
 * token); the checks here give the messages: unknown options and missing values are
 * usage errors naming the command, a flag given a value or a single-value option given
 * twice too. Arguments that look like negative numbers (`-3`) are values or positionals,
 * never options.
 */
export function parseArgs(argv: readonly string[], spec: Record<string, OptionSpec>, command: string): Parsed {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const [name, s] of Object.entries(spec)) options[name] = { type: s.kind === 'flag' ? 'boolean' : 'string', ...(s.kind === 'list' ? { multiple: true } : {}) };
  // A lone negative number is data: keep Node's parser from reading it as short options.
  const args: string[] = [];
  const numbers = new Map<string, string>();
  argv.forEach((a, i) => {
    if (/^-\d/.test(a)) {
      const key = `\u0000${i}`;
      numbers.set(key, a);
      args.push(key);
    } else args.push(a);
  });
  const real = (v: string): string => numbers.get(v) ?? v;
  const { tokens } = nodeParseArgs({ args, options, strict: false, allowPositionals: true, tokens: true });
  const result: Parsed = { options: new Map(), positionals: [] };
  for (const t of tokens) {
    if (t.kind === 'positional') {
      result.positionals.push(real(t.value));
      continue;
    }
    if (t.kind === 'option-terminator') continue;
    const raw = t.rawName;
    if (!raw.startsWith('--') && raw !== '-h') throw new UsageError(`unknown option '${raw}' for ${command} (see kradagrad ${command} --help)`);
    const name = t.name;
    if (name === 'help') {
      if (t.value !== undefined) throw new UsageError(`--help takes no value, got '${real(t.value)}'`);
      result.options.set('help', true);
      continue;
    }
    const s = Object.prototype.hasOwnProperty.call(spec, name) ? spec[name] : undefined;
    if (!s) {
      const known = Object.keys(spec).map((k) => `--${k}`);
      throw new UsageError(`unknown option '--${name}' for ${command}; expected one of ${[...known, '--help'].join(', ')}`);
    }
    if (s.kind === 'flag') {
      if (t.value !== undefined) throw new UsageError(`--${name} takes no value, got '${real(t.value)}'`);
      result.options.set(name, true);
      continue;
    }
    const v = t.value === undefined ? undefined : real(t.value);
    // Node's parser takes the next argument as the value even when it is another option.
    if (v === undefined || (!t.inlineValue && v.startsWith('--') && v.length > 2)) throw new UsageError(`--${name} expects a value`);
    if (s.kind === 'list') {
      const prev = result.options.get(name);
      result.options.set(name, [...(Array.isArray(prev) ? prev : []), v]);
    } else {
      if (result.options.has(name)) throw new UsageError(`--${name} given twice`);
      result.options.set(name, v);
    }
  }
  return result;
}

/** Typed accessors over a Parsed result, each with a message that says what is expected. */
export class Opts {
  constructor(readonly p: Parsed) {}
  has(name: string): boolean {
    return this.p.options.has(name);
  }
  flag(name: string): boolean {
    return this.p.options.get(name) === true;
  }
  str(name: string): string | undefined {
    const v = this.p.options.get(name);
    return typeof v === 'string' ? v : undefined;
  }
  list(name: string): string[] {
    const v = this.p.options.get(name);
    return Array.isArray(v) ? v : typeof v === 'string' ? [v] : [];
  }
  posInt(name: string, dflt: number, min = 1, max = Number.MAX_SAFE_INTEGER): number {
    const v = this.str(name);
    if (v === undefined) return dflt;
    const x = Number(v);
    if (!/^\s*\d+\s*$/.test(v) || !Number.isSafeInteger(x) || x < min) {
      throw new UsageError(`--${name} expects ${min === 1 ? 'a positive integer' : `an integer >= ${min}`}, got '${v}'`);
    }
    if (x > max) throw new UsageError(`--${name} expects an integer <= ${max}, got '${v}'`);
    return x;
  }
  posNum(name: string, dflt: number, check: (x: number) => boolean = (x) => x > 0, expected = 'a positive number'): number {
    const v = this.str(name);
    if (v === undefined) return dflt;
    const x = parseNumber(v);
    if (x === undefined || !check(x)) throw new UsageError(`--${name} expects ${expected}, got '${v}'`);
    return x;
  }
  choice<T extends string>(name: string, dflt: T, allowed: readonly T[]): T {
    const v = this.str(name);
    if (v === undefined) return dflt;
    if (!(allowed as readonly string[]).includes(v)) throw new UsageError(`--${name} expects one of ${allowed.join(', ')}, got '${v}'`);
    return v as T;
  }
}

/**
 * Checks an output directory before any work is done: creates it (with its parents) when
 * missing, and throws a UsageError when it names a file or cannot be created or written.
 */
export function prepareOutDir(dir: string, flag = '--out'): void {
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(dir);
  } catch {
    st = undefined;
  }
  if (st && !st.isDirectory()) throw new UsageError(`${flag} expects a directory, but '${dir}' is a file`);
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UsageError(`${flag} '${dir}' cannot be used as the output directory (${code ?? (e as Error).message})`);
  }
}

/** A finite number from a string (accepts 1e-3, 0.5, 1e10), or undefined. */
export function parseNumber(s: string): number | undefined {
  if (!/^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/.test(s)) return undefined;
  const x = Number(s);
  return Number.isFinite(x) ? x : undefined;
}

/**
 * A learning-rate grid: a comma list ("1e-3,3e-3,1e-2") or a log range "min:max:count"
 * (count points evenly spaced in log10 from min to max inclusive).
 */
export function parseGrid(s: string, what: string): number[] {
  const bad = (): never => {
    throw new UsageError(`${what} expects a comma list of positive numbers (1e-3,1e-2) or a log range min:max:count (1e-4:1e-1:7), got '${s}'`);
  };
  if (s.includes(':')) {
    const parts = s.split(':');
    if (parts.length !== 3) bad();
    const lo = parseNumber(parts[0]);
    const hi = parseNumber(parts[1]);
    const n = Number(parts[2]);
    if (lo === undefined || hi === undefined || !(lo > 0) || !(hi >= lo) || !Number.isInteger(n) || n < 1 || n > 1000) bad();
    return logGrid(lo!, hi!, n);
  }
  const xs = s.split(',').map((p) => parseNumber(p));
  if (xs.length === 0 || xs.some((x) => x === undefined || !(x > 0))) bad();
  return xs as number[];
}

/** n points evenly spaced in log10 from lo to hi (inclusive), rounded to 3 significant digits. */
export function logGrid(lo: number, hi: number, n: number): number[] {
  if (n === 1) return [lo];
  const a = Math.log10(lo);
  const b = Math.log10(hi);
  return Array.from({ length: n }, (_, i) => Number((10 ** (a + ((b - a) * i) / (n - 1))).toPrecision(3)));
}
