// The orchestrator's ledger: idempotent writes (a retried activity writes
// nothing twice), append-only events, and the claims that keep two rollouts
// off the same server.
import assert from 'node:assert/strict';
import type { Sql } from 'postgres';
import { freshDatabase, sqlFor } from './helpers/stack';
import { migrate } from '../store/migrations';
import {
  appendEvent,
  appendServerStates,
  eventAppender,
  recordPhase,
  recordRolloutStart,
} from '../store/ledger-writes';
import { claim, ClaimConflict, conflictingRollouts, releaseStaleClaims } from '../store/claims';
import { rolloutEvents } from '../store/ledger-reads';
import { latestStates, serverStateCounts, serverStates } from '../store/server-states';
import { ledgerStatus } from '../status/from-ledger';
import { FULL_SERVER_LIST_MAX } from '../domain/rollout';

describe('ledger (orchestrator database)', () => {
  let sql: Sql;
  before(async () => {
    sql = sqlFor(await freshDatabase('ledger'));
    await migrate(sql);
  });
  const start = (id: string, hotfix = 'hotfix_common_x') =>
    recordRolloutStart(sql, {
      id,
      kind: 'rollout',
      hotfix,
      requestedBy: 'alice',
      servers: ['a', 'b'],
      options: { batch: '1' },
    });

  it('writes a rollout, its steps and its phases once, however often an activity retries', async () => {
    await start('r1');
    await start('r1');
    for (let i = 0; i < 3; i++) {
      await appendEvent(sql, { rolloutId: 'r1', key: 'apply:a', kind: 'apply', server: 'a' });
      await appendEvent(sql, {
        rolloutId: 'r1',
        key: 'decision',
        kind: 'approve',
        actor: 'bob',
        detail: { comment: 'ok' },
      });
      await recordPhase(sql, 'r1', 'verifying');
    }
    const events = await rolloutEvents(sql, 'r1');
    assert.deepEqual(
      events.map((e) => e.kind),
      ['started', 'apply', 'approve', 'phase'],
    );
    assert.deepEqual(events.find((e) => e.kind === 'approve')?.detail, { comment: 'ok' });
    assert.equal(events.find((e) => e.kind === 'approve')?.actor, 'bob');
  });

  it('writes the events of many server steps appended at once in one insert, each once', async () => {
    await start('r-many');
    const append = eventAppender(sql);
    await Promise.all([
      append([{ rolloutId: 'r-many', key: 'apply:a', kind: 'apply', server: 'a' }]),
      append([
        { rolloutId: 'r-many', key: 'apply:b', kind: 'apply', server: 'b' },
        { rolloutId: 'r-many', key: 'restart:apply:b', kind: 'restart', server: 'b' },
      ]),
      append([{ rolloutId: 'r-many', key: 'apply:a', kind: 'apply', server: 'a' }]), // a retry's duplicate
      append([]),
    ]);
    const events = (await rolloutEvents(sql, 'r-many')).filter((e) => e.kind !== 'started');
    assert.deepEqual(events.map((e) => `${e.kind}:${e.server}`).sort(), ['apply:a', 'apply:b', 'restart:b']);
    // An insert that fails (an unknown rollout) fails every caller in it: each leaves its events to the workflow.
    const failing = [
      append([{ rolloutId: 'r-many', key: 'apply:c', kind: 'apply', server: 'c' }]),
      append([{ rolloutId: 'no-such-rollout', key: 'apply:d', kind: 'apply', server: 'd' }]),
    ];
    await assert.rejects(failing[0]);
    await assert.rejects(failing[1]);
    assert.equal(
      (await rolloutEvents(sql, 'r-many')).some((e) => e.server === 'c'),
      false,
      'nothing of the failed insert was written',
    );
  });

  // Issue 25: the page listed `apply km-be-1` before `drain`, as the rows were written.
  it("reads a rollout's events in the order they happened: the workflow's rows written late still come before the steps they preceded", async () => {
    await start('r-order');
    const ev = (key: string, kind: string, server?: string, detail?: Record<string, unknown>) =>
      appendEvent(sql, {
        rolloutId: 'r-order',
        key,
        kind,
        ...(server ? { server } : {}),
        ...(detail ? { detail } : {}),
      });
    // The workflow's queue is behind: the canary's step writes its rows first.
    await ev('canary', 'canary', 'km-be-1');
    await ev('sent:apply:km-be-1:1', 'sent', 'km-be-1', { action: 'apply', services: 'x' });
    await ev('apply:km-be-1', 'apply', 'km-be-1', { hotfix: 'hotfix_common_x', changed: true });
    await recordPhase(sql, 'r-order', 'drain');
    await ev('drain:recorded', 'drain', undefined, { drained: [{ server: 'km-be-2', maxProcesses: 5 }] });
    await recordPhase(sql, 'r-order', 'canary');
    await ev('verify:apply:km-be-1', 'verified', 'km-be-1', { hotfix: 'hotfix_common_x', applied: true });
    const order = (await rolloutEvents(sql, 'r-order')).map(
      (e) => `${e.kind === 'phase' ? `phase ${String(e.detail.phase)}` : e.kind}${e.server ? ` ${e.server}` : ''}`,
    );
    assert.deepEqual(order, [
      'started',
      'canary km-be-1',
      'phase drain',
      'drain',
      'phase canary',
      'sent km-be-1',
      'apply km-be-1',
      'verified km-be-1',
    ]);
    const written = await sql<
      { kind: string }[]
    >`SELECT kind FROM rollout_event WHERE rollout_id = 'r-order' ORDER BY seq`;
    assert.ok(
      written.findIndex((r) => r.kind === 'apply') < written.findIndex((r) => r.kind === 'drain'),
      'the rows were written out of order',
    );
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
    await assert.rejects(
      claim(sql, 'r3', 'hotfix_frontend_z', ['s2', 's3']),
      (e: unknown) =>
        e instanceof ClaimConflict &&
        /rollout r2 is still active on s2/.test(e.message) &&
        e.activeRollouts.includes('r2'),
    );
    await assert.rejects(claim(sql, 'r3', 'hotfix_backend_y', ['s9']), /r2 is still active on hotfix hotfix_backend_y/);
    assert.deepEqual(await conflictingRollouts(sql, 'hotfix_frontend_z', ['s3']), []);
    await recordPhase(sql, 'r2', 'completed');
    await claim(sql, 'r3', 'hotfix_frontend_z', ['s2', 's3']);
    const [row] = await sql<
      { outcome: string; ended_at: Date | null }[]
    >`SELECT outcome, ended_at FROM rollout WHERE id = 'r2'`;
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
  it("orders a server's states as the database received them, not by the writers' clocks (issue 22, item 7)", async () => {
    await start('clocks');
    await appendServerStates(sql, 'clocks', [
      { server: 'a', state: 'pending', at: '2026-01-01T10:00:00.000Z', position: 0, role: 'backend' },
      { server: 'b', state: 'pending', at: '2026-01-01T10:00:00.000Z', position: 1, role: 'backend' },
    ]);
    // A run's end written by a worker whose clock is ahead, then the rollback's by one whose clock is behind.
    await appendServerStates(sql, 'clocks', [
      {
        server: 'a',
        state: 'patched',
        at: '2026-01-01T10:05:00.000Z',
        startedAt: '2026-01-01T10:04:00.000Z',
        endedAt: '2026-01-01T10:05:00.000Z',
      },
    ]);
    await appendServerStates(sql, 'clocks', [
      {
        server: 'a',
        state: 'rolled_back',
        at: '2026-01-01T10:03:00.000Z',
        startedAt: '2026-01-01T10:02:30.000Z',
        endedAt: '2026-01-01T10:03:00.000Z',
      },
    ]);
    const page = await serverStates(sql, 'clocks', { page: 1, pageSize: 10 });
    assert.deepEqual(
      page.servers.map((s) => [s.name, s.state]),
      [
        ['a', 'rolled_back'],
        ['b', 'pending'],
      ],
    );
    assert.equal(page.servers[0].startedAt, '2026-01-01T10:02:30.000Z', 'the start of the step received last');
    assert.deepEqual(await serverStateCounts(sql, 'clocks'), { rolled_back: 1, pending: 1 });
    assert.deepEqual(
      (await latestStates(sql, 'clocks', ['a'])).map((s) => s.state),
      ['rolled_back'],
    );
    // The writers' times stay, for display.
    const rows = await sql<
      { at: Date }[]
    >`SELECT at FROM rollout_server WHERE rollout_id = 'clocks' AND server = 'a' ORDER BY seq`;
    assert.deepEqual(
      rows.map((r) => r.at.toISOString()),
      ['2026-01-01T10:00:00.000Z', '2026-01-01T10:05:00.000Z', '2026-01-01T10:03:00.000Z'],
    );
  });

  it('pages per-server states: the latest per server wins whatever order writes land in, inventory order, a state filter; rows are append-only', async () => {
    await start('big');
    const n = FULL_SERVER_LIST_MAX + 50;
    const names = Array.from({ length: n }, (_, i) => `km3-be-${String(i + 1).padStart(5, '0')}`);
    const t0 = '2026-01-01T10:00:00.000Z';
    // A batch child's result lands before the parent's initial list (the parent's write was retried): the later 'at' still wins.
    await appendServerStates(sql, 'big', [
      {
        server: names[3],
        state: 'failed',
        at: '2026-01-01T10:05:00.000Z',
        startedAt: '2026-01-01T10:04:00.000Z',
        endedAt: '2026-01-01T10:05:00.000Z',
        error: 'apply failed',
      },
    ]);
    await appendServerStates(
      sql,
      'big',
      names.map((server, position) => ({ server, state: 'pending', at: t0, position, role: 'backend' })),
    );
    await appendServerStates(
      sql,
      'big',
      names.slice(0, 3).map((server) => ({
        server,
        state: 'patched',
        at: '2026-01-01T10:02:00.000Z',
        endedAt: '2026-01-01T10:02:00.000Z',
      })),
    );
    // Retried: the same rows again change nothing.
    await appendServerStates(
      sql,
      'big',
      names.slice(0, 3).map((server) => ({
        server,
        state: 'patched',
        at: '2026-01-01T10:02:00.000Z',
        endedAt: '2026-01-01T10:02:00.000Z',
      })),
    );

    const first = await serverStates(sql, 'big', { page: 1, pageSize: 100 });
    assert.equal(first.total, n);
    assert.deepEqual(
      first.servers.slice(0, 5).map((s) => [s.name, s.state, s.role]),
      [
        [names[0], 'patched', 'backend'],
        [names[1], 'patched', 'backend'],
        [names[2], 'patched', 'backend'],
        [names[3], 'failed', 'backend'],
        [names[4], 'pending', 'backend'],
      ],
    );
    assert.equal(first.servers[3].error, 'apply failed');
    assert.equal(first.servers[3].startedAt, '2026-01-01T10:04:00.000Z');
    const last = await serverStates(sql, 'big', { page: 6, pageSize: 100 });
    assert.deepEqual(
      last.servers.map((s) => s.name),
      names.slice(500),
    );
    const past = await serverStates(sql, 'big', { page: 7, pageSize: 100 });
    assert.equal(past.servers.length, 0);
    assert.equal(past.total, n, 'a page past the end still says how many there are');
    const failed = await serverStates(sql, 'big', { state: 'failed', page: 1, pageSize: 10 });
    assert.deepEqual(
      failed.servers.map((s) => s.name),
      [names[3]],
    );
    assert.equal(failed.total, 1);
    const either = await serverStates(sql, 'big', { states: ['failed', 'patched'], page: 1, pageSize: 2 });
    assert.deepEqual(
      either.servers.map((s) => [s.name, s.state]),
      [
        [names[0], 'patched'],
        [names[1], 'patched'],
      ],
      'several states, inventory order',
    );
    assert.equal(either.total, 4);
    assert.equal(
      (await serverStates(sql, 'big', { states: [], page: 1, pageSize: 10 })).total,
      0,
      'no state: no server',
    );
    assert.deepEqual(await serverStateCounts(sql, 'big'), { patched: 3, failed: 1, pending: n - 4 });

    // The status rebuilt from the ledger is bounded: counts, the failed server, no per-server list above the threshold.
    const st = await ledgerStatus(sql, 'big', new Map());
    assert.ok(st);
    assert.equal(st.servers, undefined);
    assert.equal(st.serverCount, n);
    assert.deepEqual(st.serverCounts, { patched: 3, failed: 1, pending: n - 4 });
    assert.deepEqual(
      st.attention.map((s) => s.name),
      [names[3]],
    );

    await assert.rejects(sql`UPDATE rollout_server SET state = 'patched' WHERE rollout_id = 'big'`, /append-only/);
    await assert.rejects(sql`DELETE FROM rollout_server WHERE rollout_id = 'big'`, /append-only/);
    await assert.rejects(sql`TRUNCATE rollout_server`, /append-only/);
  });
});
