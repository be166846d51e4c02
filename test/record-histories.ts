// `npm run histories`: run representative rollouts on a fresh real stack
// (Temporal dev server, embedded PostgreSQL, simulated fleet over SSH) and
// write every execution's history (children included) to test/histories/,
// which test/replay.test.ts replays against the current workflow code.
// Re-record ONLY for new behaviour, never to make a replay failure go away
// (README, "Changing a workflow safely").
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import type { Client, WorkflowHandle } from '@temporalio/client';
import { runChild } from '../stack/process';
import { startTestStack, stopTestStack, scratchDir, testStack } from './helpers/stack';
import { rolloutEnv, RolloutEnv, FAST_TIMING } from './helpers/rollout-env';
import { testWorker } from './helpers/worker';
import { startWorkerProcess } from './helpers/worker-process';
import { createActivities } from '../activities';
import { statusQuery, WORKFLOW_TYPES } from '../domain/messages/rollout';
import type { RemovalInput, RolloutInput, RolloutStatus } from '../domain/messages/rollout';

/** Where the histories live (in the source tree, not dist/). */
export const HISTORIES_DIR = path.resolve(__dirname, '..', '..', 'test', 'histories');

/** One recorded execution: replay needs the workflow id (child ids derive from it). */
export interface RecordedHistory {
  scenario: string;
  workflowId: string;
  workflowType: string;
  history: unknown;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function phase(h: WorkflowHandle, want: string): Promise<void> {
  for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(100)) {
    const st: RolloutStatus | undefined = await h.query(statusQuery).catch(() => undefined);
    if (st?.phase === want) return;
  }
  throw new Error(`${h.workflowId}: phase ${want} not reached`);
}

/** A rollout with this workflow id, signed by alice. */
async function rollout(
  env: RolloutEnv,
  id: string,
  hf: { name: string; sha256: string },
  over: Partial<RolloutInput> = {},
): Promise<RolloutInput> {
  const signed = await env.sign('alice', { action: 'rollout', rollout: id, hotfix: hf.name, sha256: hf.sha256 });
  return {
    hotfix: hf.name,
    signed,
    servers: [],
    batch: '2',
    maxFailures: 0,
    approvers: [],
    approvalTimeoutMs: 3_600_000,
    timing: FAST_TIMING,
    ...over,
  };
}

/**
 * The execution and every child it started, depth first. The JSON comes from
 * the `temporal` CLI (`workflow show --output json`), the format
 * historyFromJSON reads (the SDK's historyToJSON trips over two protobufjs
 * versions in node_modules).
 */
export async function collect(
  client: Client,
  scenario: string,
  workflowId: string,
  out: RecordedHistory[],
): Promise<void> {
  const handle = client.workflow.getHandle(workflowId);
  const [history, desc, shown] = await Promise.all([
    handle.fetchHistory(),
    handle.describe(),
    runChild(testStack().temporalBinary, [
      'workflow',
      'show',
      '--workflow-id',
      workflowId,
      '--address',
      testStack().temporal.address,
      '--output',
      'json',
    ]),
  ]);
  out.push({ scenario, workflowId, workflowType: desc.type, history: JSON.parse(shown.stdout) });
  for (const e of history.events ?? []) {
    const child = e.startChildWorkflowExecutionInitiatedEventAttributes?.workflowId;
    if (child) await collect(client, scenario, child, out);
  }
}

type Scenario = (env: RolloutEnv, id: string) => Promise<void>;

/** A common hotfix whose last server fails every apply: approved at the gate, so everything patched is rolled back. */
async function lastServerFails(env: RolloutEnv, id: string, description: string, batch: string): Promise<void> {
  const hf = await env.hotfix('common', { description });
  const last = env.fleet.servers.at(-1)!;
  last.fault({ failApplies: 100 });
  try {
    const h = await env.client.workflow.start(WORKFLOW_TYPES.rollout, {
      taskQueue: env.taskQueue,
      workflowId: id,
      args: [await rollout(env, id, hf, { batch })],
    });
    await phase(h, 'verifying');
    await env.approve(h, 'bob');
    await h.result();
  } finally {
    last.clearFaults();
  }
}

