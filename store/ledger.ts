// The orchestrator's own record of every rollout, step, approval and
// rejection: it outlives Temporal's retention. Every write is idempotent
// (keyed), so a retried activity never writes twice.
import type { Sql } from 'postgres';
import {
  boundedStatus,
  isFinalPhase,
  Approval,
  DecisionRecord,
  DrainedBackend,
  Phase,
  RolloutStatus,
  ServerState,
  ServerStatus,
  WorkflowKind,
} from '../domain/rollout';
import { parseDecisionMessage, DecisionAction } from '../domain/decision';
import type { Role } from '../domain/fleet';
import { Coalescer } from '../platform/coalesce';

export interface RolloutRecord {
  id: string;
  kind: WorkflowKind;
  hotfix: string;
  requestedBy: string;
  servers: string[];
  options: Record<string, unknown>;
  /** The requester's signed decision: fingerprint, message, signature (SPEC §7). */
  signed?: { key: string; message: string; signature: string };
}

export interface LedgerEvent {
  rolloutId: string;
  /** Unique per rollout: makes the write idempotent. */
  key: string;
  kind: string;
  server?: string;
  actor?: string;
  detail?: Record<string, unknown>;
}

export class ClaimConflict extends Error {
  override name = 'ClaimConflict';
  readonly activeRollouts: string[];
  constructor(
    message: string,
    readonly conflicts: { id: string; reason: string }[],
  ) {
    super(message);
    this.activeRollouts = conflicts.map((c) => c.id);
  }
}

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
  const rows = raw
    .map(storable)
    .map((e) => ({
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

/** Record a phase; a final phase may name the servers that need a person (kept as data for ledgerStatus). */
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
    if (final) {
      await tx`DELETE FROM server_claim WHERE rollout_id = ${rolloutId}`;
      await tx`DELETE FROM hotfix_claim WHERE rollout_id = ${rolloutId}`;
    }
  });
}

/** Active rollouts that would conflict with one of this hotfix on these servers. */
export async function conflictingRollouts(
  sql: Sql,
  hotfix: string,
  servers: string[],
  self?: string,
): Promise<{ id: string; reason: string }[]> {
  const rows = await sql<{ rollout_id: string; what: string; name: string }[]>`
    SELECT rollout_id, 'server' AS what, server AS name FROM server_claim WHERE server = ANY(${servers})
    UNION ALL
    SELECT rollout_id, 'hotfix' AS what, hotfix AS name FROM hotfix_claim WHERE hotfix = ${hotfix}`;
  const byId = new Map<string, string[]>();
  for (const r of rows) {
    if (r.rollout_id === self) continue;
    const list = byId.get(r.rollout_id) ?? [];
    list.push(r.what === 'hotfix' ? `hotfix ${r.name}` : r.name);
    byId.set(r.rollout_id, list);
  }
  return [...byId].map(([id, names]) => ({
    id,
    reason: names.slice(0, 5).join(', ') + (names.length > 5 ? ` and ${names.length - 5} more` : ''),
  }));
}

