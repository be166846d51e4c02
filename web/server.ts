// The approvers' web page (issue 12): rollouts from the ledger, one rollout
// live from its workflow, and the verification gate's Approve / Reject sent as
// the same signed Updates as the CLI, so the workflow's rules decide.
//
// Who is deciding (web/identity.ts): the person a trusted reverse proxy
// names, and only a person of the signers file. The server signs with its
// own key, a delegate in the signers file, for that person (`on-behalf-of`;
// web/decide.ts); the workflow judges the person. The reading routes are in
// web/routes.ts, and every status comes from status/read.ts.
import fastify from 'fastify';
import type { Sql } from 'postgres';
import type { Client } from '@temporalio/client';
import { liveLedger } from '../store/server-states';
import { keyFileSigner } from '../signing/signer';
import { isNoAnswer, readRollout } from '../status/read';
import { QUERY_TIMEOUT_MS } from '../status/live';
import { statusFromLedger } from '../status/from-ledger';
import { Identity, IdentityOptions } from './identity';
import { MAX_PARAM, WebContext } from './context';
import { registerRoutes } from './routes';
import { decideRoute } from './decide';

export interface WebOptions extends IdentityOptions {
  client: Client;
  orchestrator: Sql;
  port?: number;
  host?: string;
  /** The server's own private key (a delegate in allowed_signers); without it the page is read-only. */
  signingKey?: string;
  /** How often a live page is refreshed (ms). */
  pollMs?: number;
}

export interface WebServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

export async function startWebServer(o: WebOptions): Promise<WebServer> {
  const ledger = liveLedger(o.orchestrator);
  const c: WebContext = {
    client: o.client,
    orchestrator: o.orchestrator,
    identity: new Identity(o),
    signer: o.signingKey ? await keyFileSigner(o.signingKey) : null,
    pollMs: o.pollMs ?? 700,
    flash: new Map(),
    // Any missing answer from Temporal (gone, silent, unreachable, ended without an outcome): the ledger's record.
    read: async (id) => {
      const a = await readRollout(o.client, id, {
        queryTimeoutMs: QUERY_TIMEOUT_MS,
        ledger,
        fromLedger: (x) => statusFromLedger(o.orchestrator, x),
      });
      return isNoAnswer(a) ? undefined : a;
    },
  };

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
  registerRoutes(app, c);
  app.post('/rollouts/:id/approve', decideRoute(c, 'approve'));
  app.post('/rollouts/:id/reject', decideRoute(c, 'reject'));

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
