// The live view of `status --watch`, `rollout --wait`, `remove --wait` and
// the demo. On a terminal the status block is redrawn in place (ANSI: cursor
// up, clear to the end of the screen); otherwise only changes are printed, one
// line each, so logs and pipes stay readable.
import { isFinalPhase } from '../../domain/rollout';
import { RolloutStatus } from '../../domain/messages/rollout';
import { changeLines, outcomeLine, statusBlock } from './status';
import { outputWidth, wrapAll } from './fit';

const CSI = '\x1b[';

export interface WatchOptions {
  read: () => Promise<RolloutStatus>;
  out?: NodeJS.WriteStream;
  /** Redraw in place; default: whether `out` is a terminal. */
  tty?: boolean;
  intervalMs?: number;
  /**
   * Called with every observation; lines it returns are printed once, above
   * the live block (the demo's approver speaks through this).
   */
  onStatus?: (st: RolloutStatus) => Promise<string[] | void> | string[] | void;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * The live block for a terminal of `width` columns and `rows` lines: every
 * line fits the width (client/render/fit.ts), and the block fits the screen,
 * since cursor-up cannot reach lines that scrolled off: the server table
 * gives way first (its hidden servers are counted), the rest is kept while it fits.
 */
export function watchFrame(st: RolloutStatus, now: number, width: number, rows: number): string[] {
  const room = Math.max(8, rows - 1);
  let max = Math.max(5, rows - 16);
  let lines = statusBlock(st, now, true, max, width);
  while (lines.length > room && max > 1) {
    max = Math.max(1, max - (lines.length - room));
    lines = statusBlock(st, now, true, max, width);
  }
  // Not even one server row fits: no table; then, on a very short screen, the end gives way, said in the last line.
  if (lines.length > room) lines = statusBlock(st, now, true, 0, width);
  if (lines.length > room)
    lines = [...lines.slice(0, room - 1), `… ${lines.length - room + 1} more lines: 'km-hotfix status' prints them`];
  return lines;
}

export async function watch(opts: WatchOptions): Promise<RolloutStatus> {
  const out = opts.out ?? process.stdout;
  const tty = opts.tty ?? !!out.isTTY;
  const interval = opts.intervalMs ?? (tty ? 400 : 500);
  let drawn = 0; // lines of the live block on screen
  let prev: RolloutStatus | undefined;

  // The last column of a terminal is left free: writing there wraps on some terminals.
  // Redrawn in place means a terminal, even when `out` does not say so (80 columns then, unless COLUMNS).
  const width = () => Math.max(20, outputWidth({ isTTY: true, columns: out.columns }) - 1);
  const erase = () => {
    // Up to the block's first line, column 1, clear to the end of the screen (no \r: some ttys map it).
    if (drawn > 0) out.write(`${CSI}${drawn}A${CSI}1G${CSI}0J`);
    drawn = 0;
  };
  const draw = (st: RolloutStatus) => {
    const lines = watchFrame(st, Date.now(), width(), out.rows || 40);
    out.write(lines.join('\n') + '\n');
    drawn = lines.length;
  };

  for (;;) {
    const st = await opts.read();
    const notes = (await opts.onStatus?.(st)) ?? [];
    if (tty) {
      erase();
      if (notes.length) out.write(wrapAll(notes, width(), 2).join('\n') + '\n');
      draw(st);
    } else {
      const lines = [...changeLines(prev, st), ...notes];
      if (lines.length) out.write(lines.join('\n') + '\n');
    }
    prev = st;
    if (isFinalPhase(st.phase)) {
      out.write(`${outcomeLine(st)}\n`);
      return st;
    }
    await sleep(interval);
  }
}
