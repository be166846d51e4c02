// Issue 9, items 1-7 and 9: each test here failed before its fix. Against the
// real stack (Temporal dev server, PostgreSQL, the simulated fleet over SSH);
// every rollout ends by the invariant of test/helpers/invariant.ts.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { rolloutEnv, RolloutEnv, FAST_TIMING } from './helpers/rollout-env';
import { assertRolloutInvariant } from './helpers/invariant';
import { pauseUpdate } from '../domain/messages/rollout';
import { WORKFLOW_TYPES } from '../domain/messages/rollout';
import type { RolloutStatus } from '../domain/messages/rollout';
import { recordRolloutStart } from '../store/ledger-writes';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const APPLY = /--apply-hotfix=/;

/** Make the orchestrator database unreachable (new connections refused, open ones cut) until the returned function is called. */
async function orchestratorDown(env: RolloutEnv): Promise<() => Promise<void>> {
  const db = new URL(env.orchestratorUrl).pathname.slice(1);
  await env.km.unsafe(`ALTER DATABASE "${db}" ALLOW_CONNECTIONS false`);
  await env.km`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${db}`;
  return async () => {
    await env.km.unsafe(`ALTER DATABASE "${db}" ALLOW_CONNECTIONS true`);
  };
}

describe('rollback you can trust (issue 9)', function () {
  this.timeout(120_000);
  let env: RolloutEnv;
  before(async () => {
    env = await rolloutEnv({ frontends: 2, backends: 3 });
  });
  after(async () => {
    await env?.close();
  });
  afterEach(async () => {
    await env?.endAll();
    await env.km`DELETE FROM km_hotfix_applied`;
    for (const s of env.fleet.servers) {
      s.clearLog();
      s.clearFaults();
    }
  });

  it('1: servers whose apply took effect but whose answer was lost are rolled back too (every attempted target, per the KM database)', async () => {
    const hf = await env.hotfix('backend');
    const before = await env.maxProcesses();
    // Fan-out: km-be-2, km-be-3, km-fe-1 apply, then the connection dies before the exit status; km-fe-2 fails.
    for (const n of ['km-be-2', 'km-be-3', 'km-fe-1'])
      env.fleet.server(n).fault({ dropConnection: 1, dropOn: 'apply' });
    env.fleet.server('km-fe-2').fault({ failApplies: 10 });
    const h = await env.startRollout({ hotfix: hf.name, batch: '100%' });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'rolled_back', st.error ?? '');
    for (const n of ['km-be-2', 'km-be-3', 'km-fe-1']) {
      assert.ok(
        env.fleet
          .server(n)
          .log()
          .some((e) => e.dropped),
        `${n}: the answer was really lost`,
      );
      assert.equal(env.commands(n, /--unapply-hotfix=/).length, 1, `${n} unapplied`);
    }
    await assertRolloutInvariant(env, st, { maxProcessesBefore: before });
  });

  it('1: a server that already had the hotfix (skipped at preflight) is never rolled back', async () => {
    const hf = await env.hotfix('frontend');
    await env.km`INSERT INTO km_hotfix_applied (server_name, hotfix_name) VALUES ('km-be-3', ${hf.name})`;
    const before = await env.maxProcesses();
    const h = await env.startRollout({ hotfix: hf.name });
    await env.waitForPhase(h, 'verifying');
    await env.reject(h, 'bob', 'no');
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'rolled_back');
    assert.deepEqual(await env.applied(hf.name), ['km-be-3'], 'the server patched before this rollout keeps it');
    assert.deepEqual(
      env.commands('km-be-3', /--(un)?apply-hotfix=|supervisorctl restart/),
      [],
      'never changed: it was skipped',
    );
    await assertRolloutInvariant(env, st, { maxProcessesBefore: before });
  });

  it('2: a workflow cancelled mid-drain restores every backend it drained, exactly', async () => {
    const hf = await env.hotfix('backend');
    const before = await env.maxProcesses();
    let h: Awaited<ReturnType<RolloutEnv['startRollout']>> | undefined;
    // Hold km-be-3's row: the drain sets km-be-2 to 0, then waits on km-be-3; the workflow is cancelled then.
    await env.km.begin(async (tx) => {
      await tx`SELECT 1 FROM km_server WHERE name = 'km-be-3' FOR UPDATE`;
      h = await env.startRollout({ hotfix: hf.name });
      for (let i = 0; (await env.maxProcesses())['km-be-2'] !== 0; i++) {
        if (i > 300) assert.fail('the drain never started');
        await sleep(20);
      }
      await h.cancel();
      await sleep(500);
    });
    const st = (await h!.result()) as RolloutStatus;
    assert.equal(st.phase, 'rolled_back', st.error ?? '');
    assert.match(st.error ?? '', /cancelled/);
    assert.deepEqual(await env.maxProcesses(), before, 'Maximum Processes restored exactly');
    await assertRolloutInvariant(env, st, { maxProcessesBefore: before });
  });

  it('3: a pause that arrives while fan-out children are being started reaches them', async () => {
    const hf = await env.hotfix('frontend');
    const h = await env.startRollout({ hotfix: hf.name, batch: '1', timing: { ...FAST_TIMING, sliceServers: 2 } });
    await env.waitForPhase(h, 'verifying');
    // Signed beforehand and sent with the approval: the pause is accepted while the children start.
    const pause = await env.decide(h, 'alice', 'pause');
    await Promise.all([env.approve(h, 'bob'), h.executeUpdate(pauseUpdate, { args: [pause] })]);
    const atPause = (await env.applied(hf.name)).length;
    await sleep(2_000);
    const applied = await env.applied(hf.name);
    assert.ok(
      applied.length <= atPause + 1,
      `no server starts after the pause, beyond the one in flight: ${atPause} applied at the pause, then ${applied}`,
    );
    assert.ok(applied.length < 5, `the pause held the fan-out: ${applied}`);
    await env.resume(h, 'alice');
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'completed', st.error ?? '');
    assert.equal((await env.applied(hf.name)).length, 5);
  });

  it('3: a pause given while a fan-out child is being started reaches it (deterministic probe)', async () => {
    const probe = await rolloutEnv({
      frontends: 4,
      backends: 0,
      restartMs: 200,
      workflowsPath: path.resolve(__dirname, 'fixtures', 'steering-workflows.js'),
    });
    try {
      const hf = await probe.hotfix('frontend');
      const servers = probe.fleet.servers.map((s) => s.name);
      const workflowId = `probe-${hf.name}`;
      await recordRolloutStart(probe.orchestrator, {
        id: workflowId,
        kind: 'rollout',
        hotfix: hf.name,
        requestedBy: 'alice',
        servers,
        options: {},
      }); // its ledger row
      const h = await probe.client.workflow.start('pauseWhileChildrenStart', {
        taskQueue: probe.taskQueue,
        workflowId,
        args: [{ hotfix: hf.name, servers, timing: FAST_TIMING }],
      });
      await sleep(2_500);
      const during = await probe.applied(hf.name);
      assert.ok(during.length <= 1, `paused: at most the one server that was starting, not ${during.join(', ')}`);
      await h.signal('probeResume');
      assert.equal(await h.result(), 0);
      assert.equal((await probe.applied(hf.name)).length, 4, 'resumed: all patched');
    } finally {
      await probe.close();
    }
  });

  it('4: a rollout cancelled in preflight records `failed` in the ledger and releases its claims', async () => {
    const hf = await env.hotfix('frontend');
    env.fleet.server('km-be-3').fault({ hangMs: 5_000, hangOn: 'status' }); // the health check waits here
    const h = await env.startRollout({ hotfix: hf.name });
    for (let i = 0; env.commands('km-be-3', /supervisorctl status/).length === 0 && i < 20; i++) await sleep(100);
    await sleep(300);
    await h.cancel();
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'failed');
    const [row] = await env.orchestrator<{ phase: string }[]>`SELECT phase FROM rollout WHERE id = ${h.workflowId}`;
    assert.equal(row.phase, 'failed', 'the ledger records the ending');
    const claims = await env.orchestrator`SELECT server FROM server_claim WHERE rollout_id = ${h.workflowId}`;
    assert.equal(claims.length, 0, 'claims released');
  });

  it('4: a removal cancelled while removing records `failed` and releases its claims', async () => {
    const hf = await env.hotfix('frontend');
    await env.km`INSERT INTO km_hotfix_applied (server_name, hotfix_name) SELECT name, ${hf.name} FROM km_server`;
    for (const s of env.fleet.servers) s.fault({ restartMs: 1_000 });
    const h = await env.startRemoval({ hotfix: hf.name });
    await env.waitForPhase(h, 'removing');
    await sleep(300);
    await h.cancel();
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'failed');
    const [row] = await env.orchestrator<{ phase: string }[]>`SELECT phase FROM rollout WHERE id = ${h.workflowId}`;
    assert.equal(row.phase, 'failed');
    assert.equal((await env.orchestrator`SELECT 1 FROM server_claim WHERE rollout_id = ${h.workflowId}`).length, 0);
    await sleep(1_200); // a restart cut off by the cancel settles before the next test
  });

  it('5: with the orchestrator database down, the rollback sends no restart it cannot record first; it finishes once the database is back', async () => {
    const hf = await env.hotfix('frontend');
    const before = await env.maxProcesses();
    const h = await env.startRollout({ hotfix: hf.name });
    const gate = await env.waitForPhase(h, 'verifying');
    assert.equal(gate.phase, 'verifying', gate.error ?? '');
    const canary = gate.canary ?? '';
    const restartsBefore = env.commands(canary, /supervisorctl restart all/).length;
    const up = await orchestratorDown(env);
    try {
      await env.reject(h, 'bob', 'broken');
      await env.waitForPhase(h, 'rolling_back');
      await sleep(2_000);
      // The record of the unapply (the pids a retry judges its restart by) must land before the restart is sent.
      assert.equal(
        env.commands(canary, /supervisorctl restart all/).length,
        restartsBefore,
        'no restart was sent while its record could not be written',
      );
    } finally {
      await up();
    }
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'rolled_back', st.error ?? '');
    // The restart owed for the unapply was sent once the database was back, and only once.
    await assertRolloutInvariant(env, st, { maxProcessesBefore: before });
  });

  it('6: invalid workflow inputs end the workflow at once (an invalid upload file name ends it failed)', async () => {
    const upload = await env.client.workflow.start(WORKFLOW_TYPES.upload, {
      taskQueue: env.taskQueue,
      workflowId: `upload-bad-${Date.now()}`,
      args: [{ requestedBy: 'tester', sha256: 'abc', fileName: 'not-a-hotfix.gz' }],
    });
    const st = (await upload.result()) as RolloutStatus;
    assert.equal(st.phase, 'failed');
    assert.match(st.error ?? '', /invalid upload/);
    const bad = await env.startRollout({ hotfix: 'hotfix_common_x', maxFailures: -1 });
    const rs = (await bad.result()) as RolloutStatus;
    assert.equal(rs.phase, 'failed');
    assert.match(rs.error ?? '', /maxFailures/);
    const none = await env.client.workflow.start(WORKFLOW_TYPES.rollout, {
      taskQueue: env.taskQueue,
      workflowId: `rollout-none-${Date.now()}`,
      args: [null],
    });
    await assert.rejects(
      none.result(),
      (err: unknown) =>
        err instanceof WorkflowFailedError && /needs its input/.test(String((err.cause as Error)?.message)),
    );
  });

  it('7: status never shows `verifying` without its gate, even while the ledger write of the phase waits', async () => {
    const hf = await env.hotfix('frontend');
    env.fleet.server('km-fe-1').fault({ restartMs: 1_000 });
    const h = await env.startRollout({ hotfix: hf.name });
    await env.waitForPhase(h, 'canary');
    await env.orchestrator.begin(async (tx) => {
      // The ledger's rollout row is held: recording a phase waits.
      await tx`SELECT 1 FROM rollout WHERE id = ${h.workflowId} FOR NO KEY UPDATE`;
      let seen: RolloutStatus | undefined;
      for (let i = 0; i < 300; i++) {
        const st = await env.status(h);
        if (st.phase === 'verifying') {
          seen = st;
          break;
        }
        await sleep(10);
      }
      assert.ok(seen, 'verifying reached while the ledger waits');
      assert.ok(seen.gate, 'the gate is there as soon as the phase shows');
    });
    await env.reject(h, 'bob', 'test over');
    assert.equal(((await h.result()) as RolloutStatus).phase, 'rolled_back');
  });

  it('9: the services deadline is total across retries of the verify step', async () => {
    const hf = await env.hotfix('frontend');
    const before = await env.maxProcesses();
    env.fleet.server('km-fe-1').fault({ restartMs: 800 });
    const h = await env.startRollout({
      hotfix: hf.name,
      timing: { ...FAST_TIMING, servicesTimeoutMs: 2_000, commandTimeoutMs: 1_000 },
    });
    await env.waitForPhase(h, 'canary');
    for (let i = 0; env.commands('km-fe-1', APPLY).length === 0; i++) {
      if (i > 400) assert.fail('the canary was never applied');
      await sleep(10);
    }
    // Two status checks after the apply hang past their 1 s timeout: each retry of the step would get a fresh 2 s otherwise.
    env.fleet.server('km-fe-1').fault({ hangMs: 1_500, hangOn: 'status', hangCount: 2 });
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'rolled_back', st.error ?? '');
    assert.match(st.error ?? '', /km-fe-1: services not confirmed RUNNING within 2s/);
    assert.equal(env.commands('km-fe-1', APPLY).length, 1);
    await assertRolloutInvariant(env, st, { maxProcessesBefore: before });
  });
});
