// The claims that keep two rollouts off the same server and the same hotfix
// Name: taken atomically at a rollout's start, released by its final phase
// (store/ledger-writes.ts recordPhase) or, when its workflow ended outside our
// control, by the next rollout that finds them stale.
import type { Sql, TransactionSql } from 'postgres';

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

/** Release every claim of a rollout (inside the caller's transaction). */
export async function releaseClaims(tx: TransactionSql, rolloutId: string): Promise<void> {
  await tx`DELETE FROM server_claim WHERE rollout_id = ${rolloutId}`;
  await tx`DELETE FROM hotfix_claim WHERE rollout_id = ${rolloutId}`;
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
      await releaseClaims(tx, id);
      await tx`UPDATE rollout SET phase = 'failed', outcome = 'failed', ended_at = COALESCE(ended_at, now()), updated_at = now(),
                 error = COALESCE(error, 'the workflow ended without finishing (terminated or timed out); servers it patched keep the hotfix')
               WHERE id = ${id} AND ended_at IS NULL`;
    });
    released.push(id);
  }
  return released;
}
