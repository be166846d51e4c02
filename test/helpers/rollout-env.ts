// A complete rollout environment for a test: a fresh orchestrator database
// (migrated), a fresh Key Manager database, a simulated fleet over real SSH
// with its inventory imported, and a worker with the real activities on its
// own task queue.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
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
import { isFinalPhase } from '../../domain/rollout';
import { RolloutInput, RolloutStatus, RemovalInput, SignedDecision } from '../../domain/messages/rollout';
import {
  WORKFLOW_TYPES,
  statusQuery,
  approveUpdate,
  rejectUpdate,
  pauseUpdate,
  resumeUpdate,
  abortUpdate,
} from '../../domain/messages/rollout';
import { generateEd25519KeyPair } from '../../keymanager/keygen';
import { Decision, decisionMessage, DecisionAction, drainedFacts, NO_FILE } from '../../domain/decision';
import { keyFileSigner } from '../../signing/signer';
import { signMessage } from '../../signing/sshsig';
import { ensurePeople, People } from '../../stack/people';

/** The people of a test environment: each has an ed25519 key and a line in the signers file. */
export const TEST_PEOPLE = ['alice', 'bob', 'carol', 'dana', 'dave', 'mallory', 'tester'] as const;

/** Sign a decision made now with a person's key file. */
export async function signAs(
  keyFile: string,
  d: Omit<Decision, 'at' | 'comment'> & { comment?: string; at?: string },
): Promise<SignedDecision> {
  const message = decisionMessage({ ...d, comment: d.comment ?? '', at: d.at ?? new Date().toISOString() });
  return { message, signature: await signMessage(await keyFileSigner(keyFile), message) };
}

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
  /** The signers file the worker reads (KM_HOTFIX_ALLOWED_SIGNERS) and each person's key. */
  people: People;
  /** Sign a decision as a person (now, unless `at` is given). */
  sign(who: string, d: Omit<Decision, 'at' | 'comment'> & { comment?: string; at?: string }): Promise<SignedDecision>;
  /** The decision a person would sign about this workflow as it is now (facts from its status). */
  decide(h: WorkflowHandle, who: string, action: DecisionAction, comment?: string): Promise<SignedDecision>;
  approve(h: WorkflowHandle, who: string, comment?: string): Promise<RolloutStatus>;
  reject(h: WorkflowHandle, who: string, reason: string): Promise<RolloutStatus>;
  pause(h: WorkflowHandle, who: string): Promise<RolloutStatus>;
  resume(h: WorkflowHandle, who: string): Promise<RolloutStatus>;
  abort(h: WorkflowHandle, who: string, reason?: string): Promise<RolloutStatus>;
  /** Upload-ready: store a hotfix file and register it on a server through the real upload path. */
  hotfix(
    component: Component,
    opts?: { version?: string; description?: string; issue?: string; register?: boolean },
  ): Promise<{ name: string; sha256: string; fileName: string }>;
  /** Start a rollout signed by `as` (default alice); `signed` replaces the signature (refusal tests). */
  /** `workflowId`: an id of the CLI's shape (e.g. the longest one); by default a short one. */
  startRollout(
    input: Partial<RolloutInput> & { hotfix: string; as?: string; workflowId?: string },
  ): Promise<WorkflowHandle>;
  startRemoval(input: Partial<RemovalInput> & { hotfix: string; as?: string }): Promise<WorkflowHandle>;
  /** sha256 of the file Key Manager has registered under this Name (NO_FILE when none). */
  registeredSha256(hotfix: string): Promise<string>;
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

