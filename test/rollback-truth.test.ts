// Rollback from the truth (issue 22): steering (pause, abort, a cancel from
// Temporal) meeting a fault or a crash. Each test is one of the sequences
// that used to end `rolled_back` with servers still patched, or without an
// owed restart; each ends by the invariant of test/helpers/invariant.ts,
// which reads the Key Manager database and every server's command log.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { WorkflowHandle } from '@temporalio/client';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { rolloutEnv, RolloutEnv, FAST_TIMING } from './helpers/rollout-env';
import { assertRolloutInvariant } from './helpers/invariant';
import { serversOf } from './helpers/servers';
import { scratchDir, testStack } from './helpers/stack';
import { startWorkerProcess, WorkerProcess } from './helpers/worker-process';
import { statusQuery, WORKFLOW_TYPES } from '../domain/messages/rollout';
import type { RolloutInput, RolloutStatus } from '../domain/messages/rollout';
import { sleep, until } from './helpers/until';

const APPLY = /--apply-hotfix=/;
const RESTART = /supervisorctl restart all/;

describe('rollback from the truth: steering meets faults and crashes', function () {
  this.timeout(180_000);
  let env: RolloutEnv;

  before(async () => {
    env = await rolloutEnv({ frontends: 2, backends: 3, restartMs: 100 });
  });
  afterEach(async () => {
    await env.endAll();
    for (const s of env.fleet.servers) s.clearFaults();
  });
  after(async () => env?.close());

  const logged = (server: string, pattern: RegExp) =>
    env.fleet
      .server(server)
      .log()
      .some((e) => pattern.test(e.command));

  async function ends(h: WorkflowHandle, phase: RolloutStatus['phase']): Promise<RolloutStatus> {
    const st = (await h.result()) as RolloutStatus;
    await sleep(300); // a restart cut off by a timeout settles
    assert.equal(st.phase, phase, st.error ?? '');
    await assertRolloutInvariant(env, st, { maxProcessesBefore: mpBefore });
    return st;
  }
  let mpBefore: Record<string, number> = {};
  beforeEach(async () => {
    mpBefore = await env.maxProcesses();
  });

  it('1: pause while a server is being retried after its apply took effect, then abort: rolled_back with the hotfix nowhere', async () => {
    const hf = await env.hotfix('common');
    // km-fe-2's apply takes effect, then the server drops off the network as its restart arrives, for 3 s.
    env.fleet.server('km-fe-2').fault({ unreachableOn: 'restart', unreachableMs: 3_000 });
    const h = await env.startRollout({ hotfix: hf.name, batch: '1' });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    await until('km-fe-2 unreachable at its restart', async () =>
      env.fleet
        .server('km-fe-2')
        .log()
        .some((e) => RESTART.test(e.command) && e.exitCode === 255),
    );
    await env.pause(h, 'bob');
    await env.abort(h, 'bob', 'regression 1');
    const st = await ends(h, 'rolled_back');
    assert.deepEqual(await env.applied(hf.name), []);
    assert.ok(
      serversOf(st).some((s) => s.name === 'km-fe-2' && s.state === 'rolled_back'),
      'km-fe-2 was rolled back',
    );
  });

  it('2: a cancel from Temporal mid fan-out is an abort: rolled_back with the hotfix nowhere', async () => {
    const hf = await env.hotfix('common');
    for (const s of env.fleet.servers) s.fault({ restartMs: 400 });
    const h = await env.startRollout({ hotfix: hf.name, batch: '1' });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    await until('two servers patched', async () => (await env.applied(hf.name)).length >= 2);
    await h.cancel();
    const st = await ends(h, 'rolled_back');
    assert.match(st.error ?? '', /cancelled from Temporal/);
    // The cancel stopped the fan-out: the servers not yet reached never got an apply.
    const reached = env.fleet.servers.filter((s) =>
      s.log().some((e) => e.at >= st.startedAt && APPLY.test(e.command)),
    ).length;
    assert.ok(reached <= 4, `${reached} of 5 servers were reached: the fan-out went on after the cancel`);
    assert.deepEqual(await env.applied(hf.name), []);
  });

  it('2b: a cancel from Temporal at the gate is an abort: the canary is rolled back at once, not at the approval timeout', async () => {
    const hf = await env.hotfix('backend');
    const h = await env.startRollout({ hotfix: hf.name, approvalTimeoutMs: 3_600_000 });
    await env.waitForPhase(h, 'verifying');
    await h.cancel();
    const st = await ends(h, 'rolled_back');
    assert.match(st.error ?? '', /cancelled from Temporal/);
    assert.deepEqual(await env.applied(hf.name), []);
    await assert.rejects(env.approve(h, 'bob'), /has ended|not waiting|already completed/);
  });

  it('3: pause and resume are refused while rolling back, and the rollback finishes', async () => {
    const hf = await env.hotfix('backend');
    env.fleet.server('km-be-1').fault({ restartMs: 1_500 });
    const h = await env.startRollout({ hotfix: hf.name, canary: 'km-be-1' });
    await env.waitForPhase(h, 'verifying');
    await env.reject(h, 'bob', 'regression 3');
    await env.waitForPhase(h, 'rolling_back');
    await assert.rejects(
      env.pause(h, 'bob'),
      (err: unknown) =>
        err instanceof WorkflowUpdateFailedError &&
        /rolling back.*cannot be paused/.test(String((err.cause as Error)?.message)),
    );
    await ends(h, 'rolled_back');
  });

  it('5: a rollback child that is lost does not stop the rollback: every other server is still rolled back', async () => {
    const hf = await env.hotfix('common');
    env.fleet.server('km-be-3').fault({ failApplies: 10 });
    for (const s of env.fleet.servers) s.fault({ restartMs: 300 });
    const h = await env.startRollout({ hotfix: hf.name, batch: '1', timing: { ...FAST_TIMING, sliceServers: 1 } });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    await env.waitForPhase(h, 'rolling_back', 60_000);
    const child = await until('a rollback child', async () =>
      (await env.status(h)).activeBatchWorkflows.find((id) => id.includes('/rollback-')),
    );
    await env.client.workflow.getHandle(child).terminate('regression 5: a lost rollback child');
    await ends(h, 'rolled_back');
    assert.deepEqual(await env.applied(hf.name), []);
  });

  it('6: a pause plus one transient failure does not roll back a healthy rollout', async () => {
    const hf = await env.hotfix('frontend');
    // km-be-1's restart hangs past the 1 s command timeout once: a retryable failure of the server under way.
    env.fleet.server('km-be-1').fault({ hangMs: 1_500, hangOn: 'restart' });
    const h = await env.startRollout({
      hotfix: hf.name,
      batch: '1',
      timing: { ...FAST_TIMING, commandTimeoutMs: 1_000 },
    });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    await until('km-be-1 applied', async () => logged('km-be-1', APPLY));
    await env.pause(h, 'bob');
    await sleep(2_500); // the restart times out and is retried while paused
    await env.resume(h, 'bob');
    const st = await ends(h, 'completed');
    assert.equal(serversOf(st).filter((s) => s.state === 'patched').length, 5);
  });

  it('7: an unreachable server does not hold the servers queued behind it in its run', async () => {
    const hf = await env.hotfix('frontend');
    // --batch 2 over 4 servers: runs of two; km-fe-2 (first of its run) is unreachable for 3 s.
    env.fleet.server('km-fe-2').fault({ unreachableOn: 'apply', unreachableMs: 3_000 });
    const h = await env.startRollout({ hotfix: hf.name, batch: '2' });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    const st = await ends(h, 'completed');
    const ended = (n: string) => Date.parse(serversOf(st).find((s) => s.name === n)?.endedAt ?? '');
    const others = serversOf(st)
      .filter((s) => s.name !== 'km-fe-2' && s.name !== st.canary)
      .map((s) => s.name);
    assert.ok(
      others.every((n) => ended(n) < ended('km-fe-2')),
      `the others (${others.join(', ')}) finished while km-fe-2 was retried`,
    );
  });
});

