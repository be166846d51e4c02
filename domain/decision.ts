// The canonical decision message (SPEC §7): what a person signs with their SSH
// key when they change something. One `key: value` per line, in a fixed order,
// each line ending in "\n", so the bytes that `--print-message` prints are the
// bytes `ssh-keygen -Y sign` signs and the bytes the workflow checks.
//
//   km-hotfix decision v1
//   action: approve
//   rollout: rollout-hotfix_backend_x-20261127T172600-ab12
//   hotfix: hotfix_backend_x
//   sha256: 9f86d0...
//   canary: km-be-1            (approve, reject)
//   drained: 749 sha256:3a7bd3...   (approve, reject; empty when none)
//   comment: looks good
//   on-behalf-of: bob          (approve, reject; only when a delegate signs)
//   at: 2026-11-27T17:26:00.000Z
//
// A delegate (the web server, SPEC §7 as extended in the README) signs with its
// own key for the person a trusted proxy named: the `on-behalf-of` line names
// that person, the signers file names the delegate (a principal ending in
// `@delegate`), and the workflow judges the person by the rules.
//
// Facts are bound by value where they are small and by digest where they grow
// with the fleet, so a message stays a few hundred bytes whatever the fleet:
// the drained backends are their count and the sha256 of their canonical list
// (sorted, once each, one per line; `km-hotfix status ID --drained | sha256sum`).
// The approver is shown that list next to the message (--print-message, the
// web page); the workflow recomputes the digest from its own list. Messages
// written before (`drained: km-be-2,km-be-3`) are still read, for the ledger's
// old rows and for replaying workflows that accepted one.
// Pure: imported by workflows, activities and the CLI.
import { sha256Hex } from './sha256';

export const DECISION_HEADER = 'km-hotfix decision v1';
export const DECISION_ACTIONS = [
  'upload',
  'rollout',
  'approve',
  'reject',
  'pause',
  'resume',
  'abort',
  'remove',
] as const;
export type DecisionAction = (typeof DECISION_ACTIONS)[number];
/** The answers at the verification gate name what was verified: the canary and the drained backends. */
export const GATE_ACTIONS: readonly DecisionAction[] = ['approve', 'reject'];

export interface Decision {
  action: DecisionAction;
  /** The workflow id the decision is about (for upload, rollout and remove: the one being started). */
  rollout: string;
  /** The hotfix Name. */
  hotfix: string;
  /** sha256 (hex) of the registered hotfix file; 'none' when removing a hotfix that is no longer registered. */
  sha256: string;
  /** approve and reject only. */
  canary?: string;
  /** approve and reject only: the drained backends, by count and digest. */
  drained?: DrainedFacts;
  /** One line; the reason of a reject or an abort. */
  comment: string;
  /** approve and reject only: the person a delegate signs for (absent when the person signs). */
  onBehalfOf?: string;
  /** ISO-8601 UTC, e.g. 2026-11-27T17:26:00.000Z. */
  at: string;
}

/** The drained backends as a decision names them: how many, and the sha256 of their canonical list. */
export interface DrainedFacts {
  count: number;
  /** sha256 (hex) of drainedList(names). */
  sha256: string;
  /** Only in a message written before digests: the names as that message listed them. */
  listed?: string[];
}

/** The canonical list of drained backends, the text their digest is over: sorted, once each, one per line, each line ending in "\n". */
export function drainedList(names: readonly string[]): string {
  return [...new Set(names)]
    .sort()
    .map((n) => `${n}\n`)
    .join('');
}

/** The facts a decision states about these drained backends. */
export function drainedFacts(names: readonly string[]): DrainedFacts {
  return { count: new Set(names).size, sha256: sha256Hex(drainedList(names)) };
}

/** The `drained:` value of a message: empty when none, else `COUNT sha256:HEX`. */
export function drainedValue(f: DrainedFacts): string {
  if (f.listed) return [...new Set(f.listed)].sort().join(',');
  return f.count === 0 ? '' : `${f.count} sha256:${f.sha256}`;
}

/** Why the drained backends a decision states are not these, or null when they are. */
export function drainedMismatch(signed: DrainedFacts, now: DrainedFacts, whose: string): string | null {
  if (signed.count === now.count && signed.sha256 === now.sha256) return null;
  const show = (f: DrainedFacts) => (f.count === 0 ? '(none)' : `${f.count} sha256:${f.sha256}`);
  return `the signed drained backends are ${show(signed)} but ${whose} are ${show(now)}`;
}

/** A signers-file principal ending in this is a delegate: its key signs for others, never as itself. */
export const DELEGATE_SUFFIX = '@delegate';

/** Case-insensitive, as a proxy or an admin may spell it: `web@DELEGATE` is a delegate too, never a person. */
export function isDelegate(name: string): boolean {
  return name.toLowerCase().endsWith(DELEGATE_SUFFIX) && name.length > DELEGATE_SUFFIX.length;
}

