// Text that came from a person or a file (comments, reasons, names, URLs,
// errors quoting them) is printed inert: control characters cannot move the
// cursor, clear the screen, set the title or start a fake line.

// C0 controls, DEL, C1 controls, and the Unicode bidi overrides that reorder what a reader sees.
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/g;

const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t', '\u001b': '\\e' };

function escapeOne(c: string): string {
  const named = NAMED[c];
  if (named) return named;
  const code = c.charCodeAt(0);
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}

/** One line, every control character shown as an escape (\n, \e, \x07, \u202e). */
export function inert(text: string): string {
  return text.replace(UNSAFE, escapeOne);
}

/** Whether a text holds anything `inert` would escape. */
export function hasControlCharacters(text: string): boolean {
  UNSAFE.lastIndex = 0;
  const found = UNSAFE.test(text);
  UNSAFE.lastIndex = 0;
  return found;
}