export async function rolloutEnv(
  options: Partial<Omit<SimFleetOptions, 'kmDatabaseUrl' | 'authorizedKey'>> & {
    frontends: number;
    backends: number;
    workflowsPath?: string;
    notify?: { webhookUrl?: string; webUrl?: string };
    /** Start and steer workflows through this client (e.g. on a Temporal server the test restarts); its worker is the test's. */
    client?: Client;
  },
): Promise<RolloutEnv> {
  const { workflowsPath, notify, client: ownClient, ...opts } = options;
  const orchestratorUrl = await freshDatabase('orch');
  const orchestrator = sqlFor(orchestratorUrl);
  await migrate(orchestrator);
  const kmUrl = await freshDatabase('km');
  const km = sqlFor(kmUrl);
  const keys = generateEd25519KeyPair();
  const fleet = await startSimFleet({ restartMs: 50, ...opts, kmDatabaseUrl: kmUrl, authorizedKey: keys.public });
  await replaceInventory(orchestrator, fleet.inventory());
  const peopleDir = await fs.mkdtemp(path.join(os.tmpdir(), 'km-people-'));
  const people = await ensurePeople(peopleDir, TEST_PEOPLE);
  const built = createActivities({
    orchestrator,
    km,
    ssh: { privateKey: Buffer.from(keys.private) },
    allowedSigners: people.allowedSigners,
    ...(notify ? { notify } : {}),
  });
  const worker = await testWorker({ activities: built.activities, ...(workflowsPath ? { workflowsPath } : {}) });
  const running = worker.worker.run();
  const client = ownClient ?? worker.client;
  const taskQueue = worker.taskQueue;
  const suffix = () => randomBytes(3).toString('hex');
  const started: string[] = [];
  const track = (h: WorkflowHandle): WorkflowHandle => {
    started.push(h.workflowId);
    return h;
  };

  const keyOf = (who: string): string => {
    const k = people.keys[who];
    if (!k) throw new Error(`no test person ${who}`);
    return k;
  };

  const env: RolloutEnv = {
    fleet,
    orchestrator,
    km,
    worker,
    client,
    taskQueue,
    orchestratorUrl,
    kmUrl,
    sshPrivateKey: keys.private,
    people,
    sign: (who, d) => signAs(keyOf(who), d),
    async decide(h, who, action, comment) {
      const st = await h.query(statusQuery);
      const gate = action === 'approve' || action === 'reject';
      return env.sign(who, {
        action,
        rollout: st.id,
        hotfix: st.hotfix,
        sha256: st.sha256 ?? '',
        comment,
        // The drained backends by the digest the workflow states (tests that check the digest itself compute their own).
        ...(gate
          ? {
              canary: st.canary ?? '',
              drained: st.gate ? { count: st.gate.drained.count, sha256: st.gate.drained.sha256 } : drainedFacts([]),
            }
          : {}),
      });
    },
    async approve(h, who, comment) {
      return h.executeUpdate(approveUpdate, { args: [await env.decide(h, who, 'approve', comment)] });
    },
    async reject(h, who, reason) {
      return h.executeUpdate(rejectUpdate, { args: [await env.decide(h, who, 'reject', reason)] });
    },
    async pause(h, who) {
      return h.executeUpdate(pauseUpdate, { args: [await env.decide(h, who, 'pause')] });
    },
    async resume(h, who) {
      return h.executeUpdate(resumeUpdate, { args: [await env.decide(h, who, 'resume')] });
    },
    async abort(h, who, reason = 'test over') {
      return h.executeUpdate(abortUpdate, { args: [await env.decide(h, who, 'abort', reason)] });
    },
    async registeredSha256(hotfix) {
      const rows = await km<{ sha256: string }[]>`SELECT sha256 FROM km_hotfix WHERE name = ${hotfix}`;
      return rows[0]?.sha256 ?? NO_FILE;
    },
    async hotfix(component, o = {}) {
      const made = await makeHotfix({
        component,
        version: o.version ?? '3.0.0',
        description: o.description ?? `fix_${suffix()}`,
        issueId: o.issue ?? 'UKM-1001',
      });
      const stored = await storeHotfixFile(orchestrator, made.fileName, made.bytes, 'tester');
      if (o.register !== false) {
        const workflowId = `upload-${suffix()}`;
        const signed = await env.sign('tester', {
          action: 'upload',
          rollout: workflowId,
          hotfix: stored.name,
          sha256: stored.sha256,
        });
        const h = await client.workflow.start(WORKFLOW_TYPES.upload, {
          taskQueue,
          workflowId,
          args: [{ signed, sha256: stored.sha256, fileName: stored.fileName }],
        });
        const st = (await h.result()) as RolloutStatus;
        if (st.phase !== 'completed')
          throw new Error(`upload failed: ${st.error} ${JSON.stringify(fleet.servers.map((s) => s.log()))}`);
      }
      return { name: stored.name, sha256: stored.sha256, fileName: stored.fileName };
    },
    async startRollout({ as = 'alice', workflowId: id, ...input }) {
      const workflowId = id ?? `rollout-${input.hotfix}-${suffix()}`;
      const sha256 = input.upload?.sha256 ?? (await env.registeredSha256(input.hotfix));
      const signed =
        input.signed ?? (await env.sign(as, { action: 'rollout', rollout: workflowId, hotfix: input.hotfix, sha256 }));
      const full: RolloutInput = {
        servers: [],
        batch: '1',
        maxFailures: 0,
        approvers: [],
        approvalTimeoutMs: 3_600_000,
        timing: FAST_TIMING,
        ...input,
        signed,
      };
      return track(await client.workflow.start(WORKFLOW_TYPES.rollout, { taskQueue, workflowId, args: [full] }));
    },
    async startRemoval({ as = 'alice', ...input }) {
      const workflowId = `removal-${input.hotfix}-${suffix()}`;
      const signed =
        input.signed ??
        (await env.sign(as, {
          action: 'remove',
          rollout: workflowId,
          hotfix: input.hotfix,
          sha256: await env.registeredSha256(input.hotfix),
        }));
      const full: RemovalInput = { servers: [], keepRegistered: false, timing: FAST_TIMING, ...input, signed };
      return track(await client.workflow.start(WORKFLOW_TYPES.removal, { taskQueue, workflowId, args: [full] }));
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
      return (
        await km<
          { server_name: string }[]
        >`SELECT server_name FROM km_hotfix_applied WHERE hotfix_name = ${hotfix} ORDER BY server_name`
      ).map((r) => r.server_name);
    },
    async maxProcesses() {
      const rows = await km<
        { name: string; max_processes: number }[]
      >`SELECT name, max_processes FROM km_server ORDER BY name`;
      return Object.fromEntries(rows.map((r) => [r.name, r.max_processes]));
    },
    commands(server, pattern) {
      return fleet
        .server(server)
        .log()
        .map((e) => e.command)
        .filter((c) => !pattern || pattern.test(c));
    },
    async endAll(otherTaskQueues = []) {
      // Tracked starts, and whatever else runs on this queue (CLI starts, children) or the others named.
      const ids = new Set(started.splice(0));
      for (const q of [taskQueue, ...otherTaskQueues]) {
        try {
          for await (const w of client.workflow.list({ query: `TaskQueue = '${q}' AND ExecutionStatus = 'Running'` }))
            ids.add(w.workflowId);
        } catch {
          /* visibility not ready: the tracked ones still end */
        }
      }
      for (const id of ids) {
        const h = client.workflow.getHandle(id);
        const running = await h
          .describe()
          .then((d) => d.status.name === 'RUNNING')
          .catch(() => false);
        if (running) await h.terminate('test cleanup: the test ended').catch(() => undefined);
      }
      // This environment's orchestrator database is its own: nothing it started may hold a server now.
      await orchestrator`DELETE FROM server_claim`;
      await orchestrator`DELETE FROM hotfix_claim`;
    },
    async close() {
      await env.endAll().catch(() => undefined);
      // A test may have stopped it already (to serve the task queue from a worker process).
      if (worker.worker.getState() === 'RUNNING') worker.worker.shutdown();
      await running.catch(() => undefined);
      await built.close();
      await worker.close();
      await fleet.stop();
      await fs.rm(peopleDir, { recursive: true, force: true });
      // Its connections go too: a suite of many environments would otherwise run PostgreSQL out of them.
      await Promise.all([orchestrator.end({ timeout: 2 }), km.end({ timeout: 2 })]);
    },
  };
  return env;
}

/** What `km-hotfix` needs to reach this environment, signing as `signer` (alice by default). */
export function cliSettings(env: RolloutEnv, temporalAddress: string, signer = 'alice'): Record<string, string> {
  return {
    TEMPORAL_ADDRESS: temporalAddress,
    KM_HOTFIX_TASK_QUEUE: env.taskQueue,
    DATABASE_URL: env.orchestratorUrl,
    KM_DATABASE_URL: env.kmUrl,
    KM_HOTFIX_SIGNING_KEY: env.people.keys[signer],
    KM_HOTFIX_ALLOWED_SIGNERS: env.people.allowedSigners,
  };
}
