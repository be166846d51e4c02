// The approvers' web page (issue 12): rollouts from the ledger, one rollout
// live from its workflow, and the verification gate's Approve / Reject sent as
// the same signed Updates as the CLI, so the workflow's rules decide.
//
// Who is deciding: the person a trusted reverse proxy names in a header, and
// only when the request comes from one of the proxy's addresses, and only a
// person of the signers file (domain/people.ts), spelled as the file spells
// them. The server signs with its own key, a delegate in the signers file,
// for that person (`on-behalf-of`); the workflow judges the person. No
// person → read-only, saying why.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import fastify, { FastifyReply, FastifyRequest } from 'fastify';
import type { Sql } from 'postgres';
import { Client, WorkflowUpdateFailedError } from '@temporalio/client';
import {
  decisionMessage,
  DecisionMessageError,
  drainedFacts,
  drainedList,
  drainedMismatch,
  oneLine,
} from '../domain/decision';
import { gateAnswerRefusal, NameMatching, personNamed } from '../domain/people';
import { isFinalPhase, RolloutStatus, SERVER_STATES, ServerState, WORKFLOW_ID_MAX } from '../domain/rollout';
import { approveUpdate, rejectUpdate, statusQuery, WORKFLOW_TYPES } from '../workflows/definitions';
import { answerWithin, mergeBatches, QUERY_TIMEOUT_MS, withLedgerView } from '../platform/workflow-status';
import {
  drainedPage,
  ledgerStatus,
  liveLedger,
  recentRollouts,
  recordedDrained,
  rolloutEvents,
  serverStates,
} from '../store/ledger';
import { listInventory, inventoryServer } from '../store/inventory';
import { keyFileSigner } from '../signing/signer';
import { NAMESPACE, signMessage, Signer } from '../signing/sshsig';
import { AllowedSignersError, keysOf, peopleOf, readAllowedSigners } from '../signing/allowed-signers';
import { countsText, rolloutPage, rolloutsPage, Visitor } from './html';

/** Servers per page of a large fleet's ledger list on the page. */
const WEB_PAGE_SIZE = 100;

export interface WebOptions {
  client: Client;
  orchestrator: Sql;
  port?: number;
  host?: string;
  /** Header naming the person (lower case), e.g. x-forwarded-user. */
  identityHeader?: string;
  /** Addresses of the reverse proxy; the header is believed only from these. */
  trustedProxies?: readonly string[];
  /** The server's own private key (a delegate in allowed_signers); without it the page is read-only. */
  signingKey?: string;
  /** The worker's signers file (KM_HOTFIX_ALLOWED_SIGNERS), read for every request: whom the page may sign for. Without it, read-only. */
  allowedSigners?: string;
  /** How the proxy's name matches the file's (KM_HOTFIX_WEB_NAMES): exact unless the proxy's names are case-insensitive. */
  names?: NameMatching;
  /** How often a live page is refreshed (ms). */
  pollMs?: number;
}

export interface WebServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

// Every id the CLI can make (domain/rollout.ts); percent-encoded, a character takes up to three.
const ID = new RegExp(`^[A-Za-z0-9][A-Za-z0-9._:@-]{0,${WORKFLOW_ID_MAX - 1}}$`);
const MAX_PARAM = 3 * WORKFLOW_ID_MAX;
const PERSON = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}$/;
const KINDS = new Set<string>([WORKFLOW_TYPES.rollout, WORKFLOW_TYPES.removal, WORKFLOW_TYPES.upload]);
const COOKIE = 'kmh_session';

/** 127.0.0.1 and ::ffff:127.0.0.1 are the same peer. */
function normalAddress(a: string | undefined): string {
  return (a ?? '').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '');
}

function cookies(req: IncomingMessage): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) out.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  return out;
}

