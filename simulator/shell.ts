// POSIX shell word splitting for one simple command, without a shell.
// The orchestrator single-quotes every argument; anything that would make a
// real shell do more than run one command (unquoted ; | & $ ` < > ( ) or a
// newline, or $ / ` inside double quotes) is refused with the exit code and
// message of dash, so a test can prove that no argument is ever interpreted.

export class ShellSyntaxError extends Error {
  override name = 'ShellSyntaxError';
}

const META = new Set([';', '|', '&', '$', '`', '<', '>', '(', ')', '\n']);

/** Split a command line into words; throws ShellSyntaxError. */
export function parseWords(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let i = 0;
  const unexpected = (c: string): never => {
    throw new ShellSyntaxError(`Syntax error: "${c === '\n' ? 'newline' : c}" unexpected`);
  };
  while (i < line.length) {
    const c = line[i];
    if (c === ' ' || c === '\t') {
      if (inWord) {
        words.push(word);
        word = '';
        inWord = false;
      }
      i++;
    } else if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new ShellSyntaxError('Syntax error: Unterminated quoted string');
      word += line.slice(i + 1, end);
      inWord = true;
      i = end + 1;
    } else if (c === '"') {
      i++;
      for (;;) {
        if (i >= line.length) throw new ShellSyntaxError('Syntax error: Unterminated quoted string');
        const d = line[i];
        if (d === '"') {
          i++;
          break;
        }
        if (d === '$' || d === '`') unexpected(d); // expansions inside double quotes
        if (d === '\\' && i + 1 < line.length && '$`"\\\n'.includes(line[i + 1])) {
          if (line[i + 1] !== '\n') word += line[i + 1];
          i += 2;
        } else {
          word += d;
          i++;
        }
      }
      inWord = true;
    } else if (c === '\\') {
      if (i + 1 >= line.length) {
        i++;
        continue;
      } // trailing backslash: nothing
      if (line[i + 1] !== '\n') {
        word += line[i + 1];
        inWord = true;
      }
      i += 2;
    } else if (META.has(c)) {
      unexpected(c);
    } else if (c === '#' && !inWord) {
      break; // a comment runs to the end of the line
    } else {
      word += c;
      inWord = true;
      i++;
    }
  }
  if (inWord) words.push(word);
  return words;
}

/** Quote one word for a POSIX shell (what the orchestrator does). */
export function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}
