// POSIX shell quoting for commands sent over SSH. The remote login shell
// (sh/bash/dash on a Key Manager server) parses the command line, so every
// word we send must reach the program as exactly one literal argument.

/** Words made only of these characters mean the same quoted or not. */
const SAFE = /^[A-Za-z0-9_\-.,:/@%+=]+$/;
/** `NAME=value` as a first word would be a variable assignment, not a command. */
const ASSIGNMENT = /^[A-Za-z_][A-Za-z0-9_]*=/;

export class QuoteError extends Error {
  override name = 'QuoteError';
}

/**
 * Quote one word: left bare when it only has characters no shell treats
 * specially, otherwise wrapped in single quotes with each embedded `'`
 * written as `'\''`. Inside single quotes nothing is special, newlines included.
 */
export function quote(word: string): string {
  if (typeof word !== 'string') throw new QuoteError(`cannot quote a ${typeof word}: shell arguments are strings`);
  // A NUL would cut the C string the remote shell receives.
  if (word.includes('\0')) throw new QuoteError('a shell argument cannot contain a NUL character');
  if (SAFE.test(word) && !ASSIGNMENT.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** Quote every element of argv and join them with spaces. */
export function quoteArgv(argv: readonly string[]): string {
  if (argv.length === 0) throw new QuoteError('empty command');
  return argv.map(quote).join(' ');
}

/**
 * Split a command line back into words, the way a POSIX shell does for
 * plain words, single quotes, double quotes and backslashes (no expansion:
 * `$`, `` ` ``, globs and operators are refused). The inverse of quoteArgv;
 * for a simulated server that has to run what this module sends.
 */
export function splitCommand(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let i = 0;
  const fail = (why: string): never => { throw new QuoteError(`cannot split command at ${i}: ${why}: ${line}`); };
  while (i < line.length) {
    const c = line[i];
    if (c === ' ' || c === '\t' || c === '\n') {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
      i++;
    } else if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) fail('unterminated single quote');
      word += line.slice(i + 1, end);
      inWord = true;
      i = end + 1;
    } else if (c === '"') {
      inWord = true;
      i++;
      for (;;) {
        if (i >= line.length) fail('unterminated double quote');
        const d = line[i];
        if (d === '"') { i++; break; }
        if (d === '$' || d === '`') fail('expansion inside double quotes');
        if (d === '\\' && i + 1 < line.length && '$`"\\\n'.includes(line[i + 1])) {
          if (line[i + 1] !== '\n') word += line[i + 1];
          i += 2;
        } else {
          word += d;
          i++;
        }
      }
    } else if (c === '\\') {
      if (i + 1 >= line.length) fail('trailing backslash');
      if (line[i + 1] !== '\n') { word += line[i + 1]; inWord = true; }
      i += 2;
    } else if ('$`|&;<>()*?[#~{}!'.includes(c) && !(c === '#' && inWord) && !(c === '~' && inWord)) {
      fail(`unsupported shell syntax '${c}'`);
    } else {
      word += c;
      inWord = true;
      i++;
    }
  }
  if (inWord) words.push(word);
  return words;
}
