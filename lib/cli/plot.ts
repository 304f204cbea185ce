/**
 * Hand-written SVG charts for the benchmarks (a log-scale line plot like the paper's
 * Figure 1, panels side by side, and a grouped bar chart), and PNG rendering of them with
 * @resvg/resvg-js when that optional package loads (otherwise only the SVG is written,
 * with the reason).
 *
 * PNG text uses the font shipped in the package (Source Sans 3, SIL Open Font License,
 * `fonts/`), handed to resvg by file, so a machine without any system font still gets
 * labelled plots; system fonts are only a fallback for glyphs it lacks.
 */
import * as fs from 'fs';
import * as path from 'path';
import { packageRoot } from '../native';

export const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
/** The shipped font's family name, first in every chart's font list. */
export const FONT_FAMILY = 'Source Sans 3';
const FONT = `'${FONT_FAMILY}', DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif`;
/** The shipped font files (regular and bold), relative to the package root. */
export const FONT_FILES = ['fonts/SourceSans3-Regular.ttf', 'fonts/SourceSans3-Bold.ttf'];

/** Absolute paths of the shipped font files that exist (none when the package was built without them). */
export function shippedFonts(): string[] {
  return FONT_FILES.map((f) => path.join(packageRoot, f)).filter((f) => fs.existsSync(f));
}

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const f = (x: number): string => (Math.round(x * 100) / 100).toString();

export interface Series {
  label: string;
  /** y values at x = 0, 1, 2, ... (non-finite or non-positive values break the line). */
  y: ArrayLike<number>;
  color?: string;
  dashed?: boolean;
}

export interface LinePlotOptions {
  title: string;
  subtitle?: string;
  xLabel: string;
  yLabel: string;
  width?: number;
  height?: number;
  /** Prefix of the element ids (clip path), so several plots can share one SVG document. */
  idPrefix?: string;
  /** A horizontal reference line at this y value (e.g. 1 on a ratio plot), dashed grey. */
  refLine?: number;
}

