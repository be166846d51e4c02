// Checking one signed decision: the SSHSIG verifies in the km-hotfix namespace,
// the key is on a line of the signers file, and the message is a canonical
// decision. Whether its facts fit the rollout is domain/decision's business.
import { Decision, parseDecisionMessage, DecisionMessageError, isDelegate } from '../domain/decision';
import { AllowedSigner, findSigner, keysOf, peopleOf } from './allowed-signers';
import { fingerprint } from './keys';
import { NAMESPACE, parseArmoredSignature, SignatureFormatError, verifySshSig } from './sshsig';

export const REFUSALS = [
  'unsigned',
  'malformed',
  'bad-signature',
  'unknown-signer',
  'not-a-delegate',
  'unknown-person',
] as const;
export type SignatureRefusal = (typeof REFUSALS)[number];

export class SignatureRefused extends Error {
  override name = 'SignatureRefused';
  constructor(
    readonly refusal: SignatureRefusal,
    message: string,
  ) {
    super(message);
  }
}

export interface SignedDecision {
  /** The canonical message, exactly the bytes that were signed. */
  message: string;
  /** The armored SSHSIG text. */
  signature: string;
}

export interface VerifiedDecision {
  /** The person: the name on the signers line whose key verified, or the person a delegate signed for. */
  by: string;
  /** The delegate whose key signed for `by` (e.g. km-hotfix-web@delegate); absent when the person signed. */
  via?: string;
  /** SHA256 fingerprint of the key. */
  key: string;
  /** When a delegate signed: the fingerprints of the person's own lines, so the requester rule sees the person's keys, not only the delegate's. */
  personKeys?: string[];
  decision: Decision;
}

/** Verify a signed decision against the signers; throws SignatureRefused saying why. */
export function verifySignedDecision(
  signed: Partial<SignedDecision> | undefined,
  signers: readonly AllowedSigner[],
  when: Date,
): VerifiedDecision {
  if (
    !signed ||
    typeof signed.message !== 'string' ||
    typeof signed.signature !== 'string' ||
    signed.signature === ''
  ) {
    throw new SignatureRefused(
      'unsigned',
      'the decision is not signed: sign it with your SSH key (KM_HOTFIX_SIGNING_KEY or ssh-agent)',
    );
  }
  let decision: Decision;
  try {
    decision = parseDecisionMessage(signed.message);
  } catch (e) {
    if (e instanceof DecisionMessageError) throw new SignatureRefused('malformed', e.message);
    throw e;
  }
  let sig;
  try {
    sig = parseArmoredSignature(signed.signature);
  } catch (e) {
    if (e instanceof SignatureFormatError) throw new SignatureRefused('malformed', e.message);
    throw e;
  }
  const key = fingerprint(sig.publicKey.blob);
  if (sig.namespace !== NAMESPACE) {
    throw new SignatureRefused(
      'bad-signature',
      `the signature is for namespace '${sig.namespace}', not '${NAMESPACE}': sign with ssh-keygen -Y sign -n ${NAMESPACE}`,
    );
  }
  if (!verifySshSig(sig, signed.message)) {
    throw new SignatureRefused(
      'bad-signature',
      `the signature by ${key} does not verify over this message (altered, or signed for other text)`,
    );
  }
  const signer = findSigner(signers, sig.publicKey.blob, NAMESPACE, when);
  if (!signer || signer.name === null) {
    throw new SignatureRefused(
      'unknown-signer',
      `key ${key} is not a registered signer: ask an administrator to add it to the allowed_signers file`,
    );
  }
  // A delegate's key speaks only for the person its message names; a person's key only for themself.
  if (isDelegate(signer.name)) {
    if (decision.onBehalfOf === undefined) {
      throw new SignatureRefused(
        'not-a-delegate',
        `key ${key} is the delegate ${signer.name}: it signs only for a person named on an 'on-behalf-of' line`,
      );
    }
    // The delegate does not create people: only a name with a line of its own, spelled as the file spells it.
    const person = decision.onBehalfOf;
    if (!peopleOf(signers, NAMESPACE, when).includes(person)) {
      throw new SignatureRefused(
        'unknown-person',
        `${person} is not in the signers file: the delegate ${signer.name} signs only for a person with a line of their own there, spelled as the file spells it`,
      );
    }
    return { by: person, via: signer.name, key, personKeys: keysOf(signers, person, NAMESPACE, when), decision };
  }
  if (decision.onBehalfOf !== undefined) {
    throw new SignatureRefused(
      'not-a-delegate',
      `${signer.name} (${key}) signed for ${decision.onBehalfOf}, but only a delegate key (a principal ending in @delegate in the signers file) may sign for someone else`,
    );
  }
  return { by: signer.name, key, decision };
}
