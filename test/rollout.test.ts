// The rollout workflow against the real Temporal dev server, real PostgreSQL
// and the simulated fleet over real SSH. Assertions read the simulator's
// command logs and the Key Manager database, not the workflow's own word.
import assert from 'node:assert/strict';
import { rolloutEnv, RolloutEnv } from './helpers/rollout-env';
import { approveUpdate, rejectUpdate } from '../workflows/definitions';
import type { RolloutStatus } from '../domain/rollout';

const APPLY = /ssh-mgr-controller --apply-hotfix=/;
const UNAPPLY = /ssh-mgr-controller --unapply-hotfix=/;
const RESTART = /supervisorctl restart all/;

function firstApplyAt(env: RolloutEnv, server: string): number {
  const e = env.fleet.server(server).log().find((x) => APPLY.test(x.command) && x.exitCode === 0);
  return e ? Date.parse(e.at) : Infinity;
}

describe('rollout: canary by hotfix type, verification gate, fan-out, rollback', function () {
  this.timeout(120_000);
  let env: RolloutEnv;
  before(async () => { env = await rolloutEnv({ frontends: 2, backends: 3 }); });
  after(async () => { await env?.close(); });
  afterEach(async () => {
    // Each test starts from a clean fleet: nothing applied, logs cleared.
    await env.km`DELETE FROM km_hotfix_applied`;
    for (const s of env.fleet.servers) { s.clearLog(); s.clearFaults(); }
  });

  it('backend hotfix: canary is a backend, every other unpatched backend drained while verifying, restored exactly after approve, then all patched once, canary first', async () => {
    const hf = await env.hotfix('backend');
    const before = await env.maxProcesses();
    const h = await env.startRollout({ hotfix: hf.name, batch: '2' });
    const st = await env.waitForPhase(h, 'verifying');
    assert.equal(st.phase, 'verifying');
    assert.equal(st.canary, 'km-be-1');
    const during = await env.maxProcesses();
    assert.equal(during['km-be-2'], 0);
    assert.equal(during['km-be-3'], 0);
    assert.equal(during['km-be-1'], before['km-be-1'], 'the canary keeps running operations');
    assert.equal(during['km-fe-1'], before['km-fe-1'], 'frontends are not drained');
    assert.deepEqual(await env.applied(hf.name), ['km-be-1']);
    assert.deepEqual(st.drained.map((d) => d.server), ['km-be-2', 'km-be-3']);
    assert.match(st.gate?.message ?? '', /km-be-2, km-be-3/);

    await h.executeUpdate(approveUpdate, { args: [{ by: 'bob', comment: 'looks good' }] });
    const done = (await h.result()) as RolloutStatus;
    assert.equal(done.phase, 'completed', done.error ?? '');
    assert.deepEqual(await env.maxProcesses(), before, 'Maximum Processes restored exactly');
    assert.deepEqual(await env.applied(hf.name), ['km-be-1', 'km-be-2', 'km-be-3', 'km-fe-1', 'km-fe-2']);
    for (const s of env.fleet.servers) {
      assert.equal(env.commands(s.name, APPLY).length, 1, `${s.name} applied exactly once`);
      assert.ok(env.commands(s.name, RESTART).length >= 1, `${s.name} restarted`);
    }
    const canaryAt = firstApplyAt(env, 'km-be-1');
    for (const s of env.fleet.servers.filter((x) => x.name !== 'km-be-1')) assert.ok(firstApplyAt(env, s.name) > canaryAt, `${s.name} after the canary`);
    assert.deepEqual(done.approvals.map((a) => [a.by, a.decision, a.comment]), [['bob', 'approve', 'looks good']]);
    assert.ok(done.servers.every((s) => s.state === 'patched'));
  });

  it('frontend hotfix: the canary is a frontend and nothing is drained', async () => {
    const hf = await env.hotfix('frontend');
    const before = await env.maxProcesses();
    const h = await env.startRollout({ hotfix: hf.name });
    const st = await env.waitForPhase(h, 'verifying');
    assert.equal(st.canary, 'km-fe-1');
    assert.deepEqual(st.drained, []);
    assert.deepEqual(await env.maxProcesses(), before);
    await h.executeUpdate(rejectUpdate, { args: [{ by: 'bob', reason: 'login page broken' }] });
    const done = (await h.result()) as RolloutStatus;
    assert.equal(done.phase, 'rolled_back');
    assert.deepEqual(await env.applied(hf.name), []);
    assert.equal(env.commands('km-fe-1', UNAPPLY).length, 1, 'the canary was unapplied');
    assert.equal(env.commands('km-fe-1', RESTART).length, 2, 'restarted after apply and after unapply');
    for (const s of env.fleet.servers.filter((x) => x.name !== 'km-fe-1')) assert.deepEqual(env.commands(s.name, /ssh-mgr-controller/), [], `${s.name} untouched`);
    assert.equal(done.servers.find((s) => s.name === 'km-fe-2')?.state, 'untouched');
  });
});
