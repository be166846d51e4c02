// Fan-out in runs (workflows/batches.ts, activities/key-manager-ssh.ts
// runServers): one activity runs a window place's servers in turn. What a
// user would notice: a retried run does nothing twice, pause acts within one
// server's time, and status shows each server of a run as it goes.
import assert from 'node:assert/strict';
import { rolloutEnv, RolloutEnv } from './helpers/rollout-env';
import type { ServerState } from '../domain/rollout';
import type { RolloutStatus } from '../domain/messages/rollout';
import { mergeBatches, QUERY_TIMEOUT_MS } from '../status/live';
import { liveLedger } from '../store/server-states';
import { serversOf } from './helpers/servers';

const APPLY = /ssh-mgr-controller --apply-hotfix=/;
const RESTART = /supervisorctl restart all/;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('fan-out in runs: one activity per window place, several servers in turn', function () {
  this.timeout(120_000);
  let env: RolloutEnv;
  // A frontend hotfix: the canary is km-fe-1, fan-out the six backends (batch 1: one run of six; batch 2: runs of three).
  before(async () => {
    env = await rolloutEnv({ frontends: 1, backends: 6, restartMs: 50 });
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
      s.fault({ restartMs: 50 });
    }
  });

  it('a run retried after a lost connection on its third server resumes there: no server is applied or restarted twice', async () => {
    const hf = await env.hotfix('frontend');
    env.fleet.server('km-be-3').fault({ dropConnection: 1, dropOn: 'apply' });
    const h = await env.startRollout({ hotfix: hf.name, batch: '1' });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'completed', st.error ?? '');
    assert.equal((await env.applied(hf.name)).length, 7);
    assert.ok(
      env.fleet
        .server('km-be-3')
        .log()
        .some((e) => e.dropped),
      'the connection was really dropped',
    );
    for (const s of env.fleet.servers) {
      assert.equal(env.commands(s.name, APPLY).length, 1, `${s.name}: applied once`);
      assert.equal(env.commands(s.name, RESTART).length, 1, `${s.name}: restarted once`);
    }
  });

  it("pause acts within one server's time: the servers under way finish, no further server starts; resume completes", async () => {
    const hf = await env.hotfix('frontend');
    for (const s of env.fleet.servers) s.fault({ restartMs: 500 });
    const h = await env.startRollout({ hotfix: hf.name, batch: '2' });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    // The canary and the first fan-out server are applied: both places are in the middle of a run of three.
    for (const deadline = Date.now() + 30_000; (await env.applied(hf.name)).length < 2; await sleep(20))
      assert.ok(Date.now() < deadline, 'fan-out started');
    const answer = await env.pause(h, 'alice');
    assert.equal(answer.paused, true);
    const atPause = (await env.applied(hf.name)).length;
    await sleep(2500); // several servers' time (apply + 0.5 s restart)
    const later = await env.applied(hf.name);
    assert.ok(
      later.length <= atPause + 2,
      `${atPause} applied when the pause was answered, ${later.length} 2.5 s later: at most the 2 in flight may finish`,
    );
    assert.ok(later.length < 7, 'the pause held');
    await sleep(500);
    assert.equal((await env.applied(hf.name)).length, later.length, 'nothing more while paused');
    await env.resume(h, 'alice');
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'completed', st.error ?? '');
    assert.equal((await env.applied(hf.name)).length, 7);
    for (const s of env.fleet.servers) assert.equal(env.commands(s.name, APPLY).length, 1, `${s.name}: applied once`);
  });

  it('status shows each server of a run as it goes (from the ledger), never more in flight than the window', async () => {
    const hf = await env.hotfix('frontend');
    for (const s of env.fleet.servers) s.fault({ restartMs: 400 });
    const h = await env.startRollout({ hotfix: hf.name, batch: '1' });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    const ledger = liveLedger(env.orchestrator);
    const seen: Record<ServerState, number>[] = [];
    let midRun = false;
    for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(50)) {
      const own = await env.status(h);
      if (own.phase !== 'fanout') {
        if (seen.length > 0) break;
        continue;
      }
      const st = await mergeBatches(env.client, own, QUERY_TIMEOUT_MS, ledger);
      const fanned = serversOf(st).filter((s) => s.name !== 'km-fe-1');
      const count = (state: ServerState) => fanned.filter((s) => s.state === state).length;
      seen.push({ patching: count('patching'), patched: count('patched'), pending: count('pending') } as Record<
        ServerState,
        number
      >);
      assert.ok(count('patching') <= 1, `--batch 1: ${count('patching')} patching at once`);
      // Inside the one run of six: some done, one under way, some not started, while the workflow has no result yet.
      if (count('patched') >= 1 && count('patching') === 1 && count('pending') >= 1) midRun = true;
    }
    assert.ok(
      midRun,
      `a status mid-run shows servers patched, one patching and the rest pending: ${JSON.stringify(seen)}`,
    );
    assert.equal(((await h.result()) as RolloutStatus).phase, 'completed');
  });
});