describe('rollback from the truth: a worker killed between an unapply and its restart', function () {
  this.timeout(180_000);
  let env: RolloutEnv;
  const workers: WorkerProcess[] = [];
  let keyFile: string;
  let handle: WorkflowHandle | undefined;

  before(async () => {
    env = await rolloutEnv({ frontends: 2, backends: 1, restartMs: 100 });
    keyFile = path.join(await scratchDir('truth'), 'id_ed25519');
    await fs.writeFile(keyFile, env.sshPrivateKey, { mode: 0o600 });
  });
  after(async () => {
    if (handle) await handle.terminate('test ended').catch(() => undefined);
    await Promise.all(workers.splice(0).map((w) => w.kill()));
    await env?.close();
  });

  it('4: the unapply of a later server of a run still gets its restart after a SIGKILL', async () => {
    const tq = `truth-${randomBytes(3).toString('hex')}`;
    const workerOn = () =>
      startWorkerProcess(
        env.client,
        {
          temporalAddress: testStack().temporal.address,
          taskQueue: tq,
          orchestratorUrl: env.orchestratorUrl,
          kmUrl: env.kmUrl,
          sshKeyFile: keyFile,
          allowedSigners: env.people.allowedSigners,
        },
        workers,
      );
    const hf = await env.hotfix('common');
    const before = await env.maxProcesses();
    const first = await workerOn();
    const id = `truth-${hf.name}`;
    const signed = await env.sign('alice', { action: 'rollout', rollout: id, hotfix: hf.name, sha256: hf.sha256 });
    const input: RolloutInput = {
      hotfix: hf.name,
      signed,
      servers: [],
      batch: '1',
      maxFailures: 0,
      approvers: [],
      approvalTimeoutMs: 3_600_000,
      timing: FAST_TIMING,
    };
    handle = await env.client.workflow.start(WORKFLOW_TYPES.rollout, { taskQueue: tq, workflowId: id, args: [input] });
    const h = handle;
    const gate = await until('verifying', async () => {
      const st = await h.query(statusQuery);
      return st.phase === 'verifying' && st;
    });
    // Plan order: the canary, then two more. The last fails, so the rollback unapplies [middle, canary] in one run (window 1).
    const [canary, , last] = serversOf(gate).map((s) => s.name);
    env.fleet.server(last).fault({ failApplies: 10 });
    // The canary's restart in the rollback hangs: the worker dies with its unapply done and its restart not.
    env.fleet.server(canary).fault({ hangMs: 5_000, hangOn: 'restart' });
    const second = canary;
    await env.approve(h, 'bob');
    await until(
      `${second} unapplied`,
      async () =>
        (await h.query(statusQuery)).phase === 'rolling_back' && !(await env.applied(hf.name)).includes(second),
      60_000,
    );
    await first.kill();
    env.fleet.server(second).clearFaults();
    await workerOn();
    const st = (await h.result()) as RolloutStatus;
    await sleep(300);
    assert.equal(st.phase, 'rolled_back', st.error ?? '');
    await assertRolloutInvariant(env, st, { maxProcessesBefore: before });
    assert.ok(
      env.fleet
        .server(second)
        .log()
        .some((e) => RESTART.test(e.command) && e.exitCode === 0 && e.at > st.startedAt),
      `${second} was restarted after its unapply`,
    );
  });
});