/** The longest message accepted: a few hundred characters is typical. */
export const DECISION_MESSAGE_MAX = 4096;
/** The longest comment or reason: it is shown in the status and kept in the ledger. */
export const DECISION_COMMENT_MAX = 2000;

export class DecisionMessageError extends Error {
  override name = 'DecisionMessageError';
}

/** The sha256 of a decision about a hotfix that Key Manager no longer has a file for (a removal). */
export const NO_FILE = 'none';

const AT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?Z$/;
const SHA256 = /^[0-9a-f]{64}$/;
// C0 and C1 controls, DEL, and the Unicode line and paragraph separators: a value is one line, as displayed.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
const ITEM = /^[A-Za-z0-9][A-Za-z0-9._:@-]*$/;
const DRAINED_DIGEST = /^([1-9][0-9]{0,8}) sha256:([0-9a-f]{64})$/;

function fail(why: string): never {
  throw new DecisionMessageError(`not a km-hotfix decision message: ${why}`);
}

function checkValue(key: string, value: string): void {
  if (CONTROL.test(value)) fail(`'${key}' holds a line break or control character; it must be one line`);
  if (value !== value.trim()) fail(`'${key}' must not start or end with spaces`);
}

function checkItem(key: string, value: string): void {
  if (!ITEM.test(value))
    fail(`'${key}' value '${value}' must be a name of letters, digits, '.', '_', ':', '@' and '-'`);
}

function isAction(a: string): a is DecisionAction {
  return (DECISION_ACTIONS as readonly string[]).includes(a);
}

/** The keys of a decision's message, in order. */
function keysOf(action: DecisionAction, delegated = false): string[] {
  return GATE_ACTIONS.includes(action)
    ? [
        'action',
        'rollout',
        'hotfix',
        'sha256',
        'canary',
        'drained',
        'comment',
        ...(delegated ? ['on-behalf-of'] : []),
        'at',
      ]
    : ['action', 'rollout', 'hotfix', 'sha256', 'comment', 'at'];
}

