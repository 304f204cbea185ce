/**
 * Progress on stderr: a redrawn bar on a terminal, plain lines at most every few seconds
 * (and at each tenth of the work) otherwise, so logs stay readable.
 */
import type { Io } from './args';

export class Progress {
  private done = 0;
  private label = '';
  private lastDraw = 0;
  private lastLine = 0;
  private lastTenth = -1;
  private readonly t0 = performance.now();
  private active = false;

  constructor(
    private readonly io: Io,
    private readonly total: number,
    private readonly unit: string,
    private readonly quiet = false,
  ) {}

  /** Sets the amount done (in units of `total`) and a short description of the current item. */
  update(done: number, label = this.label): void {
    this.done = Math.min(done, this.total);
    this.label = label;
    if (this.quiet) return;
    const now = performance.now();
    if (this.io.isTTY) {
      if (now - this.lastDraw < 80 && this.done < this.total) return;
      this.lastDraw = now;
      this.draw();
    } else {
      const tenth = Math.floor((10 * this.done) / Math.max(this.total, 1));
      if (tenth > this.lastTenth || now - this.lastLine > 5000) {
        this.lastTenth = tenth;
        this.lastLine = now;
        this.io.err(`[${this.percent().padStart(4)}] ${this.label}  (${this.elapsed()} elapsed${this.eta()})\n`);
      }
    }
  }

  /** Prints a message above the bar. */
  note(msg: string): void {
    if (this.quiet) return;
    if (this.io.isTTY && this.active) this.io.err('\r\x1b[2K');
    this.io.err(msg.endsWith('\n') ? msg : msg + '\n');
    if (this.io.isTTY && this.active) this.draw();
  }

  finish(): void {
    if (this.quiet) return;
    if (this.io.isTTY) {
      this.done = this.total;
      this.draw();
      this.io.err('\n');
      this.active = false;
    } else if (this.lastTenth < 10) {
      this.io.err(`[100%] done: ${this.total} ${this.unit} in ${this.elapsed()}\n`);
    }
  }

  private percent(): string {
    return `${Math.floor((100 * this.done) / Math.max(this.total, 1))}%`;
  }
  private elapsed(): string {
    return `${((performance.now() - this.t0) / 1000).toFixed(1)} s`;
  }
  private eta(): string {
    const t = (performance.now() - this.t0) / 1000;
    if (this.done <= 0 || this.done >= this.total || t < 1) return '';
    return `, ~${((t * (this.total - this.done)) / this.done).toFixed(0)} s left`;
  }
  private draw(): void {
    this.active = true;
    const width = 28;
    const filled = Math.round((width * this.done) / Math.max(this.total, 1));
    const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
    const cols = (process.stderr as { columns?: number }).columns ?? 100;
    let line = `[${bar}] ${this.percent().padStart(4)} ${this.label} ${this.elapsed()}${this.eta()}`;
    if (line.length > cols - 1) line = line.slice(0, cols - 1);
    this.io.err(`\r\x1b[2K${line}`);
  }
}
