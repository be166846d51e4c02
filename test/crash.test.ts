// Crashes against the real stack (issue 9): the worker process SIGKILLed
// during the canary's restart, at the gate and mid rollback; the Temporal
// dev server restarted mid-rollout on the same SQLite file; each database
// (orchestrator, Key Manager) refusing connections for a while. Every
// rollout ends by the invariant of test/helpers/rollout-invariant.ts.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import postgres, { Sql } from 'postgres';
import { Client, Connection, WorkflowHandle } from '@temporalio/client';
import { rolloutEnv, RolloutEnv, FAST_TIMING } from './helpers/rollout-env';
import { scratchDir, testStack } from './helpers/stack';
import { startWorkerProcess, WorkerProcess } from './helpers/worker-process';
import { kmMaxProcesses as maxProcessesOf } from './helpers/invariant';
import { endsBy } from './helpers/endings';
import { statusQuery, WORKFLOW_TYPES } from '../domain/messages/rollout';
import { isFinalPhase } from '../domain/rollout';
import { RolloutInput, RolloutStatus } from '../domain/messages/rollout';
import { startDevServer, RunningDevServer } from '../stack/temporal';
import { freePort } from '../stack/process';
import { sleep, until } from './helpers/until';

describe('crashes: worker killed, Temporal restarted, databases gone for a while', function () {
  this.timeout(240_000);
  let env: RolloutEnv;
  let keyFile: string;
  let admin: Sql;
  const workers: WorkerProcess[] = [];
  const handles: WorkflowHandle[] = [];
  const closedDatabases = new Set<string>();

  before(async () => {
    // A slow restart leaves time to kill the worker in the middle of one.
    env = await rolloutEnv({ frontends: 1, backends: 3, restartMs: 1500 });
    keyFile = path.join(await scratchDir('crash'), 'id_ed25519');
    await fs.writeFile(keyFile, env.sshPrivateKey, { mode: 0o600 });
    admin = postgres(testStack().postgres.url('postgres'), { max: 1, onnotice: () => undefined });
  });

  // Whatever happened: databases open again, workflows ended, claims released, workers gone.
  afterEach(async function () {
    this.timeout(60_000);
    for (const db of closedDatabases) await reopen(db);
    for (const h of handles.splice(0)) {
      const d = await h.describe().catch(() => undefined);
      if (d?.status.name === 'RUNNING') await h.terminate('test ended').catch(() => undefined);
      await env.orchestrator`DELETE FROM server_claim WHERE rollout_id = ${h.workflowId}`;
      await env.orchestrator`DELETE FROM hotfix_claim WHERE rollout_id = ${h.workflowId}`;
    }
    await Promise.all(workers.splice(0).map((w) => w.kill()));
    for (const s of env.fleet.servers) s.clearFaults();
  });
  after(async () => {
    await admin?.end({ timeout: 2 });
    await env?.close();
  });

  const dbName = (url: string) => new URL(url).pathname.slice(1);
  /** The database refuses new connections and its open ones are cut: an outage, as clients see it. */
  async function closeDatabase(db: string): Promise<void> {
    closedDatabases.add(db);
    await admin.unsafe(`ALTER DATABASE "${db}" ALLOW_CONNECTIONS false`);
    await admin`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${db} AND pid <> pg_backend_pid()`;
  }
  async function reopen(db: string): Promise<void> {
    await admin.unsafe(`ALTER DATABASE "${db}" ALLOW_CONNECTIONS true`);
    closedDatabases.delete(db);
  }

  /** A rollout of hotfix `hf`, signed by alice. */
  async function start(
    client: Client,
    taskQueue: string,
    hf: { name: string; sha256: string },
  ): Promise<WorkflowHandle> {
    const workflowId = `crash-${hf.name}`;
    const signed = await env.sign('alice', {
      action: 'rollout',
      rollout: workflowId,
      hotfix: hf.name,
      sha256: hf.sha256,
    });
    const i: RolloutInput = {
      hotfix: hf.name,
      signed,
      servers: [],
      batch: '1',
      maxFailures: 0,
      approvers: [],
      approvalTimeoutMs: 3_600_000,
      timing: FAST_TIMING,
    };
    const h = await client.workflow.start(WORKFLOW_TYPES.rollout, { taskQueue, workflowId, args: [i] });
    handles.push(h);
    return h;
  }

  async function phaseOf(h: WorkflowHandle, phase: string): Promise<RolloutStatus> {
    return until(`phase ${phase}`, async () => {
      const st = await h.query(statusQuery);
      return (st.phase === phase || isFinalPhase(st.phase)) && st;
    });
  }

  const workerOn = (
    taskQueue: string,
    client = env.client,
    temporalAddress = testStack().temporal.address,
    extraEnv: Record<string, string> = {},
  ) =>
    startWorkerProcess(
      client,
      {
        temporalAddress,
        taskQueue,
        orchestratorUrl: env.orchestratorUrl,
        kmUrl: env.kmUrl,
        sshKeyFile: keyFile,
        allowedSigners: env.people.allowedSigners,
        extraEnv,
      },
      workers,
    );
  const queue = () => `crash-${randomBytes(3).toString('hex')}`;
  const restarts = (server: string) => env.commands(server, /supervisorctl restart all/).length;

  it('a retryable activity failure: one line without KM_HOTFIX_DEBUG, with it the stack (issue 25)', async () => {
    for (const debug of [false, true]) {
      const hf = await env.hotfix('frontend');
      const tq = queue();
      const w = await workerOn(tq, env.client, testStack().temporal.address, debug ? { KM_HOTFIX_DEBUG: '1' } : {});
      const ready = w.output();
      // The ledger refuses connections: the rollout's first activity fails, and Temporal retries it.
      const db = dbName(env.orchestratorUrl);
      await closeDatabase(db);
      let out: string;
      let stopping = '';
      try {
        const h = await start(env.client, tq, hf);
        await until('an activity failed', async () => /activity \S+ failed|Activity failed/.test(w.output()));
        await sleep(500); // the whole entry, however many lines it takes
        out = w.output().slice(ready.length);
        if (!debug) {
          // Ctrl-C while the rollout still runs: the stop in a few lines, none of the core's retry warnings.
          const before = w.output().length;
          w.child.kill('SIGINT');
          await until('the worker stopped', async () => w.child.exitCode !== null || w.child.signalCode !== null);
          stopping = w.output().slice(before);
        }
        await h.terminate('test over');
      } finally {
        await reopen(db);
      }
      if (debug) {
        assert.match(out, /Activity failed/, out);
        assert.match(out, /^\s+at /m, `the stack, with KM_HOTFIX_DEBUG=1: ${out}`);
      } else {
        const failed = out.split('\n').filter((l) => /failed/.test(l));
        assert.ok(failed.length >= 1, out);
        assert.match(
          failed[0],
          /^km-hotfix worker: warning: activity \w+ failed \(attempt 1\): database "\w+" is not currently accepting connections — workflow crash-/,
        );
        assert.doesNotMatch(out, /^\s+at /m, `no stack: ${out}`);
        assert.doesNotMatch(out, /taskToken/, out);
        // One line per failed attempt, nothing else: every line of the worker is its own event.
        for (const l of out.split('\n').filter(Boolean)) assert.match(l, /^km-hotfix worker: /, out);
        assert.equal(w.child.exitCode, 0, stopping);
        const stopLines = stopping.split('\n').filter(Boolean);
        assert.match(stopLines[0] ?? '', /^km-hotfix worker: SIGINT: stopping the worker/, stopping);
        assert.match(stopLines.at(-1) ?? '', /^km-hotfix worker: stopped$/, stopping);
        for (const l of stopLines) assert.match(l, /^km-hotfix worker: (SIGINT|stopped|warning: activity)/, stopping);
      }
    }
  });

  it("worker SIGKILLed during the canary's restart: a new worker finishes it; each server applied once", async () => {
    const hf = await env.hotfix('backend');
    const before = await maxProcessesOf(env.km);
    const tq = queue();
    const first = await workerOn(tq);
    const h = await start(env.client, tq, hf);
    const canary: string = await until('canary chosen', async () => (await h.query(statusQuery)).canary ?? undefined);
    const restartsBefore = restarts(canary);
    await until('canary applied', async () => (await env.applied(hf.name)).includes(canary));
    await sleep(300); // inside the 1.5 s restart
    assert.equal(restarts(canary), restartsBefore, 'the restart had not finished when the worker died');
    await first.kill();

    await workerOn(tq);
    await phaseOf(h, 'verifying');
    await env.approve(h, 'bob');
    const st = (await h.result()) as RolloutStatus;
    assert.equal(await endsBy(env, st, before, ['completed']), 'completed');
  });

  it('worker SIGKILLed at the gate: the approval reaches the new worker and the rollout completes', async () => {
    const hf = await env.hotfix('frontend');
    const before = await maxProcessesOf(env.km);
    const tq = queue();
    const first = await workerOn(tq);
    const h = await start(env.client, tq, hf);
    await phaseOf(h, 'verifying');
    await first.kill();
    await workerOn(tq);
    await env.approve(h, 'bob');
    const st = (await h.result()) as RolloutStatus;
    await endsBy(env, st, before, ['completed']);
    assert.deepEqual(
      st.approvals.map((a) => a.by),
      ['bob'],
    );
  });

  it('worker SIGKILLed mid rollback: the new worker finishes the rollback; nothing left patched, drains restored', async () => {
    const hf = await env.hotfix('backend');
    const before = await maxProcessesOf(env.km);
    const tq = queue();
    const first = await workerOn(tq);
    // The last server in fan-out fails its apply every time: a rollback of the canary and the servers before it.
    const last = env.fleet.servers.at(-1)!.name;
    env.fleet.server(last).fault({ failApplies: 100 });
    const h = await start(env.client, tq, hf);
    await phaseOf(h, 'verifying');
    await env.approve(h, 'bob');
    await phaseOf(h, 'rolling_back');
    const patched = (await env.applied(hf.name)).length;
    assert.ok(patched >= 2, `servers to roll back: ${patched}`);
    // One server unapplied, its restart running, more to go.
    await until('first unapply', async () => (await env.applied(hf.name)).length < patched, 60_000);
    await first.kill();
    assert.ok((await env.applied(hf.name)).length > 0, 'the worker died before the rollback ended');

    await workerOn(tq);
    const st = (await h.result()) as RolloutStatus;
    await endsBy(env, st, before, ['rolled_back']);
  });

  it('the Temporal server restarts mid fan-out (same SQLite file): the rollout completes', async () => {
    const dir = await scratchDir('temporal-restart');
    const port = await freePort();
    const opts = {
      binary: testStack().temporalBinary,
      port,
      headless: true,
      dbFile: path.join(dir, 'temporal.db'),
      logFile: path.join(dir, 'temporal.log'),
    };
    let server: RunningDevServer = await startDevServer(opts);
    const connection = await Connection.connect({ address: server.address });
    const client = new Client({ connection });
    try {
      const hf = await env.hotfix('common');
      const before = await maxProcessesOf(env.km);
      const tq = queue();
      await workerOn(tq, client, server.address);
      const h = await start(client, tq, hf);
      await phaseOf(h, 'verifying');
      await env.approve(h, 'bob');
      await until('fan-out under way', async () => (await env.applied(hf.name)).length >= 2);
      await server.stop();
      await sleep(2000);
      server = await startDevServer(opts);
      // The client's long poll may break with the server: ask again until the workflow has closed.
      await until('the rollout ends', async () => (await h.describe()).status.name !== 'RUNNING', 120_000);
      const st = (await h.result()) as RolloutStatus;
      await endsBy(env, st, before, ['completed']);
    } finally {
      for (const h of handles.splice(0)) await h.terminate('test ended').catch(() => undefined);
      await Promise.all(workers.splice(0).map((w) => w.kill()));
      await connection.close();
      await server.stop();
    }
  });

  it('Temporal unreachable mid fan-out (issue 22 item 7): no server is started until it is back, none restarted twice', async () => {
    const dir = await scratchDir('temporal-outage');
    const opts = {
      binary: testStack().temporalBinary,
      port: await freePort(),
      headless: true,
      dbFile: path.join(dir, 'temporal.db'),
      logFile: path.join(dir, 'temporal.log'),
    };
    let server: RunningDevServer = await startDevServer(opts);
    const connection = await Connection.connect({ address: server.address });
    const client = new Client({ connection });
    const applies = () =>
      env.fleet.servers.flatMap((s) =>
        s
          .log()
          .filter((e) => e.command.includes(`--apply-hotfix=${hf.name}`))
          .map((e) => ({ server: s.name, at: Date.parse(e.at) })),
      );
    const hf = await env.hotfix('common');
    // Longer than the SDK client's own retries of one call (about 10 s here), so that a heartbeat fails rather than
    // waits; two defences keep servers from starting then: the heartbeat asked before each server, and the fence on a
    // step whose last heartbeat is too old (attemptMayBeStale). Removing both makes this test fail.
    const OUTAGE_MS = 15_000;
    try {
      const before = await maxProcessesOf(env.km);
      const restartsBefore = Object.fromEntries(env.fleet.servers.map((s) => [s.name, restarts(s.name)]));
      const tq = queue();
      await workerOn(tq, client, server.address);
      // --batch 1 over four servers: after the canary one run takes the other three in turn (1.5 s restart each).
      const h = await start(client, tq, hf);
      await phaseOf(h, 'verifying');
      await env.approve(h, 'bob');
      await until('the first server after the canary is applied', async () => applies().length >= 2);
      await server.stop();
      const downAt = Date.now();
      await sleep(OUTAGE_MS);
      const upAt = Date.now();
      server = await startDevServer(opts);
      const startedWhileDown = applies().filter((a) => a.at > downAt && a.at < upAt);
      assert.deepEqual(startedWhileDown, [], 'a run started servers that Temporal could not hear about');
      await until('the rollout ends', async () => (await h.describe()).status.name !== 'RUNNING', 120_000);
      const st = (await h.result()) as RolloutStatus;
      await endsBy(env, st, before, ['completed']);
      // The redo after the outage finishes what was under way without a second restart (the invariant counts too).
      for (const s of env.fleet.servers)
        assert.equal(restarts(s.name) - (restartsBefore[s.name] ?? 0), 1, `${s.name} restarted once`);
    } finally {
      for (const h of handles.splice(0)) await h.terminate('test ended').catch(() => undefined);
      await Promise.all(workers.splice(0).map((w) => w.kill()));
      await connection.close();
      await server.stop();
    }
  });

  for (const which of ['orchestrator', 'Key Manager'] as const) {
    it(`the ${which} database refuses connections for 5 s mid fan-out: the rollout ends by the invariant`, async () => {
      const hf = await env.hotfix('common');
      const before = await maxProcessesOf(env.km);
      const tq = queue();
      await workerOn(tq);
      const h = await start(env.client, tq, hf);
      await phaseOf(h, 'verifying');
      await env.approve(h, 'bob');
      await until('fan-out under way', async () => (await env.applied(hf.name)).length >= 2);
      const db = dbName(which === 'orchestrator' ? env.orchestratorUrl : env.kmUrl);
      await closeDatabase(db);
      await sleep(5000);
      await reopen(db);
      const st = (await h.result()) as RolloutStatus;
      // Without its ledger the rollout waits and catches up; without the Key Manager database the servers' own
      // commands fail (the vendor's controller needs it), so it may roll back.
      const ending = await endsBy(env, st, before, which === 'orchestrator' ? ['completed'] : undefined);
      console.log(`      (${which} database outage: ${ending}${st.error ? `: ${st.error}` : ''})`);
    });
  }
});
