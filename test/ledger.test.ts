// The orchestrator's ledger: idempotent writes (a retried activity writes
// nothing twice), append-only events, and the claims that keep two rollouts
// off the same server.
import assert from 'node:assert/strict';
import type { Sql } from 'postgres';
import { freshDatabase, sqlFor } from './helpers/stack';
import { migrate } from '../store/migrations';
import { appendEvent, claim, ClaimConflict, conflictingRollouts, recordPhase, recordRolloutStart, releaseStaleClaims, rolloutEvents } from '../store/ledger';

describe('ledger (orchestrator database)', () => {
  let sql: Sql;
  before(async () => {
    sql = sqlFor(await freshDatabase('ledger'));
    await migrate(sql);
  });
  const start = (id: string, hotfix = 'hotfix_common_x') => recordRolloutStart(sql, { id, kind: 'rollout', hotfix, requestedBy: 'alice', servers: ['a', 'b'], options: { batch: '1' } });

  it('writes a rollout, its steps and its phases once, however often an activity retries', async () => {
    await start('r1');
    await start('r1');
    for (let i = 0; i < 3; i++) {
      await appendEvent(sql, { rolloutId: 'r1', key: 'apply:a', kind: 'apply', server: 'a' });
      await appendEvent(sql, { rolloutId: 'r1', key: 'decision', kind: 'approve', actor: 'bob', detail: { comment: 'ok' } });
      await recordPhase(sql, 'r1', 'verifying');
    }
    const events = await rolloutEvents(sql, 'r1');
    assert.deepEqual(events.map((e) => e.kind), ['started', 'apply', 'approve', 'phase']);
    assert.deepEqual(events.find((e) => e.kind === 'approve')?.detail, { comment: 'ok' });
    assert.equal(events.find((e) => e.kind === 'approve')?.actor, 'bob');
  });

  it('refuses to change or delete an event', async () => {
    await assert.rejects(sql`UPDATE rollout_event SET actor = 'mallory' WHERE rollout_id = 'r1'`, /append-only/);
    await assert.rejects(sql`DELETE FROM rollout_event WHERE rollout_id = 'r1'`, /append-only/);
    assert.equal((await rolloutEvents(sql, 'r1')).length, 4);
  });

  it('claims: an overlapping server or the same hotfix Name is refused, naming the holder; a final phase releases', async () => {
    await start('r2', 'hotfix_backend_y');
    await claim(sql, 'r2', 'hotfix_backend_y', ['s1', 's2']);
    await claim(sql, 'r2', 'hotfix_backend_y', ['s1', 's2']); // a retry of the same claim
    await start('r3', 'hotfix_frontend_z');
    await assert.rejects(claim(sql, 'r3', 'hotfix_frontend_z', ['s2', 's3']), (e: unknown) => e instanceof ClaimConflict && /rollout r2 is still active on s2/.test(e.message) && e.activeRollouts.includes('r2'));
    await assert.rejects(claim(sql, 'r3', 'hotfix_backend_y', ['s9']), /r2 is still active on hotfix hotfix_backend_y/);
    assert.deepEqual(await conflictingRollouts(sql, 'hotfix_frontend_z', ['s3']), []);
    await recordPhase(sql, 'r2', 'completed');
    await claim(sql, 'r3', 'hotfix_frontend_z', ['s2', 's3']);
    const [row] = await sql<{ outcome: string; ended_at: Date | null }[]>`SELECT outcome, ended_at FROM rollout WHERE id = 'r2'`;
    assert.equal(row.outcome, 'completed');
    assert.ok(row.ended_at);
  });

  it('releases the claims of a rollout whose workflow no longer runs, and marks it in the ledger', async () => {
    await start('r4', 'hotfix_common_w');
    await claim(sql, 'r4', 'hotfix_common_w', ['t1']);
    assert.deepEqual(await releaseStaleClaims(sql, ['r4'], async () => true), [], 'still running: kept');
    assert.equal((await conflictingRollouts(sql, 'hotfix_common_v', ['t1'])).length, 1);
    assert.deepEqual(await releaseStaleClaims(sql, ['r4'], async () => false), ['r4']);
    assert.deepEqual(await conflictingRollouts(sql, 'hotfix_common_v', ['t1']), []);
    const [row] = await sql<{ phase: string; error: string }[]>`SELECT phase, error FROM rollout WHERE id = 'r4'`;
    assert.equal(row.phase, 'failed');
    assert.match(row.error, /ended without finishing/);
  });
});
