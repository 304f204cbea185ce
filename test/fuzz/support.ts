/**
 * What the fuzz cases share (child side): the seeded generator, the catalogue of junk
 * values, and `Ctx.input`, which runs one bad input and checks the invariants:
 *   - a rejection is a KradagradError (instanceof, name) with a code from the ErrorCode
 *     union (read from lib/errors.ts, the one place it is defined), and the code the case
 *     expects when it names one;
 *   - an input that is certainly bad is rejected (not accepted silently);
 *   - what the case watches (tensor contents, optimizer state bytes, parameter arrays, the
 *     step counter) is unchanged after a rejection.
 * Each outcome goes to stdout as one line, written synchronously, so the parent knows how
 * far a child got if it dies.
 */
import * as fs from 'fs';
import * as path from 'path';
import type * as Lib from '../../lib';
import { mulberry32 } from '../support/rand';

export type K = typeof Lib;

/** The ErrorCode union of lib/errors.ts, as a runtime set (parsed from the source). */
export function errorCodes(): Set<string> {
  const src = fs.readFileSync(path.join(__dirname, '..', '..', 'lib', 'errors.ts'), 'utf8');
  // Up to the first member followed by ';' (comments between members may hold ';' too).
  const m = /export type ErrorCode =([\s\S]*?'[A-Z_]+'\s*;)/.exec(src);
  if (!m) throw new Error('ErrorCode union not found in lib/errors.ts');
  const codes = new Set([...m[1].matchAll(/'([A-Z_]+)'/g)].map((x) => x[1]));
  if (codes.size < 10) throw new Error(`ErrorCode union parsed to only ${codes.size} codes`);
  return codes;
}

/** A seeded generator with the helpers the cases need. */
export class Rng {
  private readonly u: () => number;
  constructor(seed: number) {
    this.u = mulberry32(seed);
  }
  next(): number {
    return this.u();
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.u() * (hi - lo + 1));
  }
  bool(p = 0.5): boolean {
    return this.u() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.u() * xs.length)];
  }
  /** Values in [-1, 1). */
  floats(n: number): number[] {
    return Array.from({ length: n }, () => 2 * this.u() - 1);
  }
}

/** A 32-bit finalizer with full avalanche (every input bit flips each output bit with p ~ 1/2). */
function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
  return (x ^ (x >>> 16)) >>> 0;
}
/** A seed for case `i` of a run seeded with `seed` (independent streams per case and per seed). */
export function caseSeed(seed: number, i: number): number {
  const s = mix32(mix32(seed >>> 0) ^ mix32(Math.floor(seed / 2 ** 32) + 0x9e3779b9));
  return mix32((s + Math.imul(i + 1, 0x9e3779b9)) >>> 0);
}

/** A typed array whose buffer has been detached (transferred away). */
export function detached<T extends ArrayBufferView>(a: T): T {
  structuredClone(a.buffer, { transfer: [a.buffer as ArrayBuffer] });
  return a;
}
/** A Float32Array / Float64Array of `n` values backed by a SharedArrayBuffer. */
export function shared(dtype: 'float32' | 'float64', values: ArrayLike<number>): Float32Array | Float64Array {
  const sab = new SharedArrayBuffer(values.length * (dtype === 'float32' ? 4 : 8)) as unknown as ArrayBuffer;
  const a = dtype === 'float32' ? new Float32Array(sab) : new Float64Array(sab);
  a.set(values as number[]);
  return a;
}

/** Values that are no tensor, number, array or options object in any sense (plus near misses). */
export function junk(r: Rng): unknown {
  const all: (() => unknown)[] = [
    () => undefined,
    () => null,
    () => 0,
    () => -1,
    () => 1.5,
    () => NaN,
    () => Infinity,
    () => -Infinity,
    () => 2 ** 53,
    () => -(2 ** 63),
    () => '',
    () => 'abc',
    () => '1',
    () => true,
    () => false,
    () => ({}),
    () => [],
    () => [1, 2],
    () => [[1], [2]],
    () => ({ length: 3 }),
    () => () => 1,
    () => Symbol('junk'),
    () => 10n,
    () => new Float32Array(2),
    () => new Float64Array(3),
    () => new Int32Array(2),
    () => new Uint8Array(3),
    () => new DataView(new ArrayBuffer(8)),
    () => new ArrayBuffer(8),
    () => Buffer.from('xyz'),
    () => new Date(0),
    () => /re/,
    () => new Map(),
    () => Object.create(null),
    () => Object.freeze({ a: 1 }),
    () => detached(new Float64Array(2)),
    () => shared('float32', [1, 2]),
    () => new Proxy({}, {}),
  ];
  return r.pick(all)();
}

