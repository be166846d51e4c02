// Helpers shared by the workflow commands: option parsers, the Temporal and
// database sessions, and a workflow's status (status/read.ts) with the CLI's
// one-line errors and exit codes for why there is none.
import { randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import type { Client } from '@temporalio/client';
import { loadConfig, Config } from '../../platform/config';
import { CliError, EXIT, ExitCode } from '../errors';
import { connectClient, TemporalClient } from '../../platform/temporal';
import { connectDatabase, connectOrchestrator, openDatabases, requireDatabaseUrl } from '../../store/database';
import { KeyManagerDatabase } from '../../keymanager/database';
import { isFinalPhase, WorkflowKind, workflowId, WORKFLOW_ID_SUFFIX_BYTES } from '../../domain/rollout';
import { RolloutStatus } from '../../domain/messages/rollout';
import { parseDuration, PlanError } from '../../domain/plan';
import { LedgerView, QUERY_TIMEOUT_MS } from '../../status/live';
import { type Described, describeRollout, isNoAnswer, type NoAnswer, temporalStatus } from '../../status/read';
import { liveLedger } from '../../store/server-states';
import { idsLike, newestWorkflow } from '../../store/workflow-ids';
import { candidateLines, isFullWorkflowId, kindWords, LAST, matchWorkflowId } from '../../domain/workflow-ref';

// Option parsers throw CliError, not commander's own error type: commander
// would add a usage line, and SPEC §4 wants one line on stderr.

/** Comma-separated names (`--servers a,b`), empty parts rejected. */
export function nameList(flag: string) {
  return (value: string): string[] => {
    const parts = value.split(',').map((s) => s.trim());
    if (parts.length === 0 || parts.some((p) => p === ''))
      throw new CliError(`${flag} takes comma-separated names such as a,b (got '${value}')`, EXIT.refused);
    return parts;
  };
}

export function wholeNumber(flag: string, min = 0) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min)
      throw new CliError(`${flag} must be a whole number >= ${min} (got '${value}')`, EXIT.refused);
    return n;
  };
}

/** A duration flag parsed with the plan's grammar (PlanError → one-line refusal). */
export function duration(flag: string) {
  return (value: string): number => {
    try {
      return parseDuration(value, flag);
    } catch (err) {
      if (err instanceof PlanError) throw new CliError(err.message, EXIT.refused);
      throw err;
    }
  };
}

/** Run fn with a Temporal client; always closes it. */
export async function withTemporal<T>(config: Config, fn: (client: Client) => Promise<T>): Promise<T> {
  const t: TemporalClient = await connectClient(config);
  try {
    return await fn(t.client);
  } finally {
    await t.close().catch(() => undefined);
  }
}

export interface Databases {
  orchestrator: Sql;
  kmDb: KeyManagerDatabase;
}

async function closeAll(opened: Sql[]): Promise<void> {
  await Promise.all(opened.map((s) => s.end({ timeout: 5 }).catch(() => undefined)));
}

/** Both databases, connected (orchestrator migrated); closed after fn. */
export async function withDatabases<T>(config: Config, fn: (db: Databases) => Promise<T>): Promise<T> {
  const db = await openDatabases(config, { kmMax: 2 });
  try {
    return await fn({ orchestrator: db.orchestrator, kmDb: new KeyManagerDatabase(db.km) });
  } finally {
    await db.close();
  }
}

/** The orchestrator database alone (ledger, inventory). */
export async function withOrchestrator<T>(config: Config, fn: (sql: Sql) => Promise<T>): Promise<T> {
  const sql = await connectOrchestrator(config);
  try {
    return await fn(sql);
  } finally {
    await closeAll([sql]);
  }
}

/** The Key Manager database alone (read-only here). */
export async function withKeyManager<T>(config: Config, fn: (kmDb: KeyManagerDatabase) => Promise<T>): Promise<T> {
  const sql = await connectDatabase(requireDatabaseUrl(config, 'Key Manager'), 'Key Manager', { max: 2 });
  try {
    return await fn(new KeyManagerDatabase(sql));
  } finally {
    await closeAll([sql]);
  }
}

export function config(): Config {
  return loadConfig();
}

/** A new workflow id for this kind and hotfix. */
export function newWorkflowId(kind: WorkflowKind, hotfix: string): string {
  return workflowId(kind, hotfix, new Date(), randomBytes(WORKFLOW_ID_SUFFIX_BYTES).toString('hex'));
}

/** The one line and exit code for a missing answer (an unreachable Temporal is its own error). */
export function noAnswerError(id: string, n: NoAnswer): Error {
  switch (n.why) {
    case 'bad-id':
      return new CliError(`'${id}' is not a workflow id: 'km-hotfix list' shows recent ones`, EXIT.refused);
    case 'not-found':
      return new CliError(
        `no rollout, removal or upload with id '${id}': 'km-hotfix list' shows recent ones`,
        EXIT.refused,
      );
    case 'not-ours':
      return new CliError(
        `'${id}' is a ${n.type} workflow, not a km-hotfix rollout, removal or upload: 'km-hotfix list' shows those`,
        EXIT.refused,
      );
    case 'ended':
      return new CliError(
        `${id} ended ${n.status.toLowerCase()} in Temporal, without a km-hotfix outcome: see its history in the Temporal UI; 'km-hotfix list' shows its last recorded phase`,
        EXIT.failed,
      );
    case 'silent':
      return new CliError(
        `${id} does not answer its status query (${firstLine(n.error)}): is a worker running on task queue '${config().taskQueue}'? ('km-hotfix worker' or 'km-hotfix dev')`,
        EXIT.unreachable,
      );
    case 'unreachable':
      return n.error instanceof Error ? n.error : new Error(String(n.error));
  }
}

