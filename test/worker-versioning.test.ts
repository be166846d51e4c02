// Worker Versioning (README, "Changing a workflow safely"): a `km-hotfix
// worker` with KM_HOTFIX_BUILD_ID is a deployment version, and a rollout it
// starts is pinned to that version: a worker of the next version (the
// current one now) does not take it over; it finishes on the code it
// started with. A bad build id is refused in one line.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { cliSettings, rolloutEnv, RolloutEnv, FAST_TIMING } from './helpers/rollout-env';
import { scratchDir, testStack } from './helpers/stack';
import { startWorkerProcess, WorkerProcess } from './helpers/worker-process';
import { runCli } from './helpers/cli-process';
import { runChild } from '../stack/process';
import { statusQuery, WORKFLOW_TYPES } from '../domain/messages/rollout';
import type { RolloutInput, RolloutStatus } from '../domain/messages/rollout';
import { deploymentOptions } from '../worker/worker';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('worker versioning: a rollout finishes on the version it started with', function () {
  this.timeout(180_000);
  let env: RolloutEnv;
  let keyFile: string;
  const workers: WorkerProcess[] = [];

  before(async () => {
    env = await rolloutEnv({ frontends: 1, backends: 1, restartMs: 50 });
    keyFile = path.join(await scratchDir('versioning'), 'id_ed25519');
    await fs.writeFile(keyFile, env.sshPrivateKey, { mode: 0o600 });
  });
  after(async () => {
    await env?.endAll();
    await Promise.all(workers.splice(0).map((w) => w.kill()));
    await env?.close();
  });

  it('KM_HOTFIX_BUILD_ID makes a pinned deployment version; a bad one is refused', () => {
    assert.equal(deploymentOptions({}), undefined);
    assert.deepEqual(deploymentOptions({ KM_HOTFIX_BUILD_ID: '0.2.0+abc123' }), {
      version: { deploymentName: 'km-hotfix', buildId: '0.2.0+abc123' },
      useWorkerVersioning: true,
      defaultVersioningBehavior: 'PINNED',
    });
    assert.throws(
      () => deploymentOptions({ KM_HOTFIX_BUILD_ID: 'v1; rm -rf /' }),
      /KM_HOTFIX_BUILD_ID must be letters/,
    );
  });

  it('a rollout started on v1 stays on v1 after v2 becomes current, and completes there', async () => {
    const deployment = `km-hotfix-${randomBytes(3).toString('hex')}`;
    const taskQueue = `versioned-${randomBytes(3).toString('hex')}`;
    const { temporal, temporalBinary } = testStack();
    const workerAs = (buildId: string) =>
      startWorkerProcess(
        env.client,
        {
          temporalAddress: temporal.address,
          taskQueue,
          orchestratorUrl: env.orchestratorUrl,
          kmUrl: env.kmUrl,
          sshKeyFile: keyFile,
          allowedSigners: env.people.allowedSigners,
          extraEnv: { KM_HOTFIX_BUILD_ID: buildId, KM_HOTFIX_DEPLOYMENT: deployment },
        },
        workers,
      );
    const setCurrent = async (buildId: string) => {
      for (let i = 0; ; i++) {
        // The version exists once its worker has polled: retried until then.
        const r = await runChild(temporalBinary, [
          'worker',
          'deployment',
          'set-current-version',
          '--deployment-name',
          deployment,
          '--build-id',
          buildId,
          '--address',
          temporal.address,
          '--yes',
        ]).catch((err: unknown) => err as Error);
        if (!(r instanceof Error)) return;
        if (i > 40) throw r;
        await sleep(250);
      }
    };
    await workerAs('v1');
    await setCurrent('v1');

    const hf = await env.hotfix('frontend');
    const id = `versioned-${hf.name}`;
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
    const h = await env.client.workflow.start(WORKFLOW_TYPES.rollout, { taskQueue, workflowId: id, args: [input] });
    for (let i = 0; (await h.query(statusQuery).catch(() => undefined))?.phase !== 'verifying'; i++) {
      if (i > 400) assert.fail('the rollout never reached its gate');
      await sleep(100);
    }
    const shown = await runChild(temporalBinary, [
      'workflow',
      'describe',
      '--workflow-id',
      id,
      '--address',
      temporal.address,
      '--output',
      'json',
    ]);
    assert.match(shown.stdout, /VERSIONING_BEHAVIOR_PINNED/, 'the rollout is pinned');
    assert.match(shown.stdout, new RegExp(`${deployment}.*v1|"buildId":\\s*"v1"`, 's'), 'to v1');

    // v2 becomes current; v1 keeps running for the rollouts pinned to it.
    await workerAs('v2');
    await setCurrent('v2');
    await env.approve(h, 'bob');
    const st = (await h.result()) as RolloutStatus;
    assert.equal(st.phase, 'completed', st.error ?? '');
    // Every workflow task after the approval too was completed by a v1 worker.
    const history = await runChild(temporalBinary, [
      'workflow',
      'show',
      '--workflow-id',
      id,
      '--address',
      temporal.address,
      '--output',
      'json',
    ]);
    const completed = (
      JSON.parse(history.stdout) as {
        events: Record<
          string,
          { deploymentVersion?: { buildId?: string }; workerDeploymentVersion?: string } | undefined
        >[];
      }
    ).events
      .map((e) => e.workflowTaskCompletedEventAttributes)
      .filter((a) => a !== undefined);
    const versions = new Set(
      completed.map((a) => a?.deploymentVersion?.buildId ?? a?.workerDeploymentVersion ?? 'none'),
    );
    assert.ok(completed.length > 3, 'workflow tasks before and after the approval');
    assert.deepEqual(
      [...versions].map((v) => v.replace(/^.*\./, '')),
      ['v1'],
      `completed by v1 only: ${[...versions].join(', ')}`,
    );

    // A bad build id: one line, exit 2, and no worker.
    const bad = await runCli(
      ['worker'],
      {
        ...cliSettings(env, temporal.address),
        KM_HOTFIX_BUILD_ID: 'v1 v2',
        KM_SSH_KEY: keyFile,
        KM_HOTFIX_ALLOWED_SIGNERS: env.people.allowedSigners,
      },
      30_000,
    );
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr.trim(), /^km-hotfix: KM_HOTFIX_BUILD_ID must be letters/);
    assert.equal(bad.stderr.trim().split('\n').length, 1);
  });
});
