// Checking one signed decision: the SSHSIG verifies in the km-hotfix namespace,
// the key is on a line of the signers file, and the message is a canonical
// decision. Whether its facts fit the rollout is domain/decision's business.
import { Decision, parseDecisionMessage, DecisionMessageError } from '../domain/decision';
import { AllowedSigner, findSigner } from './allowed-signers';
import { fingerprint } from './keys';
import { NAMESPACE, parseArmoredSignature, SignatureFormatError, verifySshSig } from './sshsig';

export const REFUSALS = ['unsigned', 'malformed', 'bad-signature', 'unknown-signer'] as const;
export type SignatureRefusal = (typeof REFUSALS)[number];

export class SignatureRefused extends Error {
  override name = 'SignatureRefused';
  constructor(readonly refusal: SignatureRefusal, message: string) {
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
  /** The person: the name on the signers line whose key verified. */
  by: string;
  /** SHA256 fingerprint of the key. */
  key: string;
  decision: Decision;
}

/** Verify a signed decision against the signers; throws SignatureRefused saying why. */
export function verifySignedDecision(signed: Partial<SignedDecision> | undefined, signers: readonly AllowedSigner[], when: Date): VerifiedDecision {
  if (!signed || typeof signed.message !== 'string' || typeof signed.signature !== 'string' || signed.signature === '') {
    throw new SignatureRefused('unsigned', 'the decision is not signed: sign it with your SSH key (KM_HOTFIX_SIGNING_KEY or ssh-agent)');
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
    throw new SignatureRefused('bad-signature', `the signature is for namespace '${sig.namespace}', not '${NAMESPACE}': sign with ssh-keygen -Y sign -n ${NAMESPACE}`);
  }
  if (!verifySshSig(sig, signed.message)) {
    throw new SignatureRefused('bad-signature', `the signature by ${key} does not verify over this message (altered, or signed for other text)`);
  }
  const signer = findSigner(signers, sig.publicKey.blob, NAMESPACE, when);
  if (!signer || signer.name === null) {
    throw new SignatureRefused('unknown-signer', `key ${key} is not a registered signer: ask an administrator to add it to the allowed_signers file`);
  }
  return { by: signer.name, key, decision };
}