/** How an ID argument may be typed (resolveWorkflowId). */
export const ID_HELP =
  "the workflow's id, or any unique start or end of it (e.g. its hex suffix 5140af), or 'last' for the newest";

/** Every kind of workflow: what `status` and `audit` read. */
export const ANY_KIND: readonly WorkflowKind[] = ['rollout', 'removal', 'upload'];

/**
 * The workflow id a person means (domain/workflow-ref.ts): a full id as it is,
 * with no look-up; `last` (the newest of `kinds`), a unique prefix or a unique
 * trailing part from the ledger, where 'km-hotfix list' reads them. Several
 * match: exit 2 listing them. None: the text as typed, so that Temporal says
 * whether it knows it (an id the ledger has not recorded yet still works).
 */
export async function resolveWorkflowId(
  cfg: Config,
  typed: string,
  kinds: readonly WorkflowKind[] = ANY_KIND,
): Promise<string> {
  if (typed === '' || /[\s\0]/.test(typed) || isFullWorkflowId(typed)) return typed;
  if (!cfg.databaseUrl) {
    if (typed !== LAST) return typed;
    throw new CliError(
      "'last' is read from the ledger, like 'km-hotfix list': set DATABASE_URL, or give the full id",
      EXIT.refused,
    );
  }
  const read = await withOrchestrator(cfg, async (sql) => {
    if (typed !== LAST) return idsLike(sql, typed);
    const newest = await newestWorkflow(sql, kinds);
    return { candidates: newest ? [newest] : [], total: newest ? 1 : 0 };
  }).catch((err: unknown) => {
    // The ledger unreachable: an id typed whole still reaches Temporal, as before ids could be shortened.
    if (typed === LAST) throw err;
    return undefined;
  });
  if (!read) return typed;
  const m = matchWorkflowId(typed, read.candidates, kinds);
  if ('found' in m) return m.found;
  if ('ambiguous' in m)
    throw new CliError(
      `${read.total} ids begin or end with '${typed}': type more of the one you mean (or its full id from 'km-hotfix list')`,
      EXIT.refused,
      candidateLines(m.ambiguous, read.total),
    );
  if (typed === LAST)
    throw new CliError(
      `'last' is the newest ${kindWords(kinds)}, and the ledger has none yet: 'km-hotfix list' shows what there is`,
      EXIT.refused,
    );
  return typed;
}

/** The workflow behind an id, or exit 2 saying how to find ids. */
export async function describeWorkflow(client: Client, id: string): Promise<Described> {
  const d = await describeRollout(client, id);
  if (isNoAnswer(d)) throw noAnswerError(id, d);
  return d;
}

/**
 * The ledger's view of a large fleet's live status, for the life of one
 * command: connected on first use (a small fleet's status never asks), none
 * without an orchestrator database URL.
 */
export function ledgerViewFor(cfg: Config): { view?: LedgerView; close(): Promise<void> } {
  if (!cfg.databaseUrl) return { close: () => Promise.resolve() };
  const url = cfg.databaseUrl;
  let live: Promise<{ sql: Sql; view: LedgerView }> | undefined;
  const open = () =>
    (live ??= connectDatabase(url, 'orchestrator', { max: 2 }).then((sql) => ({ sql, view: liveLedger(sql) })));
  return {
    view: {
      counts: async (id) => (await open()).view.counts(id),
      inStates: async (id, states, limit) => (await open()).view.inStates(id, states, limit),
      of: async (id, names) => (await open()).view.of(id, names),
    },
    close: async () => {
      const opened = await live?.catch(() => undefined);
      await opened?.sql.end({ timeout: 5 }).catch(() => undefined);
    },
  };
}

/** The status of a described workflow (status/read.ts temporalStatus), or the CLI's error for why there is none. */
export async function readStatus(
  client: Client,
  d: Described,
  queryTimeoutMs = QUERY_TIMEOUT_MS,
  ledger?: LedgerView,
): Promise<RolloutStatus> {
  const a = await temporalStatus(client, d, { queryTimeoutMs, ...(ledger ? { ledger } : {}) });
  if (isNoAnswer(a)) throw noAnswerError(d.handle.workflowId, a);
  return a.status;
}

export function isFinal(st: RolloutStatus): boolean {
  return isFinalPhase(st.phase);
}

/** SPEC §4: 0 completed, 1 failed or rolled back. */
export function outcomeExit(st: RolloutStatus): ExitCode {
  return st.phase === 'completed' ? EXIT.ok : EXIT.failed;
}

/**
 * A workflow started with a signed decision checks it first thing in its
 * preflight: wait (briefly) for that verdict, so a refused signature is the
 * caller's exit 2 with the workflow's reason, not a surprise in `status`.
 */
export async function awaitStartAccepted(client: Client, id: string, what: string): Promise<RolloutStatus | undefined> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    let st: RolloutStatus | undefined;
    try {
      st = await readStatus(client, await describeWorkflow(client, id));
    } catch (err) {
      // No worker answers: the start is checked when one comes; 'status' will tell.
      if (err instanceof CliError && err.exitCode === EXIT.unreachable) return undefined;
      st = undefined; // its first workflow task may not have run yet
    }
    if (st?.requestedBy) return st;
    if (st && isFinal(st))
      throw new CliError(`${what} refused: ${st.error ?? 'it ended in preflight'} (${id})`, EXIT.refused);
    if (Date.now() > deadline) return undefined; // no verdict yet: it is running; 'status' will tell
    await new Promise((r) => setTimeout(r, 150));
  }
}

export function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0];
}
