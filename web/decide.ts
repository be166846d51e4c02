// The verification gate's Approve / Reject: signed by the server's delegate
// key for the person (`on-behalf-of`) and sent as the same signed Updates as
// the CLI, so the workflow's rules decide. Two steps: the first shows the
// exact message to be signed and asks to confirm; the second signs that
// message (its `at` and comment come back with the form, its digest must
// still be what the person saw).
import type { FastifyReply, FastifyRequest } from 'fastify';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import {
  DECISION_MAX_AGE_MS,
  decisionMessage,
  DecisionMessageError,
  drainedFacts,
  drainedMismatch,
  oneLine,
} from '../domain/decision';
import { gateAnswerRefusal } from '../domain/people';
import type { RolloutStatus } from '../domain/messages/rollout';
import { approveUpdate, rejectUpdate } from '../domain/messages/rollout';
import { recordedDrained } from '../store/ledger-reads';
import { signMessage, Signer } from '../signing/sshsig';
import type { Visitor } from './html';
import { ID, Notice, secure, WebContext } from './context';
import { confirmPage, messageDigest } from './gate-html';

export type Action = 'approve' | 'reject';

/** How long a confirmation page stays good: well inside the workflow's age limit for a signature. */
const CONFIRM_MAX_AGE_MS = DECISION_MAX_AGE_MS / 2;

/** The exact message the page signs for `person` about this rollout's gate (throws DecisionMessageError). */
export function gateDecisionMessage(
  st: RolloutStatus,
  d: { action: Action; person: string; comment: string; at: string },
): string {
  if (!st.gate || !st.canary || !st.sha256)
    throw new DecisionMessageError(`rollout ${st.id} is not waiting for verification`);
  return decisionMessage({
    // The drained backends by the workflow's digest, which the page shows next to their list.
    action: d.action,
    rollout: st.id,
    hotfix: st.hotfix,
    sha256: st.sha256,
    canary: st.canary,
    drained: { count: st.gate.drained.count, sha256: st.gate.drained.sha256 },
    comment: d.comment,
    onBehalfOf: d.person,
    at: d.at,
  });
}

/** Why this visitor may not answer this rollout's gate now, or null: the workflow's own rules, asked before anything is signed. */
export function whyNot(c: WebContext, v: Visitor, st: RolloutStatus): string | null {
  if (v.person === null) return v.why ?? null;
  if (!c.signer) return 'this server has no signing key (KM_HOTFIX_WEB_SIGNING_KEY)';
  if (st.kind !== 'rollout' || st.phase !== 'verifying' || !st.gate)
    return `rollout ${st.id} is not waiting for verification`;
  if (st.approvals.length > 0) return `rollout ${st.id} has already been answered`;
  return gateAnswerRefusal(
    { by: v.person, keys: v.keys },
    { requestedBy: st.requestedBy, requestedKey: st.requestedKey, approvers: st.gate.approvers },
  );
}

/** POST /rollouts/:id/approve or /reject: checked, sent, and answered with the rollout's page and a notice. */
export function decideRoute(c: WebContext, action: Action) {
  return async (req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) => {
    const id = req.params.id;
    const why = c.identity.crossSite(req);
    if (why) {
      secure(reply);
      return reply
        .code(403)
        .send(
          `<!doctype html><p>Refused: ${why.replace(/[<>&"']/g, '')} cannot change a rollout. Use the buttons on the rollout's page.</p>`,
        );
    }
    const visitor = await c.identity.visitorOf(req);
    if (!visitor.named || !c.signer)
      return reply
        .code(403)
        .type('text/plain')
        .send('read-only: no person is named by a trusted proxy, or this server has no signing key');
    if (!ID.test(id)) return reply.code(404).type('text/plain').send('no such rollout');
    const sid = c.identity.sessionOf(req);
    const body = req.body as Record<string, string>;
    const comment = oneLine(String((action === 'approve' ? body.comment : body.reason) ?? ''));
    for (const [k, v] of c.flash) if (v.until < Date.now()) c.flash.delete(k);
    // Nobody the file knows: nothing is signed. Everyone else is judged by the workflow.
    let notice: Notice;
    if (visitor.person === null) notice = { ok: false, text: `${action} refused: ${visitor.why ?? 'no person'}` };
    else if (body.confirm !== '1') {
      const step = await confirmStep(c, { id, action, person: visitor.person, comment });
      if ('message' in step) {
        secure(reply);
        return reply.send(confirmPage({ ...step, action, visitor, comment, csrf: body.csrf ?? '' }));
      }
      notice = step;
    } else {
      const at = String(body.at ?? '');
      const age = Date.now() - Date.parse(at);
      notice = !(Math.abs(age) <= CONFIRM_MAX_AGE_MS)
        ? {
            ok: false,
            text: `${action} refused: this confirmation is too old or unreadable; look at the rollout again`,
          }
        : await sendDecision(c, c.signer, {
            id,
            action,
            person: visitor.person,
            comment,
            at,
            digest: String(body.digest ?? ''),
          });
    }
    c.flash.set(sid, { rollout: id, until: Date.now() + 120_000, notice });
    return reply
      .code(303)
      .header('location', `/rollouts/${encodeURIComponent(id)}`)
      .send();
  };
}

