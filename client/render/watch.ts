// The live view of `status --watch`, `rollout --wait`, `remove --wait` and
// the demo. On a terminal the status block is redrawn in place (ANSI: cursor
// up, clear to the end of the screen); otherwise only changes are printed, one
// line each, so logs and pipes stay readable.
import { isFinalPhase } from '../../domain/rollout';
import { RolloutStatus } from '../../domain/messages/rollout';
import { changeLines, outcomeLine, statusBlock } from './status';

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

export async function watch(opts: WatchOptions): Promise<RolloutStatus> {
  const out = opts.out ?? process.stdout;
  const tty = opts.tty ?? !!out.isTTY;
  const interval = opts.intervalMs ?? (tty ? 400 : 500);
  let drawn = 0; // lines of the live block on screen
  let prev: RolloutStatus | undefined;

  const fit = (l: string) => {
    const cols = out.columns || 120;
    return l.length >= cols ? l.slice(0, cols - 1) : l;
  };
  const erase = () => {
    // Up to the block's first line, column 1, clear to the end of the screen (no \r: some ttys map it).
    if (drawn > 0) out.write(`${CSI}${drawn}A${CSI}1G${CSI}0J`);
    drawn = 0;
  };
  const draw = (st: RolloutStatus) => {
    // Cursor-up cannot reach lines that scrolled off: the block must fit the screen.
    const lines = statusBlock(st, Date.now(), true, Math.max(5, (out.rows || 40) - 16)).map(fit);
    out.write(lines.join('\n') + '\n');
    drawn = lines.length;
  };

  for (;;) {
    const st = await opts.read();
    const notes = (await opts.onStatus?.(st)) ?? [];
    if (tty) {
      erase();
      if (notes.length) out.write(notes.join('\n') + '\n');
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
