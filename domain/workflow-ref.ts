// Ids a person can type: a workflow id is 55-120 characters, so a command that
// takes one also takes any unique prefix, any unique trailing part (the hex
// suffix, e.g. 5140af) and `last`, the newest one of the kinds it acts on.
// This is the rule alone; the CLI gives it the ledger's ids.
import type { WorkflowKind } from './rollout';
import { WORKFLOW_ID_SUFFIX_BYTES } from './rollout';

/** What a person types for the newest workflow. */
export const LAST = 'last';

/** Candidates an ambiguous reference lists before it says "and N more". */
export const CANDIDATES_SHOWN = 10;

/** A workflow a reference may name, as the ledger lists it. */
export interface IdCandidate {
  id: string;
  kind: WorkflowKind;
  startedAt: Date;
}

export type IdMatch =
  | { found: string; how: 'exact' | 'prefix' | 'suffix' | 'last' }
  /** Several match: newest first. */
  | { ambiguous: IdCandidate[] }
  | { none: true };

const FULL_ID = new RegExp(
  `^(rollout|removal|upload)-hotfix_[A-Za-z0-9._-]+-\\d{8}T\\d{6}-[0-9a-f]{${2 * WORKFLOW_ID_SUFFIX_BYTES}}$`,
);

/** An id as km-hotfix makes them (domain/rollout.ts workflowId): taken as it is, without looking anything up. */
export function isFullWorkflowId(typed: string): boolean {
  return FULL_ID.test(typed);
}

function newestFirst(a: IdCandidate, b: IdCandidate): number {
  return b.startedAt.getTime() - a.startedAt.getTime() || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}

/**
 * The workflow a person means by `typed`: `last` is the newest candidate of
 * `kinds`; an exact id is that one; otherwise every candidate whose id begins
 * or ends with it, which must be exactly one.
 */
export function matchWorkflowId(
  typed: string,
  candidates: readonly IdCandidate[],
  kinds: readonly WorkflowKind[],
): IdMatch {
  if (typed === '') return { none: true };
  if (typed === LAST) {
    const newest = candidates.filter((c) => kinds.includes(c.kind)).sort(newestFirst)[0];
    return newest ? { found: newest.id, how: 'last' } : { none: true };
  }
  if (candidates.some((c) => c.id === typed)) return { found: typed, how: 'exact' };
  const matching = candidates.filter((c) => c.id.startsWith(typed) || c.id.endsWith(typed)).sort(newestFirst);
  if (matching.length === 0) return { none: true };
  if (matching.length > 1) return { ambiguous: matching };
  const only = matching[0];
  return { found: only.id, how: only.id.startsWith(typed) ? 'prefix' : 'suffix' };
}

/**
 * How an ambiguous reference is told: one line each for the first candidates,
 * then how many more (`total`: all that match, when only some were read).
 */
export function candidateLines(
  ambiguous: readonly IdCandidate[],
  total = ambiguous.length,
  shown = CANDIDATES_SHOWN,
): string[] {
  const lines = ambiguous.slice(0, shown).map((c) => `${c.id}  (${c.kind}, started ${isoMinute(c.startedAt)})`);
  const more = Math.max(total, ambiguous.length) - lines.length;
  if (more > 0) lines.push(`... and ${more} more`);
  return lines;
}

function isoMinute(d: Date): string {
  return d.toISOString().replace('T', ' ').slice(0, 16) + 'Z';
}

/** What `last` means to a person, by the kinds a command acts on ("rollout", "rollout or removal"). */
export function kindWords(kinds: readonly WorkflowKind[]): string {
  return kinds.length <= 1
    ? (kinds[0] ?? 'workflow')
    : `${kinds.slice(0, -1).join(', ')} or ${kinds[kinds.length - 1]}`;
}
