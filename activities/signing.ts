// Signed decisions (SPEC §7): the one check the workflow cannot make alone,
// because it reads the trust root, the worker's allowed_signers file
// (KM_HOTFIX_ALLOWED_SIGNERS). The file is read afresh for every check, so
// deleting a line revokes that key at once, even for a rollout that waits.
import type { SignedDecision } from '../domain/messages/rollout';
import { readAllowedSigners, AllowedSignersError } from '../signing/allowed-signers';
import { verifySignedDecision, SignatureRefused, SignatureRefusal } from '../signing/verify';

/** A verification is an answer, not a failure: a refusal is returned (never retried), with the reason for the caller. */
export type VerifyOutcome =
  | { ok: true; by: string; key: string; via?: string; personKeys?: string[] }
  | { ok: false; refusal: SignatureRefusal | 'no-signers'; reason: string };

export function signingActivities(deps: { allowedSigners: string }) {
  return {
    async verifyDecision(input: { signed: SignedDecision; at: string }): Promise<VerifyOutcome> {
      let signers;
      try {
        signers = await readAllowedSigners(deps.allowedSigners);
      } catch (err) {
        if (err instanceof AllowedSignersError) {
          return {
            ok: false,
            refusal: 'no-signers',
            reason: `the worker cannot check signatures: ${err.message} (KM_HOTFIX_ALLOWED_SIGNERS)`,
          };
        }
        throw err;
      }
      try {
        const v = verifySignedDecision(input.signed, signers, new Date(input.at));
        return {
          ok: true,
          by: v.by,
          key: v.key,
          ...(v.via ? { via: v.via } : {}),
          ...(v.personKeys ? { personKeys: v.personKeys } : {}),
        };
      } catch (err) {
        if (err instanceof SignatureRefused) return { ok: false, refusal: err.refusal, reason: err.message };
        throw err;
      }
    },
  };
}
