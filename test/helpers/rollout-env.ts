// A complete rollout environment for a test: a fresh orchestrator database
// (migrated), a fresh Key Manager database, a simulated fleet over real SSH
// with its inventory imported, and a worker with the real activities on its
// own task queue.
import { randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import { Client, WorkflowHandle } from '@temporalio/client';
import { freshDatabase, sqlFor } from './stack';
import { testWorker, TestWorker } from './worker';
import { migrate } from '../../store/migrations';
import { replaceInventory } from '../../store/inventory';
import { storeHotfixFile } from '../../store/hotfix-files';
import { createActivities } from '../../activities';
import { startSimFleet, makeHotfix, SimFleet, SimFleetOptions } from '../../simulator';
import type { Component } from '../../domain/hotfix';
import { isFinalPhase, RolloutInput, RolloutStatus, RemovalInput } from '../../domain/rollout';
import { WORKFLOW_TYPES, statusQuery } from '../../workflows/definitions';
import { generateEd25519KeyPair } from '../../keymanager/keygen';

export interface RolloutEnv {
  fleet: SimFleet;
  orchestrator: Sql;
  km: Sql;
  worker: TestWorker;
  client: Client;
  taskQueue: string;
  /** Database URLs, for running the real CLI against this environment (DATABASE_URL, KM_DATABASE_URL). */
  orchestratorUrl: string;
  kmUrl: string;
  /** The private key the fleet accepts (OpenSSH format), for a worker in another process. */
  sshPrivateKey: string;
  /** Upload-ready: store a hotfix file and register it on a server through the real upload path. */
  hotfix(component: Component, opts?: { version?: string; description?: string; issue?: string; register?: boolean }): Promise<{ name: string; sha256: string; fileName: string }>;
  startRollout(input: Partial<RolloutInput> & { hotfix: string }): Promise<WorkflowHandle>;
  startRemoval(input: Partial<RemovalInput> & { hotfix: string }): Promise<WorkflowHandle>;
  status(h: WorkflowHandle): Promise<RolloutStatus>;
  /** Wait until the workflow reports this phase (or a final one). */
  waitForPhase(h: WorkflowHandle, phase: string, timeoutMs?: number): Promise<RolloutStatus>;
  applied(hotfix: string): Promise<string[]>;
  maxProcesses(): Promise<Record<string, number>>;
  /** Commands each server ran, filtered by a pattern. */
  commands(server: string, pattern?: RegExp): string[];
  /**
   * End every workflow this environment started that still runs (terminate)
   * and release the claims of all of them: call it in afterEach, so that one
   * failing test never leaves a rollout holding servers for the next one.
   */
  endAll(otherTaskQueues?: string[]): Promise<void>;
  close(): Promise<void>;
}

export const FAST_TIMING = { servicesTimeoutMs: 15_000, maxRetryIntervalMs: 500 };

export async function rolloutEnv(options: Partial<Omit<SimFleetOptions, 'kmDatabaseUrl' | 'authorizedKey'>> & { frontends: number; backends: number; workflowsPath?: string }): Promise<RolloutEnv> {
  const { workflowsPath, ...opts } = options;
  const orchestratorUrl = await freshDatabase('orch');
  const orchestrator = sqlFor(orchestratorUrl);
  await migrate(orchestrator);
  const kmUrl = await freshDatabase('km');
  const km = sqlFor(kmUrl);
  const keys = generateEd25519KeyPair();
  const fleet = await startSimFleet({ restartMs: 50, ...opts, kmDatabaseUrl: kmUrl, authorizedKey: keys.public });
  await replaceInventory(orchestrator, fleet.inventory());
  const built = createActivities({ orchestrator, km, ssh: { privateKey: Buffer.from(keys.private) } });
  const worker = await testWorker({ activities: built.activities, ...(workflowsPath ? { workflowsPath } : {}) });
  const running = worker.worker.run();
  const client = worker.client;
  const taskQueue = worker.taskQueue;
  const suffix = () => randomBytes(3).toString('hex');
  const started: string[] = [];
  const track = (h: WorkflowHandle): WorkflowHandle => { started.push(h.workflowId); return h; };

  const env: RolloutEnv = {
    fleet, orchestrator, km, worker, client, taskQueue, orchestratorUrl, kmUrl, sshPrivateKey: keys.private,
    async hotfix(component, o = {}) {
      const made = await makeHotfix({ component, version: o.version ?? '3.0.0', description: o.description ?? `fix_${suffix()}`, issueId: o.issue ?? 'UKM-1001' });
      const stored = await storeHotfixFile(orchestrator, made.fileName, made.bytes, 'tester');
      if (o.register !== false) {
        const h = await client.workflow.start(WORKFLOW_TYPES.upload, { taskQueue, workflowId: `upload-${suffix()}`, args: [{ requestedBy: 'tester', sha256: stored.sha256, fileName: stored.fileName }] });
        const st = (await h.result()) as RolloutStatus;
        if (st.phase !== 'completed') throw new Error(`upload failed: ${st.error} ${JSON.stringify(fleet.servers.map((s) => s.log()))}`);
      }
      return { name: stored.name, sha256: stored.sha256, fileName: stored.fileName };
    },
    async startRollout(input) {
      const full: RolloutInput = { requestedBy: 'alice', servers: [], batch: '1', maxFailures: 0, approvers: [], approvalTimeoutMs: 3_600_000, timing: FAST_TIMING, ...input };
      return track(await client.workflow.start(WORKFLOW_TYPES.rollout, { taskQueue, workflowId: `rollout-${input.hotfix}-${suffix()}`, args: [full] }));
    },
    async startRemoval(input) {
      const full: RemovalInput = { requestedBy: 'alice', servers: [], keepRegistered: false, timing: FAST_TIMING, ...input };
      return track(await client.workflow.start(WORKFLOW_TYPES.removal, { taskQueue, workflowId: `removal-${input.hotfix}-${suffix()}`, args: [full] }));
    },
    status: (h) => h.query(statusQuery),
    async waitForPhase(h, phase, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const st = await h.query(statusQuery).catch(() => undefined);
        if (st && (st.phase === phase || isFinalPhase(st.phase))) return st;
        if (Date.now() > deadline) throw new Error(`phase ${phase} not reached in ${timeoutMs} ms (now ${st?.phase})`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async applied(hotfix) {
      return (await km<{ server_name: string }[]>`SELECT server_name FROM km_hotfix_applied WHERE hotfix_name = ${hotfix} ORDER BY server_name`).map((r) => r.server_name);
    },
    async maxProcesses() {
      const rows = await km<{ name: string; max_processes: number }[]>`SELECT name, max_processes FROM km_server ORDER BY name`;
      return Object.fromEntries(rows.map((r) => [r.name, r.max_processes]));
    },
    commands(server, pattern) {
      return fleet.server(server).log().map((e) => e.command).filter((c) => !pattern || pattern.test(c));
    },
    async endAll(otherTaskQueues = []) {
      // Tracked starts, and whatever else runs on this queue (CLI starts, children) or the others named.
      const ids = new Set(started.splice(0));
      for (const q of [taskQueue, ...otherTaskQueues]) {
        try {
          for await (const w of client.workflow.list({ query: `TaskQueue = '${q}' AND ExecutionStatus = 'Running'` })) ids.add(w.workflowId);
        } catch { /* visibility not ready: the tracked ones still end */ }
      }
      for (const id of ids) {
        const h = client.workflow.getHandle(id);
        const running = await h.describe().then((d) => d.status.name === 'RUNNING').catch(() => false);
        if (running) await h.terminate('test cleanup: the test ended').catch(() => undefined);
      }
      // This environment's orchestrator database is its own: nothing it started may hold a server now.
      await orchestrator`DELETE FROM server_claim`;
      await orchestrator`DELETE FROM hotfix_claim`;
    },
    async close() {
      await env.endAll().catch(() => undefined);
      worker.worker.shutdown();
      await running.catch(() => undefined);
      await built.close();
      await worker.close();
      await fleet.stop();
    },
  };
  return env;
}
