// What a workflow accepts in its Updates and Signals. Anyone with access to
// the Temporal namespace (the UI, `temporal workflow update`) can send any
// payload, so each message is checked here before a handler reads it: an
// Update's validator throws (the caller hears why, nothing changes); a
// Signal with a bad payload is ignored with a warning. Never a failed
// workflow task. Pure: shared by the workflows and the tests.
//
// approve, reject, pause, resume and abort carry one signed decision (SPEC §7):
// here only its shape and size; what it says is domain/decision's business and
// whose signature it is the signers file's.
import type { SignedDecision } from './rollout';
import { DECISION_MESSAGE_MAX } from '../decision';

export class MessageError extends Error {
  override name = 'MessageError';
}

/** Bounds that keep a status (and its history) small whatever is sent. */
export const MESSAGE_LIMITS = { message: DECISION_MESSAGE_MAX, signature: 16_384 } as const;

type Fields = Record<string, unknown>;

const EXAMPLE = '{"message": "km-hotfix decision v1\\n...", "signature": "-----BEGIN SSH SIGNATURE-----..."}';

function record(payload: unknown, what: string): Fields {
  if (payload === undefined || payload === null) throw new MessageError(`${what} needs a payload such as ${EXAMPLE}`);
  if (typeof payload !== 'object' || Array.isArray(payload))
    throw new MessageError(
      `${what} takes an object such as ${EXAMPLE} (got ${Array.isArray(payload) ? 'an array' : typeof payload})`,
    );
  return payload as Fields;
}

/** A signed decision's payload: the message and its armored SSH signature, both text, bounded. */
export function signedRequest(payload: unknown, what: string): SignedDecision {
  const f = record(payload, what);
  const { message, signature } = f;
  if (typeof message !== 'string' || typeof signature !== 'string' || signature === '') {
    throw new MessageError(
      `the ${what} is not signed: sign it with your SSH key (KM_HOTFIX_SIGNING_KEY or ssh-agent), e.g. with 'km-hotfix ${what}'`,
    );
  }
  if (message.length > MESSAGE_LIMITS.message)
    throw new MessageError(`${what}: 'message' is longer than ${MESSAGE_LIMITS.message} characters`);
  if (signature.length > MESSAGE_LIMITS.signature)
    throw new MessageError(`${what}: 'signature' is longer than ${MESSAGE_LIMITS.signature} characters`);
  return { message, signature };
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
