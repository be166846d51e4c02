// Output a person reads fits the terminal it runs in. The width is a
// parameter of every render function (tests are pure); outputWidth says what
// it is for a real stream:
//   - COLUMNS, when set to a whole number, wins (a narrow pane, a script that wants 80);
//   - a terminal: its width, or 80 when it does not say;
//   - a pipe or a file: no limit, so that logs and `grep` get whole lines as before.
// Lines are wrapped at spaces, never cut in a word: an id, a URL or a command's
// argument longer than the room left moves to a line of its own, whole (so it
// can be copied), and only such a word alone can be wider than the width.

/** Columns assumed for a terminal that does not tell its width. */
export const DEFAULT_COLUMNS = 80;

export function outputWidth(
  out: { isTTY?: boolean; columns?: number } = process.stdout,
  env: NodeJS.ProcessEnv = process.env,
): number {
  const cols = Number(env.COLUMNS);
  if (env.COLUMNS && Number.isInteger(cols) && cols >= 20) return cols;
  if (!out.isTTY) return Infinity;
  return out.columns && out.columns > 0 ? out.columns : DEFAULT_COLUMNS;
}

/**
 * One line wrapped to `width`: the lines after the first start with `indent`
 * spaces; a word that does not fit after the indent starts at column 0, and
 * one wider than the width gets a line of its own, whole.
 */
export function wrap(line: string, width: number, indent = 0): string[] {
  if (line.length <= width) return [line];
  const pad = ' '.repeat(indent);
  const out: string[] = [];
  const parts = line.split(/( +)/);
  let cur = parts[0];
  for (let i = 1; i < parts.length; i += 2) {
    const sep = parts[i];
    const word = parts[i + 1] ?? '';
    if (cur.length + sep.length + word.length <= width || cur.trim() === '') {
      cur += sep + word;
      continue;
    }
    out.push(cur);
    cur = indent + word.length <= width ? pad + word : word;
  }
  out.push(cur);
  return out.map((l) => l.trimEnd());
}

/** Lines wrapped to `width`, each with the same indent for what follows its first line. */
export function wrapAll(lines: readonly string[], width: number, indent = 0): string[] {
  return lines.flatMap((l) => wrap(l, width, indent));
}

/** A line cut to `width` with an ellipsis: for table rows, whose last column is a note (the JSON has it whole). */
export function cut(line: string, width: number): string {
  return line.length <= width ? line : `${line.slice(0, Math.max(0, width - 1))}…`;
}

/**
 * A command whose last argument is an id: on one line when it fits, else the
 * id on a line of its own after a shell line continuation (both lines pasted
 * together still run it).
 */
export function commandLines(indent: number, command: string, id: string, after: string, width: number): string[] {
  const pad = ' '.repeat(indent);
  const one = `${pad}${command} ${id}${after}`;
  if (one.length <= width) return [one];
  const idPad = indent + 2 + id.length <= width ? `${pad}  ` : '';
  return [...wrap(`${pad}${command}${after} \\`, width, indent + 2), `${idPad}${id}`];
}