/** Describes a value briefly for outcome lines (never throws). */
export function show(v: unknown): string {
  try {
    if (v === null) return 'null';
    if (typeof v === 'symbol') return 'Symbol';
    if (typeof v === 'bigint') return `${v}n`;
    if (typeof v === 'function') return 'function';
    if (typeof v === 'string') return JSON.stringify(v.length > 30 ? v.slice(0, 30) + '…' : v);
    if (typeof v !== 'object') return String(v);
    if (ArrayBuffer.isView(v)) {
      const shared = typeof SharedArrayBuffer !== 'undefined' && v.buffer instanceof SharedArrayBuffer;
      return `${v.constructor.name}(${(v as unknown as { length?: number }).length ?? v.byteLength}${shared ? ', shared' : ''}${v.buffer.byteLength === 0 ? ', detached?' : ''})`;
    }
    if (Array.isArray(v)) return `[${v.slice(0, 6).map(show).join(',')}${v.length > 6 ? ',…' : ''}]`;
    const proto = Object.getPrototypeOf(v);
    const name = proto === null ? 'null-proto' : proto.constructor?.name ?? 'object';
    const keys = Object.keys(v).slice(0, 4);
    return keys.length ? `${name}{${keys.join(',')}}` : name;
  } catch {
    return '?';
  }
}

export type Expect = 'reject' | 'either';

/** One bad input of a case. */
export interface InputSpec {
  /** What the input is (family-specific; printed in failures). */
  what: string;
  /** 'reject': certainly invalid; 'either': may be valid (then it must simply not break anything). */
  expect: Expect;
  /** The codes a rejection may have (any code of the union when omitted). */
  codes?: string[];
  /** Taken before and after; must be unchanged after a rejection. */
  watch?: () => string;
  /** The call (sync or async). */
  run: () => unknown;
  /** Optimizer steps under onNonFinite 'skip': true when the step was skipped (a rejection without an error). */
  skipped?: () => boolean;
  /** After an accepted input: a failure message, or undefined. */
  afterAccept?: (result: unknown) => string | undefined | Promise<string | undefined>;
}

export interface Outcome {
  case: number;
  input: number;
  family: string;
  what: string;
  result: 'rejected' | 'accepted' | 'skipped';
  code?: string;
  failure?: string;
}

/** Writes one protocol line to stdout synchronously (it must reach the parent even if the process dies next). */
export function emit(line: string): void {
  const buf = Buffer.from(line + '\n');
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(1, buf, off, buf.length - off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
    }
  }
}

/** Per-case context: the library, its CPU backend, the generator and the input runner. */
export class Ctx {
  private inputs = 0;
  private readonly cleanups: (() => unknown)[] = [];
  /** Failures not tied to one input (a control run, a clean-up). */
  readonly extra: string[] = [];

  constructor(
    readonly k: K,
    readonly B: Lib.Backend,
    readonly r: Rng,
    readonly codes: Set<string>,
    readonly caseIndex: number,
    readonly family: string,
  ) {}

  /** Runs `f` at the end of the case (disposal); errors there are failures. */
  defer(f: () => unknown): void {
    this.cleanups.push(f);
  }
  async cleanup(): Promise<void> {
    for (const f of this.cleanups.reverse()) {
      try {
        await f();
      } catch (e) {
        this.fail(`clean-up threw ${errText(e)}`);
      }
    }
  }