/** Representative runs; each names its workflow id so re-recording gives the same files. */
const SCENARIOS: Record<string, Scenario> = {
  async approve(env, id) {
    const hf = await env.hotfix('backend', { description: 'replay_approve' });
    const h = await env.client.workflow.start(WORKFLOW_TYPES.rollout, {
      taskQueue: env.taskQueue,
      workflowId: id,
      args: [await rollout(env, id, hf)],
    });
    await phase(h, 'verifying');
    await env.approve(h, 'bob', 'canary looks good');
    await h.result();
  },
  async reject(env, id) {
    const hf = await env.hotfix('frontend', { description: 'replay_reject' });
    const h = await env.client.workflow.start(WORKFLOW_TYPES.rollout, {
      taskQueue: env.taskQueue,
      workflowId: id,
      args: [await rollout(env, id, hf)],
    });
    await phase(h, 'verifying');
    await env.reject(h, 'bob', 'login page broken');
    await h.result();
  },
  async 'approval-timeout'(env, id) {
    const hf = await env.hotfix('common', { description: 'replay_timeout' });
    const h = await env.client.workflow.start(WORKFLOW_TYPES.rollout, {
      taskQueue: env.taskQueue,
      workflowId: id,
      args: [await rollout(env, id, hf, { approvalTimeoutMs: 1500 })],
    });
    await h.result();
  },
  async 'failure-rollback'(env, id) {
    await lastServerFails(env, id, 'replay_failure', '1');
  },
  /** A cancel from Temporal mid fan-out: taken as an abort, the rollout quiesces and rolls back. */
  async 'temporal-cancel'(env, id) {
    const hf = await env.hotfix('common', { description: 'replay_cancel' });
    for (const s of env.fleet.servers) s.fault({ restartMs: 400 });
    try {
      const h = await env.client.workflow.start(WORKFLOW_TYPES.rollout, {
        taskQueue: env.taskQueue,
        workflowId: id,
        args: [await rollout(env, id, hf, { batch: '1' })],
      });
      await phase(h, 'verifying');
      await env.approve(h, 'bob');
      for (const deadline = Date.now() + 30_000; (await env.applied(hf.name)).length < 2 && Date.now() < deadline;)
        await sleep(25);
      await h.cancel();
      await h.result();
    } finally {
      for (const s of env.fleet.servers) s.clearFaults();
    }
  },
  /** A server unreachable at its restart: the batch child waits its backoff and runs it again, alone. */
  async 'retried-server'(env, id) {
    const hf = await env.hotfix('common', { description: 'replay_retry' });
    const last = env.fleet.servers.at(-1)!;
    last.fault({ unreachableOn: 'restart', unreachableMs: 1_000 });
    try {
      const h = await env.client.workflow.start(WORKFLOW_TYPES.rollout, {
        taskQueue: env.taskQueue,
        workflowId: id,
        args: [await rollout(env, id, hf, { batch: '1' })],
      });
      await phase(h, 'verifying');
      await env.approve(h, 'bob');
      await h.result();
    } finally {
      last.clearFaults();
    }
  },
  async removal(env, id) {
    const hf = await env.hotfix('frontend', { description: 'replay_removal' });
    const r = await env.client.workflow.start(WORKFLOW_TYPES.rollout, {
      taskQueue: env.taskQueue,
      workflowId: `${id}-rollout`,
      args: [await rollout(env, `${id}-rollout`, hf)],
    });
    await phase(r, 'verifying');
    await env.approve(r, 'bob');
    await r.result();
    const signed = await env.sign('alice', {
      action: 'remove',
      rollout: id,
      hotfix: hf.name,
      sha256: await env.registeredSha256(hf.name),
    });
    const input: RemovalInput = { hotfix: hf.name, signed, servers: [], keepRegistered: false, timing: FAST_TIMING };
    await env.client.workflow.execute(WORKFLOW_TYPES.removal, {
      taskQueue: env.taskQueue,
      workflowId: id,
      args: [input],
    });
  },
  /** A window wider than half a slice: at a slice's end the next child starts in the places the previous one freed. */
  async handoff(_env, id) {
    const wide = await rolloutEnv({ frontends: 1, backends: 6, restartMs: 50 });
    try {
      const hf = await wide.hotfix('common', { description: 'replay_handoff' });
      const input = await rollout(wide, id, hf, {
        canary: wide.fleet.servers[0].name,
        batch: '2',
        timing: { ...FAST_TIMING, sliceServers: 4 },
      });
      const h = await wide.client.workflow.start(WORKFLOW_TYPES.rollout, {
        taskQueue: wide.taskQueue,
        workflowId: id,
        args: [input],
      });
      await phase(h, 'verifying');
      await wide.approve(h, 'bob');
      await h.result();
    } finally {
      await wide.close();
    }
  },
  /** The worker process is SIGKILLed at the gate; a new worker takes over (a workflow task times out on the dead one). */
  async crash(env, id) {
    const hf = await env.hotfix('backend', { description: 'replay_crash' });
    const taskQueue = `${env.taskQueue}-crash`;
    const keyFile = path.join(await scratchDir('record'), 'id_ed25519');
    await fs.writeFile(keyFile, env.sshPrivateKey, { mode: 0o600 });
    const dead = await startWorkerProcess(env.client, {
      temporalAddress: testStack().temporal.address,
      taskQueue,
      orchestratorUrl: env.orchestratorUrl,
      kmUrl: env.kmUrl,
      sshKeyFile: keyFile,
      allowedSigners: env.people.allowedSigners,
    });
    const h = await env.client.workflow.start(WORKFLOW_TYPES.rollout, {
      taskQueue,
      workflowId: id,
      args: [await rollout(env, id, hf)],
    });
    try {
      await phase(h, 'verifying');
    } finally {
      await dead.kill();
    }
    const built = createActivities({
      orchestrator: env.orchestrator,
      km: env.km,
      ssh: { privateKey: Buffer.from(env.sshPrivateKey) },
      allowedSigners: env.people.allowedSigners,
    });
    const next = await testWorker({ activities: built.activities, taskQueue });
    try {
      await next.run(async () => {
        await env.approve(h, 'bob');
        await h.result();
      });
    } finally {
      await built.close();
      await next.close();
    }
  },
};

