// The page's routes that read: the rollouts (who is waiting for whom), one
// rollout (what its gate asks, or its report; its servers and drained
// backends a page at a time from the ledger on a large fleet), and the
// drained list as a decision signs it. The live event stream is web/streams.ts.
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { drainedList } from '../domain/decision';
import { isFinalPhase, SERVER_STATES, ServerState, WORKFLOW_ID_MAX } from '../domain/rollout';
import { drainedPage, recentRollouts, recordedDrained, RolloutSummary, rolloutEvents } from '../store/ledger-reads';
import { serverStates } from '../store/server-states';
import { inventoryServer } from '../store/inventory';
import { drainedSection, esc, rolloutPage, rolloutsPage, Visitor, Waiting } from './html';
import { ID, secure, WebContext } from './context';
import { gateDecisionMessage, whyNot } from './decide';
import { gateForms, gateSection, reportSection } from './gate-html';
import { recordGateShown, rolloutFacts } from './facts';
import type { StatusAnswer } from '../status/read';

/** Servers per page of a large fleet's ledger list on the page. */
const WEB_PAGE_SIZE = 100;

type RolloutRequest = FastifyRequest<{
  Params: { id: string };
  Querystring: { page?: string; state?: string; drained?: string };
}>;

export function registerRoutes(app: FastifyInstance, c: WebContext): void {
  app.get('/', async (req, reply) => {
    c.identity.session(req, reply);
    secure(reply);
    const rows = await recentRollouts(c.orchestrator, 50);
    const visitor = await c.identity.visitorOf(req);
    return rolloutsPage(rows, visitor, await waitingAt(c, rows, visitor));
  });

  // Not fastify's JSON 404: the page's own, with the way back.
  app.setNotFoundHandler(async (req, reply) => {
    secure(reply);
    reply.code(404);
    return notFound(await c.identity.visitorOf(req), 'No such page.');
  });

  app.get('/rollouts/:id', (req: RolloutRequest, reply) => rolloutRoute(c, req, reply));

  // The drained backends as the digest an answer signs is over (sorted, one per line): `sha256sum drained.txt` gives it.
  app.get<{ Params: { id: string } }>('/rollouts/:id/drained.txt', async (req, reply) => {
    const id = req.params.id;
    const drained = ID.test(id) ? await recordedDrained(c.orchestrator, id) : undefined;
    reply.header('cache-control', 'no-store').header('x-content-type-options', 'nosniff');
    if (!drained)
      return reply
        .code(404)
        .type('text/plain; charset=utf-8')
        .send('no drained backends are recorded for this rollout\n');
    return reply.type('text/plain; charset=utf-8').send(drainedList(drained.map((d) => d.server)));
  });
}

function notFound(visitor: Visitor, text: string): string {
  return rolloutsPage([], visitor).replace('<h2>Active</h2>', `<p class="notice refused">${text}</p><h2>Active</h2>`);
}

/** A whole number from 1, else the first page. */
function pageNumber(raw: string | undefined): number {
  const n = Number(raw);
  return Number.isSafeInteger(n) && n >= 1 ? n : 1;
}