export async function startWebServer(o: WebOptions): Promise<WebServer> {
  const header = (o.identityHeader ?? 'x-forwarded-user').toLowerCase();
  const trusted = new Set((o.trustedProxies ?? []).map(normalAddress));
  const secret = randomBytes(32);
  const signer: Signer | null = o.signingKey ? await keyFileSigner(o.signingKey) : null;
  const pollMs = o.pollMs ?? 700;
  // The outcome of a session's last decision, shown on the rollout's page for a while (the page reloads as phases change).
  const flash = new Map<string, { rollout: string; until: number; notice: { ok: boolean; text: string } }>();

  // forceCloseConnections: a live page's event stream must not hold close() open.
  // maxParamLength: fastify's default (100) is shorter than a long hotfix's rollout id.
  const app = fastify({
    logger: false,
    bodyLimit: 16_384,
    forceCloseConnections: true,
    routerOptions: { maxParamLength: MAX_PARAM },
  });
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(String(body))));
  });

  /** The name the proxy sends, or null: from an untrusted address, or not a plain name, nobody. */
  const namedBy = (req: FastifyRequest): string | null => {
    if (!trusted.has(normalAddress(req.socket.remoteAddress))) return null;
    const v = req.headers[header];
    if (typeof v !== 'string') return null;
    const name = v.trim();
    return PERSON.test(name) ? name : null;
  };

  /** Who is at the keyboard: the file's person the proxy's name is (read afresh: a deleted line counts at once), or why nobody. */
  const visitorOf = async (req: FastifyRequest): Promise<Visitor> => {
    const named = namedBy(req);
    if (named === null) return { named: null, person: null, keys: [] };
    if (!o.allowedSigners)
      return {
        named,
        person: null,
        keys: [],
        why: 'this server has no signers file (KM_HOTFIX_ALLOWED_SIGNERS) to know people by',
      };
    let signers;
    try {
      signers = await readAllowedSigners(o.allowedSigners);
    } catch (err) {
      if (err instanceof AllowedSignersError) return { named, person: null, keys: [], why: err.message };
      throw err;
    }
    const now = new Date();
    const m = personNamed(named, peopleOf(signers, NAMESPACE, now), o.names ?? 'exact');
    if ('refused' in m) return { named, person: null, keys: [], why: m.refused };
    return { named, person: m.person, keys: keysOf(signers, m.person, NAMESPACE, now) };
  };

  /** Why this visitor may not answer this rollout's gate now, or null: the workflow's own rules, asked before anything is signed. */
  const whyNot = (v: Visitor, st: RolloutStatus): string | null => {
    if (v.person === null) return v.why ?? null;
    if (!signer) return 'this server has no signing key (KM_HOTFIX_WEB_SIGNING_KEY)';
    if (st.kind !== 'rollout' || st.phase !== 'verifying' || !st.gate)
      return `rollout ${st.id} is not waiting for verification`;
    if (st.approvals.length > 0) return `rollout ${st.id} has already been answered`;
    return gateAnswerRefusal(
      { by: v.person, keys: v.keys },
      { requestedBy: st.requestedBy, requestedKey: st.requestedKey, approvers: st.gate.approvers },
    );
  };

  /** A session id in a cookie (made on first visit); the CSRF token is derived from it. */
  const session = (req: FastifyRequest, reply: FastifyReply): string => {
    const have = cookies(req.raw).get(COOKIE);
    if (have && /^[A-Za-z0-9_-]{43}$/.test(have)) return have;
    const sid = randomBytes(32).toString('base64url');
    reply.header('set-cookie', `${COOKIE}=${sid}; Path=/; HttpOnly; SameSite=Strict`);
    return sid;
  };
  const tokenFor = (sid: string): string => createHmac('sha256', secret).update(sid).digest('base64url');

  /** Why a state-changing request is refused as cross-site, or null. */
  const crossSite = (req: FastifyRequest): string | null => {
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin') return `a ${String(site)} request`;
    const origin = req.headers.origin;
    if (origin !== undefined) {
      const host =
        trusted.has(normalAddress(req.socket.remoteAddress)) && typeof req.headers['x-forwarded-host'] === 'string'
          ? req.headers['x-forwarded-host']
          : req.headers.host;
      let from: string;
      try {
        from = new URL(origin).host;
      } catch {
        return 'a request from an unreadable origin';
      }
      if (from !== host) return `a request from ${origin}`;
    }
    const sid = cookies(req.raw).get(COOKIE);
    const body = req.body as Record<string, string> | undefined;
    const token = typeof body?.csrf === 'string' ? body.csrf : '';
    if (!sid || token.length === 0) return "a request without this page's form token";
    const want = Buffer.from(tokenFor(sid));
    const got = Buffer.from(token);
    if (want.length !== got.length || !timingSafeEqual(want, got)) return 'a request with a wrong form token';
    return null;
  };

  const roles = async () => new Map((await listInventory(o.orchestrator)).map((s) => [s.name, s.role]));
  const ledger = liveLedger(o.orchestrator);

  /** The workflow's own answer while it runs (batch children merged), its result when done, else the ledger. */
  const readRollout = async (id: string): Promise<{ status: RolloutStatus; live: boolean } | undefined> => {
    const h = o.client.workflow.getHandle(id);
    const desc = await h.describe().catch(() => undefined);
    if (desc && KINDS.has(desc.type)) {
      try {
        if (desc.status.name === 'RUNNING') {
          const st = await answerWithin(o.client, () => h.query(statusQuery), QUERY_TIMEOUT_MS);
          return {
            status: await withLedgerView(await mergeBatches(o.client, st, QUERY_TIMEOUT_MS, ledger), ledger),
            live: true,
          };
        }
        if (desc.status.name === 'COMPLETED') return { status: (await h.result()) as RolloutStatus, live: false };
      } catch {
        // no worker answers, or it just ended: the ledger's record
      }
    }
    const st = await ledgerStatus(o.orchestrator, id, await roles());
    return st ? { status: st, live: false } : undefined;
  };

  const secure = (reply: FastifyReply, nonce = ''): void => {
    reply.header('content-type', 'text/html; charset=utf-8');
    reply.header('cache-control', 'no-store');
    reply.header('x-content-type-options', 'nosniff');
    reply.header('referrer-policy', 'same-origin');
    reply.header(
      'content-security-policy',
      `default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-${nonce}'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'`,
    );
  };

  app.get('/', async (req, reply) => {
    session(req, reply);
    secure(reply);
    return rolloutsPage(await recentRollouts(o.orchestrator, 50), await visitorOf(req));
  });

  // Not fastify's JSON 404: the page's own, with the way back.
  app.setNotFoundHandler(async (req, reply) => {
    secure(reply);
    reply.code(404);
    return rolloutsPage([], await visitorOf(req)).replace(
      '<h2>Active</h2>',
      '<p class="notice refused">No such page.</p><h2>Active</h2>',
    );
  });

  app.get<{ Params: { id: string }; Querystring: { page?: string; state?: string; drained?: string } }>(
    '/rollouts/:id',
    async (req, reply) => {
      const sid = session(req, reply);
      const id = req.params.id;
      const found = ID.test(id) ? await readRollout(id) : undefined;
      const nonce = randomBytes(16).toString('base64');
      secure(reply, nonce);
      const visitor = await visitorOf(req);
      if (!found) {
        reply.code(404);
        return rolloutsPage([], visitor).replace(
          '<h2>Active</h2>',
          `<p class="notice refused">No rollout with id ${id.replace(/[^A-Za-z0-9._:@-]/g, '?').slice(0, WORKFLOW_ID_MAX)}.</p><h2>Active</h2>`,
        );
      }
      const last = flash.get(sid);
      const notice = last && last.rollout === id && last.until > Date.now() ? last.notice : undefined;
      // The buttons only for a person who may decide now; anyone else is told why not.
      const why = visitor.named === null ? null : whyNot(visitor, found.status);
      const canDecide = visitor.person !== null && signer !== null && why === null;
      const canaryUrl = found.status.canary
        ? (await inventoryServer(o.orchestrator, found.status.canary).catch(() => undefined))?.url
        : undefined;
      // Large fleets: a page of the per-server ledger (a bad page or state falls back to the first page of all).
      const want = Number(req.query.page);
      const state = (SERVER_STATES as readonly string[]).includes(req.query.state ?? '')
        ? (req.query.state as ServerState)
        : undefined;
      const serverPage = found.status.servers
        ? undefined
        : {
            page: await serverStates(o.orchestrator, id, {
              page: Number.isSafeInteger(want) && want >= 1 ? want : 1,
              pageSize: WEB_PAGE_SIZE,
              ...(state ? { state } : {}),
            }),
            ...(state ? { state } : {}),
          };
      // The drained backends, a page at a time from the ledger: an answer names them by count and digest, the approver reads them here.
      const wantDrained = Number(req.query.drained);
      const drained = await drainedPage(o.orchestrator, id, {
        page: Number.isSafeInteger(wantDrained) && wantDrained >= 1 ? wantDrained : 1,
        pageSize: WEB_PAGE_SIZE,
      });
      return rolloutPage({
        ...(serverPage ? { serverPage } : {}),
        drainedPage: drained,
        status: found.status,
        events: await rolloutEvents(o.orchestrator, id),
        visitor,
        live: found.live,
        nonce,
        ...(canaryUrl ? { canaryUrl } : {}),
        csrf: canDecide ? tokenFor(sid) : null,
        ...(why ? { readOnlyWhy: `Read-only for you: ${why}.` } : {}),
        ...(notice ? { notice } : {}),
      });
    },
  );

  // The drained backends as the digest an answer signs is over (sorted, one per line): `sha256sum drained.txt` gives it.
  app.get<{ Params: { id: string } }>('/rollouts/:id/drained.txt', async (req, reply) => {
    const id = req.params.id;
    const drained = ID.test(id) ? await recordedDrained(o.orchestrator, id) : undefined;
    reply.header('cache-control', 'no-store').header('x-content-type-options', 'nosniff');
    if (!drained)
      return reply
        .code(404)
        .type('text/plain; charset=utf-8')
        .send('no drained backends are recorded for this rollout\n');
    return reply.type('text/plain; charset=utf-8').send(drainedList(drained.map((d) => d.server)));
  });

  // Server-sent events: the phase and every server's state, sent when they change, until the rollout ends.
  app.get<{ Params: { id: string } }>('/rollouts/:id/events', async (req, reply) => {
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
      const found = await readRollout(id).catch(() => null);
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
      await new Promise((r) => setTimeout(r, pollMs));
    }
    res.end();
  });

  const decide =
    (action: 'approve' | 'reject') => async (req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) => {
      const id = req.params.id;
      const why = crossSite(req);
      if (why) {
        secure(reply);
        return reply
          .code(403)
          .send(
            `<!doctype html><p>Refused: ${why.replace(/[<>&"']/g, '')} cannot change a rollout. Use the buttons on the rollout's page.</p>`,
          );
      }
      const visitor = await visitorOf(req);
      if (!visitor.named || !signer)
        return reply
          .code(403)
          .type('text/plain')
          .send('read-only: no person is named by a trusted proxy, or this server has no signing key');
      if (!ID.test(id)) return reply.code(404).type('text/plain').send('no such rollout');
      const sid = cookies(req.raw).get(COOKIE) ?? '';
      const body = req.body as Record<string, string>;
      const comment = oneLine(String((action === 'approve' ? body.comment : body.reason) ?? ''));
      for (const [k, v] of flash) if (v.until < Date.now()) flash.delete(k);
      // Nobody the file knows: nothing is signed. Everyone else is judged by the workflow.
      const notice =
        visitor.person === null
          ? { ok: false, text: `${action} refused: ${visitor.why ?? 'no person'}` }
          : await sendDecision(id, action, visitor.person, comment);
      flash.set(sid, { rollout: id, until: Date.now() + 120_000, notice });
      return reply
        .code(303)
        .header('location', `/rollouts/${encodeURIComponent(id)}`)
        .send();
    };

  /** Sign for the person and send the Update; the workflow's refusal comes back as the notice. */
  const sendDecision = async (
    id: string,
    action: 'approve' | 'reject',
    person: string,
    comment: string,
  ): Promise<{ ok: boolean; text: string }> => {
    if (action === 'reject' && !comment) return { ok: false, text: 'reject refused: a rejection needs a reason' };
    const found = await readRollout(id);
    const st = found?.status;
    if (!st || !found.live || st.phase !== 'verifying' || !st.canary || !st.sha256 || !st.gate) {
      return {
        ok: false,
        text: `${action} refused: rollout ${id} is not waiting for verification${st ? ` (phase ${st.phase})` : ''}`,
      };
    }
    // What the page lists (the ledger's) must be what is signed (the workflow's digest).
    if (st.gate.drained.count > 0) {
      const listed = drainedFacts(((await recordedDrained(o.orchestrator, id)) ?? []).map((d) => d.server));
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
    const signed = { message, signature: await signMessage(signer as Signer, message) };
    try {
      await o.client.workflow
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
  };

  app.post('/rollouts/:id/approve', decide('approve'));
  app.post('/rollouts/:id/reject', decide('reject'));

  const address = await app.listen({ port: o.port ?? 0, host: o.host ?? '127.0.0.1' });
  const port = (app.server.address() as { port: number }).port;
  return {
    url: address.replace('0.0.0.0', '127.0.0.1'),
    port,
    close: async () => {
      await app.close();
    },
  };
}
