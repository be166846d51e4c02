// Who a person is (SPEC §7, "People"): a principal of the signers file that
// is not a delegate. Every path judges names by these rules: the CLI, an
// Update sent straight to Temporal (signing/verify.ts) and the web page.
// Pure: imported by workflows, activities, the CLI and the web page.
import { isDelegate } from './decision';

/** How the web page matches the proxy's name to the file's (KM_HOTFIX_WEB_NAMES). */
export const NAME_MATCHINGS = ['exact', 'case-insensitive'] as const;
export type NameMatching = (typeof NAME_MATCHINGS)[number];

export type PersonMatch = { person: string } | { refused: string };

/**
 * The person of the signers file that `name` is, spelled as the file spells it.
 * Exact by default; case-insensitive only when the proxy's names are (most
 * single-sign-on proxies), and then only a match unique in the file counts:
 * `Alice` is never silently one of `alice` and `ALICE`.
 */
export function personNamed(name: string, people: readonly string[], matching: NameMatching = 'exact'): PersonMatch {
  if (isDelegate(name)) return { refused: `${name} is a delegate, not a person: a delegate never decides as itself` };
  if (matching === 'exact')
    return people.includes(name) ? { person: name } : { refused: `${name} is not in the signers file` };
  const lower = name.toLowerCase();
  const found = [...new Set(people.filter((p) => p.toLowerCase() === lower))];
  if (found.length === 1) return { person: found[0] };
  if (found.length > 1)
    return { refused: `${name} is ambiguous: the signers file has ${found.join(', ')}, which differ only in case` };
  return { refused: `${name} is not in the signers file` };
}

/** Who answers the gate: the person, and every key that speaks for them (their own, or their lines' keys when a delegate signed). */
export interface GateAnswerer {
  by: string;
  /** The key that signed, shown in the refusal (absent when the page asks before anything is signed). */
  key?: string;
  /** Fingerprints of the keys of this person: the same key under another name is the same person. */
  keys: readonly string[];
}

/** What the gate knows of the rollout: who started it, with which key, and who may verify it. */
export interface GateRoles {
  requestedBy: string;
  requestedKey: string | null;
  approvers: readonly string[];
}

/** Why this person may not answer the verification gate, or null: not the requester (by name or by key), in --approvers when given. */
export function gateAnswerRefusal(who: GateAnswerer, gate: GateRoles): string | null {
  const sameName = who.by === gate.requestedBy;
  if (sameName || (gate.requestedKey !== null && who.keys.includes(gate.requestedKey))) {
    return `${who.key ? `${who.by} (${who.key})` : who.by} started this rollout${sameName ? '' : ` as ${gate.requestedBy} with the same key`}: someone else must verify the canary`;
  }
  if (gate.approvers.length > 0 && !gate.approvers.includes(who.by)) {
    return `${who.by} is not an approver of this rollout (approvers: ${gate.approvers.join(', ')})`;
  }
  return null;
}

/**
 * Why a rollout's --approvers cannot work, or null: it names only the
 * requester, who may not verify their own rollout. Checked by the CLI before
 * it starts anything and by the workflow once the start signature names the
 * requester.
 */
export function approversRefusal(approvers: readonly string[], requester: string): string | null {
  if (approvers.length === 0 || !approvers.every((a) => a === requester)) return null;
  return `--approvers lists only ${requester}, who starts this rollout and so may not verify it: name someone else`;
}

export class NameMatchingError extends Error {
  override name = 'NameMatchingError';
}

/** KM_HOTFIX_WEB_NAMES: unset is exact; anything but the two words is refused, never guessed. */
export function parseNameMatching(value: string | undefined): NameMatching {
  const v = (value ?? '').trim();
  if (v === '') return 'exact';
  if ((NAME_MATCHINGS as readonly string[]).includes(v)) return v as NameMatching;
  throw new NameMatchingError(
    `KM_HOTFIX_WEB_NAMES must be ${NAME_MATCHINGS.join(' or ')}, not '${v}': how the proxy's names match the signers file's`,
  );
}

/** Who may read the page without a person named by the proxy (KM_HOTFIX_WEB_ANONYMOUS): anyone (read), or nobody (none). */
export const ANONYMOUS_ACCESS = ['read', 'none'] as const;
export type AnonymousAccess = (typeof ANONYMOUS_ACCESS)[number];

export class AnonymousAccessError extends Error {
  override name = 'AnonymousAccessError';
}

/** KM_HOTFIX_WEB_ANONYMOUS: unset is read; anything but the two words is refused, never guessed. */
export function parseAnonymousAccess(value: string | undefined): AnonymousAccess {
  const v = (value ?? '').trim();
  if (v === '') return 'read';
  if ((ANONYMOUS_ACCESS as readonly string[]).includes(v)) return v as AnonymousAccess;
  throw new AnonymousAccessError(
    `KM_HOTFIX_WEB_ANONYMOUS must be ${ANONYMOUS_ACCESS.join(' or ')}, not '${v}': whether a visitor the proxy names nobody may read the page`,
  );
}
