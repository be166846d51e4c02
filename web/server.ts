// The approvers' web page (issue 12): rollouts from the ledger, one rollout
// live from its workflow, and the verification gate's Approve / Reject sent as
// the same signed Updates as the CLI, so the workflow's rules decide.
//
// Who is deciding (web/identity.ts): the person a trusted reverse proxy
// names, and only a person of the signers file. The server signs with its
// own key, a delegate in the signers file, for that person (`on-behalf-of`;
// web/decide.ts); the workflow judges the person. The reading routes are in
// web/routes.ts, and every status comes from status/read.ts. The live
// pages' streams share one poll per rollout (web/streams.ts).
import fastify from 'fastify';
import type { Sql } from 'postgres';
import type { Client } from '@temporalio/client';
import { liveLedger } from '../store/server-states';
import { keyFileSigner } from '../signing/signer';
import { isNoAnswer, readRollout } from '../status/read';
import { QUERY_TIMEOUT_MS } from '../status/live';
import { statusFromLedger } from '../status/from-ledger';
import { AnonymousAccess, AnonymousAccessError, parseAnonymousAccess } from '../domain/people';
import { UserError } from '../platform/errors';
import { Identity, IdentityOptions } from './identity';
import { MAX_PARAM, WebContext } from './context';
import { registerRoutes } from './routes';
import { decideRoute } from './decide';
import { DEFAULT_STREAM_LIMITS, StreamLimits, Streams } from './streams';

export interface WebOptions extends IdentityOptions {
  client: Client;
  orchestrator: Sql;
  port?: number;
  host?: string;
  /** The server's own private key (a delegate in allowed_signers); without it the page is read-only. */
  signingKey?: string;
  /** How often a live page is refreshed (ms). */
  pollMs?: number;
  /** Caps on the live pages' event streams (default DEFAULT_STREAM_LIMITS). */
  streams?: Partial<StreamLimits>;
  /** The status reader (default statusReader): tests count its calls. */
  read?: WebContext['read'];
}

export interface WebServer {
  url: string;
  port: number;
  /** Event streams open now, and rollouts polled for them. */
  streams(): { streams: number; polls: number };
  close(): Promise<void>;
}

/** A rollout's status as the page reads it: any missing answer from Temporal (gone, silent, unreachable, ended without an outcome) is the ledger's record. */
export function statusReader(client: Client, orchestrator: Sql): WebContext['read'] {
  const ledger = liveLedger(orchestrator);
  return async (id) => {
    const a = await readRollout(client, id, {
      queryTimeoutMs: QUERY_TIMEOUT_MS,
      ledger,
      fromLedger: (x) => statusFromLedger(orchestrator, x),
    });
    return isNoAnswer(a) ? undefined : a;
  };
}

/** KM_HOTFIX_WEB_ANONYMOUS, or a refusal in one line (the CLI's exit 2). */
function anonymousFromEnv(): AnonymousAccess {
  try {
    return parseAnonymousAccess(process.env.KM_HOTFIX_WEB_ANONYMOUS);
  } catch (err) {
    if (err instanceof AnonymousAccessError) throw new UserError(err.message, 'refused');
    throw err;
  }
}

export async function startWebServer(o: WebOptions): Promise<WebServer> {
  // KM_HOTFIX_WEB_ANONYMOUS is read here: the page's own setting, whoever starts it.
  const anonymous = o.anonymous ?? anonymousFromEnv();
  const c: WebContext = {
    client: o.client,
    orchestrator: o.orchestrator,
    identity: new Identity({ ...o, anonymous }),
    signer: o.signingKey ? await keyFileSigner(o.signingKey) : null,
    pollMs: o.pollMs ?? 700,
    flash: new Map(),
    read: o.read ?? statusReader(o.client, o.orchestrator),
  };
  const streams = new Streams(c, { ...DEFAULT_STREAM_LIMITS, ...o.streams });

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
  // KM_HOTFIX_WEB_ANONYMOUS=none: nobody named, nothing shown (one line, 401).
  app.addHook('onRequest', async (req, reply) => {
    const why = c.identity.readRefusal(req);
    if (why)
      return reply.code(401).type('text/plain; charset=utf-8').header('cache-control', 'no-store').send(`${why}\n`);
  });
  registerRoutes(app, c);
  app.get<{ Params: { id: string } }>('/rollouts/:id/events', (req, reply) =>
    streams.route(req, reply, c.identity.clientOf(req)),
  );
  app.post('/rollouts/:id/approve', decideRoute(c, 'approve'));
  app.post('/rollouts/:id/reject', decideRoute(c, 'reject'));

  const address = await app.listen({ port: o.port ?? 0, host: o.host ?? '127.0.0.1' });
  const port = (app.server.address() as { port: number }).port;
  return {
    url: address.replace('0.0.0.0', '127.0.0.1'),
    port,
    streams: () => streams.counts,
    close: async () => {
      await app.close();
    },
  };
}
