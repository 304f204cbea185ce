/** Plain-text tables (aligned columns) and number formatting for the CLI. */

export interface Column {
  header: string;
  align?: 'left' | 'right';
}

/** An aligned text table; also returns a Markdown version for the README/results files. */
export function formatTable(cols: Column[], rows: string[][]): { text: string; markdown: string } {
  const w = cols.map((c, i) => Math.max(c.header.length, ...rows.map((r) => (r[i] ?? '').length)));
  const cell = (s: string, i: number): string => (cols[i].align === 'left' ? s.padEnd(w[i]) : s.padStart(w[i]));
  const lines = [cols.map((c, i) => cell(c.header, i)).join('  '), w.map((x) => '-'.repeat(x)).join('  ')];
  for (const r of rows) lines.push(r.map((s, i) => cell(s ?? '', i)).join('  ').trimEnd());
  const md = [
    `| ${cols.map((c) => c.header).join(' | ')} |`,
    `|${cols.map((c) => (c.align === 'left' ? '---' : '---:')).join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ];
  return { text: lines.join('\n'), markdown: md.join('\n') };
}

/** A loss or similar value: 3 significant digits, exponent form outside [1e-2, 1e5). */
export function fmtNum(x: number | null | undefined): string {
  if (x === null || x === undefined) return '-';
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-2 || a >= 1e5)) return x.toExponential(2);
  return Number(x.toPrecision(3)).toString();
}

/** A learning rate: compact exponent form. */
export function fmtLr(x: number): string {
  const e = x.toExponential(2).replace(/\.?0+e/, 'e').replace('e+', 'e');
  return e;
}

/** Milliseconds with a sensible precision. */
export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return '-';
  if (ms < 1) return ms.toFixed(3);
  if (ms < 10) return ms.toFixed(2);
  if (ms < 100) return ms.toFixed(1);
  return ms.toFixed(0);
}

export function fmtSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}