  /** A failure of the case outside any one input (reported as an input of its own). */
  fail(msg: string): void {
    const o: Outcome = { case: this.caseIndex, input: this.inputs++, family: this.family, what: '(case check)', result: 'accepted', failure: msg };
    emit('F ' + JSON.stringify(o));
  }

  /** Runs one bad input and checks the invariants; returns whether it was accepted and its result. */
  async input(spec: InputSpec): Promise<{ accepted: boolean; result?: unknown; error?: unknown }> {
    const o: Outcome = { case: this.caseIndex, input: this.inputs++, family: this.family, what: spec.what, result: 'accepted' };
    emit(`I ${this.caseIndex} ${o.input}`);
    let before: string | undefined;
    try {
      before = spec.watch?.();
    } catch (e) {
      o.failure = `the watch threw before the input: ${errText(e)}`;
    }
    let thrown: unknown;
    let threw = false;
    let result: unknown;
    try {
      result = spec.run();
      if (result instanceof Promise) result = await result;
    } catch (e) {
      threw = true;
      thrown = e;
    }
    if (threw) {
      o.result = 'rejected';
      const e = thrown as { code?: unknown; name?: unknown; message?: unknown };
      if (!(thrown instanceof this.k.KradagradError)) {
        o.failure = `non-coded error escaped: ${errText(thrown)}`;
      } else if (typeof e.code !== 'string' || !this.codes.has(e.code)) {
        o.failure = `code ${show(e.code)} is not in the ErrorCode union (${errText(thrown)})`;
      } else if (e.name !== 'KradagradError' || typeof e.message !== 'string' || e.message.length < 5) {
        o.failure = `malformed KradagradError: name ${show(e.name)}, message ${show(e.message)}`;
      } else if (spec.codes && !spec.codes.includes(e.code)) {
        o.failure = `code ${e.code}, expected ${spec.codes.join(' or ')} (${errText(thrown)})`;
      }
      if (typeof e?.code === 'string') o.code = e.code;
    } else if (spec.skipped?.()) {
      o.result = 'skipped';
      o.code = 'NONFINITE';
      if (spec.codes && !spec.codes.includes('NONFINITE')) o.failure = `skipped (NONFINITE), expected ${spec.codes.join(' or ')}`;
    } else if (spec.expect === 'reject') {
      o.failure = `accepted silently: ${show(result)}`;
    } else if (spec.afterAccept) {
      try {
        const f = await spec.afterAccept(result);
        if (f) o.failure = f;
      } catch (e) {
        o.failure = `the check after acceptance threw ${errText(e)}`;
      }
    }
    if (o.result !== 'accepted' && before !== undefined && !o.failure) {
      try {
        const after = spec.watch!();
        if (after !== before) o.failure = `rejected (${o.code}) but the watched state changed: ${diffHint(before, after)}`;
      } catch (e) {
        o.failure = `the watch threw after the rejection: ${errText(e)}`;
      }
    }
    emit('R ' + JSON.stringify(o));
    return { accepted: o.result === 'accepted', result, error: thrown };
  }
}

export function errText(e: unknown): string {
  try {
    if (e instanceof Error) return `${e.constructor.name}${(e as { code?: unknown }).code ? ` [${String((e as { code?: unknown }).code)}]` : ''}: ${e.message.slice(0, 200)}`;
    return show(e);
  } catch {
    return '?';
  }
}

function diffHint(a: string, b: string): string {
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  return `first difference at character ${i} of ${a.length} (${JSON.stringify(a.slice(Math.max(0, i - 20), i + 20))} -> ${JSON.stringify(b.slice(Math.max(0, i - 20), i + 20))})`;
}

/** Bytes of a typed array (its view) as base64. */
export function bytesOf(a: ArrayBufferView): string {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
}

/** Contents of tensors (disposed ones as 'D'), for watches. */
export function tensorsState(ts: readonly Lib.Tensor[]): string {
  return ts.map((t) => (t.disposed ? 'D' : bytesOf(t.read()))).join('|');
}

/** Every value of a typed array is finite. */
export function allFinite(a: ArrayLike<number>): boolean {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return false;
  return true;
}
