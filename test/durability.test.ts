// A rollout outlives its worker: the worker process is killed (SIGKILL, no
// goodbye) in the middle of fan-out, a new one is started, and the rollout
// finishes with every server patched exactly once.
import assert from 'node:assert/strict';
import { spawn, ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { rolloutEnv, RolloutEnv, FAST_TIMING } from './helpers/rollout-env';
import { BIN, cliEnv } from './helpers/cli-process';
import { scratchDir, testStack } from './helpers/stack';
import { statusQuery, WORKFLOW_TYPES } from '../domain/messages/rollout';
import type { RolloutInput, RolloutStatus } from '../domain/messages/rollout';

const APPLIED_OK = (e: { command: string; exitCode: number }) => /--apply-hotfix=/.test(e.command) && e.exitCode === 0;

describe('durability: the worker process dies mid-rollout', function () {
  this.timeout(180_000);
  let env: RolloutEnv;
  let keyFile: string;
  const taskQueue = `durable-${randomBytes(3).toString('hex')}`;
  const workers: ChildProcess[] = [];

  before(async () => {
    env = await rolloutEnv({ frontends: 1, backends: 5, restartMs: 400 });
    keyFile = path.join(await scratchDir('durable'), 'id_ed25519');
    await fs.writeFile(keyFile, env.sshPrivateKey, { mode: 0o600 });
  });
  after(async () => {
    for (const w of workers) if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
    await env?.endAll([taskQueue]); // pass or fail, the rollout ends and its claims go
    await env?.close();
  });

  /** `km-hotfix worker` as its own process, polling our task queue. */
  async function startWorker(): Promise<ChildProcess> {
    const child = spawn(process.execPath, [BIN, 'worker'], {
      env: cliEnv({
        TEMPORAL_ADDRESS: testStack().temporal.address,
        KM_HOTFIX_TASK_QUEUE: taskQueue,
        DATABASE_URL: env.orchestratorUrl,
        KM_DATABASE_URL: env.kmUrl,
        KM_SSH_KEY: keyFile,
        KM_HOTFIX_ALLOWED_SIGNERS: env.people.allowedSigners,
      }),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    workers.push(child);
    let err = '';
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
    });
    // Polling shows as a registered poller on the task queue.
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`worker exited ${child.exitCode}: ${err}`);
      const pollers = await env.client.workflowService.describeTaskQueue({
        namespace: 'default',
        taskQueue: { name: taskQueue },
        taskQueueType: 1,
      });
      if ((pollers.pollers ?? []).some((p) => p.identity?.startsWith(`${child.pid}@`))) return child;
      if (Date.now() > deadline) throw new Error(`worker did not poll within 60 s: ${err}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  it('a new worker picks the rollout up where the dead one left it; every server applied exactly once', async () => {
    const hf = await env.hotfix('backend');
    const before = await env.maxProcesses();
    const first = await startWorker();
    const workflowId = `durable-${hf.name}`;
    const signed = await env.sign('alice', {
      action: 'rollout',
      rollout: workflowId,
      hotfix: hf.name,
      sha256: hf.sha256,
    });
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
    const h = await env.client.workflow.start(WORKFLOW_TYPES.rollout, { taskQueue, workflowId, args: [input] });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    // Kill it while fan-out is under way: at least one server done, more to go.
    for (;;) {
      const n = (await env.applied(hf.name)).length;
      if (n >= 3) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));
    const appliedAtDeath = (await env.applied(hf.name)).length;
    assert.ok(appliedAtDeath < 6, 'the worker died before the end');
    assert.notEqual((await h.describe()).status.name, 'COMPLETED');

    await startWorker();
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'completed', st.error ?? '');
    assert.equal((await env.applied(hf.name)).length, 6);
    for (const s of env.fleet.servers)
      assert.equal(s.log().filter(APPLIED_OK).length, 1, `${s.name}: applied exactly once`);
    assert.deepEqual(await env.maxProcesses(), before);
    assert.equal((await h.query(statusQuery)).phase, 'completed');
  });
});
