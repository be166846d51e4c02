// Removing a hotfix: unapply and restart everywhere it is applied, then
// delete it from the Key Manager database; a removal limited to some servers
// keeps the registration.
import assert from 'node:assert/strict';
import { rolloutEnv, RolloutEnv } from './helpers/rollout-env';
import type { RolloutStatus } from '../domain/messages/rollout';
import { serversOf } from './helpers/servers';

const UNAPPLY = /ssh-mgr-controller --unapply-hotfix=/;
const RESTART = /supervisorctl restart all/;

describe('removal: unapply everywhere, then delete', function () {
  this.timeout(120_000);
  let env: RolloutEnv;
  before(async () => {
    env = await rolloutEnv({ frontends: 2, backends: 2 });
  });
  after(async () => {
    await env?.close();
  });
  // Pass or fail, nothing a test started keeps running or holds a server.
  afterEach(async () => {
    await env?.endAll();
  });

  async function rolledOut(component: 'frontend' | 'backend' | 'common'): Promise<string> {
    const hf = await env.hotfix(component);
    const h = await env.startRollout({ hotfix: hf.name, batch: '100%' });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    assert.equal(((await h.result()) as RolloutStatus).phase, 'completed');
    assert.equal((await env.applied(hf.name)).length, 4);
    for (const s of env.fleet.servers) s.clearLog();
    return hf.name;
  }

  const registered = async (name: string) => (await env.km`SELECT 1 FROM km_hotfix WHERE name = ${name}`).length === 1;

  it('unapplies and restarts on every server that has it, one at a time, then deletes it from km_hotfix', async () => {
    const name = await rolledOut('common');
    const st = (await (await env.startRemoval({ hotfix: name })).result()) as RolloutStatus;
    assert.equal(st.phase, 'completed', st.error ?? '');
    assert.deepEqual(await env.applied(name), []);
    assert.equal(await registered(name), false);
    for (const s of env.fleet.servers) {
      assert.equal(env.commands(s.name, UNAPPLY).length, 1, `${s.name} unapplied once`);
      assert.equal(env.commands(s.name, RESTART).length, 1, `${s.name} restarted`);
    }
    assert.ok(serversOf(st).every((s) => s.state === 'removed'));
    // One at a time, in inventory order.
    const at = env.fleet.servers.map((s) => Date.parse(s.log().find((e) => UNAPPLY.test(e.command))!.at));
    assert.deepEqual(
      [...at].sort((a, b) => a - b),
      at,
    );
  });

  it('limited to some servers: only those are unapplied and the hotfix stays registered', async () => {
    const name = await rolledOut('frontend');
    const st = (await (
      await env.startRemoval({ hotfix: name, servers: ['km-fe-2', 'km-be-1'] })
    ).result()) as RolloutStatus;
    assert.equal(st.phase, 'completed', st.error ?? '');
    assert.deepEqual(await env.applied(name), ['km-be-2', 'km-fe-1']);
    assert.equal(await registered(name), true);
    assert.deepEqual(env.commands('km-fe-1', UNAPPLY), []);
  });

  it('--keep-registered unapplies everywhere but keeps the registration; a failing server stops the deletion', async () => {
    const name = await rolledOut('backend');
    const kept = (await (await env.startRemoval({ hotfix: name, keepRegistered: true })).result()) as RolloutStatus;
    assert.equal(kept.phase, 'completed');
    assert.deepEqual(await env.applied(name), []);
    assert.equal(await registered(name), true);

    const again = await rolledOut('backend');
    env.fleet.server('km-be-1').fault({ failUnapplies: 10 });
    const st = (await (await env.startRemoval({ hotfix: again })).result()) as RolloutStatus;
    assert.equal(st.phase, 'failed');
    assert.match(st.error ?? '', /could not remove .* from km-be-1/);
    assert.deepEqual(st.needsAttention, ['km-be-1']);
    assert.ok((await env.applied(again)).includes('km-be-1'));
    assert.equal(await registered(again), true, 'still applied somewhere: not deleted');
    env.fleet.server('km-be-1').clearFaults();
  });
});
