// Reads of the orchestrator's ledger: the rollouts, their event log in the
// order things happened (domain/timeline.ts), the signed decisions and the
// drained backends recorded. The per-server states are in store/server-states.ts.
import type { Sql } from 'postgres';
import type { Phase, WorkflowKind } from '../domain/rollout';
import type { DrainedBackend } from '../domain/messages/rollout';
import type { DecisionAction } from '../domain/decision';
import { inEventOrder } from '../domain/timeline';

export interface RolloutSummary {
  id: string;
  kind: WorkflowKind;
  hotfix: string;
  requestedBy: string;
  phase: Phase;
  outcome: string | null;
  error: string | null;
  startedAt: Date;
  endedAt: Date | null;
  /** Servers of the rollout: the ones it listed (--servers), or, for the whole inventory, the ones its ledger names. */
  servers: number;
}

export async function recentRollouts(sql: Sql, limit = 20): Promise<RolloutSummary[]> {
  const rows = await sql<
    {
      id: string;
      kind: WorkflowKind;
      hotfix: string;
      requested_by: string;
      phase: Phase;
      outcome: string | null;
      error: string | null;
      started_at: Date;
      ended_at: Date | null;
      n: number;
    }[]
  >`
    SELECT id, kind, hotfix, requested_by, phase, outcome, error, started_at, ended_at,
      GREATEST(cardinality(servers), (SELECT count(DISTINCT s.server) FROM rollout_server s WHERE s.rollout_id = r.id))::int AS n
    FROM rollout r ORDER BY started_at DESC LIMIT ${limit}`;
  return rows.map((r) => ({
    id: r.id,
    kind: r.kind,
    hotfix: r.hotfix,
    requestedBy: r.requested_by,
    phase: r.phase,
    outcome: r.outcome,
    error: r.error,
    startedAt: r.started_at,
    endedAt: r.ended_at,
    servers: r.n,
  }));
}

/** A rollout's own row: what it is and where it got to (its times are the database's). */
export interface RolloutRow {
  id: string;
  kind: WorkflowKind;
  hotfix: string;
  requestedBy: string;
  phase: Phase;
  error: string | null;
  startedAt: Date;
  updatedAt: Date;
  endedAt: Date | null;
}

export async function rolloutRow(sql: Sql, id: string): Promise<RolloutRow | undefined> {
  const rows = await sql<
    {
      id: string;
      kind: WorkflowKind;
      hotfix: string;
      requested_by: string;
      phase: Phase;
      error: string | null;
      started_at: Date;
      updated_at: Date;
      ended_at: Date | null;
    }[]
  >`
    SELECT id, kind, hotfix, requested_by, phase, error, started_at, updated_at, ended_at FROM rollout WHERE id = ${id}`;
  const r = rows[0];
  if (!r) return undefined;
  return {
    id: r.id,
    kind: r.kind,
    hotfix: r.hotfix,
    requestedBy: r.requested_by,
    phase: r.phase,
    error: r.error,
    startedAt: r.started_at,
    updatedAt: r.updated_at,
    endedAt: r.ended_at,
  };
}

export interface StoredEvent {
  /** The database's numbering: the order it received the events in. */
  seq: number;
  /** When the database received it (a step's row: when it happened). */
  at: Date;
  /** The row's key (unique per rollout). */
  key?: string;
  kind: string;
  server: string | null;
  actor: string | null;
  detail: Record<string, unknown>;
}

/** A rollout's events in the order they happened (domain/timeline.ts), not the order the rows were written. */
export async function rolloutEvents(sql: Sql, rolloutId: string): Promise<StoredEvent[]> {
  const rows = await sql<
    {
      seq: string;
      key: string;
      at: Date;
      kind: string;
      server: string | null;
      actor: string | null;
      detail: Record<string, unknown>;
    }[]
  >`
    SELECT seq, event_key AS key, at, kind, server, actor, detail FROM rollout_event WHERE rollout_id = ${rolloutId} ORDER BY seq`;
  return inEventOrder(rows.map((r) => ({ ...r, seq: Number(r.seq) })));
}

/** A signed decision as the ledger keeps it: the event, who the workflow said signed it, and the proof. */
export interface RecordedDecision {
  seq: number;
  at: Date;
  /** started, approve, reject, pause, resume, abort. */
  kind: string;
  actor: string;
  key: string;
  /** The delegate that signed for the actor, when one did. */
  via?: string;
  message: string;
  signature: string;
}