/** Claim the servers and the hotfix Name for one rollout, atomically; refuses on overlap. */
export async function claim(sql: Sql, rolloutId: string, hotfix: string, servers: string[]): Promise<void> {
  await sql.begin(async (tx) => {
    // Serialise claimers: two rollouts starting at once must not both pass the check.
    await tx`SELECT pg_advisory_xact_lock(${0x6b6d636c})`;
    const conflicts = await conflictingRollouts(tx as unknown as Sql, hotfix, servers, rolloutId);
    if (conflicts.length > 0) {
      const c = conflicts[0];
      throw new ClaimConflict(
        `rollout ${c.id} is still active on ${c.reason}: wait for it to end, or abort it with 'km-hotfix abort ${c.id} --reason ...'`,
        conflicts,
      );
    }
    await tx`INSERT INTO hotfix_claim (hotfix, rollout_id) VALUES (${hotfix}, ${rolloutId}) ON CONFLICT (hotfix) DO NOTHING`;
    if (servers.length > 0) {
      await tx`INSERT INTO server_claim ${tx(servers.map((server) => ({ server, rollout_id: rolloutId })))} ON CONFLICT (server) DO NOTHING`;
    }
  });
}

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
    SELECT id, kind, hotfix, requested_by, phase, outcome, error, started_at, ended_at, cardinality(servers) AS n
    FROM rollout ORDER BY started_at DESC LIMIT ${limit}`;
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

export interface StoredEvent {
  seq: number;
  at: Date;
  kind: string;
  server: string | null;
  actor: string | null;
  detail: Record<string, unknown>;
}

export async function rolloutEvents(sql: Sql, rolloutId: string): Promise<StoredEvent[]> {
  const rows = await sql<
    {
      seq: string;
      at: Date;
      kind: string;
      server: string | null;
      actor: string | null;
      detail: Record<string, unknown>;
    }[]
  >`
    SELECT seq, at, kind, server, actor, detail FROM rollout_event WHERE rollout_id = ${rolloutId} ORDER BY seq`;
  return rows.map((r) => ({ ...r, seq: Number(r.seq) }));
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
  return (await rolloutEvents(sql, rolloutId))
    .filter((e) => typeof e.detail.signature === 'string')
    .map((e) => ({
      seq: e.seq,
      at: e.at,
      kind: e.kind,
      actor: e.actor ?? '',
      key: String(e.detail.key ?? ''),
      ...(typeof e.detail.via === 'string' ? { via: e.detail.via } : {}),
      message: String(e.detail.message ?? ''),
      signature: String(e.detail.signature ?? ''),
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
  const list = Array.isArray(rows[0]!.drained) ? rows[0]!.drained : [];
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
  let total = rows.length > 0 ? Number(rows[0]!.total) : 0;
  if (rows.length === 0 && o.page > 1) total = (await drainedPage(sql, rolloutId, { page: 1, pageSize: 1 })).total;
  return {
    total,
    page: o.page,
    pageSize: o.pageSize,
    drained: rows.map((r) => ({ server: r.server, maxProcesses: r.max_processes ?? 0 })),
  };
}

/**
 * The conflicts that still block a new rollout: holders whose workflow no
 * longer runs (`isRunning`, asked of Temporal) left stale claims, which are
 * released first. The one rule for the CLI's early check and the claim activity.
 */
export async function stillActiveConflicts(
  sql: Sql,
  conflicts: { id: string; reason: string }[],
  isRunning: (id: string) => Promise<boolean>,
): Promise<{ id: string; reason: string }[]> {
  const released = new Set(await releaseStaleClaims(sql, [...new Set(conflicts.map((c) => c.id))], isRunning));
  return conflicts.filter((c) => !released.has(c.id));
}

/**
 * Claims left by rollouts that ended outside our control (a terminated
 * workflow never records its last phase): release those whose workflow no
 * longer runs, and mark them in the ledger. Returns the ids released.
 */
export async function releaseStaleClaims(
  sql: Sql,
  ids: string[],
  isRunning: (id: string) => Promise<boolean>,
): Promise<string[]> {
  const released: string[] = [];
  for (const id of ids) {
    if (await isRunning(id)) continue;
    await sql.begin(async (tx) => {
      await tx`DELETE FROM server_claim WHERE rollout_id = ${id}`;
      await tx`DELETE FROM hotfix_claim WHERE rollout_id = ${id}`;
      await tx`UPDATE rollout SET phase = 'failed', outcome = 'failed', ended_at = COALESCE(ended_at, now()), updated_at = now(),
                 error = COALESCE(error, 'the workflow ended without finishing (terminated or timed out); servers it patched keep the hotfix')
               WHERE id = ${id} AND ended_at IS NULL`;
    });
    released.push(id);
  }
  return released;
}

/**
 * A rollout's status rebuilt from the ledger alone, for when Temporal no
 * longer has the workflow (retention). Per-server states come from the steps
 * recorded; roles from the inventory where the server is still in it.
 */
export async function ledgerStatus(
  sql: Sql,
  id: string,
  roles: ReadonlyMap<string, Role>,
): Promise<RolloutStatus | undefined> {
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
  const events = await rolloutEvents(sql, id);
  const states = new Map<string, ServerState>();
  const undone: ServerState = r.kind === 'removal' ? 'removed' : 'rolled_back';
  let canary: string | null = null;
  let drained: DrainedBackend[] = [];
  const approvals: Approval[] = [];
  for (const e of events) {
    if (e.kind === 'canary' && e.server) canary = e.server;
    if (e.kind === 'drain') drained = (e.detail.drained as DrainedBackend[] | undefined) ?? [];
    if (e.kind === 'approve' || e.kind === 'reject') {
      approvals.push({
        by: e.actor ?? '',
        decision: e.kind,
        at: e.at.toISOString(),
        comment: String(e.detail.comment ?? ''),
        key: String(e.detail.key ?? ''),
        message: String(e.detail.message ?? ''),
        signature: String(e.detail.signature ?? ''),
      });
    }
    if (!e.server) continue;
    if (e.kind === 'apply') states.set(e.server, 'patched');
    if (e.kind === 'unapply') states.set(e.server, undone);
  }
  const decisions: DecisionRecord[] = [];
  let requestedKey: string | null = null;
  for (const d of await recordedDecisions(sql, id)) {
    const action = decisionActionOf(r.kind, d.kind);
    if (!action) continue;
    if (d.kind === 'started') requestedKey = d.key;
    let signedAt = d.at.toISOString();
    let comment = '';
    try {
      ({ at: signedAt, comment } = parseDecisionMessage(d.message));
    } catch {
      // An unreadable message is shown as recorded; 'km-hotfix audit' says what is wrong with it.
    }
    decisions.push({
      action,
      by: d.actor,
      key: d.key,
      ...(d.via ? { via: d.via } : {}),
      at: signedAt,
      comment,
      message: d.message,
      signature: d.signature,
    });
  }
  const last = events.filter((e) => e.kind === 'phase' && e.detail.phase === r.phase).at(-1);
  const needsAttention = (last?.detail.needsAttention as string[] | undefined) ?? [];
  if (r.kind === 'rollout') for (const n of needsAttention) if (states.has(n)) states.set(n, 'rollback_failed');
  // The per-server ledger, where the workflow wrote it; older rollouts have only their step events.
  const written = await serverStates(sql, id, { page: 1, pageSize: 1_000_000 });
  const servers: ServerStatus[] =
    written.total > 0
      ? written.servers.map((s) => ({ ...s, role: s.role ?? roles.get(s.name) ?? 'both' }))
      : [...states].map(([name, state]) => ({ name, role: roles.get(name) ?? 'both', state }));
  return boundedStatus({
    id: r.id,
    kind: r.kind,
    hotfix: r.hotfix,
    phase: r.phase,
    requestedBy: r.requested_by,
    requestedKey,
    sha256: null,
    canary,
    drained,
    approvals,
    decisions,
    servers,
    serverCount: 0,
    serverCounts: {},
    attention: [],
    attentionMore: 0,
    error: r.error,
    paused: false,
    gate: null,
    needsAttention,
    needsAttentionMore: Number(last?.detail.needsAttentionMore ?? 0),
    startedAt: r.started_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
    endedAt: r.ended_at?.toISOString() ?? null,
    activeBatchWorkflows: [],
  });
}

/** One server's state as a workflow learned it, for the per-server ledger (rollout_server). */
export interface ServerStateRow {
  server: string;
  state: ServerState;
  /** When the workflow learned it (ISO): the latest per server wins. */
  at: string;
  /** Inventory order, given with the first row of each server. */
  position?: number;
  role?: Role;
  startedAt?: string;
  endedAt?: string;
  error?: string;
}

/** Rows per insert: a status write of 20,000 servers goes in a few statements. */
const ROWS_PER_INSERT = 1_000;

/** Append per-server states (a retried write appends the same state again: harmless, the latest wins). */
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

export interface ServerPage {
  /** Servers matching the filter, across all pages. */
  total: number;
  page: number;
  pageSize: number;
  servers: {
    name: string;
    role: Role | null;
    state: ServerState;
    startedAt?: string;
    endedAt?: string;
    error?: string;
  }[];
}

/**
 * The latest state of each server of a rollout, in inventory order, one page
 * (1-based) at a time; `state` (or `states`) keeps only servers in that state.
 * The ledger answers after Temporal has forgotten the workflow.
 */
export async function serverStates(
  sql: Sql,
  rolloutId: string,
  o: { state?: ServerState; states?: readonly ServerState[]; page: number; pageSize: number },
): Promise<ServerPage> {
  const only = o.states ?? (o.state ? [o.state] : null);
  const rows = await sql<
    {
      server: string;
      state: ServerState;
      role: Role | null;
      started_at: Date | null;
      ended_at: Date | null;
      error: string | null;
      total: string;
    }[]
  >`
    WITH latest AS (
      SELECT DISTINCT ON (server) server, state, started_at, ended_at, error
      FROM rollout_server WHERE rollout_id = ${rolloutId} ORDER BY server, at DESC, seq DESC),
    first AS (
      SELECT server, min(position) AS position, (array_agg(role ORDER BY seq) FILTER (WHERE role IS NOT NULL))[1] AS role
      FROM rollout_server WHERE rollout_id = ${rolloutId} GROUP BY server),
    -- Start and end of the latest step: an earlier row may hold the start.
    started AS (
      SELECT server, max(started_at) AS started_at FROM rollout_server WHERE rollout_id = ${rolloutId} GROUP BY server)
    SELECT l.server, l.state, f.role, COALESCE(l.started_at, s.started_at) AS started_at, l.ended_at, l.error, count(*) OVER () AS total
    FROM latest l JOIN first f USING (server) JOIN started s USING (server)
    WHERE ${only === null}::boolean OR l.state = ANY(${sql.array([...(only ?? [])])}::text[])
    ORDER BY f.position NULLS LAST, l.server
    LIMIT ${o.pageSize} OFFSET ${(o.page - 1) * o.pageSize}`;
  let total = rows.length > 0 ? Number(rows[0].total) : 0;
  if (rows.length === 0 && o.page > 1)
    total = (await serverStates(sql, rolloutId, { ...o, page: 1, pageSize: 1 })).total;
  return {
    total,
    page: o.page,
    pageSize: o.pageSize,
    servers: rows.map(serverOf),
  };
}

/** A rollout_server row as a page shows it. */
function serverOf(r: {
  server: string;
  role?: Role | null;
  state: ServerState;
  started_at: Date | null;
  ended_at: Date | null;
  error: string | null;
}): ServerPage['servers'][number] {
  return {
    name: r.server,
    role: r.role ?? null,
    state: r.state,
    ...(r.started_at ? { startedAt: r.started_at.toISOString() } : {}),
    ...(r.ended_at ? { endedAt: r.ended_at.toISOString() } : {}),
    ...(r.error ? { error: r.error } : {}),
  };
}

/** The latest state of each of these servers of a rollout (those with a row). */
export async function latestStates(
  sql: Sql,
  rolloutId: string,
  names: readonly string[],
): Promise<ServerPage['servers']> {
  if (names.length === 0) return [];
  const rows = await sql<
    { server: string; state: ServerState; started_at: Date | null; ended_at: Date | null; error: string | null }[]
  >`
    SELECT DISTINCT ON (server) server, state, started_at, ended_at, error
    FROM rollout_server WHERE rollout_id = ${rolloutId} AND server = ANY(${sql.array([...names])}::text[])
    ORDER BY server, at DESC, seq DESC`;
  return rows.map(serverOf);
}

/** What a running workflow's status takes from the ledger above the status threshold (platform/workflow-status.ts). */
export function liveLedger(sql: Sql) {
  return {
    counts: (rolloutId: string) => serverStateCounts(sql, rolloutId),
    inStates: (rolloutId: string, states: readonly ServerState[], limit: number) =>
      serverStates(sql, rolloutId, { states, page: 1, pageSize: limit }),
    of: (rolloutId: string, names: readonly string[]) => latestStates(sql, rolloutId, names),
  };
}

/** Servers per state (latest state of each), for a status rebuilt from the ledger. */
export async function serverStateCounts(sql: Sql, rolloutId: string): Promise<Partial<Record<ServerState, number>>> {
  const rows = await sql<{ state: ServerState; n: string }[]>`
    SELECT state, count(*) AS n FROM (
      SELECT DISTINCT ON (server) server, state FROM rollout_server WHERE rollout_id = ${rolloutId} ORDER BY server, at DESC, seq DESC) l
    GROUP BY state`;
  return Object.fromEntries(rows.map((r) => [r.state, Number(r.n)]));
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

/** The services this rollout's latest record of a change on a server names (see sentEvent), if any. */
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
