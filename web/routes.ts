// The page's routes that read: the rollouts, one rollout (its servers and
// drained backends a page at a time from the ledger on a large fleet), the
// drained list as a decision signs it, and the live event stream.
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { drainedList } from '../domain/decision';
import { isFinalPhase, SERVER_STATES, ServerState, WORKFLOW_ID_MAX } from '../domain/rollout';
import { drainedPage, recentRollouts, recordedDrained, rolloutEvents } from '../store/ledger-reads';
import { serverStates } from '../store/server-states';
import { inventoryServer } from '../store/inventory';
import { countsText, rolloutPage, rolloutsPage, Visitor } from './html';
import { ID, secure, WebContext } from './context';
import { whyNot } from './decide';
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
    return rolloutsPage(await recentRollouts(c.orchestrator, 50), await c.identity.visitorOf(req));
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

  app.get<{ Params: { id: string } }>('/rollouts/:id/events', (req, reply) => eventStream(c, req, reply));
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
  const why = visitor.named === null ? null : whyNot(c, visitor, found.status);
  const canDecide = visitor.person !== null && c.signer !== null && why === null;
  const canaryUrl = found.status.canary
    ? (await inventoryServer(c.orchestrator, found.status.canary).catch(() => undefined))?.url
    : undefined;
  const serverPage = await ledgerServers(c, id, found, req.query);
  // The drained backends, a page at a time from the ledger: an answer names them by count and digest, the approver reads them here.
  const drained = await drainedPage(c.orchestrator, id, {
    page: pageNumber(req.query.drained),
    pageSize: WEB_PAGE_SIZE,
  });
  return rolloutPage({
    ...(serverPage ? { serverPage } : {}),
    drainedPage: drained,
    status: found.status,
    events: await rolloutEvents(c.orchestrator, id),
    visitor,
    live: found.live,
    nonce,
    ...(canaryUrl ? { canaryUrl } : {}),
    csrf: canDecide ? c.identity.tokenFor(sid) : null,
    ...(why ? { readOnlyWhy: `Read-only for you: ${why}.` } : {}),
    ...(notice ? { notice } : {}),
  });
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

/** Server-sent events: the phase and every server's state, sent when they change, until the rollout ends. */
async function eventStream(c: WebContext, req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) {
  const id = req.params.id;
  if (!ID.test(id)) return reply.code(404).send('no such rollout');
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
  let open = true;
  req.raw.on('close', () => {
    open = false;
  });
  let last = '';
  while (open) {
    const found = await c.read(id).catch(() => null);
    if (found === undefined) break; // no such rollout: nothing will ever change
    if (found) {
      // A large fleet's status has counts, not servers (domain/rollout.ts FULL_SERVER_LIST_MAX).
      const st = found.status;
      const data = JSON.stringify(
        st.servers
          ? { phase: st.phase, servers: st.servers.map((s) => ({ name: s.name, state: s.state })) }
          : { phase: st.phase, counts: countsText(st) },
      );
      if (data !== last && open) res.write(`data: ${data}\n\n`);
      last = data;
      if (isFinalPhase(found.status.phase) || !found.live) break;
    }
    await new Promise((r) => setTimeout(r, c.pollMs));
  }
  res.end();
}