/** Every event of a rollout that carries a signature, in order. */
export async function recordedDecisions(sql: Sql, rolloutId: string): Promise<RecordedDecision[]> {
  return decisionsOf(await rolloutEvents(sql, rolloutId));
}

/** The signed decisions among events already read. */
/** A text field of an event's detail ('' when absent: older rows may lack it). */
export function detailText(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

export function decisionsOf(events: readonly StoredEvent[]): RecordedDecision[] {
  return events
    .filter((e) => typeof e.detail.signature === 'string')
    .map((e) => ({
      seq: e.seq,
      at: e.at,
      kind: e.kind,
      actor: e.actor ?? '',
      key: detailText(e.detail.key),
      ...(typeof e.detail.via === 'string' ? { via: e.detail.via } : {}),
      message: detailText(e.detail.message),
      signature: detailText(e.detail.signature),
    }));
}

/** The action a ledger event stands for: a start is the decision to upload, roll out or remove. */
export function decisionActionOf(kind: WorkflowKind, eventKind: string): DecisionAction | undefined {
  if (eventKind === 'started') return kind === 'removal' ? 'remove' : kind;
  return (['approve', 'reject', 'pause', 'resume', 'abort'] as const).find((a) => a === eventKind);
}

/** The detail of one keyed event, if it was written. */
export async function eventDetail(
  sql: Sql,
  rolloutId: string,
  key: string,
): Promise<Record<string, unknown> | undefined> {
  const rows = await sql<
    { detail: Record<string, unknown> }[]
  >`SELECT detail FROM rollout_event WHERE rollout_id = ${rolloutId} AND event_key = ${key}`;
  return rows[0]?.detail;
}

/**
 * The drained backends as the workflow recorded them before the drain
 * (`drain:recorded`), sorted by name as a decision's digest lists them;
 * undefined when the rollout recorded no drain.
 */
export async function recordedDrained(sql: Sql, rolloutId: string): Promise<DrainedBackend[] | undefined> {
  const rows = await sql<{ drained: DrainedBackend[] | null }[]>`
    SELECT detail->'drained' AS drained FROM rollout_event WHERE rollout_id = ${rolloutId} AND event_key = 'drain:recorded'`;
  if (rows.length === 0) return undefined;
  const list = Array.isArray(rows[0].drained) ? rows[0].drained : [];
  return list
    .filter((d) => typeof d?.server === 'string')
    .sort((a, b) => (a.server < b.server ? -1 : a.server > b.server ? 1 : 0));
}

export interface DrainedPage {
  total: number;
  page: number;
  pageSize: number;
  drained: DrainedBackend[];
}

/** One page (1-based) of the recorded drained backends, sorted by name: a large fleet's are thousands. */
export async function drainedPage(
  sql: Sql,
  rolloutId: string,
  o: { page: number; pageSize: number },
): Promise<DrainedPage> {
  const rows = await sql<{ server: string; max_processes: number | null; total: string }[]>`
    SELECT d->>'server' AS server, (d->>'maxProcesses')::int AS max_processes, count(*) OVER () AS total
    FROM rollout_event e, jsonb_array_elements(CASE WHEN jsonb_typeof(e.detail->'drained') = 'array' THEN e.detail->'drained' ELSE '[]'::jsonb END) AS d
    WHERE e.rollout_id = ${rolloutId} AND e.event_key = 'drain:recorded'
    ORDER BY d->>'server' COLLATE "C"
    LIMIT ${o.pageSize} OFFSET ${(o.page - 1) * o.pageSize}`;
  let total = rows.length > 0 ? Number(rows[0].total) : 0;
  if (rows.length === 0 && o.page > 1) total = (await drainedPage(sql, rolloutId, { page: 1, pageSize: 1 })).total;
  return {
    total,
    page: o.page,
    pageSize: o.pageSize,
    drained: rows.map((r) => ({ server: r.server, maxProcesses: r.max_processes ?? 0 })),
  };
}

/** The services this rollout's latest record of a change on a server names (store/ledger-writes.ts sentEvent), if any. */
export async function lastSent(
  sql: Sql,
  rolloutId: string,
  server: string,
  action: 'apply' | 'unapply',
): Promise<string | undefined> {
  const rows = await sql<{ services: string }[]>`
    SELECT detail->>'services' AS services FROM rollout_event
     WHERE rollout_id = ${rolloutId} AND kind = 'sent' AND server = ${server} AND detail->>'action' = ${action}
     ORDER BY seq DESC LIMIT 1`;
  return rows[0]?.services ?? undefined;
}
