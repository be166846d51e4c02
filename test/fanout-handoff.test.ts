// The hand-off at a slice's end (workflows/fanout.ts): the next slice's child
// starts in the places the previous child has freed for good, before that
// child has ended, and the window is never exceeded. Real Temporal, real
// PostgreSQL, the simulated fleet over real SSH; the servers' own command
// logs are the evidence.
import assert from 'node:assert/strict';
import { rolloutEnv, RolloutEnv, FAST_TIMING } from './helpers/rollout-env';
import type { RolloutStatus } from '../domain/messages/rollout';

const APPLY = /ssh-mgr-controller --apply-hotfix=/;

describe('fan-out: the next slice starts in the places the previous one freed', function () {
  this.timeout(120_000);
  let env: RolloutEnv;
  before(async () => {
    env = await rolloutEnv({ frontends: 3, backends: 6 });
  });
  after(async () => {
    await env?.close();
  });
  afterEach(async () => {
    await env?.endAll();
  });

  it('--batch 2 over slices of 4: never more than 2 servers at once, and the second child starts before the first has ended', async () => {
    const hf = await env.hotfix('frontend');
    // Fan-out order is the fleet's without the canary: slices [fe-2, fe-3, be-1, be-2] and [be-3 … be-6].
    // The first slice's last server restarts slowly: its other places are free long before it ends.
    for (const s of env.fleet.servers) s.fault({ restartMs: s.name === 'km-be-2' ? 1500 : 200 });
    const h = await env.startRollout({ hotfix: hf.name, batch: '2', timing: { ...FAST_TIMING, sliceServers: 4 } });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'completed', st.error ?? '');
    // A server is busy from its apply until its last status check (km-fe-1 is the canary).
    const busy = env.fleet.servers
      .filter((s) => s.name !== 'km-fe-1')
      .map((s) => {
        const name = s.name;
        const log = s.log();
        const start = Date.parse(log.find((e) => APPLY.test(e.command))!.at);
        const end = Math.max(
          ...log
            .filter((e) => /supervisorctl status/.test(e.command))
            .map((e) => Date.parse(e.at) + (e.durationMs ?? 0)),
        );
        return { name, start, end };
      });
    assert.equal(busy.length, 8);
    const widest = Math.max(...busy.map((w) => busy.filter((o) => o.start <= w.start && w.start < o.end).length));
    assert.ok(widest <= 2, `${widest} servers at once with --batch 2`);
    const slowest = busy.find((b) => b.name === 'km-be-2')!;
    const secondSlice = busy.filter((b) => ['km-be-3', 'km-be-4', 'km-be-5', 'km-be-6'].includes(b.name));
    assert.ok(
      Math.min(...secondSlice.map((b) => b.start)) < slowest.end,
      "a server of the second slice started while the first slice's last one still ran",
    );
    // apply-1 patched the canary; the fan-out's slices are apply-2 and apply-3.
    const first = await env.client.workflow.getHandle(`${h.workflowId}/apply-2`).describe();
    const second = await env.client.workflow.getHandle(`${h.workflowId}/apply-3`).describe();
    assert.ok(
      first.closeTime && second.startTime < first.closeTime,
      `second child started ${second.startTime.toISOString()}, first ended ${first.closeTime?.toISOString()}`,
    );
  });
});