export async function recordHistories(only?: string[]): Promise<string[]> {
  const env = await rolloutEnv({ frontends: 1, backends: 2, restartMs: 50 });
  const written: string[] = [];
  try {
    await fs.mkdir(HISTORIES_DIR, { recursive: true });
    for (const [name, run] of Object.entries(SCENARIOS)) {
      if (only && !only.includes(name)) continue;
      const id = `replay-${name}`;
      const t0 = Date.now();
      await run(env, id);
      const recorded: RecordedHistory[] = [];
      if (name === 'removal') await collect(env.client, name, `${id}-rollout`, recorded);
      await collect(env.client, name, id, recorded);
      for (const old of (await fs.readdir(HISTORIES_DIR)).filter((f) => f.startsWith(`${name}.`)))
        await fs.rm(path.join(HISTORIES_DIR, old));
      for (const [i, r] of recorded.entries()) {
        const file = path.join(HISTORIES_DIR, `${name}.${String(i).padStart(2, '0')}.${r.workflowType}.json`);
        await fs.writeFile(file, JSON.stringify(r, null, 1) + '\n');
        written.push(file);
      }
      console.error(`${name}: ${recorded.length} execution(s) in ${Date.now() - t0} ms`);
    }
  } finally {
    await env.close();
  }
  return written;
}

if (require.main === module) {
  Runtime.install({
    logger: new DefaultLogger('ERROR'),
    telemetryOptions: { logging: { filter: { core: 'ERROR', other: 'ERROR' } } },
  });
  const only = process.argv.slice(2);
  const t0 = Date.now();
  startTestStack()
    .then(() => recordHistories(only.length ? only : undefined))
    .then((files) =>
      console.error(
        `wrote ${files.length} histories to ${path.relative(process.cwd(), HISTORIES_DIR)} in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
      ),
    )
    .catch((err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    })
    .finally(() => stopTestStack());
}
