// Reads of the per-server ledger (rollout_server): the latest state of each
// server of a rollout, paged, counted, or for a few names. The ledger
// answers after Temporal has forgotten the workflow, and above the status
// threshold while it runs (status/live.ts).
//
// A server's latest state is the last row the database received for it (its
// seq), never the row whose writer-chosen time is latest: the rows come from
// the workflows and from activities in other processes, whose clocks differ.
// The one exception is the initial list (the rows with a position): it is
// written in the background and may land after a server's first step, so any
// other row of the server comes before it.
import type { Sql } from 'postgres';
import type { ServerState } from '../domain/rollout';
import type { Role } from '../domain/fleet';

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

/** Each server's latest row of a rollout (see the comment above), only these names when given. */
function latestRows(sql: Sql, rolloutId: string, names?: readonly string[]) {
  return sql`
    SELECT DISTINCT ON (server) server, state, started_at, ended_at, error
    FROM rollout_server
    WHERE rollout_id = ${rolloutId} ${names ? sql`AND server = ANY(${sql.array([...names])}::text[])` : sql``}
    ORDER BY server, (position IS NULL) DESC, seq DESC`;
}

/**
 * The latest state of each server of a rollout, in inventory order, one page
 * (1-based) at a time; `state` (or `states`) keeps only servers in that state.
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
    WITH latest AS (${latestRows(sql, rolloutId)}),
    first AS (
      SELECT server, min(position) AS position, (array_agg(role ORDER BY seq) FILTER (WHERE role IS NOT NULL))[1] AS role,
        -- The start of the latest step: an earlier row than the latest may hold it.
        (array_agg(started_at ORDER BY seq DESC) FILTER (WHERE started_at IS NOT NULL))[1] AS started_at
      FROM rollout_server WHERE rollout_id = ${rolloutId} GROUP BY server)
    SELECT l.server, l.state, f.role, COALESCE(l.started_at, f.started_at) AS started_at, l.ended_at, l.error, count(*) OVER () AS total
    FROM latest l JOIN first f USING (server)
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
  >`${latestRows(sql, rolloutId, names)}`;
  return rows.map(serverOf);
}

/** Servers per state (latest state of each), for a status rebuilt from the ledger. */
export async function serverStateCounts(sql: Sql, rolloutId: string): Promise<Partial<Record<ServerState, number>>> {
  const rows = await sql<{ state: ServerState; n: string }[]>`
    SELECT state, count(*) AS n FROM (${latestRows(sql, rolloutId)}) l GROUP BY state`;
  return Object.fromEntries(rows.map((r) => [r.state, Number(r.n)]));
}

/** What a running workflow's status takes from the ledger above the status threshold (status/live.ts LedgerView). */
export function liveLedger(sql: Sql) {
  return {
    counts: (rolloutId: string) => serverStateCounts(sql, rolloutId),
    inStates: (rolloutId: string, states: readonly ServerState[], limit: number) =>
      serverStates(sql, rolloutId, { states, page: 1, pageSize: limit }),
    of: (rolloutId: string, names: readonly string[]) => latestStates(sql, rolloutId, names),
  };
}
