// Re-checking a recorded decision, long after the fact (`km-hotfix audit`):
// the same questions `ssh-keygen -Y verify -f allowed_signers -I NAME -n
// km-hotfix -s SIG < MSG` answers, plus whether the message is about this
// rollout and this action, and was signed when it was recorded; and, for an
// answer at the gate, whether the drained backends it names by digest are the
// ledger's list (an altered list, or message, shows here).
import {
  DecisionAction,
  DECISION_MAX_AGE_MS,
  parseDecisionMessage,
  DecisionMessageError,
  isDelegate,
  drainedFacts,
  drainedMismatch,
} from '../domain/decision';
import { AllowedSigner, allowsPrincipal, peopleOf } from './allowed-signers';
import { fingerprint } from './keys';
import { NAMESPACE, parseArmoredSignature, SignatureFormatError, verifySshSig } from './sshsig';

export interface RecordedProof {
  /** Who the workflow said signed it. */
  by: string;
  /** The fingerprint it recorded. */
  key: string;
  /** The delegate that signed for `by`, when one did. */
  via?: string;
  message: string;
  signature: string;
  /** When it was recorded. */
  recordedAt: Date;
}

/** What the ledger says the decision is about. */
export interface ExpectedDecision {
  rollout: string;
  action: DecisionAction;
  /** approve and reject: the drained backends as the ledger recorded them before the drain. */
  drained?: readonly string[];
}

/** What is wrong with a recorded decision (empty: it holds). */
export function auditDecision(
  p: RecordedProof,
  expected: ExpectedDecision,
  signers: readonly AllowedSigner[],
): string[] {
  const problems: string[] = [];
  let sig;
  try {
    sig = parseArmoredSignature(p.signature);
  } catch (err) {
    if (err instanceof SignatureFormatError) return [err.message];
    throw err;
  }
  const signedBy = fingerprint(sig.publicKey.blob);
  if (sig.namespace !== NAMESPACE) problems.push(`signed for namespace '${sig.namespace}', not '${NAMESPACE}'`);
  else if (!verifySshSig(sig, p.message))
    problems.push('the signature does not verify over the recorded message: the message or the signature was altered');
  if (signedBy !== p.key) problems.push(`recorded as key ${p.key || '(none)'}, but signed by ${signedBy}`);
  // A delegated decision: the key is the delegate's, and the message names the person.
  const holder = p.via ?? p.by;
  if (p.via !== undefined && !isDelegate(p.via))
    problems.push(`recorded as signed via ${p.via}, which is not a delegate (a principal ending in @delegate)`);
  if (!allowsPrincipal(signers, holder, sig.publicKey.blob, NAMESPACE, p.recordedAt))
    problems.push(`${signedBy} is not a key of ${holder || '(nobody)'} in the signers file`);
  // A delegate speaks only for a person of the file (SPEC §7 "People"): one it named otherwise was never anyone.
  if (p.via !== undefined && !peopleOf(signers, NAMESPACE, p.recordedAt).includes(p.by))
    problems.push(
      `${p.by || '(nobody)'} is not in the signers file: ${p.via} may sign only for a person with a line of their own`,
    );
  try {
    const d = parseDecisionMessage(p.message);
    if ((d.onBehalfOf ?? null) !== (p.via !== undefined ? p.by : null)) {
      problems.push(
        d.onBehalfOf !== undefined
          ? `the message is signed on behalf of ${d.onBehalfOf}, the ledger names ${p.by}${p.via ? '' : ' with no delegate'}`
          : `the ledger says ${p.via ?? ''} signed for ${p.by}, but the message names nobody on behalf of`,
      );
    }
    if (d.rollout !== expected.rollout) problems.push(`the message is about ${d.rollout}, not ${expected.rollout}`);
    if (d.action !== expected.action) problems.push(`the message says '${d.action}', the ledger '${expected.action}'`);
    if (d.drained && expected.drained) {
      const why = drainedMismatch(d.drained, drainedFacts(expected.drained), "the ledger's drained backends");
      if (why) problems.push(`${why}: the ledger's list or the message was altered`);
    }
    if (Math.abs(p.recordedAt.getTime() - Date.parse(d.at)) > DECISION_MAX_AGE_MS)
      problems.push(`signed at ${d.at} but recorded at ${p.recordedAt.toISOString()}`);
  } catch (err) {
    if (err instanceof DecisionMessageError) problems.push(err.message);
    else throw err;
  }
  return problems;
}
