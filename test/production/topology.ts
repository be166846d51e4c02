// One test's piece of the production topology: fresh orchestrator and Key
// Manager databases in the stack's PostgreSQL, a simulated fleet imported
// with the real CLI, and `km-hotfix worker` processes started the way the
// Dockerfile starts them (node bin/km-hotfix.js worker, configuration in the
// environment). Helpers read Temporal's own records (describe, history) to
// see which worker did what.
import { spawn, ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import postgres, { Sql } from 'postgres';
import { Client, Connection, WorkflowHandle } from '@temporalio/client';
import { BIN, cliEnv, runCli, CliResult } from '../helpers/cli-process';
import { freshDatabase, productionStack, scratchDir } from './stack';
import { startSimFleet, makeHotfix, SimFleet, SimFleetOptions } from '../../simulator';
import { generateEd25519KeyPair } from '../../keymanager/keygen';
import { ensurePeople } from '../../stack/people';
import { statusQuery } from '../../domain/messages/rollout';
import type { RolloutStatus } from '../../domain/messages/rollout';

// Temporal's own records, typed from the client's API (no direct dependency on @temporalio/proto).
type HistoryEvent = NonNullable<Awaited<ReturnType<WorkflowHandle['fetchHistory']>>['events']>[number];
type PendingActivity = NonNullable<
  Awaited<ReturnType<Client['workflowService']['describeWorkflowExecution']>>['pendingActivities']
>[number];

export interface WorkerProcess {
  child: ChildProcess;
  /** The worker's Temporal identity (the SDK's default, pid@host). */
  identity: string;
  stderr(): string;
  /** Exit code and signal, once it has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface Topology {
  fleet: SimFleet;
  client: Client;
  km: Sql;
  taskQueue: string;
  env: Record<string, string>;
  workers: WorkerProcess[];
  startWorker(): Promise<WorkerProcess>;
  /** The real CLI against this topology, as alice. */
  cli(args: string[], timeoutMs?: number): Promise<CliResult>;
  /** A backend hotfix file on disk, as a user has it. */
  hotfixFile(): Promise<{ name: string; file: string }>;
  /** `km-hotfix rollout FILE --approvers bob --batch N`, signed by alice; the workflow id. */
  rollout(file: string, batch: string): Promise<string>;
  /** Wait for the verification gate, then `km-hotfix approve`, signed by bob. */
  approve(id: string): Promise<void>;
  status(id: string): Promise<RolloutStatus | undefined>;
  /** The running fan-out child, once fan-out has started. */
  runningChild(id: string): Promise<string | undefined>;
  pendingActivities(workflowId: string): Promise<PendingActivity[]>;
  history(workflowId: string): Promise<HistoryEvent[]>;
  /** The rollout's and its children's histories. */
  histories(id: string): Promise<HistoryEvent[][]>;
  /** The worker that completed the last workflow task of this workflow (it holds it in its sticky cache). */
  holder(workflowId: string): Promise<string | undefined>;
  applied(hotfix: string): Promise<string[]>;
  close(): Promise<void>;
}

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 60_000,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function topology(
  opts: Partial<Omit<SimFleetOptions, 'kmDatabaseUrl' | 'authorizedKey'>> & { frontends: number; backends: number },
): Promise<Topology> {
  const stack = productionStack();
  const dir = await scratchDir('topology');
  const keys = generateEd25519KeyPair();
  const keyFile = path.join(dir, 'id_ed25519');
  await fs.writeFile(keyFile, keys.private, { mode: 0o600 });
  const kmUrl = await freshDatabase('km');
  const orchestratorUrl = await freshDatabase('km_hotfix');
  const fleet = await startSimFleet({ restartMs: 200, ...opts, kmDatabaseUrl: kmUrl, authorizedKey: keys.public });
  const km = postgres(kmUrl, { max: 2, onnotice: () => undefined });
  const connection = await Connection.connect({ address: stack.temporal.address });
  const client = new Client({ connection, namespace: 'default' });
  const taskQueue = `prod-${randomBytes(3).toString('hex')}`;
  // alice starts rollouts, bob approves them: each signs with their own key, listed in the workers' signers file.
  const people = await ensurePeople(path.join(dir, 'people'), ['alice', 'bob']);
  // What compose gives the worker container (docker-compose.yml, km-hotfix-worker) and the Dockerfile's NODE_ENV.
  const env: Record<string, string> = {
    NODE_ENV: 'production',
    TEMPORAL_ADDRESS: stack.temporal.address,
    TEMPORAL_NAMESPACE: 'default',
    KM_HOTFIX_TASK_QUEUE: taskQueue,
    DATABASE_URL: orchestratorUrl,
    KM_DATABASE_URL: kmUrl,
    KM_SSH_KEY: keyFile,
    KM_HOTFIX_ALLOWED_SIGNERS: people.allowedSigners,
  };
  const as = (who: 'alice' | 'bob') => ({ KM_HOTFIX_SIGNING_KEY: people.keys[who] });
  const workers: WorkerProcess[] = [];
  const cli = (args: string[], timeoutMs = 60_000) => runCli(args, { ...env, ...as('alice') }, timeoutMs);

  const describe = (workflowId: string) =>
    client.workflowService.describeWorkflowExecution({ namespace: 'default', execution: { workflowId } });
  const history = async (workflowId: string) =>
    (await client.workflow.getHandle(workflowId).fetchHistory()).events ?? [];

  const t: Topology = {
    fleet,
    client,
    km,
    taskQueue,
    env,
    workers,
    cli,
    async startWorker() {
      const child = spawn(process.execPath, [BIN, 'worker'], { env: cliEnv(env), stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr?.on('data', (d: Buffer) => {
        err += d.toString();
      });
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        child.once('exit', (code, signal) => resolve({ code, signal })),
      );
      const w: WorkerProcess = { child, identity: `${child.pid}@${os.hostname()}`, stderr: () => err, exited };
      workers.push(w);
      // Ready when it polls both the workflow (1) and the activity (2) task queue.
      await waitFor(
        `worker ${w.identity} polls ${taskQueue}`,
        async () => {
          if (child.exitCode !== null) throw new Error(`worker exited ${child.exitCode}: ${err}`);
          for (const taskQueueType of [1, 2]) {
            const r = await client.workflowService.describeTaskQueue({
              namespace: 'default',
              taskQueue: { name: taskQueue },
              taskQueueType,
            });
            if (!(r.pollers ?? []).some((p) => p.identity === w.identity)) return false;
          }
          return true;
        },
        90_000,
        200,
      );
      return w;
    },
    async hotfixFile() {
      const made = await makeHotfix({
        component: 'backend',
        version: '3.0.0',
        description: `fix_${randomBytes(3).toString('hex')}`,
        issueId: 'UKM-1401',
      });
      const file = path.join(dir, made.fileName);
      await fs.writeFile(file, made.bytes);
      return { name: made.manifest.name, file };
    },
    async rollout(file, batch) {
      const r = await cli(['rollout', file, '--approvers', 'bob', '--batch', batch]);
      if (r.code !== 0) throw new Error(`km-hotfix rollout exited ${r.code}: ${r.stderr}`);
      return r.stdout.trim().split('\n').at(-1)!;
    },
    async approve(id) {
      await waitFor(
        `${id} reaches verifying`,
        async () => ((await t.status(id))?.phase === 'verifying' ? true : undefined),
        120_000,
        200,
      );
      const r = await runCli(['approve', id, '--comment', 'canary looks good'], { ...env, ...as('bob') });
      if (r.code !== 0) throw new Error(`km-hotfix approve exited ${r.code}: ${r.stderr}`);
    },
    async status(id) {
      return client.workflow
        .getHandle(id)
        .query(statusQuery)
        .catch(() => undefined);
    },
    async runningChild(id) {
      return (await describe(id)).pendingChildren?.[0]?.workflowId ?? undefined;
    },
    async pendingActivities(workflowId) {
      return (await describe(workflowId)).pendingActivities ?? [];
    },
    history,
    async histories(id) {
      const parent = await history(id);
      const children = parent
        .map((e) => e.childWorkflowExecutionStartedEventAttributes?.workflowExecution?.workflowId)
        .filter((c): c is string => !!c);
      return [parent, ...(await Promise.all(children.map(history)))];
    },
    async holder(workflowId) {
      const events = await history(workflowId);
      return (
        events.filter((e) => e.workflowTaskCompletedEventAttributes).at(-1)?.workflowTaskCompletedEventAttributes
          ?.identity ?? undefined
      );
    },
    async applied(hotfix) {
      return (
        await km<
          { server_name: string }[]
        >`SELECT server_name FROM km_hotfix_applied WHERE hotfix_name = ${hotfix} ORDER BY server_name`
      ).map((r) => r.server_name);
    },
    async close() {
      for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
      await Promise.all(workers.map((w) => w.exited));
      await connection.close().catch(() => undefined);
      await km.end({ timeout: 2 }).catch(() => undefined);
      await fleet.stop();
    },
  };
  return t;
}

/** Terminate every workflow of this rollout still running (a failed test must not leave it to the next). */
export async function endWorkflows(t: Topology, id: string | undefined): Promise<void> {
  if (!id) return;
  const h = t.client.workflow.getHandle(id);
  const d = await h.describe().catch(() => undefined);
  if (d?.status.name !== 'RUNNING') return;
  const child = await t.runningChild(id).catch(() => undefined);
  await h.terminate('test ended').catch(() => undefined);
  if (child)
    await t.client.workflow
      .getHandle(child)
      .terminate('test ended')
      .catch(() => undefined);
}

/** Identities of the workers that ran activities, from ActivityTaskStarted events. */
export function activityWorkers(histories: HistoryEvent[][]): Map<string, number> {
  const out = new Map<string, number>();
  for (const events of histories) {
    for (const e of events) {
      const who = e.activityTaskStartedEventAttributes?.identity;
      if (who) out.set(who, (out.get(who) ?? 0) + 1);
    }
  }
  return out;
}

/** Milliseconds since the epoch of an event. */
export function eventMs(e: HistoryEvent): number {
  const t = e.eventTime;
  return t ? Number(t.seconds ?? 0) * 1000 + Math.floor((t.nanos ?? 0) / 1e6) : 0;
}
