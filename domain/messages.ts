// What a workflow accepts in its Signals and Updates. Anyone with access to
// the Temporal namespace (the UI, `temporal workflow signal`) can send any
// payload, so each message is checked here before a handler reads it: an
// Update's validator throws (the caller hears why, nothing changes); a
// Signal with a bad payload is ignored with a warning. Never a failed
// workflow task. Pure: shared by the workflows and the tests.
import type { ApproveRequest, RejectRequest, SteerRequest } from './rollout';
import { hasControlCharacters } from './terminal';

export class MessageError extends Error {
  override name = 'MessageError';
}

/** Bounds that keep a status (and its history) small whatever is sent. */
export const MESSAGE_LIMITS = { by: 64, text: 2000 } as const;

type Fields = Record<string, unknown>;

function record(payload: unknown, what: string, example: string): Fields {
  if (payload === undefined || payload === null) throw new MessageError(`${what} needs a payload such as ${example}`);
  if (typeof payload !== 'object' || Array.isArray(payload)) throw new MessageError(`${what} takes an object such as ${example} (got ${Array.isArray(payload) ? 'an array' : typeof payload})`);
  return payload as Fields;
}

/** Who sent it: a user name, one line, as `--as` accepts. */
function by(f: Fields, what: string): string {
  const v = f.by;
  if (typeof v !== 'string' || !v.trim()) throw new MessageError(`${what} needs 'by': who you are (--as USER)`);
  if (v.length > MESSAGE_LIMITS.by || hasControlCharacters(v) || /\s/.test(v)) throw new MessageError(`${what}: 'by' must be a user name of at most ${MESSAGE_LIMITS.by} characters, without spaces or control characters`);
  return v;
}

/** Free text (comment, reason): a string when present, bounded. Control characters are kept and escaped when printed. */
function text(f: Fields, key: string, what: string, required: boolean): string | undefined {
  const v = f[key];
  if (v === undefined || (v === null && !required)) {
    if (required) throw new MessageError(`${what} needs '${key}'`);
    return undefined;
  }
  if (typeof v !== 'string') throw new MessageError(`${what}: '${key}' must be text (got ${v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v})`);
  if (v.length > MESSAGE_LIMITS.text) throw new MessageError(`${what}: '${key}' is longer than ${MESSAGE_LIMITS.text} characters`);
  return v;
}

export function approveRequest(payload: unknown): ApproveRequest {
  const what = 'approve';
  const f = record(payload, what, '{"by": "dana", "comment": "looks good"}');
  const who = by(f, what);
  const comment = text(f, 'comment', what, false);
  return { by: who, ...(comment !== undefined ? { comment } : {}) };
}

export function rejectRequest(payload: unknown): RejectRequest {
  const what = 'reject';
  const f = record(payload, what, '{"by": "dana", "reason": "queue stalls"}');
  const who = by(f, what);
  const reason = text(f, 'reason', what, true)!;
  if (!reason.trim()) throw new MessageError('a rejection needs a reason: --reason "what is wrong"');
  return { by: who, reason };
}

/** pause, resume, abort. */
export function steerRequest(payload: unknown, what: string): SteerRequest {
  const f = record(payload, what, '{"by": "dana", "reason": "change freeze"}');
  const who = by(f, what);
  const reason = text(f, 'reason', what, false);
  return { by: who, ...(reason !== undefined ? { reason } : {}) };
}

/** A Signal's payload, or undefined with the reason (the handler logs it and ignores the Signal). */
export function acceptSignal<T>(parse: () => T): { ok: true; value: T } | { ok: false; reason: string } {
  try {
    return { ok: true, value: parse() };
  } catch (err) {
    if (err instanceof MessageError) return { ok: false, reason: err.message };
    return { ok: false, reason: String(err) };
  }
}
