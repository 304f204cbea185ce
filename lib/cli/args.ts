/**
 * Hand-written argument parsing for the CLI (no dependency): `--name value`,
 * `--name=value`, boolean flags, repeatable options, positional arguments, and usage
 * errors that say what was expected. A usage error makes the CLI exit with code 2.
 */

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
 * Unknown options and missing values are usage errors naming the command.
 */
export function parseArgs(argv: readonly string[], spec: Record<string, OptionSpec>, command: string): Parsed {
  const options = new Map<string, string | true | string[]>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a === '-h') {
      options.set('help', true);
      continue;
    }
    if (!a.startsWith('-') || a === '-' || /^-\d/.test(a)) {
      positionals.push(a);
      continue;
    }
    if (!a.startsWith('--')) throw new UsageError(`unknown option '${a}' for ${command} (see kradagrad ${command} --help)`);
    const eq = a.indexOf('=');
    const name = a.slice(2, eq >= 0 ? eq : undefined);
    const s = name === 'help' ? { kind: 'flag' as const } : spec[name];
    if (!s) {
      const known = Object.keys(spec).map((k) => `--${k}`);
      throw new UsageError(`unknown option '--${name}' for ${command}; expected one of ${[...known, '--help'].join(', ')}`);
    }
    if (s.kind === 'flag') {
      if (eq >= 0) throw new UsageError(`--${name} takes no value, got '${a.slice(eq + 1)}'`);
      options.set(name, true);
      continue;
    }
    let v: string | undefined;
    if (eq >= 0) v = a.slice(eq + 1);
    else {
      v = argv[i + 1];
      if (v === undefined || (v.startsWith('--') && v.length > 2)) throw new UsageError(`--${name} expects a value`);
      i++;
    }
    if (s.kind === 'list') {
      const prev = options.get(name);
      options.set(name, [...(Array.isArray(prev) ? prev : []), v]);
    } else {
      if (options.has(name)) throw new UsageError(`--${name} given twice`);
      options.set(name, v);
    }
  }
  return { options, positionals };
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
