// OpenSSH's allowed_signers file (ssh-keygen(1) "ALLOWED SIGNERS"), the trust
// root of signed decisions:
//
//   principals [options] keytype base64-key [comment]
//
// principals: a comma-separated pattern list (`*`, `?`, `!negation`); options:
// namespaces="a,b", valid-after="YYYYMMDD[HHMM[SS]][Z]", valid-before=...,
// cert-authority. Blank lines and lines starting with # are ignored.
// A person's name is the first literal principal of the line whose key verified.
import { readFile } from 'node:fs/promises';
import { parsePublicKeyBlob, isKeyType, fingerprint, KeyFormatError } from './keys';
import { isDelegate } from '../domain/decision';

export interface AllowedSigner {
  /** Line number in the file, for messages. */
  line: number;
  principals: string[];
  /** The person's name: the first principal that is not a pattern; null when all are patterns. */
  name: string | null;
  namespaces: string[] | null;
  validAfter: Date | null;
  validBefore: Date | null;
  certAuthority: boolean;
  keyType: string;
  /** The public key's wire blob. */
  key: Buffer;
  fingerprint: string;
  comment: string;
}

export class AllowedSignersError extends Error {
  override name = 'AllowedSignersError';
}

/** Split off one whitespace-delimited token; double quotes group (and may hold spaces). */
function token(rest: string): [string, string] {
  let i = 0;
  let quoted = false;
  for (; i < rest.length; i++) {
    const c = rest[i];
    if (c === '"') quoted = !quoted;
    else if (!quoted && (c === ' ' || c === '\t')) break;
  }
  if (quoted) throw new AllowedSignersError('unterminated quote');
  return [rest.slice(0, i), rest.slice(i).replace(/^[ \t]+/, '')];
}

const unquote = (s: string): string => (s.length >= 2 && s.startsWith('"') && s.endsWith('"') ? s.slice(1, -1) : s);

/** Split a comma-separated list, keeping commas inside double quotes. */
function splitOptions(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const c of s) {
    if (c === '"') quoted = !quoted;
    if (c === ',' && !quoted) {
      out.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  out.push(cur);
  return out;
}

/** OpenSSH's time format for valid-after/valid-before; without Z it is local time, as ssh-keygen reads it. */
function parseTime(v: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(?:(\d{2}))?)?(Z)?$/.exec(v);
  if (!m) throw new AllowedSignersError(`time '${v}' is not YYYYMMDD[HHMM[SS]][Z]`);
  const parts = [
    Number(m[1]),
    Number(m[2]) - 1,
    Number(m[3]),
    Number(m[4] ?? 0),
    Number(m[5] ?? 0),
    Number(m[6] ?? 0),
  ] as const;
  return m[7] ? new Date(Date.UTC(...parts)) : new Date(...parts);
}

