import type { Io } from './args';
export const stepHelp = 'Usage: kradagrad bench step [options]';
export async function benchStep(_argv: string[], io: Io): Promise<number> {
  io.err('not yet\n');
  return 1;
}
