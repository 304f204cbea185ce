/**
 * Plots: the shipped font draws the text of a PNG when resvg is given no system font at
 * all (the axis-label areas hold dark pixels; with neither the shipped font nor system
 * fonts they hold none, so the check can fail), and two charts compose side by side.
 */
import * as path from 'path';
import { FONT_FILES, logLinePlot, renderPng, shippedFonts, sideBySide } from '../lib/cli/plot';
import { darkPixels, decodePng } from './ref/png';

// logLinePlot's layout without a subtitle: 860 x 540, plot area from x 78 to 626 and from
// y 46 to 482; the x label's baseline at y 524, the y label's (rotated) at x 20.
const svg = logLinePlot([{ label: 'a', y: [100, 30, 10, 3, 1] }], { title: 'title', xLabel: 'step', yLabel: 'loss f(X) (log scale)' });
const scale = 2;
const areas = (png: Buffer): { x: number; y: number } => {
  const img = decodePng(png);
  expect([img.width, img.height]).toEqual([860 * scale, 540 * scale]);
  return {
    x: darkPixels(img, 78 * scale, 506 * scale, 626 * scale, 538 * scale),
    y: darkPixels(img, 2 * scale, 46 * scale, 32 * scale, 482 * scale),
  };
};

describe('PNG text without system fonts', () => {
  test('the package ships the font files and hands them to resvg', () => {
    expect(shippedFonts().map((f) => path.basename(f))).toEqual(FONT_FILES.map((f) => path.basename(f)));
  });

  test('system fonts hidden: the shipped font draws the axis labels', () => {
    const r = renderPng(svg, { scale, systemFonts: false });
    expect(r.reason).toBeUndefined();
    expect(r.note).toBeUndefined();
    const dark = areas(r.png!);
    // 'step' at 14 px, twice zoomed: hundreds of dark pixels; the rotated y label more.
    expect(dark.x).toBeGreaterThan(100);
    expect(dark.y).toBeGreaterThan(300);
  });

  test('control: no font at all leaves the same areas blank, and the renderer says why', () => {
    const r = renderPng(svg, { scale, systemFonts: false, fontFiles: [] });
    expect(r.png).toBeDefined();
    expect(r.note).toMatch(/font files .* are missing .*PNG text depends on system fonts/);
    expect(areas(r.png!)).toEqual({ x: 0, y: 0 });
  });
});

describe('side by side', () => {
  test('two charts in one SVG, distinct clip ids, rendered at the summed width', () => {
    const a = logLinePlot([{ label: 'a', y: [3, 2, 1] }], { title: 'a', xLabel: 'step', yLabel: 'y', idPrefix: 'a-' });
    const b = logLinePlot([{ label: 'b', y: [1, 1, 1] }], { title: 'b', xLabel: 'step', yLabel: 'y', idPrefix: 'b-', refLine: 1 });
    const both = sideBySide([a, b]);
    expect(both).toMatch(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" width="1720" height="540"/);
    expect(both).toContain('<clipPath id="a-plot">');
    expect(both).toContain('<clipPath id="b-plot">');
    expect(both).toContain('<svg x="860" y="0" ');
    expect(both).toContain('stroke-dasharray="3 3"');
    const img = decodePng(renderPng(both, { scale: 1, systemFonts: false }).png!);
    expect([img.width, img.height]).toEqual([1720, 540]);
    // Each panel's x label is drawn in its own half.
    expect(darkPixels(img, 78, 506, 626, 538)).toBeGreaterThan(20);
    expect(darkPixels(img, 860 + 78, 506, 860 + 626, 538)).toBeGreaterThan(20);
  });
});