function parseLine(text: string, line: number): AllowedSigner | null {
  const trimmed = text.replace(/^[ \t]+/, '').replace(/[ \t\r]+$/, '');
  if (trimmed === '' || trimmed.startsWith('#')) return null;
  const [principalsField, rest] = token(trimmed);
  const principals = principalsField
    .replace(/"/g, '')
    .split(',')
    .map((p) => p.trim());
  if (principals.some((p) => p === '')) throw new AllowedSignersError('empty principal');
  let namespaces: string[] | null = null;
  let validAfter: Date | null = null;
  let validBefore: Date | null = null;
  let certAuthority = false;
  let [next, after] = token(rest);
  const looksLikeKeyType = (t: string): boolean => /^(ssh-|ecdsa-|sk-)[a-z0-9@.-]*$/.test(t);
  if (!isKeyType(next) && !looksLikeKeyType(next)) {
    for (const opt of splitOptions(next)) {
      const eq = opt.indexOf('=');
      const name = (eq < 0 ? opt : opt.slice(0, eq)).toLowerCase();
      const value = eq < 0 ? '' : unquote(opt.slice(eq + 1));
      if (name === 'cert-authority') certAuthority = true;
      else if (name === 'namespaces')
        namespaces = value
          .split(',')
          .map((n) => n.trim())
          .filter((n) => n !== '');
      else if (name === 'valid-after') validAfter = parseTime(value);
      else if (name === 'valid-before') validBefore = parseTime(value);
      else throw new AllowedSignersError(`unknown option '${name}' (or an unsupported key type)`);
    }
    [next, after] = token(after);
  }
  if (!isKeyType(next))
    throw new AllowedSignersError(`'${next}' is not a supported key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-*, sk-*)`);
  const [b64, comment] = token(after);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw new AllowedSignersError('the key is not base64');
  const key = Buffer.from(b64, 'base64');
  try {
    const parsed = parsePublicKeyBlob(key);
    if (parsed.type !== next) throw new AllowedSignersError(`the key is ${parsed.type}, the line says ${next}`);
  } catch (e) {
    if (e instanceof KeyFormatError) throw new AllowedSignersError(e.message);
    throw e;
  }
  const name = principals.find((p) => !/[*?!]/.test(p)) ?? null;
  return {
    line,
    principals,
    name,
    namespaces,
    validAfter,
    validBefore,
    certAuthority,
    keyType: next,
    key,
    fingerprint: fingerprint(key),
    comment,
  };
}

/** Parse the file's text; a malformed line is an error naming it (a trust root is never half-read). */
export function parseAllowedSigners(text: string, source = 'allowed_signers'): AllowedSigner[] {
  const out: AllowedSigner[] = [];
  text.split('\n').forEach((l, i) => {
    try {
      const s = parseLine(l, i + 1);
      if (s) out.push(s);
    } catch (e) {
      if (e instanceof AllowedSignersError) throw new AllowedSignersError(`${source} line ${i + 1}: ${e.message}`);
      throw e;
    }
  });
  return out;
}

export async function readAllowedSigners(path: string): Promise<AllowedSigner[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new AllowedSignersError(
      `cannot read the signers file ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
  return parseAllowedSigners(text, path);
}

/** OpenSSH's match_pattern: `*` any run, `?` one character. */
function matchPattern(s: string, pattern: string): boolean {
  const re = new RegExp(
    `^${pattern
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')}$`,
  );
  return re.test(s);
}

/** OpenSSH's match_pattern_list: a negated match refuses, else any positive match accepts. */
export function matchPrincipals(name: string, patterns: readonly string[]): boolean {
  let matched = false;
  for (const p of patterns) {
    if (p.startsWith('!')) {
      if (matchPattern(name, p.slice(1))) return false;
    } else if (matchPattern(name, p)) {
      matched = true;
    }
  }
  return matched;
}

/** A line that counts for this namespace at this time, whatever its key. */
function inForce(s: AllowedSigner, namespace: string, when: Date): boolean {
  if (s.certAuthority) return false; // certificates are not supported: plain keys only
  if (s.namespaces && !s.namespaces.some((n) => matchPattern(namespace, n))) return false;
  if (s.validAfter && when < s.validAfter) return false;
  if (s.validBefore && when > s.validBefore) return false;
  return true;
}

function usable(s: AllowedSigner, key: Buffer, namespace: string, when: Date): boolean {
  return s.key.equals(key) && inForce(s, namespace, when);
}

/**
 * The people of the file (SPEC §7 "People"): the name of every line in force that
 * is not a delegate, spelled as the file spells it, once each. A pattern
 * (`*@example.com`) is nobody's own line, so it makes no person.
 */
export function peopleOf(signers: readonly AllowedSigner[], namespace: string, when: Date): string[] {
  const names = signers
    .filter((s) => s.name !== null && !isDelegate(s.name) && inForce(s, namespace, when))
    .map((s) => s.name as string);
  return [...new Set(names)];
}

/** Fingerprints of the keys of this person's lines in force: how a name is tied back to the keys that are theirs. */
export function keysOf(signers: readonly AllowedSigner[], person: string, namespace: string, when: Date): string[] {
  return [
    ...new Set(signers.filter((s) => s.name === person && inForce(s, namespace, when)).map((s) => s.fingerprint)),
  ];
}

/** Who holds this key, per the file: the first usable line that names a person. */
export function findSigner(
  signers: readonly AllowedSigner[],
  key: Buffer,
  namespace: string,
  when: Date,
): AllowedSigner | null {
  return signers.find((s) => s.name !== null && usable(s, key, namespace, when)) ?? null;
}

/** Is this key allowed for this principal (as `ssh-keygen -Y verify -I NAME` asks)? */
export function allowsPrincipal(
  signers: readonly AllowedSigner[],
  principal: string,
  key: Buffer,
  namespace: string,
  when: Date,
): boolean {
  return signers.some((s) => usable(s, key, namespace, when) && matchPrincipals(principal, s.principals));
}
