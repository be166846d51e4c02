// Rollouts through servers whose inventory entry says sudo: true, and
// through a server that refuses connections for a while.
import assert from 'node:assert/strict';
import { rolloutEnv, RolloutEnv } from './helpers/rollout-env';
import type { RolloutStatus } from '../domain/messages/rollout';
import { serversOf } from './helpers/servers';

describe('rollout over sudo and through refused connections', function () {
  this.timeout(120_000);
  let env: RolloutEnv;
  before(async () => {
    env = await rolloutEnv({ frontends: 1, backends: 2, sudoServers: ['km-fe-1', 'km-be-1'] });
  });
  after(async () => {
    await env?.close();
  });
  // Pass or fail, nothing a test started keeps running or holds a server.
  afterEach(async () => {
    await env?.endAll();
  });

  it('sudo: true servers get every privileged command as sudo -n, upload included, and are patched and rolled back like the others', async () => {
    const hf = await env.hotfix('backend'); // uploaded through km-fe-1, the first server: a sudo one
    const upload = env.commands('km-fe-1');
    assert.ok(
      upload.some((c) => /^sudo -n mv -f .*\/var\/lib\/sshmgr\/sshmgr-3\.0\.0-hotfix_backend_/.test(c)),
      `staged and moved as root: ${upload.join(' | ')}`,
    );
    assert.ok(upload.some((c) => /^sudo -n ssh-mgr-controller --upload-hotfix=\/var\/lib\/sshmgr\//.test(c)));
    const h = await env.startRollout({ hotfix: hf.name });
    const st = await env.waitForPhase(h, 'verifying');
    assert.equal(st.canary, 'km-be-1');
    await env.approve(h, 'bob');
    assert.equal(((await h.result()) as RolloutStatus).phase, 'completed');
    assert.deepEqual(await env.applied(hf.name), ['km-be-1', 'km-be-2', 'km-fe-1']);
    for (const name of ['km-fe-1', 'km-be-1']) {
      const changes = env.commands(name, /ssh-mgr-controller|supervisorctl/);
      assert.ok(changes.length >= 3);
      for (const c of changes) assert.match(c, /^sudo -n /, `${name}: ${c}`);
    }
    for (const c of env.commands('km-be-2', /ssh-mgr-controller|supervisorctl/))
      assert.doesNotMatch(c, /sudo/, 'not on a server without sudo');
    const removal = (await (await env.startRemoval({ hotfix: hf.name })).result()) as RolloutStatus;
    assert.equal(removal.phase, 'completed');
    assert.ok(env.commands('km-be-1').some((c) => c === `sudo -n ssh-mgr-controller --unapply-hotfix=${hf.name}`));
  });

  it('a server that refuses connections for a while is retried with backoff and patched once', async () => {
    const hf = await env.hotfix('frontend');
    const h = await env.startRollout({ hotfix: hf.name });
    await env.waitForPhase(h, 'verifying');
    for (const s of env.fleet.servers) s.clearLog();
    // km-be-2 goes away for 2 s just as fan-out starts; its pooled connection is dropped too.
    env.fleet.server('km-be-2').fault({ refuseMs: 2_000, dropConnection: 1, dropOn: 'any' });
    await env.approve(h, 'bob');
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'completed', st.error ?? '');
    assert.deepEqual(await env.applied(hf.name), ['km-be-1', 'km-be-2', 'km-fe-1']);
    assert.equal(
      env.commands('km-be-2', /--apply-hotfix=/).length <= 1,
      true,
      'applied at most once (the retry saw it applied)',
    );
    const be2 = serversOf(st).find((s) => s.name === 'km-be-2')!;
    const waited = Date.parse(be2.endedAt!) - Date.parse(be2.startedAt!);
    assert.ok(waited >= 1000, `km-be-2 was really unreachable for a while (patched in ${waited} ms)`);
  });
});
