// The production topology (docker-compose.yml without Docker): the pinned
// Temporal server on PostgreSQL, its schema from deploy/temporal/setup-schema.sh,
// and two `km-hotfix worker` processes on one task queue. A rollout goes on
// when a worker dies, drains when one is stopped, and survives a restart of
// the Temporal server; every server is applied exactly once.
import assert from 'node:assert/strict';
import { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { RolloutStatus } from '../../domain/messages/rollout';
import { productionStack } from './stack';
import { setupTemporalSchema, temporalServerVersion } from '../../stack/temporal-server';
import { activityWorkers, endWorkflows, eventMs, Topology, topology, waitFor, WorkerProcess } from './topology';
import { lines } from '../helpers/cli-process';

const APPLIED_OK = (e: { command: string; exitCode: number }) => /--apply-hotfix=/.test(e.command) && e.exitCode === 0;
const ROOT = path.resolve(__dirname, '..', '..', '..');
const report = (line: string) => console.log(`      [measured] ${line}`);

/** Every server has the hotfix, each applied by exactly one successful command. */
async function assertAppliedOnce(t: Topology, hotfix: string): Promise<void> {
  assert.deepEqual(await t.applied(hotfix), t.fleet.servers.map((s) => s.name).sort());
  for (const s of t.fleet.servers)
    assert.equal(s.log().filter(APPLIED_OK).length, 1, `${s.name}: applied exactly once`);
}

async function result(t: Topology, id: string): Promise<RolloutStatus> {
  return (await t.client.workflow.getHandle(id).result()) as RolloutStatus;
}

/** Fan-out is under way: a child runs, a server step is running on a worker, and servers remain. */
async function midFanout(
  t: Topology,
  id: string,
  hotfix: string,
): Promise<{ child: string; running: { identity: string; activityId: string; type: string } }> {
  return waitFor(
    `${id} mid fan-out`,
    async () => {
      const child = await t.runningChild(id);
      if (!child) return undefined;
      if ((await t.applied(hotfix)).length < 2) return undefined;
      const running = (await t.pendingActivities(child)).find(
        (a) =>
          a.state === temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_STARTED &&
          a.lastWorkerIdentity &&
          a.activityType?.name === 'runServers',
      );
      if (!running) return undefined;
      return {
        child,
        running: {
          identity: running.lastWorkerIdentity!,
          activityId: running.activityId!,
          type: running.activityType!.name!,
        },
      };
    },
    120_000,
    50,
  );
}

interface Recovery {
  /** Kill → no step attributed to the dead worker any more (all started again elsewhere). */
  activitiesMs?: number;
  /** The first workflow task after the kill (scheduled, or in flight on the dead worker) → started by another worker. */
  taskMoveMs?: number;
  timeline?: string;
}

/**
 * After a worker died at `killedAt`: how long until every step it was running
 * had been started again by another worker (polled every 100 ms), and how
 * long the workflow's first task after the kill waited for another worker
 * (from the child's history).
 */
async function recovery(t: Topology, child: string, dead: string, killedAt: number): Promise<Recovery> {
  const out: Recovery = {};
  await waitFor(
    'recovery',
    async () => {
      const pending = await t.pendingActivities(child).catch(() => undefined);
      if (pending === undefined || !pending.some((a) => a.lastWorkerIdentity === dead)) {
        out.activitiesMs = Date.now() - killedAt;
        return true;
      }
      return undefined;
    },
    120_000,
    100,
  );
  await t.client.workflow
    .getHandle(child)
    .result()
    .catch(() => undefined);
  const events = await t.history(child);
  // The first workflow task after the kill: scheduled after it, or already running on the dead worker (it then times out).
  const first = events.find(
    (e) => (e.workflowTaskScheduledEventAttributes || e.workflowTaskTimedOutEventAttributes) && eventMs(e) >= killedAt,
  );
  const started =
    first &&
    events.find(
      (e) =>
        e.workflowTaskStartedEventAttributes &&
        Number(e.eventId) > Number(first.eventId) &&
        e.workflowTaskStartedEventAttributes.identity !== dead,
    );
  if (first && started)
    out.taskMoveMs = eventMs(started) - (first.workflowTaskTimedOutEventAttributes ? killedAt : eventMs(first));
  // The workflow-task events after the kill, for the record (seconds after the kill).
  out.timeline = events
    .filter(
      (e) =>
        eventMs(e) >= killedAt &&
        (e.workflowTaskScheduledEventAttributes ||
          e.workflowTaskStartedEventAttributes ||
          e.workflowTaskTimedOutEventAttributes),
    )
    .slice(0, 6)
    .map(
      (e) =>
        `${e.workflowTaskScheduledEventAttributes ? 'scheduled' : e.workflowTaskStartedEventAttributes ? `started${e.workflowTaskStartedEventAttributes.identity === dead ? '(dead)' : ''}` : 'timed-out'}@${((eventMs(e) - killedAt) / 1000).toFixed(1)}`,
    )
    .join(' ');
  return out;
}

function other(workers: WorkerProcess[], identity: string): WorkerProcess {
  return workers.find((w) => w.identity !== identity)!;
}

function byIdentity(workers: WorkerProcess[], identity: string): WorkerProcess {
  const w = workers.find((x) => x.identity === identity);
  assert.ok(w, `${identity} is one of our workers (${workers.map((x) => x.identity).join(', ')})`);
  return w;
}

describe(`production topology: Temporal server ${temporalServerVersion()} on PostgreSQL, two km-hotfix workers`, function () {
  this.timeout(240_000);
  let t: Topology | undefined;
  let id: string | undefined;

  afterEach(async function () {
    this.timeout(60_000);
    // End what the test started, pass or fail: its workflows, then its workers and fleet.
    if (t) {
      await endWorkflows(t, id).catch(() => undefined);
      await t.close();
    }
    t = undefined;
    id = undefined;
  });

  it('the version docker-compose.yml runs is the one built and answering here', async () => {
    const compose = await fs.readFile(path.join(ROOT, 'docker-compose.yml'), 'utf8');
    const tags = [...compose.matchAll(/image: temporalio\/(server|admin-tools):(\S+)/g)].map((m) => m[2]);
    assert.ok(tags.length >= 3, 'server and admin-tools images');
    for (const tag of tags) assert.equal(tag, productionStack().tools.version);
    const connection = await Connection.connect({ address: productionStack().temporal.address });
    try {
      const info = await connection.workflowService.getSystemInfo({});
      assert.equal(info.serverVersion, productionStack().tools.version);
    } finally {
      await connection.close();
    }
  });

  it('setup-schema.sh is idempotent: a second run (compose re-runs it on every `up`) succeeds and changes nothing', async () => {
    assert.match(productionStack().schemaLog, /temporal and temporal_visibility are up to date/);
    const again = await setupTemporalSchema(productionStack().tools, productionStack().sql);
    assert.match(again, /up to date/);
    assert.equal([...again.matchAll(/found zero updates from current version/g)].length, 2, again);
  });

  it('a backend rollout completes with its steps spread over both workers', async () => {
    t = await topology({ frontends: 1, backends: 6, applyMs: 300 });
    const tp = t;
    const r = await tp.cli(['fleet', 'import', await writeInventory(tp)]);
    assert.equal(r.code, 0, r.stderr);
    const workers = await Promise.all([tp.startWorker(), tp.startWorker()]);
    const hf = await tp.hotfixFile();
    const started = Date.now();
    id = await tp.rollout(hf.file, '2');
    await tp.approve(id);
    const st = await result(tp, id);
    report(`rollout of 6 backends, batch 2, on two workers: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    assert.equal(st.phase, 'completed', st.error ?? '');
    await assertAppliedOnce(tp, hf.name);
    const ran = activityWorkers(await tp.histories(id));
    for (const w of workers)
      assert.ok((ran.get(w.identity) ?? 0) > 0, `${w.identity} ran steps: ${JSON.stringify([...ran])}`);
    assert.deepEqual([...ran.keys()].sort(), workers.map((w) => w.identity).sort(), 'only our two workers ran steps');
  });

  it('SIGKILL of the worker holding the fan-out workflow: the other finishes the rollout, status still answers', async () => {
    t = await topology({ frontends: 1, backends: 6, applyMs: 1500 });
    const tp = t;
    assert.equal((await tp.cli(['fleet', 'import', await writeInventory(tp)])).code, 0);
    const workers = await Promise.all([tp.startWorker(), tp.startWorker()]);
    const hf = await tp.hotfixFile();
    id = await tp.rollout(hf.file, '2');
    await tp.approve(id);
    const { child } = await midFanout(tp, id, hf.name);
    const holder = byIdentity(workers, await waitFor('holder', () => tp.holder(child)));
    const killedAt = Date.now();
    holder.child.kill('SIGKILL');
    await holder.exited;
    // What a user sees right then: `km-hotfix status` answers (live, or from the ledger, saying so).
    const s0 = Date.now();
    const status = await tp.cli(['status', id]);
    report(
      `km-hotfix status while the workflow task moves: ${Date.now() - s0} ms (exit ${status.code}${status.stderr ? `; stderr: ${status.stderr.trim()}` : ''})`,
    );
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /fanout/);
    assert.ok(lines(status.stderr).length <= 1, status.stderr);
    if (status.stderr) assert.match(status.stderr, /did not answer within .*ledger/);
    const rec = await recovery(tp, child, holder.identity, killedAt);
    report(
      `SIGKILL of the workflow's worker: its steps restarted elsewhere ${fmt(rec.activitiesMs)} after the kill; its next workflow task waited ${fmt(rec.taskMoveMs)} for another worker (${rec.timeline})`,
    );
    const st = await result(tp, id);
    assert.equal(st.phase, 'completed', st.error ?? '');
    await assertAppliedOnce(tp, hf.name);
    assert.ok((activityWorkers(await tp.histories(id)).get(other(workers, holder.identity).identity) ?? 0) > 0);
  });

  it('SIGKILL of a worker running a server step: the step is retried on the other, applied once', async () => {
    t = await topology({ frontends: 1, backends: 6, applyMs: 1500 });
    const tp = t;
    assert.equal((await tp.cli(['fleet', 'import', await writeInventory(tp)])).code, 0);
    const workers = await Promise.all([tp.startWorker(), tp.startWorker()]);
    const hf = await tp.hotfixFile();
    id = await tp.rollout(hf.file, '2');
    await tp.approve(id);
    const { child, running } = await midFanout(tp, id, hf.name);
    const victim = byIdentity(workers, running.identity);
    const killedAt = Date.now();
    victim.child.kill('SIGKILL');
    await victim.exited;
    const rec = await recovery(tp, child, victim.identity, killedAt);
    report(
      `SIGKILL of a worker mid-apply: its steps restarted elsewhere ${fmt(rec.activitiesMs)} after the kill; the workflow's next task waited ${fmt(rec.taskMoveMs)} for another worker (${rec.timeline})`,
    );
    const st = await result(tp, id);
    assert.equal(st.phase, 'completed', st.error ?? '');
    await assertAppliedOnce(tp, hf.name);
    // The killed run timed out (its heartbeat), and the child started its servers again: on the survivor.
    const events = await tp.history(child);
    const lost = events.find((e) => e.activityTaskTimedOutEventAttributes);
    assert.ok(lost, 'the run on the killed worker timed out');
    const again = events.filter(
      (e) => e.activityTaskStartedEventAttributes && Number(e.eventId) > Number(lost.eventId),
    );
    assert.ok(
      again.some((e) => e.activityTaskStartedEventAttributes!.identity === other(workers, victim.identity).identity),
      'its servers run again by the surviving worker',
    );
  });

  it('SIGTERM drains a worker: its running step finishes there, it exits 0, the other goes on', async () => {
    t = await topology({ frontends: 1, backends: 6, applyMs: 2500 });
    const tp = t;
    assert.equal((await tp.cli(['fleet', 'import', await writeInventory(tp)])).code, 0);
    const workers = await Promise.all([tp.startWorker(), tp.startWorker()]);
    const hf = await tp.hotfixFile();
    id = await tp.rollout(hf.file, '2');
    await tp.approve(id);
    const { child, running } = await midFanout(tp, id, hf.name);
    const leaving = byIdentity(workers, running.identity);
    leaving.child.kill('SIGTERM');
    const exit = await leaving.exited;
    assert.deepEqual(exit, { code: 0, signal: null }, leaving.stderr());
    assert.match(leaving.stderr(), /SIGTERM: stopping the worker[\s\S]*stopped/);
    const st = await result(tp, id);
    assert.equal(st.phase, 'completed', st.error ?? '');
    await assertAppliedOnce(tp, hf.name);
    // The step it was running completed there, first attempt: drained, not abandoned.
    const events = await tp.history(child);
    const scheduled = events.find((e) => e.activityTaskScheduledEventAttributes?.activityId === running.activityId)!;
    const startedEv = events.find(
      (e) =>
        e.activityTaskStartedEventAttributes &&
        String(e.activityTaskStartedEventAttributes.scheduledEventId) === String(scheduled.eventId),
    )!;
    assert.equal(startedEv.activityTaskStartedEventAttributes!.identity, leaving.identity);
    assert.equal(startedEv.activityTaskStartedEventAttributes!.attempt, 1);
    assert.ok(
      events.some(
        (e) =>
          e.activityTaskCompletedEventAttributes &&
          String(e.activityTaskCompletedEventAttributes.scheduledEventId) === String(scheduled.eventId),
      ),
      'the step completed',
    );
  });

  it('status answers from the ledger, and says so, when no worker answers its query', async () => {
    t = await topology({ frontends: 1, backends: 2 });
    const tp = t;
    assert.equal((await tp.cli(['fleet', 'import', await writeInventory(tp)])).code, 0);
    const workers = await Promise.all([tp.startWorker(), tp.startWorker()]);
    const hf = await tp.hotfixFile();
    id = await tp.rollout(hf.file, '1');
    const rid = id;
    // At the gate, with the phase recorded in the ledger (no activity pending).
    await waitFor(
      `${id} reaches verifying`,
      async () =>
        (await tp.status(rid))?.phase === 'verifying' && (await tp.pendingActivities(rid)).length === 0
          ? true
          : undefined,
      120_000,
      200,
    );
    // Frozen workers (SIGSTOP) hold their polls and answer nothing: as a dead worker before Temporal notices.
    for (const w of workers) w.child.kill('SIGSTOP');
    let status;
    const s0 = Date.now();
    try {
      status = await tp.cli(['status', id]);
    } finally {
      for (const w of workers) w.child.kill('SIGCONT');
    }
    report(`km-hotfix status with no worker answering: ${Date.now() - s0} ms`);
    assert.equal(status.code, 0, status.stderr);
    assert.deepEqual(lines(status.stderr), [
      "km-hotfix: Temporal did not answer within 2 s; showing the ledger's view (try again in a few seconds for the live one)",
    ]);
    assert.match(status.stdout, /verifying/);
    assert.match(status.stdout, new RegExp(hf.name));
    await tp.approve(id);
    assert.equal((await result(tp, id)).phase, 'completed');
    await assertAppliedOnce(tp, hf.name);
  });

  it('the Temporal server restarted mid fan-out: the rollout completes, every server applied once', async () => {
    t = await topology({ frontends: 1, backends: 6, applyMs: 1500 });
    const tp = t;
    assert.equal((await tp.cli(['fleet', 'import', await writeInventory(tp)])).code, 0);
    await Promise.all([tp.startWorker(), tp.startWorker()]);
    const hf = await tp.hotfixFile();
    id = await tp.rollout(hf.file, '2');
    await tp.approve(id);
    await midFanout(tp, id, hf.name);
    const server = productionStack().temporal;
    const down = Date.now();
    await server.stop();
    await new Promise((r) => setTimeout(r, 2000));
    await server.start();
    report(`Temporal server down and back: ${((Date.now() - down) / 1000).toFixed(1)} s`);
    const st = await result(tp, id);
    report(`rollout completed ${((Date.now() - down) / 1000).toFixed(1)} s after the server went down`);
    assert.equal(st.phase, 'completed', st.error ?? '');
    await assertAppliedOnce(tp, hf.name);
    for (const w of tp.workers)
      assert.equal(w.child.exitCode, null, `worker ${w.identity} outlived the server restart: ${w.stderr()}`);
  });
});

function fmt(ms: number | undefined): string {
  return ms === undefined ? 'n/a' : `${(ms / 1000).toFixed(1)} s`;
}

async function writeInventory(t: Topology): Promise<string> {
  const file = path.join(productionStack().dir, `fleet-${t.taskQueue}.json`);
  await fs.writeFile(file, JSON.stringify({ servers: t.fleet.inventory() }, null, 2));
  return file;
}
