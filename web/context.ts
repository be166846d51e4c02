// What the page's routes share: the options, who is asking, the signer, the
// notices of sessions' last decisions, and the one status reader.
import type { FastifyReply } from 'fastify';
import type { Sql } from 'postgres';
import type { Client } from '@temporalio/client';
import { WORKFLOW_ID_MAX } from '../domain/rollout';
import type { Signer } from '../signing/sshsig';
import type { StatusAnswer } from '../status/read';
import type { Identity } from './identity';

export interface Notice {
  ok: boolean;
  text: string;
  /** A decision sent that stops the rollout (a rejection): shown as a warning, not a success. */
  warn?: boolean;
}

export interface WebContext {
  client: Client;
  orchestrator: Sql;
  identity: Identity;
  /** The server's own key, a delegate in the signers file; null: read-only. */
  signer: Signer | null;
  /** How often a live page is refreshed (ms). */
  pollMs: number;
  /** The outcome of a session's last decision, shown on the rollout's page for a while (the page reloads as phases change). */
  flash: Map<string, { rollout: string; until: number; notice: Notice }>;
  /** A rollout's status: the workflow's while it runs, its result once done, else the ledger's (status/read.ts). */
  read(id: string): Promise<StatusAnswer | undefined>;
}

// Every id the CLI can make (domain/rollout.ts); percent-encoded, a character takes up to three.
export const ID = new RegExp(`^[A-Za-z0-9][A-Za-z0-9._:@-]{0,${WORKFLOW_ID_MAX - 1}}$`);
export const MAX_PARAM = 3 * WORKFLOW_ID_MAX;

/** The headers of every HTML answer: no caching, no sniffing, a strict content policy (scripts by nonce only). */
export function secure(reply: FastifyReply, nonce = ''): void {
  reply.header('content-type', 'text/html; charset=utf-8');
  reply.header('cache-control', 'no-store');
  reply.header('x-content-type-options', 'nosniff');
  reply.header('referrer-policy', 'same-origin');
  reply.header(
    'content-security-policy',
    `default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-${nonce}'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'`,
  );
}