/** A one-line comment from free text (e.g. `--comment` with newlines): whitespace runs become one space. */
export function oneLine(text: string): string {
  return text.replace(/[\s\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ').trim();
}

/** Validate a decision's facts; throws DecisionMessageError naming the field. */
export function checkDecision(d: Decision): Decision {
  if (!isAction(d.action)) fail(`unknown action '${String(d.action)}'; expected one of ${DECISION_ACTIONS.join(', ')}`);
  checkItem('rollout', d.rollout);
  checkItem('hotfix', d.hotfix);
  if (!SHA256.test(d.sha256) && d.sha256 !== NO_FILE)
    fail(`'sha256' must be 64 lowercase hex digits (or '${NO_FILE}'), not '${d.sha256}'`);
  checkValue('comment', d.comment);
  if (d.comment.length > DECISION_COMMENT_MAX) fail(`'comment' is longer than ${DECISION_COMMENT_MAX} characters`);
  if (!AT.test(d.at) || Number.isNaN(Date.parse(d.at)))
    fail(`'at' must be an ISO-8601 UTC time such as 2026-11-27T17:26:00.000Z, not '${d.at}'`);
  if (GATE_ACTIONS.includes(d.action)) {
    if (d.canary === undefined || d.drained === undefined)
      fail(`an ${d.action} names the canary and the drained backends`);
    checkItem('canary', d.canary);
    if (!Number.isSafeInteger(d.drained.count) || d.drained.count < 0 || !SHA256.test(d.drained.sha256))
      fail("'drained' must be a count and a sha256");
    for (const s of d.drained.listed ?? []) checkItem('drained', s);
    if (d.onBehalfOf !== undefined) {
      checkItem('on-behalf-of', d.onBehalfOf);
      if (isDelegate(d.onBehalfOf)) fail(`'on-behalf-of' names a person, not a delegate ('${d.onBehalfOf}')`);
    }
  } else if (d.canary !== undefined || d.drained !== undefined || d.onBehalfOf !== undefined) {
    fail(`only approve and reject name a canary, drained backends and a person signed for, not ${d.action}`);
  }
  return d;
}

/** Build the canonical message; throws DecisionMessageError on a value that cannot be signed. */
export function decisionMessage(d: Decision): string {
  checkDecision(d);
  const values: Record<string, string> = {
    action: d.action,
    rollout: d.rollout,
    hotfix: d.hotfix,
    sha256: d.sha256,
    canary: d.canary ?? '',
    drained: d.drained ? drainedValue(d.drained) : '',
    comment: d.comment,
    'on-behalf-of': d.onBehalfOf ?? '',
    at: d.at,
  };
  // An empty value is written `key:` (no trailing space) so that editors that trim lines keep the bytes.
  const lines = keysOf(d.action, d.onBehalfOf !== undefined).map((k) =>
    values[k] === '' ? `${k}:` : `${k}: ${values[k]}`,
  );
  return `${DECISION_HEADER}\n${lines.join('\n')}\n`;
}

/**
 * Parse a message; only the canonical form is accepted (the bytes must be exactly what
 * decisionMessage would write), so two different texts never carry the same decision.
 */
export function parseDecisionMessage(text: string): Decision {
  if (text.length > DECISION_MESSAGE_MAX) fail(`it is longer than ${DECISION_MESSAGE_MAX} characters`);
  if (!text.endsWith('\n')) fail('it must end with a newline');
  const lines = text.slice(0, -1).split('\n');
  if (lines[0] !== DECISION_HEADER) fail(`the first line must be '${DECISION_HEADER}'`);
  const values = new Map<string, string>();
  const keys: string[] = [];
  for (const line of lines.slice(1)) {
    const m = /^([a-z0-9-]+):(?: (.*))?$/.exec(line);
    if (!m) fail(`line '${line}' is not 'key: value'`);
    if (values.has(m[1])) fail(`'${m[1]}' appears twice`);
    checkValue(m[1], m[2] ?? '');
    values.set(m[1], m[2] ?? '');
    keys.push(m[1]);
  }
  const action = values.get('action') ?? fail("it has no 'action'");
  if (!isAction(action)) fail(`unknown action '${action}'; expected one of ${DECISION_ACTIONS.join(', ')}`);
  const expected = keysOf(action, values.has('on-behalf-of'));
  if (keys.join(',') !== expected.join(',')) fail(`an ${action} has the lines ${expected.join(', ')} in this order`);
  const get = (k: string): string => values.get(k) ?? '';
  const gate = GATE_ACTIONS.includes(action);
  const d: Decision = {
    action,
    rollout: get('rollout'),
    hotfix: get('hotfix'),
    sha256: get('sha256'),
    ...(gate ? { canary: get('canary'), drained: parseDrained(get('drained')) } : {}),
    comment: get('comment'),
    ...(values.has('on-behalf-of') ? { onBehalfOf: get('on-behalf-of') } : {}),
    at: get('at'),
  };
  if (decisionMessage(d) !== text)
    fail('it is not in canonical form (no extra spaces; drained as a count and sha256:HEX)');
  return d;
}

/** `COUNT sha256:HEX`, empty (none), or a comma-separated list as messages wrote it before digests. */
function parseDrained(value: string): DrainedFacts {
  if (value === '') return drainedFacts([]);
  const m = DRAINED_DIGEST.exec(value);
  if (m) return { count: Number(m[1]), sha256: m[2] };
  if (value.includes(' '))
    fail(`'drained' must be a count and a sha256, such as '749 sha256:3a7bd3…', not '${value.slice(0, 80)}'`);
  const listed = value.split(',');
  return { ...drainedFacts(listed), listed };
}

/** What the rollout is now: the facts a decision about it must state. */
export interface DecisionFacts {
  action: DecisionAction;
  rollout: string;
  hotfix: string;
  sha256: string;
  canary?: string;
  drained?: DrainedFacts;
}

/** How far `at` may be from the workflow's clock: a signature is good for minutes, not forever. */
export const DECISION_MAX_AGE_MS = 10 * 60_000;

/**
 * Why a signed decision does not fit the rollout as it is now, or null when it does.
 * A signature made for another rollout, action, file, canary or drain is a replay.
 */
export function decisionMismatch(
  d: Decision,
  facts: DecisionFacts,
  nowMs: number,
  maxAgeMs = DECISION_MAX_AGE_MS,
): string | null {
  const kind = facts.action === 'upload' ? 'upload' : facts.action === 'remove' ? 'removal' : 'rollout';
  const differs = (what: string, signed: string, now: string): string =>
    `the signed ${what} is '${signed || '(none)'}' but this ${kind}'s is '${now || '(none)'}'`;
  if (d.action !== facts.action) return `the signature is for '${d.action}', not '${facts.action}'`;
  if (d.rollout !== facts.rollout) return differs('rollout', d.rollout, facts.rollout);
  if (d.hotfix !== facts.hotfix) return differs('hotfix', d.hotfix, facts.hotfix);
  if (d.sha256 !== facts.sha256) return differs('file sha256', d.sha256, facts.sha256);
  if (GATE_ACTIONS.includes(facts.action)) {
    if ((d.canary ?? '') !== (facts.canary ?? '')) return differs('canary', d.canary ?? '', facts.canary ?? '');
    const why = drainedMismatch(d.drained ?? drainedFacts([]), facts.drained ?? drainedFacts([]), `this ${kind}'s`);
    if (why) return why;
  }
  const age = nowMs - Date.parse(d.at);
  if (Math.abs(age) > maxAgeMs) {
    return `the decision was signed at ${d.at}, ${Math.round(Math.abs(age) / 60_000)} minutes ${age > 0 ? 'ago' : 'in the future'}; sign it again (a signature is good for ${maxAgeMs / 60_000} minutes)`;
  }
  return null;
}

/** The failure type of a refused decision (an Update's failure, a preflight's end): the CLI maps it to exit 2. */
export const DECISION_REFUSED = 'DecisionRefused';