/** A line plot with a log10 y axis, decade grid lines, axis labels and a legend. */
export function logLinePlot(series: Series[], o: LinePlotOptions): string {
  const W = o.width ?? 860;
  const H = o.height ?? 540;
  const legendW = 210;
  const m = { l: 78, r: legendW + 24, t: o.subtitle ? 62 : 46, b: 58 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const pos = series.flatMap((s) => Array.from(s.y).filter((v) => Number.isFinite(v) && v > 0));
  let lo = pos.length ? Math.floor(Math.log10(Math.min(...pos))) : -1;
  let hi = pos.length ? Math.ceil(Math.log10(Math.max(...pos))) : 1;
  if (hi <= lo) hi = lo + 1;
  // Keep the axis readable when a curve collapses to a tiny value.
  if (hi - lo > 24) lo = hi - 24;
  const xmax = Math.max(1, ...series.map((s) => s.y.length - 1));
  const X = (x: number): number => m.l + (pw * x) / xmax;
  const Y = (v: number): number => m.t + ph * (1 - (Math.log10(v) - lo) / (hi - lo));
  const out: string[] = [];
  out.push(...svgHeader(W, H, o.title, o.subtitle));
  // Grid and y ticks (decades; label every k-th when crowded).
  const every = Math.ceil((hi - lo) / 12);
  for (let e = lo; e <= hi; e++) {
    const y = Y(10 ** e);
    out.push(`<line x1="${m.l}" y1="${f(y)}" x2="${m.l + pw}" y2="${f(y)}" stroke="#ddd" stroke-width="1"/>`);
    if ((e - lo) % every === 0) {
      out.push(`<text x="${m.l - 8}" y="${f(y + 4)}" text-anchor="end" font-size="12">10<tspan dy="-6" font-size="9">${e}</tspan></text>`);
    }
    if (e < hi && hi - lo <= 8) {
      for (let k = 2; k < 10; k++) {
        const yy = Y(k * 10 ** e);
        out.push(`<line x1="${m.l}" y1="${f(yy)}" x2="${m.l + 5}" y2="${f(yy)}" stroke="#999" stroke-width="1"/>`);
      }
    }
  }
  // x ticks.
  const xstep = niceStep(xmax / 6);
  for (let x = 0; x <= xmax + 1e-9; x += xstep) {
    const xx = X(x);
    out.push(`<line x1="${f(xx)}" y1="${m.t}" x2="${f(xx)}" y2="${m.t + ph}" stroke="#eee" stroke-width="1"/>`);
    out.push(`<text x="${f(xx)}" y="${m.t + ph + 18}" text-anchor="middle" font-size="12">${x}</text>`);
  }
  out.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#333" stroke-width="1"/>`);
  out.push(`<text x="${m.l + pw / 2}" y="${H - 16}" text-anchor="middle" font-size="14">${esc(o.xLabel)}</text>`);
  out.push(
    `<text x="20" y="${m.t + ph / 2}" text-anchor="middle" font-size="14" transform="rotate(-90 20 ${m.t + ph / 2})">${esc(o.yLabel)}</text>`,
  );
  // Curves (clipped to the plot area).
  const clip = `${o.idPrefix ?? ''}plot`;
  out.push(`<clipPath id="${clip}"><rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}"/></clipPath>`);
  out.push(`<g clip-path="url(#${clip})">`);
  if (o.refLine !== undefined && o.refLine > 0) {
    const y = Y(o.refLine);
    out.push(`<line x1="${m.l}" y1="${f(y)}" x2="${m.l + pw}" y2="${f(y)}" stroke="#555" stroke-width="1" stroke-dasharray="3 3"/>`);
  }
  series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length];
    const dash = s.dashed ? ' stroke-dasharray="7 4"' : '';
    let pts: string[] = [];
    const flush = (): void => {
      if (pts.length > 1) out.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${dash} points="${pts.join(' ')}"/>`);
      pts = [];
    };
    for (let x = 0; x < s.y.length; x++) {
      const v = s.y[x];
      if (Number.isFinite(v) && v > 0) pts.push(`${f(X(x))},${f(Y(Math.max(v, 10 ** (lo - 1))))}`);
      else flush();
    }
    flush();
  });
  out.push('</g>');
  // Legend.
  const lx = m.l + pw + 16;
  const lh = 20;
  out.push(`<rect x="${lx}" y="${m.t}" width="${legendW}" height="${series.length * lh + 12}" fill="white" stroke="#bbb"/>`);
  series.forEach((s, i) => {
    const y = m.t + 16 + i * lh;
    const color = s.color ?? PALETTE[i % PALETTE.length];
    const dash = s.dashed ? ' stroke-dasharray="7 4"' : '';
    out.push(`<line x1="${lx + 8}" y1="${y - 4}" x2="${lx + 34}" y2="${y - 4}" stroke="${color}" stroke-width="2.5"${dash}/>`);
    out.push(`<text x="${lx + 40}" y="${y}" font-size="12">${esc(s.label)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}

/**
 * Charts side by side in one SVG (each a complete <svg> string from this module, nested
 * at its x offset). Give each chart its own `idPrefix` so their ids do not collide.
 */
export function sideBySide(charts: string[]): string {
  const sizes = charts.map((c) => {
    const m = /^<svg [^>]*width="([\d.]+)" height="([\d.]+)"/.exec(c);
    if (!m) throw new Error('sideBySide expects charts made by this module');
    return { w: Number(m[1]), h: Number(m[2]) };
  });
  const W = sizes.reduce((a, s) => a + s.w, 0);
  const H = Math.max(...sizes.map((s) => s.h));
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT}">`];
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  let x = 0;
  charts.forEach((c, i) => {
    out.push(c.replace(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" /, `<svg x="${x}" y="0" `));
    x += sizes[i].w;
  });
  out.push('</svg>');
  return out.join('\n');
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(Math.max(raw, 1e-12)));
  for (const k of [1, 2, 2.5, 5, 10]) if (k * p >= raw) return Math.max(1, k * p);
  return Math.max(1, 10 * p);
}

export interface BarGroup {
  label: string;
  /** One value per series (NaN = missing). */
  values: number[];
  /** Text above each bar (e.g. the ratio to Adam). */
  notes?: string[];
}

/** Grouped bars on a log10 y axis (values in `unit`), one colour per series, legend on the right. */
export function groupedBarChart(groups: BarGroup[], seriesLabels: string[], o: LinePlotOptions): string {
  const W = o.width ?? Math.max(720, 140 + groups.length * (seriesLabels.length * 22 + 40) + 220);
  const H = o.height ?? 520;
  const legendW = 190;
  const m = { l: 78, r: legendW + 24, t: o.subtitle ? 62 : 46, b: 96 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const vals = groups.flatMap((g) => g.values.filter((v) => Number.isFinite(v) && v > 0));
  let lo = vals.length ? Math.floor(Math.log10(Math.min(...vals))) : -1;
  // Headroom above the tallest bar for its note.
  let hi = vals.length ? Math.ceil(Math.log10(Math.max(...vals)) + 0.4) : 1;
  if (hi <= lo) hi = lo + 1;
  const Y = (v: number): number => m.t + ph * (1 - (Math.log10(v) - lo) / (hi - lo));
  const out: string[] = [];
  out.push(...svgHeader(W, H, o.title, o.subtitle));
  for (let e = lo; e <= hi; e++) {
    const y = Y(10 ** e);
    out.push(`<line x1="${m.l}" y1="${f(y)}" x2="${m.l + pw}" y2="${f(y)}" stroke="#ddd"/>`);
    out.push(`<text x="${m.l - 8}" y="${f(y + 4)}" text-anchor="end" font-size="12">10<tspan dy="-6" font-size="9">${e}</tspan></text>`);
  }
  out.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  const gw = pw / Math.max(groups.length, 1);
  const bw = Math.min(26, (gw - 16) / Math.max(seriesLabels.length, 1));
  groups.forEach((g, gi) => {
    const x0 = m.l + gi * gw + (gw - bw * seriesLabels.length) / 2;
    g.values.forEach((v, si) => {
      if (!(Number.isFinite(v) && v > 0)) return;
      const x = x0 + si * bw;
      const y = Y(v);
      out.push(`<rect x="${f(x + 1)}" y="${f(y)}" width="${f(bw - 2)}" height="${f(m.t + ph - y)}" fill="${PALETTE[si % PALETTE.length]}"/>`);
      const note = g.notes?.[si];
      if (note) {
        out.push(
          `<text x="${f(x + bw / 2)}" y="${f(y - 4)}" font-size="9" text-anchor="start" transform="rotate(-90 ${f(x + bw / 2 + 3)} ${f(y - 4)})">${esc(note)}</text>`,
        );
      }
    });
    const lines = g.label.split('\n');
    lines.forEach((ln, li) => {
      out.push(`<text x="${f(m.l + gi * gw + gw / 2)}" y="${m.t + ph + 18 + li * 15}" text-anchor="middle" font-size="12">${esc(ln)}</text>`);
    });
  });
  out.push(`<text x="${m.l + pw / 2}" y="${H - 12}" text-anchor="middle" font-size="14">${esc(o.xLabel)}</text>`);
  out.push(
    `<text x="20" y="${m.t + ph / 2}" text-anchor="middle" font-size="14" transform="rotate(-90 20 ${m.t + ph / 2})">${esc(o.yLabel)}</text>`,
  );
  const lx = m.l + pw + 16;
  out.push(`<rect x="${lx}" y="${m.t}" width="${legendW}" height="${seriesLabels.length * 20 + 12}" fill="white" stroke="#bbb"/>`);
  seriesLabels.forEach((s, i) => {
    const y = m.t + 16 + i * 20;
    out.push(`<rect x="${lx + 8}" y="${y - 10}" width="14" height="12" fill="${PALETTE[i % PALETTE.length]}"/>`);
    out.push(`<text x="${lx + 28}" y="${y}" font-size="12">${esc(s)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}

export interface RenderOptions {
  /** Zoom factor (default 2). */
  scale?: number;
  /** Let resvg load the system's fonts as a fallback (default true). */
  systemFonts?: boolean;
  /** Font files to hand to resvg (default: the fonts shipped in the package). */
  fontFiles?: string[];
}

/**
 * Renders an SVG string to PNG with @resvg/resvg-js (an optional dependency) and the
 * shipped font. Returns the PNG, or the reason it could not be made (package missing or
 * no binary for this platform); `note` says when the PNG's text may be missing (no font).
 */
export function renderPng(svg: string, o: RenderOptions = {}): { png?: Buffer; reason?: string; note?: string } {
  let mod: { Resvg: new (svg: string, opts: object) => { render(): { asPng(): Buffer } } };
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    mod = require('@resvg/resvg-js');
  } catch (e) {
    const first = (e as Error).message.split('\n')[0];
    const missing = (e as { code?: string }).code === 'MODULE_NOT_FOUND' && /@resvg\/resvg-js'/.test(first);
    return {
      reason: missing
        ? '@resvg/resvg-js is not installed (an optional dependency); only the SVG was written. `npm install @resvg/resvg-js` for PNGs'
        : `@resvg/resvg-js is not loadable (${first}); only the SVG was written`,
    };
  }
  const fontFiles = o.fontFiles ?? shippedFonts();
  const systemFonts = o.systemFonts ?? true;
  try {
    const r = new mod.Resvg(svg, {
      fitTo: { mode: 'zoom', value: o.scale ?? 2 },
      font: { loadSystemFonts: systemFonts, fontFiles, defaultFontFamily: fontFiles.length ? FONT_FAMILY : 'DejaVu Sans', sansSerifFamily: fontFiles.length ? FONT_FAMILY : 'DejaVu Sans' },
      background: 'white',
    });
    const png = r.render().asPng();
    return fontFiles.length ? { png } : { png, note: `the font files ${FONT_FILES.join(', ')} are missing from ${packageRoot}: PNG text depends on system fonts` };
  } catch (e) {
    return { reason: `PNG rendering failed: ${(e as Error).message}` };
  }
}

/** Writes `<base>.svg` and (when rendering works) `<base>.png`; returns the paths written and any note. */
export function writeChart(svg: string, base: string): { svg: string; png?: string; note?: string } {
  fs.writeFileSync(`${base}.svg`, svg);
  const r = renderPng(svg);
  if (r.png) {
    fs.writeFileSync(`${base}.png`, r.png);
    return { svg: `${base}.svg`, png: `${base}.png`, ...(r.note ? { note: r.note } : {}) };
  }
  return { svg: `${base}.svg`, note: r.reason };
}

/** Opening tag, white background, title and optional subtitle of a W x H chart. */
function svgHeader(W: number, H: number, title: string, subtitle?: string): string[] {
  const lines = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT}">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="24" text-anchor="middle" font-size="17" font-weight="bold">${esc(title)}</text>`,
  ];
  if (subtitle) lines.push(`<text x="${W / 2}" y="44" text-anchor="middle" font-size="12" fill="#444">${esc(subtitle)}</text>`);
  return lines;
}
