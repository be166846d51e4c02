// Signing a decision on the command line (SPEC §7): the canonical message,
// signed with KM_HOTFIX_SIGNING_KEY or else the ssh-agent's first key that is
// a registered signer. The CLI only signs; the workflow decides.
import { promises as fs } from 'node:fs';
import { Decision, decisionMessage, DecisionMessageError, oneLine } from '../../domain/decision';
import type { RolloutStatus, SignedDecision } from '../../domain/messages/rollout';
import type { Config } from '../../platform/config';
import { agentKeys, agentSigner, keyFileSigner, SigningKeyError } from '../../signing/signer';
import {
  NAMESPACE,
  parseArmoredSignature,
  signMessage,
  Signer,
  signatureKeyFingerprint,
  SignatureFormatError,
} from '../../signing/sshsig';
import { readAllowedSigners, findSigner, peopleOf } from '../../signing/allowed-signers';
import { personNamed } from '../../domain/people';
import { fingerprint } from '../../signing/keys';
import { CliError, EXIT } from '../errors';
import { signer as signerText } from '../render/status';

export type UnsignedDecision = Omit<Decision, 'at' | 'comment'> & { comment?: string };

/** The message for a decision made now; a comment is made one line. */
export function messageFor(d: UnsignedDecision, now = new Date()): string {
  try {
    return decisionMessage({ ...d, comment: oneLine(d.comment ?? ''), at: now.toISOString() });
  } catch (err) {
    if (err instanceof DecisionMessageError) throw new CliError(err.message, EXIT.refused);
    throw err;
  }
}

/** Whose key signs: KM_HOTFIX_SIGNING_KEY, else the agent's first key that the signers file (when readable here) lists. */
export async function signerFor(cfg: Config): Promise<Signer> {
  try {
    if (cfg.signingKey) return await keyFileSigner(cfg.signingKey);
    if (!cfg.sshAgent) {
      throw new CliError(
        'no key to sign with: set KM_HOTFIX_SIGNING_KEY to your SSH private key file (ssh-keygen -t ed25519), or add your key to ssh-agent (SSH_AUTH_SOCK)',
        EXIT.refused,
      );
    }
    const keys = await agentKeys(cfg.sshAgent);
    if (keys.length === 0)
      throw new CliError(
        `the ssh-agent at ${cfg.sshAgent} holds no key: ssh-add yours, or set KM_HOTFIX_SIGNING_KEY`,
        EXIT.refused,
      );
    const signers = cfg.allowedSigners
      ? await readAllowedSigners(cfg.allowedSigners).catch(() => undefined)
      : undefined;
    if (!signers) return agentSigner(cfg.sshAgent, keys[0]);
    const registered = keys.find((k) => findSigner(signers, k, NAMESPACE, new Date()));
    if (!registered) {
      throw new CliError(
        `none of the ssh-agent's keys (${keys.map((k) => fingerprint(k)).join(', ')}) is in ${cfg.allowedSigners}: ask an administrator to add yours, or set KM_HOTFIX_SIGNING_KEY`,
        EXIT.refused,
      );
    }
    return agentSigner(cfg.sshAgent, registered);
  } catch (err) {
    if (err instanceof SigningKeyError) throw new CliError(err.message, EXIT.refused);
    throw err;
  }
}

/** Sign a decision made now. */
export async function signDecision(cfg: Config, d: UnsignedDecision): Promise<SignedDecision> {
  const signer = await signerFor(cfg);
  const message = messageFor(d);
  try {
    return { message, signature: await signMessage(signer, message) };
  } catch (err) {
    if (err instanceof SigningKeyError) throw new CliError(err.message, EXIT.refused);
    throw err;
  }
}

/** A decision signed elsewhere (`--message FILE --signature FILE`): read as-is, the workflow checks it. */
export async function readSignedDecision(messageFile: string, signatureFile: string): Promise<SignedDecision> {
  const read = async (file: string, what: string): Promise<string> => {
    try {
      return await fs.readFile(file, 'utf8');
    } catch (err) {
      throw new CliError(
        `cannot read the ${what} ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
        EXIT.refused,
      );
    }
  };
  const signed = { message: await read(messageFile, 'message'), signature: await read(signatureFile, 'signature') };
  try {
    signatureKeyFingerprint(signed.signature);
  } catch (err) {
    if (err instanceof SignatureFormatError) throw new CliError(`${signatureFile}: ${err.message}`, EXIT.refused);
    throw err;
  }
  return signed;
}

/**
 * Who the signers file names for the key of this signature, when the file is
 * readable here (KM_HOTFIX_ALLOWED_SIGNERS): lets the CLI refuse early what
 * the workflow would refuse anyway. Undefined when it cannot tell.
 */
export async function localSignerName(cfg: Config, signed: SignedDecision): Promise<string | undefined> {
  if (!cfg.allowedSigners) return undefined;
  const signers = await readAllowedSigners(cfg.allowedSigners).catch(() => undefined);
  if (!signers) return undefined;
  try {
    const blob = parseArmoredSignature(signed.signature).publicKey.blob;
    return findSigner(signers, blob, NAMESPACE, new Date())?.name ?? undefined;
  } catch {
    return undefined;
  }
}

/**
 * An --approvers name that is no person of the signers file, when the file is
 * readable here: nobody could ever answer as them (names are compared as the
 * file spells them). Undefined when all are people, or when it cannot tell.
 */
export async function strangerApprover(cfg: Config, approvers: readonly string[]): Promise<string | undefined> {
  if (!cfg.allowedSigners || approvers.length === 0) return undefined;
  const signers = await readAllowedSigners(cfg.allowedSigners).catch(() => undefined);
  if (!signers) return undefined;
  const people = peopleOf(signers, NAMESPACE, new Date());
  for (const a of approvers) {
    const m = personNamed(a, people);
    if ('refused' in m) return m.refused;
  }
  return undefined;
}

/** The person the workflow recorded for this signature (the name comes from the signers file, not from us). */
export function signerOf(st: RolloutStatus, signed: SignedDecision): string {
  const d = st.decisions.find((x) => x.signature === signed.signature);
  return d ? signerText(d.by, d.key, d.via) : 'you';
}