/** The first step: the exact message to confirm, or why there is nothing to confirm. */
async function confirmStep(
  c: WebContext,
  d: { id: string; action: Action; person: string; comment: string },
): Promise<{ message: string; status: RolloutStatus } | Notice> {
  const status = await gateStatus(c, d.id, d.action, d.comment);
  if ('text' in status) return status;
  try {
    return { status, message: gateDecisionMessage(status, { ...d, at: new Date().toISOString() }) };
  } catch (err) {
    if (err instanceof DecisionMessageError) return { ok: false, text: `${d.action} refused: ${err.message}` };
    throw err;
  }
}

/** The rollout while its gate waits, with the drained backends the page lists being those signed; else the refusal. */
async function gateStatus(c: WebContext, id: string, action: Action, comment: string): Promise<RolloutStatus | Notice> {
  if (action === 'reject' && !comment) return { ok: false, text: 'reject refused: a rejection needs a reason' };
  const found = await c.read(id);
  const st = found?.status;
  if (!st || !found.live || st.phase !== 'verifying' || !st.canary || !st.sha256 || !st.gate) {
    return {
      ok: false,
      text: `${action} refused: rollout ${id} is not waiting for verification${st ? ` (phase ${st.phase})` : ''}`,
    };
  }
  // What the page lists (the ledger's) must be what is signed (the workflow's digest).
  if (st.gate.drained.count > 0) {
    const listed = drainedFacts(((await recordedDrained(c.orchestrator, id)) ?? []).map((b) => b.server));
    if (drainedMismatch(listed, st.gate.drained, "the workflow's")) {
      return {
        ok: false,
        text: `${action} refused: the drained backends this page lists (${listed.count}) are not the ones rollout ${id} names (${st.gate.drained.count}, sha256:${st.gate.drained.sha256})`,
      };
    }
  }
  return st;
}

/** Sign for the person exactly the message they confirmed and send the Update; the workflow's refusal comes back as the notice. */
async function sendDecision(
  c: WebContext,
  signer: Signer,
  d: { id: string; action: Action; person: string; comment: string; at: string; digest: string },
): Promise<Notice> {
  const { id, action, person } = d;
  const st = await gateStatus(c, id, action, d.comment);
  if ('text' in st) return st;
  let message: string;
  try {
    message = gateDecisionMessage(st, d);
    if (messageDigest(message) !== d.digest)
      return {
        ok: false,
        text: `${action} refused: rollout ${id} changed since you confirmed (the message would differ); look at it again`,
      };
  } catch (err) {
    if (err instanceof DecisionMessageError) return { ok: false, text: `${action} refused: ${err.message}` };
    throw err;
  }
  return sendUpdate(c, id, action, person, { message, signature: await signMessage(signer, message) });
}

async function sendUpdate(
  c: WebContext,
  id: string,
  action: Action,
  person: string,
  signed: { message: string; signature: string },
): Promise<Notice> {
  try {
    await c.client.workflow
      .getHandle(id)
      .executeUpdate(action === 'approve' ? approveUpdate : rejectUpdate, { args: [signed] });
    return action === 'approve'
      ? { ok: true, text: `approved by ${person}: the rest of the fleet follows` }
      : { ok: true, warn: true, text: `rejected by ${person}: it rolls back now` };
  } catch (err) {
    if (err instanceof WorkflowUpdateFailedError) {
      const cause = err.cause instanceof Error ? err.cause.message : err.message;
      return { ok: false, text: `${action} refused: ${cause.split('\n')[0]}` };
    }
    throw err;
  }
}
