// The promise of a rollout (issue 9), checked against the real systems after
// it ended: it is `completed` with every target applied exactly once (per the
// simulator's command log), or `rolled_back` with no target listed in the Key
// Manager database and Maximum Processes exactly as before, or
// `rollback_failed` naming exactly the servers that still differ; the ledger
// agrees with the Key Manager database; no claim is left behind.
import assert from 'node:assert/strict';
import type { Sql } from 'postgres';
import type { SimFleet } from '../../simulator';
import type { Phase, RolloutStatus } from '../../domain/rollout';
import { ledgerStatus } from '../../store/ledger';

export interface InvariantWorld {
  fleet: SimFleet;
  km: Sql;
  orchestrator: Sql;
}

/** Maximum Processes of every server, from the Key Manager database. */
export async function maxProcessesOf(km: Sql): Promise<Record<string, number>> {
  const rows = await km<{ name: string; max_processes: number }[]>`SELECT name, max_processes FROM km_server ORDER BY name`;
  return Object.fromEntries(rows.map((r) => [r.name, r.max_processes]));
}

const nameOf = (attention: string) => attention.replace(/ \(.*\)$/, '');

/**
 * Assert the invariant for one ended rollout. `before` is Maximum Processes
 * before it started; `allowed` narrows the endings a scenario accepts.
 * Returns the ending, so a test can say more.
 */
export async function assertRolloutInvariant(w: InvariantWorld, st: RolloutStatus, before: Record<string, number>, allowed: Phase[] = ['completed', 'rolled_back', 'rollback_failed']): Promise<Phase> {
  const where = `${st.id} ended ${st.phase}${st.error ? ` (${st.error})` : ''}`;
  assert.ok(allowed.includes(st.phase), `${where}; expected one of ${allowed.join(', ')}`);
  const targets = st.servers.filter((s) => s.state !== 'skipped').map((s) => s.name);
  const listed = new Set((await w.km<{ server_name: string }[]>`SELECT server_name FROM km_hotfix_applied WHERE hotfix_name = ${st.hotfix}`).map((r) => r.server_name));
  const listedTargets = targets.filter((t) => listed.has(t)).sort();
  const now = await maxProcessesOf(w.km);
  const maxDiffers = Object.keys(before).filter((s) => now[s] !== before[s]).sort();

  if (st.phase === 'completed') {
    assert.deepEqual(listedTargets, [...targets].sort(), `${where}: every target is listed in the Key Manager database`);
    for (const t of targets) {
      const applies = w.fleet.server(t).log().filter((e) => e.command.includes(`--apply-hotfix=${st.hotfix}`) && e.exitCode === 0);
      assert.equal(applies.length, 1, `${where}: ${t} applied exactly once (simulator log: ${applies.map((e) => e.command).join(' | ')})`);
    }
    assert.deepEqual(maxDiffers, [], `${where}: Maximum Processes restored`);
  } else if (st.phase === 'rolled_back' || st.phase === 'failed') {
    assert.deepEqual(listedTargets, [], `${where}: no target listed in the Key Manager database`);
    assert.deepEqual(now, before, `${where}: Maximum Processes exactly as before`);
  } else if (st.phase === 'rollback_failed') {
    const differ = [...new Set([...listedTargets, ...maxDiffers])].sort();
    assert.deepEqual([...new Set(st.needsAttention.map(nameOf))].sort(), differ, `${where}: names exactly the servers that still differ`);
  } else {
    assert.fail(`${where}: not a final phase`);
  }

  // The ledger: the same ending, the same servers patched, no claim held.
  const [row] = await w.orchestrator<{ phase: string; outcome: string | null; ended_at: Date | null }[]>`SELECT phase, outcome, ended_at FROM rollout WHERE id = ${st.id}`;
  assert.ok(row, `${where}: the ledger has the rollout`);
  assert.equal(row.phase, st.phase, `${where}: the ledger's phase`);
  assert.equal(row.outcome, st.phase, `${where}: the ledger's outcome`);
  assert.ok(row.ended_at, `${where}: the ledger has an end time`);
  const ledger = await ledgerStatus(w.orchestrator, st.id, new Map());
  const ledgerPatched = (ledger?.servers ?? []).filter((s) => targets.includes(s.name) && (s.state === 'patched' || s.state === 'rollback_failed')).map((s) => s.name).sort();
  assert.deepEqual(ledgerPatched, listedTargets, `${where}: the ledger agrees with the Key Manager database on where the hotfix is`);
  const claims = await w.orchestrator<{ n: number }[]>`
    SELECT (SELECT count(*) FROM server_claim WHERE rollout_id = ${st.id})::int + (SELECT count(*) FROM hotfix_claim WHERE rollout_id = ${st.id})::int AS n`;
  assert.equal(claims[0].n, 0, `${where}: no claim left behind`);
  return st.phase;
}