async function rolloutRoute(c: WebContext, req: RolloutRequest, reply: FastifyReply): Promise<string> {
  const sid = c.identity.session(req, reply);
  const id = req.params.id;
  const found = ID.test(id) ? await c.read(id) : undefined;
  const nonce = randomBytes(16).toString('base64');
  secure(reply, nonce);
  const visitor = await c.identity.visitorOf(req);
  if (!found) {
    reply.code(404);
    return notFound(visitor, `No rollout with id ${id.replace(/[^A-Za-z0-9._:@-]/g, '?').slice(0, WORKFLOW_ID_MAX)}.`);
  }
  const last = c.flash.get(sid);
  const notice = last && last.rollout === id && last.until > Date.now() ? last.notice : undefined;
  // The buttons only for a person who may decide now; anyone else is told why not.
  const st = found.status;
  const why = visitor.named === null ? null : whyNot(c, visitor, st);
  const canDecide = visitor.person !== null && c.signer !== null && why === null;
  const events = await rolloutEvents(c.orchestrator, id);
  await recordGateShown(c.orchestrator, st, events);
  const facts = await rolloutFacts(c.orchestrator, st, events);
  // A running rollout past its gate: the inventory's URL (a finished one's report names the gate's, or none).
  const canaryUrl =
    facts.canaryUrl ??
    (st.canary && !isFinalPhase(st.phase)
      ? (await inventoryServer(c.orchestrator, st.canary).catch(() => undefined))?.url
      : undefined);
  const serverPage = await ledgerServers(c, id, found, req.query);
  // The drained backends, a page at a time from the ledger: an answer names them by count and digest, the approver reads them here.
  const drained = await drainedPage(c.orchestrator, id, {
    page: pageNumber(req.query.drained),
    pageSize: WEB_PAGE_SIZE,
  });
  const readOnlyWhy = why ? `Read-only for you: ${why}.` : undefined;
  const gate =
    st.phase === 'verifying' && st.gate
      ? gateSection({
          status: st,
          facts,
          visitor,
          drained: drainedSection(st, drained),
          ...(canDecide && visitor.person ? { message: previewMessage(st, visitor.person) } : {}),
          decide:
            canDecide && visitor.person
              ? gateForms(st.id, c.identity.tokenFor(sid))
              : `<p class="muted" id="no-buttons">${esc(readOnlyWhy ?? 'Read-only: sign in through the proxy to approve or reject.')}</p>`,
        })
      : undefined;
  return rolloutPage({
    ...(serverPage ? { serverPage } : {}),
    drainedPage: drained,
    status: st,
    events,
    visitor,
    live: found.live,
    nonce,
    ...(canaryUrl ? { canaryUrl } : {}),
    ...(gate ? { gate } : {}),
    ...(isFinalPhase(st.phase) ? { report: reportSection(st, facts) } : {}),
    restored: facts.restored !== undefined,
    csrf: canDecide ? c.identity.tokenFor(sid) : null,
    ...(readOnlyWhy ? { readOnlyWhy } : {}),
    ...(notice ? { notice } : {}),
  });
}

/** The message an approval with no comment would be, signed now: what the confirmation will show, comment and time filled in. */
function previewMessage(st: StatusAnswer['status'], person: string): string | undefined {
  try {
    return gateDecisionMessage(st, { action: 'approve', person, comment: '', at: new Date().toISOString() });
  } catch {
    return undefined;
  }
}

/** The list's rollouts waiting at their gate: until when, and for whom (one status read each; the others need none). */
async function waitingAt(c: WebContext, rows: RolloutSummary[], visitor: Visitor): Promise<Map<string, Waiting>> {
  const out = new Map<string, Waiting>();
  await Promise.all(
    rows
      .filter((r) => r.phase === 'verifying' && !r.outcome)
      .map(async (r) => {
        const found = await c.read(r.id).catch(() => undefined);
        const gate = found?.status.gate;
        if (!found || !gate) return;
        const st = found.status;
        // Seen here too: a rollout answered from the CLI still keeps the URL its gate gave.
        await recordGateShown(c.orchestrator, st, []);
        const who = gate.approvers.length ? gate.approvers.join(' or ') : `anyone but ${st.requestedBy}`;
        const forYou = visitor.person !== null && c.signer !== null && whyNot(c, visitor, st) === null;
        out.set(r.id, { deadline: gate.deadline, forYou, who });
      }),
  );
  return out;
}

/** Large fleets: a page of the per-server ledger (a bad page or state falls back to the first page of all). */
async function ledgerServers(c: WebContext, id: string, found: StatusAnswer, q: { page?: string; state?: string }) {
  if (found.status.servers) return undefined;
  const state = (SERVER_STATES as readonly string[]).includes(q.state ?? '') ? (q.state as ServerState) : undefined;
  return {
    page: await serverStates(c.orchestrator, id, {
      page: pageNumber(q.page),
      pageSize: WEB_PAGE_SIZE,
      ...(state ? { state } : {}),
    }),
    ...(state ? { state } : {}),
  };
}
