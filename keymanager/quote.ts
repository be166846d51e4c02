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
