// The verification gate's Approve / Reject: signed by the server's delegate
// key for the person (`on-behalf-of`) and sent as the same signed Updates as
// the CLI, so the workflow's rules decide.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { decisionMessage, DecisionMessageError, drainedFacts, drainedMismatch, oneLine } from '../domain/decision';
import { gateAnswerRefusal } from '../domain/people';
import type { RolloutStatus } from '../domain/messages/rollout';
import { approveUpdate, rejectUpdate } from '../domain/messages/rollout';
import { recordedDrained } from '../store/ledger-reads';
import { signMessage, Signer } from '../signing/sshsig';
import type { Visitor } from './html';
import { ID, Notice, secure, WebContext } from './context';

type Action = 'approve' | 'reject';

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
    const notice =
      visitor.person === null
        ? { ok: false, text: `${action} refused: ${visitor.why ?? 'no person'}` }
        : await sendDecision(c, c.signer, { id, action, person: visitor.person, comment });
    c.flash.set(sid, { rollout: id, until: Date.now() + 120_000, notice });
    return reply
      .code(303)
      .header('location', `/rollouts/${encodeURIComponent(id)}`)
      .send();
  };
}

/** Sign for the person and send the Update; the workflow's refusal comes back as the notice. */
async function sendDecision(
  c: WebContext,
  signer: Signer,
  d: { id: string; action: Action; person: string; comment: string },
): Promise<Notice> {
  const { id, action, person, comment } = d;
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
  let message: string;
  try {
    message = decisionMessage({
      // The drained backends by the workflow's digest, which the page shows next to their list.
      action,
      rollout: st.id,
      hotfix: st.hotfix,
      sha256: st.sha256,
      canary: st.canary,
      drained: { count: st.gate.drained.count, sha256: st.gate.drained.sha256 },
      comment,
      onBehalfOf: person,
      at: new Date().toISOString(),
    });
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
    return {
      ok: true,
      text:
        action === 'approve'
          ? `approved by ${person}: the rest of the fleet follows`
          : `rejected by ${person}: it rolls back now`,
    };
  } catch (err) {
    if (err instanceof WorkflowUpdateFailedError) {
      const cause = err.cause instanceof Error ? err.cause.message : err.message;
      return { ok: false, text: `${action} refused: ${cause.split('\n')[0]}` };
    }
    throw err;
  }
}
