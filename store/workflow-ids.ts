// The ledger's ids a typed reference may name (domain/workflow-ref.ts decides
// which): the newest of some kinds for `last`, else those that are, begin
// with or end with what was typed, newest first and bounded.
import type { Sql } from 'postgres';
import type { WorkflowKind } from '../domain/rollout';
import type { IdCandidate } from '../domain/workflow-ref';

/** Matching ids read for one reference: enough to list, never the whole ledger. */
export const CANDIDATES_READ = 100;

interface Row {
  id: string;
  kind: WorkflowKind;
  started_at: Date;
  total: string;
}

/** The newest workflow of these kinds, as `km-hotfix list` orders them (newest start first). */
export async function newestWorkflow(sql: Sql, kinds: readonly WorkflowKind[]): Promise<IdCandidate | undefined> {
  const rows = await sql<Row[]>`
    SELECT id, kind, started_at, 1 AS total FROM rollout WHERE kind IN ${sql(kinds)}
    ORDER BY started_at DESC, id DESC LIMIT 1`;
  return rows.map(candidate)[0];
}

/** Ids equal to, beginning with or ending with `typed` (the equal one first), and how many there are in all. */
export async function idsLike(sql: Sql, typed: string): Promise<{ candidates: IdCandidate[]; total: number }> {
  const rows = await sql<Row[]>`
    SELECT id, kind, started_at, count(*) OVER () AS total FROM rollout
    WHERE starts_with(id, ${typed}) OR right(id, ${typed.length}) = ${typed}
    ORDER BY (id = ${typed}) DESC, started_at DESC, id DESC LIMIT ${CANDIDATES_READ}`;
  return { candidates: rows.map(candidate), total: Number(rows[0]?.total ?? 0) };
}

function candidate(r: Row): IdCandidate {
  return { id: r.id, kind: r.kind, startedAt: r.started_at };
}
