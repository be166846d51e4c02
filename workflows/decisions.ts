// Signed decisions in the workflows (SPEC §7): the workflow decides, not the
// CLI, so a client that talks to Temporal directly cannot forge a person.
//
// Why an activity and not a pure verifier in the validator: the trust root is
// the worker's allowed_signers file, read afresh for every check so that
// deleting a line revokes at once; a validator cannot read files. So each
// decision goes through two gates:
//   1. the validator (synchronous, changes nothing) refuses what the workflow
//      can decide alone: wrong phase, already answered, a malformed message,
//      facts that do not fit the rollout now, an `at` too far from its clock;
//   2. the handler, one decision at a time (a lock: Temporal's
//      safe-message-handlers pattern), awaits the verifying activity, then
//      checks everything again (the state may have moved while it waited),
//      and only then changes state. A refusal is an ApplicationFailure: the
//      Update fails, the caller hears why, and nothing has changed.
// pause, resume and abort are Updates for the same reason: a signal cannot
// answer "refused" to its sender.
import { ApplicationFailure, condition } from '@temporalio/workflow';
import {
  Decision,
  DecisionFacts,
  DecisionMessageError,
  DECISION_REFUSED,
  decisionMismatch,
  parseDecisionMessage,
} from '../domain/decision';
import type { DecisionRecord, SignedDecision } from '../domain/messages/rollout';
import { MessageError, signedRequest } from '../domain/messages/signed-request';
import type { Steps } from './steps';

/** A refused decision: fails the Update (or ends a preflight) with this one line. */
export function refused(message: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(message, DECISION_REFUSED);
}

/** What the workflow can decide alone: a signed, canonical message whose facts fit the rollout as it is now. */
export function checkFacts(payload: unknown, facts: DecisionFacts): Decision {
  let d: Decision;
  try {
    // The payload's shape first (domain/messages/signed-request): anyone with access to the namespace can send anything.
    const signed = signedRequest(payload, facts.action);
    d = parseDecisionMessage(signed.message);
  } catch (err) {
    if (err instanceof DecisionMessageError || err instanceof MessageError) throw refused(err.message);
    throw err;
  }
  const why = decisionMismatch(d, facts, Date.now());
  if (why) throw refused(why);
  return d;
}

/** A verified decision, and (when a delegate signed) the keys of the person it signed for: for the requester rule, not for the record. */
export type VerifiedRecord = DecisionRecord & { personKeys?: string[] };

/** The facts, then the signature and the signer (the activity reads the signers file). */
export async function verifySigned(steps: Steps, signed: unknown, facts: DecisionFacts): Promise<VerifiedRecord> {
  const d = checkFacts(signed, facts);
  const s = signed as SignedDecision;
  const v = await steps.signing.verifyDecision({
    signed: { message: s.message, signature: s.signature },
    at: new Date().toISOString(),
  });
  if (!v.ok) throw refused(v.reason);
  return {
    action: d.action,
    by: v.by,
    key: v.key,
    ...(v.via ? { via: v.via } : {}),
    at: d.at,
    comment: d.comment,
    message: s.message,
    signature: s.signature,
    ...(v.personKeys ? { personKeys: v.personKeys } : {}),
  };
}

/** One decision at a time: a second answer waits until the first is accepted or refused, then is judged on the new state. */
export class OneAtATime {
  private busy = false;

  async run<T>(fn: () => Promise<T>): Promise<T> {
    await condition(() => !this.busy);
    this.busy = true;
    try {
      return await fn();
    } finally {
      this.busy = false;
    }
  }
}
