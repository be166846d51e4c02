// Writes to the orchestrator's own record of every rollout, step, approval
// and rejection (it outlives Temporal's retention). Every event write is
// idempotent (keyed), so a retried activity never writes twice.
import type { Sql } from 'postgres';
import { isFinalPhase, Phase } from '../domain/rollout';
import type { LedgerEvent, RolloutRecord, ServerStateRow } from '../domain/messages/ledger';
import { Coalescer } from '../platform/coalesce';
import { releaseClaims } from './claims';

/**
 * PostgreSQL text and jsonb cannot hold U+0000, which anyone may put in a
 * comment or reason: written as is, the insert fails on every retry and the
 * ledger wedges. It is stored as U+FFFD instead.
 */
export function storable<T>(v: T): T {
  if (typeof v === 'string') return v.replace(/\u0000/g, '\ufffd') as T;
  if (Array.isArray(v)) return v.map(storable) as T;
  if (v && typeof v === 'object' && !(v instanceof Date))
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [storable(k), storable(x)])) as T;
  return v;
}

export async function recordRolloutStart(sql: Sql, raw: RolloutRecord): Promise<void> {
  const r = storable(raw);
  await sql`
    INSERT INTO rollout (id, kind, hotfix, requested_by, servers, options, phase)
    VALUES (${r.id}, ${r.kind}, ${r.hotfix}, ${r.requestedBy}, ${r.servers}, ${sql.json(r.options as never)}, 'preflight')
    ON CONFLICT (id) DO NOTHING`;
  await appendEvent(sql, {
    rolloutId: r.id,
    key: 'started',
    kind: 'started',
    actor: r.requestedBy,
    detail: { servers: r.servers, options: r.options, ...(r.signed ?? {}) },
  });
}

export async function appendEvent(sql: Sql, raw: LedgerEvent): Promise<void> {
  const e = storable(raw);
  await sql`
    INSERT INTO rollout_event (rollout_id, event_key, kind, server, actor, detail)
    VALUES (${e.rolloutId}, ${e.key}, ${e.kind}, ${e.server ?? null}, ${e.actor ?? null}, ${sql.json((e.detail ?? {}) as never)})
    ON CONFLICT (rollout_id, event_key) DO NOTHING`;
}

/** Several events in one round trip (a server step's events, written together). */
export async function appendEvents(sql: Sql, raw: LedgerEvent[]): Promise<void> {
  if (raw.length === 0) return;
  if (raw.length === 1) return appendEvent(sql, raw[0]);
  const rows = raw.map(storable).map((e) => ({
    rollout_id: e.rolloutId,
    event_key: e.key,
    kind: e.kind,
    server: e.server ?? null,
    actor: e.actor ?? null,
    detail: sql.json((e.detail ?? {}) as never),
  }));
  await sql`
    INSERT INTO rollout_event ${sql(rows, 'rollout_id', 'event_key', 'kind', 'server', 'actor', 'detail')}
    ON CONFLICT (rollout_id, event_key) DO NOTHING`;
}

/**
 * appendEvents for many callers: the events appended in the same turn of the
 * event loop (a window's server steps) go in one insert. A failed insert fails
 * every caller in it (each then leaves its events to the workflow).
 */
export function eventAppender(sql: Sql): (events: LedgerEvent[]) => Promise<void> {
  const inserts = new Coalescer<LedgerEvent[], void>(async (lists) => {
    const seen = new Set<string>();
    const events = lists.flat().filter((e) => {
      const k = `${e.rolloutId}\u0000${e.key}`;
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    });
    await appendEvents(sql, events);
    return lists.map(() => undefined);
  });
  return (events) => (events.length === 0 ? Promise.resolve() : inserts.call(events));
}

/** Record a phase; a final phase may name the servers that need a person (kept as data for the ledger's status). */
export async function recordPhase(
  sql: Sql,
  rolloutId: string,
  phase: Phase,
  rawError?: string,
  rawAttention: string[] = [],
  needsAttentionMore = 0,
): Promise<void> {
  const final = isFinalPhase(phase);
  const error = storable(rawError);
  const needsAttention = storable(rawAttention);
  await sql.begin(async (tx) => {
    await tx`
      UPDATE rollout SET phase = ${phase}, updated_at = now(),
        error = COALESCE(${error ?? null}, error),
        outcome = ${final ? phase : null},
        ended_at = CASE WHEN ${final} THEN COALESCE(ended_at, now()) ELSE NULL END
      WHERE id = ${rolloutId}`;
    await tx`
      INSERT INTO rollout_event (rollout_id, event_key, kind, detail)
      VALUES (${rolloutId}, ${`phase:${phase}`}, 'phase', ${tx.json({ phase, ...(error ? { error } : {}), ...(needsAttention.length ? { needsAttention } : {}), ...(needsAttentionMore > 0 ? { needsAttentionMore } : {}) })})
      ON CONFLICT (rollout_id, event_key) DO NOTHING`;
    if (final) await releaseClaims(tx, rolloutId);
  });
}

/**
 * The record of a change (activities/key-manager-ssh.ts): the services' pids
 * as they ran before its restart, written before the restart is sent. A later
 * step that finds the change in effect judges by the latest: none, its
 * restart was never sent; the same pids still running, it is owed.
 */
export function sentEvent(
  rolloutId: string,
  server: string,
  action: 'apply' | 'unapply',
  attempt: string,
  services: string,
): LedgerEvent {
  return { rolloutId, key: `sent:${action}:${server}:${attempt}`, kind: 'sent', server, detail: { action, services } };
}

/** Rows per insert: a status write of 20,000 servers goes in a few statements. */
const ROWS_PER_INSERT = 1_000;

/**
 * Append per-server states (a retried write appends the same state again:
 * harmless). The database numbers the rows as it receives them, and that
 * order, not the rows' own times, says which is a server's latest.
 */
export async function appendServerStates(sql: Sql, rolloutId: string, raw: ServerStateRow[]): Promise<void> {
  const rows = storable(raw);
  for (let i = 0; i < rows.length; i += ROWS_PER_INSERT) {
    const chunk = rows.slice(i, i + ROWS_PER_INSERT).map((r) => ({
      rollout_id: rolloutId,
      server: r.server,
      state: r.state,
      at: r.at,
      position: r.position ?? null,
      role: r.role ?? null,
      started_at: r.startedAt ?? null,
      ended_at: r.endedAt ?? null,
      error: r.error ?? null,
    }));
    await sql`INSERT INTO rollout_server ${sql(chunk)}`;
  }
}

/**
 * appendServerStates for many callers: rows appended in the same turn of the
 * event loop (a window's server steps in runs) go in one insert.
 */
export function serverStateAppender(sql: Sql): (rolloutId: string, rows: ServerStateRow[]) => Promise<void> {
  const inserts = new Coalescer<{ rolloutId: string; rows: ServerStateRow[] }, void>(async (asks) => {
    const byRollout = new Map<string, ServerStateRow[]>();
    for (const a of asks) byRollout.set(a.rolloutId, [...(byRollout.get(a.rolloutId) ?? []), ...a.rows]);
    for (const [id, rows] of byRollout) await appendServerStates(sql, id, rows);
    return asks.map(() => undefined);
  });
  return (rolloutId, rows) => (rows.length === 0 ? Promise.resolve() : inserts.call({ rolloutId, rows }));
}
