// The rollout workflow against the real Temporal dev server, real PostgreSQL
// and the simulated fleet over real SSH. Assertions read the simulator's
// command logs and the Key Manager database, not the workflow's own word.
import assert from 'node:assert/strict';
import { rolloutEnv, RolloutEnv, FAST_TIMING } from './helpers/rollout-env';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { rejectUpdate } from '../domain/messages/rollout';
import type { RolloutStatus } from '../domain/messages/rollout';
import { serversOf } from './helpers/servers';

const APPLY = /ssh-mgr-controller --apply-hotfix=/;
const UNAPPLY = /ssh-mgr-controller --unapply-hotfix=/;
const RESTART = /supervisorctl restart all/;
/** What changes a server (an upload registers through the first server: not a change of that server). */
const CHANGES = /--(un)?apply-hotfix=|supervisorctl restart/;

function firstApplyAt(env: RolloutEnv, server: string): number {
  const e = env.fleet
    .server(server)
    .log()
    .find((x) => APPLY.test(x.command) && x.exitCode === 0);
  return e ? Date.parse(e.at) : Infinity;
}

describe('rollout: canary by hotfix type, verification gate, fan-out, rollback', function () {
  this.timeout(120_000);
  let env: RolloutEnv;
  before(async () => {
    env = await rolloutEnv({ frontends: 2, backends: 3 });
  });
  after(async () => {
    await env?.close();
  });
  afterEach(async () => {
    // Pass or fail, nothing a test started keeps running or holds a server.
    await env?.endAll();
    // Each test starts from a clean fleet: nothing applied, logs cleared.
    await env.km`DELETE FROM km_hotfix_applied`;
    for (const s of env.fleet.servers) {
      s.clearLog();
      s.clearFaults();
    }
  });

  it('backend hotfix: canary is a backend, every other unpatched backend drained while verifying, restored exactly after approve, then all patched once, canary first', async () => {
    const hf = await env.hotfix('backend');
    const before = await env.maxProcesses();
    const h = await env.startRollout({ hotfix: hf.name, batch: '2' });
    const st = await env.waitForPhase(h, 'verifying');
    assert.equal(st.phase, 'verifying');
    assert.equal(st.canary, 'km-be-1', st.error ?? '');
    const during = await env.maxProcesses();
    assert.equal(during['km-be-2'], 0);
    assert.equal(during['km-be-3'], 0);
    assert.equal(during['km-be-1'], before['km-be-1'], 'the canary keeps running operations');
    assert.equal(during['km-fe-1'], before['km-fe-1'], 'frontends are not drained');
    assert.deepEqual(await env.applied(hf.name), ['km-be-1']);
    assert.deepEqual(
      st.drained.map((d) => d.server),
      ['km-be-2', 'km-be-3'],
    );
    assert.match(st.gate?.message ?? '', /km-be-2, km-be-3/);

    await env.approve(h, 'bob', 'looks good');
    const done = (await h.result()) as RolloutStatus;
    assert.equal(done.phase, 'completed', done.error ?? '');
    assert.deepEqual(await env.maxProcesses(), before, 'Maximum Processes restored exactly');
    assert.deepEqual(await env.applied(hf.name), ['km-be-1', 'km-be-2', 'km-be-3', 'km-fe-1', 'km-fe-2']);
    for (const s of env.fleet.servers) {
      assert.equal(env.commands(s.name, APPLY).length, 1, `${s.name} applied exactly once`);
      assert.ok(env.commands(s.name, RESTART).length >= 1, `${s.name} restarted`);
    }
    const canaryAt = firstApplyAt(env, 'km-be-1');
    for (const s of env.fleet.servers.filter((x) => x.name !== 'km-be-1'))
      assert.ok(firstApplyAt(env, s.name) > canaryAt, `${s.name} after the canary`);
    assert.deepEqual(
      done.approvals.map((a) => [a.by, a.decision, a.comment]),
      [['bob', 'approve', 'looks good']],
    );
    assert.ok(serversOf(done).every((s) => s.state === 'patched'));
  });

  it('frontend hotfix: the canary is a frontend and nothing is drained', async () => {
    const hf = await env.hotfix('frontend');
    const before = await env.maxProcesses();
    const h = await env.startRollout({ hotfix: hf.name });
    const st = await env.waitForPhase(h, 'verifying');
    assert.equal(st.canary, 'km-fe-1');
    assert.deepEqual(st.drained, []);
    assert.deepEqual(await env.maxProcesses(), before);
    await env.reject(h, 'bob', 'login page broken');
    const done = (await h.result()) as RolloutStatus;
    assert.equal(done.phase, 'rolled_back');
    assert.deepEqual(await env.applied(hf.name), []);
    assert.equal(env.commands('km-fe-1', UNAPPLY).length, 1, 'the canary was unapplied');
    assert.equal(env.commands('km-fe-1', RESTART).length, 2, 'restarted after apply and after unapply');
    for (const s of env.fleet.servers.filter((x) => x.name !== 'km-fe-1'))
      assert.deepEqual(env.commands(s.name, CHANGES), [], `${s.name} untouched`);
    assert.equal(serversOf(done).find((s) => s.name === 'km-fe-2')?.state, 'untouched');
  });

  it('common hotfix: the first server in inventory order is the canary; --canary is honoured', async () => {
    const hf = await env.hotfix('common');
    const h = await env.startRollout({ hotfix: hf.name });
    assert.equal((await env.waitForPhase(h, 'verifying')).canary, 'km-fe-1');
    await env.abort(h, 'alice', 'test over');
    assert.equal(((await h.result()) as RolloutStatus).phase, 'rolled_back');
    const h2 = await env.startRollout({ hotfix: hf.name, canary: 'km-be-2' });
    const st = await env.waitForPhase(h2, 'verifying');
    assert.equal(st.canary, 'km-be-2');
    assert.deepEqual(st.drained, [], 'a common hotfix drains nothing');
    assert.deepEqual(await env.applied(hf.name), ['km-be-2']);
    await env.abort(h2, 'alice', 'test over');
    await h2.result();
  });

  it('--canary of the wrong role is refused in preflight and nothing changes', async () => {
    const hf = await env.hotfix('backend');
    const h = await env.startRollout({ hotfix: hf.name, canary: 'km-fe-1' });
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'failed');
    assert.match(st.error ?? '', /--canary km-fe-1 has role frontend.*km-be-1, km-be-2, km-be-3/);
    assert.deepEqual(await env.applied(hf.name), []);
    for (const s of env.fleet.servers) assert.deepEqual(env.commands(s.name, CHANGES), []);
  });

  for (const ending of ['reject', 'timeout', 'abort'] as const) {
    it(`backend hotfix, ${ending} at the gate: Maximum Processes restored exactly, the canary unapplied and restarted, the fleet as before`, async () => {
      const hf = await env.hotfix('backend');
      const before = await env.maxProcesses();
      assert.equal(new Set(['km-be-1', 'km-be-2', 'km-be-3'].map((n) => before[n])).size, 3, 'distinct originals');
      const h = await env.startRollout({
        hotfix: hf.name,
        approvalTimeoutMs: ending === 'timeout' ? 2_000 : 3_600_000,
      });
      await env.waitForPhase(h, 'verifying');
      assert.equal((await env.maxProcesses())['km-be-3'], 0);
      if (ending === 'reject') await env.reject(h, 'bob', 'queue stalls');
      if (ending === 'abort') await env.abort(h, 'carol', 'change freeze');
      const st = (await h.result()) as RolloutStatus;
      assert.equal(st.phase, 'rolled_back', st.error ?? '');
      assert.match(
        st.error ?? '',
        ending === 'reject'
          ? /rejected by bob: queue stalls/
          : ending === 'abort'
            ? /aborted by carol: change freeze/
            : /no approval within 2s: the approval timeout counts as a rejection/,
      );
      assert.deepEqual(await env.maxProcesses(), before);
      assert.deepEqual(await env.applied(hf.name), []);
      assert.equal(env.commands('km-be-1', UNAPPLY).length, 1);
      assert.equal(env.commands('km-be-1', RESTART).length, 2);
      assert.equal(serversOf(st).find((s) => s.name === 'km-be-1')?.state, 'rolled_back');
      for (const s of env.fleet.servers.filter((x) => x.name !== 'km-be-1'))
        assert.deepEqual(env.commands(s.name, CHANGES), []);
    });
  }

  it('approve with --batch 2: fan-out never runs more than 2 servers at once (and does run 2)', async () => {
    const hf = await env.hotfix('frontend');
    for (const s of env.fleet.servers) s.fault({ restartMs: 300 });
    const h = await env.startRollout({ hotfix: hf.name, batch: '2' });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    assert.equal(((await h.result()) as RolloutStatus).phase, 'completed');
    // A server is busy from its apply until its last status check.
    const windows = env.fleet.servers
      .filter((s) => s.name !== 'km-fe-1')
      .map((s) => {
        const log = s.log();
        const start = Date.parse(log.find((e) => APPLY.test(e.command))!.at);
        const end = Math.max(...log.filter((e) => /supervisorctl status/.test(e.command)).map((e) => Date.parse(e.at)));
        return { start, end };
      });
    const widest = Math.max(
      ...windows.map((w) => windows.filter((o) => o.start <= w.start && w.start <= o.end).length),
    );
    assert.equal(widest, 2);
  });

  it('checksum mismatch on the canary: not retried, rolled back, and the error says the hotfix is for another version', async () => {
    const hf = await env.hotfix('backend', { version: '2.9.0' });
    const before = await env.maxProcesses();
    const h = await env.startRollout({ hotfix: hf.name });
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'rolled_back');
    assert.match(st.error ?? '', /SHA checksum on disk [0-9a-f]{40} does not match/);
    assert.match(st.error ?? '', /another Key Manager version|not intended for the current version/i);
    assert.equal(env.commands('km-be-1', APPLY).length, 1, 'exactly one apply: a checksum mismatch is never retried');
    assert.deepEqual(await env.applied(hf.name), []);
    assert.deepEqual(await env.maxProcesses(), before);
    assert.equal(serversOf(st).find((s) => s.name === 'km-be-1')?.state, 'rolled_back');
  });

  it('a failure at fan-out server k: every patched server unapplied in reverse order, the rest untouched', async () => {
    const hf = await env.hotfix('backend');
    env.fleet.server('km-fe-2').fault({ failApplies: 10 });
    const before = await env.maxProcesses();
    const h = await env.startRollout({ hotfix: hf.name, batch: '1', maxFailures: 0 });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'rolled_back', st.error ?? '');
    assert.match(st.error ?? '', /more than --max-failures 0: km-fe-2/);
    assert.equal(
      env.commands('km-fe-2', APPLY).length,
      3,
      'a failing command is tried 3 times, then the server has failed',
    );
    assert.deepEqual(await env.applied(hf.name), []);
    const unapplyAt = (n: string) =>
      Date.parse(
        env.fleet
          .server(n)
          .log()
          .find((e) => UNAPPLY.test(e.command))!.at,
      );
    assert.ok(unapplyAt('km-fe-1') < unapplyAt('km-be-1'), 'reverse order: km-fe-1 (patched last) before the canary');
    for (const n of ['km-be-2', 'km-be-3']) assert.deepEqual(env.commands(n, CHANGES), [], `${n} untouched`);
    const states = Object.fromEntries(serversOf(st).map((s) => [s.name, s.state]));
    assert.deepEqual(states, {
      'km-fe-1': 'rolled_back',
      'km-fe-2': 'rolled_back',
      'km-be-1': 'rolled_back',
      'km-be-2': 'untouched',
      'km-be-3': 'untouched',
    });
    assert.deepEqual(await env.maxProcesses(), before, 'drained backends restored after the failure too');
  });

  it('--max-failures 1 absorbs one failed server and completes the rest', async () => {
    const hf = await env.hotfix('frontend');
    env.fleet.server('km-be-1').fault({ failApplies: 10 });
    const h = await env.startRollout({ hotfix: hf.name, maxFailures: 1 });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'completed');
    assert.deepEqual(await env.applied(hf.name), ['km-be-2', 'km-be-3', 'km-fe-1', 'km-fe-2']);
    assert.equal(serversOf(st).find((s) => s.name === 'km-be-1')?.state, 'failed');
  });

  it('a connection dropped mid-apply is retried and the hotfix applied exactly once', async () => {
    const hf = await env.hotfix('frontend');
    env.fleet.server('km-fe-1').fault({ dropConnection: 1, dropOn: 'apply' });
    const h = await env.startRollout({ hotfix: hf.name });
    const st = await env.waitForPhase(h, 'verifying');
    assert.equal(st.phase, 'verifying');
    const log = env.fleet.server('km-fe-1').log();
    assert.equal(
      log.filter((e) => APPLY.test(e.command)).length,
      1,
      'the retry saw it applied and did not apply again',
    );
    assert.ok(
      log.some((e) => e.dropped),
      'the connection was really dropped',
    );
    assert.deepEqual(await env.applied(hf.name), ['km-fe-1']);
    await env.abort(h, 'alice');
    await h.result();
  });

  it('gate answers: self-approval, an unlisted approver, a reject without reason, answering twice or after the end are refused and change nothing', async () => {
    const hf = await env.hotfix('frontend');
    const h = await env.startRollout({ hotfix: hf.name, approvers: ['bob', 'dana'] });
    await env.waitForPhase(h, 'verifying');
    const refused = async (p: Promise<unknown>, re: RegExp) => {
      await assert.rejects(
        p,
        (err: unknown) => err instanceof WorkflowUpdateFailedError && re.test(String((err.cause as Error)?.message)),
      );
    };
    await refused(env.approve(h, 'alice'), /alice \(SHA256:[^)]+\) started this rollout/);
    await refused(env.approve(h, 'mallory'), /mallory is not an approver .*bob, dana/);
    await refused(
      h.executeUpdate(rejectUpdate, { args: [await env.decide(h, 'bob', 'reject', '')] }),
      /needs a reason/,
    );
    let st = await env.status(h);
    assert.equal(st.phase, 'verifying');
    assert.deepEqual(st.approvals, []);
    await env.approve(h, 'dana', 'ok');
    await refused(env.approve(h, 'bob'), /already been answered|not waiting/);
    st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'completed');
    assert.deepEqual(
      st.approvals.map((a) => a.by),
      ['dana'],
    );
  });

  it('pause holds fan-out between batches; resume continues', async () => {
    const hf = await env.hotfix('frontend');
    const h = await env.startRollout({ hotfix: hf.name });
    await env.waitForPhase(h, 'verifying');
    await env.pause(h, 'alice');
    await env.approve(h, 'bob');
    await env.waitForPhase(h, 'fanout');
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(await env.applied(hf.name), ['km-fe-1'], 'nothing patched while paused');
    assert.equal((await env.status(h)).paused, true);
    await env.resume(h, 'alice');
    assert.equal(((await h.result()) as RolloutStatus).phase, 'completed');
    assert.equal((await env.applied(hf.name)).length, 5);
  });

  it('a second rollout overlapping an active one is refused, naming it; one rollout per hotfix Name', async () => {
    const a = await env.hotfix('common');
    const b = await env.hotfix('frontend');
    const h = await env.startRollout({ hotfix: a.name, servers: ['km-fe-1', 'km-fe-2'] });
    await env.waitForPhase(h, 'verifying');
    const overlap = (await (
      await env.startRollout({ hotfix: b.name, servers: ['km-fe-2', 'km-be-1'] })
    ).result()) as RolloutStatus;
    assert.equal(overlap.phase, 'failed');
    assert.match(overlap.error ?? '', new RegExp(`rollout ${h.workflowId} is still active on km-fe-2`));
    const sameName = (await (
      await env.startRollout({ hotfix: a.name, servers: ['km-be-3'] })
    ).result()) as RolloutStatus;
    assert.match(sameName.error ?? '', new RegExp(`rollout ${h.workflowId} is still active on hotfix ${a.name}`));
    assert.deepEqual(await env.applied(b.name), []);
    await env.abort(h, 'alice');
    await h.result();
    // Once it ended, the same servers can be patched.
    const again = await env.startRollout({ hotfix: b.name, servers: ['km-fe-2', 'km-be-1'] });
    assert.equal((await env.waitForPhase(again, 'verifying')).phase, 'verifying');
    await env.abort(again, 'alice');
    await again.result();
  });

  it('re-running a rollout that was interrupted skips the servers already patched', async () => {
    const hf = await env.hotfix('frontend');
    for (const s of env.fleet.servers) s.fault({ restartMs: 400 });
    const h = await env.startRollout({ hotfix: hf.name });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    // Interrupt mid fan-out, as an operator terminating the workflow would.
    for (;;) {
      if ((await env.applied(hf.name)).length >= 2) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await h.terminate('interrupted by the test');
    const patched = await env.applied(hf.name);
    assert.ok(patched.length >= 2 && patched.length < 5, `partly patched: ${patched}`);
    await new Promise((r) => setTimeout(r, 600)); // let an interrupted restart finish (restartMs 400)
    for (const s of env.fleet.servers) s.clearLog();
    const again = await env.startRollout({ hotfix: hf.name });
    const st = await env.waitForPhase(again, 'verifying');
    assert.equal(st.phase, 'verifying', st.error ?? '');
    const skipped = serversOf(st)
      .filter((s) => s.state === 'skipped')
      .map((s) => s.name)
      .sort();
    assert.deepEqual(skipped, [...patched].sort());
    assert.ok(!patched.includes(st.canary!), 'the canary is a server without the hotfix');
    await env.approve(again, 'bob');
    assert.equal(((await again.result()) as RolloutStatus).phase, 'completed');
    assert.equal((await env.applied(hf.name)).length, 5);
    for (const n of patched) assert.deepEqual(env.commands(n, APPLY), [], `${n} was skipped, not applied again`);
  });

  it('a host key that differs from the pinned one is refused in preflight; no server or database changes', async () => {
    const hf = await env.hotfix('backend');
    const before = await env.maxProcesses();
    const [{ host_key: pinned }] = await env.orchestrator<
      { host_key: string }[]
    >`SELECT host_key FROM fleet_server WHERE name = 'km-be-2'`;
    const other = env.fleet.server('km-be-3').hostKey; // a real key, just not km-be-2's
    await env.orchestrator`UPDATE fleet_server SET host_key = ${other} WHERE name = 'km-be-2'`;
    try {
      const st = (await (await env.startRollout({ hotfix: hf.name })).result()) as RolloutStatus;
      assert.equal(st.phase, 'failed');
      assert.match(st.error ?? '', /km-be-2.*host key/i);
      assert.match(st.error ?? '', /nothing was changed/);
      assert.deepEqual(await env.applied(hf.name), []);
      assert.deepEqual(await env.maxProcesses(), before);
      for (const s of env.fleet.servers) assert.deepEqual(env.commands(s.name, CHANGES), [], `${s.name} unchanged`);
      assert.deepEqual(env.commands('km-be-2'), [], 'not a single command reached the server with the wrong key');
    } finally {
      await env.orchestrator`UPDATE fleet_server SET host_key = ${pinned} WHERE name = 'km-be-2'`;
    }
  });

  it('a server that cannot be rolled back ends rollback_failed and is named; the others are rolled back', async () => {
    const hf = await env.hotfix('frontend');
    // km-fe-2's services stay FATAL after every restart: patching fails, and so does its rollback.
    env.fleet.server('km-fe-2').fault({ fatalService: 'sshmgr-frontend' });
    const h = await env.startRollout({ hotfix: hf.name });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'rollback_failed');
    assert.deepEqual(
      st.needsAttention.map((n) => n.split(' ')[0]),
      ['km-fe-2'],
    );
    assert.match(st.needsAttention[0], /services not RUNNING.*FATAL/, 'it says how the server differs');
    assert.match(st.error ?? '', /km-fe-2/);
    assert.equal(serversOf(st).find((s) => s.name === 'km-fe-2')?.state, 'rollback_failed');
    assert.equal(serversOf(st).find((s) => s.name === 'km-fe-1')?.state, 'rolled_back');
    assert.deepEqual(await env.applied(hf.name), [], 'unapplied even where services did not come back');
    const [row] = await env.orchestrator<
      { phase: string; error: string }[]
    >`SELECT phase, error FROM rollout WHERE id = ${h.workflowId}`;
    assert.equal(row.phase, 'rollback_failed', 'the ledger says so too');
    assert.match(row.error, /needs a person: km-fe-2/);
  });

  it('a fan-out batch workflow that dies (terminated) counts as failed: the rollback visits all its servers', async () => {
    const hf = await env.hotfix('frontend');
    for (const s of env.fleet.servers) s.fault({ restartMs: 500 });
    const h = await env.startRollout({ hotfix: hf.name, batch: '1', timing: { ...FAST_TIMING, sliceServers: 2 } });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    let child: string | undefined;
    for (let i = 0; !child; i++) {
      const st = await env.status(h);
      if (st.activeBatchWorkflows.length > 0 && (await env.applied(hf.name)).length >= 2)
        child = st.activeBatchWorkflows[0];
      if (i > 300) assert.fail('fan-out never started');
      else await new Promise((r) => setTimeout(r, 20));
    }
    await env.client.workflow.getHandle(child).terminate('lost');
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'rolled_back', st.error ?? '');
    assert.match(st.error ?? '', /more than --max-failures 0/);
    await new Promise((r) => setTimeout(r, 700)); // an orphaned restart of the dead child settles
    assert.deepEqual(await env.applied(hf.name), [], 'nothing left applied');
    assert.ok(serversOf(st).filter((s) => s.state === 'rolled_back').length >= 2);
  });
});
