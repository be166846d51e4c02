// Large fleets (issue 4): no workflow execution may pass 10,240 history events
// (Temporal's warning threshold) on a 2,000-server rollout. Proven by
// measurement: real rollouts on two fleet sizes with a small slice, every
// execution's history fetched from the real dev server, a linear fit
// (per server in a child, per child in the parent), and the fit extrapolated
// to 2,000 servers with the DEFAULT slice size.
import assert from 'node:assert/strict';
import type { Client } from '@temporalio/client';
import { rolloutEnv, RolloutEnv, FAST_TIMING } from './helpers/rollout-env';
import { DEFAULT_TIMING } from '../workflows/steps';
import { slicesOf } from '../workflows/fanout';
import type { RolloutStatus } from '../domain/messages/rollout';

/** Temporal server's `limit.historyCount.warn` default (the hard limit, `limit.historyCount.error`, is 51,200). */
const HISTORY_WARN = 10_240;
/** Small slices so that a few dozen servers make several children. */
const SLICE = 6;
/**
 * Batch-1 children run the same steps in the same order, so equal slices give
 * equal histories; this slack only absorbs a stray workflow-task timeout
 * (3 events each) when the shared 2 cores are busy. Growth with the fleet
 * would be hundreds of events here.
 */
const JITTER = 6;
/** [frontends, backends]: two fleet sizes, 14 and 36 servers; 14 leaves a 1-server and a 2-server slice, for the fit. */
const FLEETS = [
  [2, 12],
  [4, 32],
] as const;

interface ExecutionHistory {
  id: string;
  events: number;
  /** ActivityTaskScheduled events, by activity type. */
  activities: Record<string, number>;
  /** Child workflow ids this execution started, in order. */
  children: string[];
  /** Sum of payload bytes in the history (inputs, results, failures). */
  payloadBytes: number;
  /** A batch child's servers, from its result (0 for the parent). */
  servers: number;
}

/** Sum of every Uint8Array reachable from a decoded event: payload data and metadata. */
function bytesIn(v: unknown, depth = 0): number {
  if (v instanceof Uint8Array) return v.byteLength;
  if (depth > 12 || v === null || typeof v !== 'object') return 0;
  let n = 0;
  for (const x of Object.values(v as Record<string, unknown>)) n += bytesIn(x, depth + 1);
  return n;
}

async function historyOf(client: Client, id: string): Promise<ExecutionHistory> {
  const h = await client.workflow.getHandle(id).fetchHistory();
  const events = h.events ?? [];
  const activities: Record<string, number> = {};
  const children: string[] = [];
  let payloadBytes = 0;
  let servers = 0;
  for (const e of events) {
    const result = e.workflowExecutionCompletedEventAttributes?.result?.payloads?.[0]?.data;
    if (result && id.includes('/'))
      servers = ((JSON.parse(Buffer.from(result).toString('utf8')) as { servers?: unknown[] }).servers ?? []).length;
    const scheduled = e.activityTaskScheduledEventAttributes?.activityType?.name;
    if (scheduled) activities[scheduled] = (activities[scheduled] ?? 0) + 1;
    const child = e.startChildWorkflowExecutionInitiatedEventAttributes?.workflowId;
    if (child) children.push(child);
    payloadBytes += bytesIn(e);
  }
  return { id, events: events.length, activities, children, payloadBytes, servers };
}

interface RolloutHistories {
  label: string;
  fleet: number;
  parent: ExecutionHistory;
  children: ExecutionHistory[];
}

const runs: RolloutHistories[] = [];

/** Least squares y = a + b·x. */
function fit(points: { x: number; y: number }[]): { a: number; b: number; maxResidual: number } {
  const n = points.length;
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  const sxx = points.reduce((s, p) => s + (p.x - mx) ** 2, 0);
  assert.ok(sxx > 0, `a fit needs at least two distinct x values: ${JSON.stringify(points)}`);
  const b = points.reduce((s, p) => s + (p.x - mx) * (p.y - my), 0) / sxx;
  const a = my - b * mx;
  const maxResidual = Math.max(...points.map((p) => Math.abs(p.y - (a + b * p.x))));
  return { a, b, maxResidual };
}

const names = (n: number) => Array.from({ length: n }, (_, i) => `s${i}`);
/** Servers a child ran (its result lists them), in runs of several per activity. */
const childServers = (c: ExecutionHistory) => c.servers;
/** Activities a child scheduled, of every kind (runs of servers, ledger writes). */
const activitiesOf = (c: ExecutionHistory) => Object.values(c.activities).reduce((a, b) => a + b, 0);
/**
 * History events one activity costs a child at most: scheduled, started,
 * completed, and the workflow task (3 events) its completion wakes.
 */
const ACTIVITY_EVENTS = 6;
/** A child's own events besides its activities: start, first and last workflow tasks, end, a hand-off signal. */
const CHILD_BASE_EVENTS = 20;
const maxEvents = (hs: ExecutionHistory[]) => Math.max(...hs.map((h) => h.events));
const ofRun = (label: string, fleet: number) => {
  const r = runs.find((x) => x.label === label && x.fleet === fleet);
  assert.ok(r, `run ${label} on ${fleet} servers is missing (an earlier test failed)`);
  return r;
};

/** A backend hotfix on the whole fleet: approved at the gate, run to the end, every history fetched. */
async function measuredRollout(
  env: RolloutEnv,
  label: string,
  batch: string,
  failLast: boolean,
): Promise<RolloutHistories> {
  const fleet = env.fleet.servers.length;
  const hf = await env.hotfix('backend');
  const last = env.fleet.servers[env.fleet.servers.length - 1];
  // A failure late in fan-out: the last server in inventory order fails every apply.
  if (failLast) last.fault({ failApplies: 10 });
  try {
    const h = await env.startRollout({
      hotfix: hf.name,
      batch,
      maxFailures: 0,
      timing: { ...FAST_TIMING, sliceServers: SLICE },
    });
    const gate = await env.waitForPhase(h, 'verifying');
    assert.equal(gate.phase, 'verifying', gate.error ?? '');
    await env.approve(h, 'bob');
    const status = (await h.result()) as RolloutStatus;
    // The outcome from the Key Manager database, not the workflow's word.
    const applied = await env.applied(hf.name);
    if (failLast) {
      assert.equal(status.phase, 'rolled_back', status.error ?? '');
      assert.deepEqual(applied, [], 'every patched server was rolled back');
    } else {
      assert.equal(status.phase, 'completed', status.error ?? '');
      assert.equal(applied.length, fleet, 'every server patched');
    }
    const parent = await historyOf(env.client, h.workflowId);
    const children = await Promise.all(parent.children.map((id) => historyOf(env.client, id)));
    const r: RolloutHistories = { label, fleet, parent, children };
    runs.push(r);
    return r;
  } finally {
    last.clearFaults();
  }
}

describe('history length against fleet size (large fleets: < 10,240 events per execution at 2,000 servers)', function () {
  this.timeout(180_000);

  for (const [frontends, backends] of FLEETS) {
    const fleet = frontends + backends;
    describe(`${fleet} servers, slices of ${SLICE}`, () => {
      let env: RolloutEnv;
      // restartMs 0: latency does not change the event count, and it keeps the test short.
      before(async () => {
        env = await rolloutEnv({ frontends, backends, restartMs: 0 });
      });
      after(async () => {
        await env?.close();
      });
      // Pass or fail, nothing a test started keeps running or holds a server.
      afterEach(async () => {
        await env?.endAll();
      });

      it('batch 1: one child per slice of at most 6 servers, each patching its slice', async () => {
        const r = await measuredRollout(env, 'batch1', '1', false);
        const fanned = fleet - 1; // all but the canary
        // The first child patches the canary alone; the fan-out's children follow, one per slice.
        const [canary, ...fan] = r.children;
        assert.equal(childServers(canary), 1, 'the canary is patched by a child of its own');
        assert.equal(fan.length, Math.ceil(fanned / SLICE));
        assert.deepEqual(
          fan.map((c) => childServers(c)),
          slicesOf(names(fanned), SLICE).map((w) => w.length),
        );
        assert.ok(r.children.every((c) => /\/apply-\d+$/.test(c.id)));
        assert.equal(r.parent.activities.runServers ?? 0, 0, 'the parent patches no server itself');
      });

      it('wide window (50%): a window wider than a slice runs several children at once', async () => {
        const r = await measuredRollout(env, 'wide', '50%', false);
        assert.ok(r.children.every((c) => childServers(c) <= SLICE));
        assert.equal(
          r.children.reduce((s, c) => s + childServers(c), 0),
          fleet,
          "the canary's child and the fan-out's: every server once",
        );
      });

      it('a failure late in fan-out: everything rolled back through rollback children of at most 6 servers', async () => {
        const r = await measuredRollout(env, 'rollback', '1', true);
        const rollbacks = r.children.filter((c) => /\/rollback-\d+$/.test(c.id));
        // The rollback visits what the Key Manager database lists: the canary and the patched servers, not the one that failed.
        assert.equal(
          rollbacks.reduce((s, c) => s + childServers(c), 0),
          fleet - 1,
          'every server listing the hotfix visited',
        );
        assert.ok(rollbacks.every((c) => childServers(c) <= SLICE));
        assert.equal(rollbacks.length, Math.ceil((fleet - 1) / SLICE));
      });
    });
  }

  describe('measured growth and the 2,000-server extrapolation', () => {
    const [small, large] = FLEETS.map(([f, b]) => f + b);

    it(`(a) a child is bounded by its slice, not the fleet: the same largest child on ${small} and ${large} servers`, () => {
      for (const label of ['batch1', 'rollback'] as const) {
        const pick = (r: RolloutHistories) =>
          r.children.filter((c) => c.id.includes(label === 'rollback' ? '/rollback-' : '/apply-'));
        const s = maxEvents(pick(ofRun(label, small)));
        const l = maxEvents(pick(ofRun(label, large)));
        assert.ok(
          Math.abs(l - s) <= JITTER,
          `${label}: largest child ${s} events on ${small} servers, ${l} on ${large}`,
        );
      }
      // Every child, whatever its window: a few events per activity, and no more activities than servers plus ledger writes.
      for (const c of runs.flatMap((r) => r.children)) {
        assert.ok(
          c.events <= CHILD_BASE_EVENTS + ACTIVITY_EVENTS * activitiesOf(c),
          `${c.id}: ${c.events} events for ${activitiesOf(c)} activities ${JSON.stringify(c.activities)}`,
        );
        // At most one run per server, and one more per retry (a busy worker's attempt that went too long without a heartbeat is tried again).
        assert.ok(
          (c.activities.runServers ?? 0) <= 2 * childServers(c) + 1,
          `${c.id}: ${c.activities.runServers} runs for ${childServers(c)} servers`,
        );
      }
    });

    it('(b) the parent grows only per slice: no per-server activity, a few events per child', () => {
      for (const label of ['batch1', 'wide', 'rollback'] as const) {
        assert.deepEqual(
          ofRun(label, large).parent.activities,
          ofRun(label, small).parent.activities,
          `${label}: the parent runs the same activities whatever the fleet`,
        );
      }
      const s = ofRun('batch1', small).parent;
      const l = ofRun('batch1', large).parent;
      const perChild = (l.events - s.events) / (l.children.length - s.children.length);
      const perServer = (l.events - s.events) / (large - small);
      // A parent doing anything per server would add ≥ 3 events (one activity) per server.
      assert.ok(perServer < 3, `parent grows ${perServer.toFixed(2)} events per server`);
      assert.ok(perChild <= 12, `parent grows ${perChild.toFixed(1)} events per child`);
    });

    it(`fit and extrapolation: with the default slice (${DEFAULT_TIMING.sliceServers}) every execution of a 2,000-server rollout stays below ${HISTORY_WARN.toLocaleString('en')} events`, () => {
      const all = runs;
      // Parent: events against children, from the sequential runs (one child per wave, the worst case).
      const parentPts = (['batch1', 'rollback'] as const).flatMap((label) =>
        [small, large].map((f) => ofRun(label, f).parent),
      );
      const seq = fit(
        parentPts
          .filter((p) => !p.children.some((c) => c.includes('/rollback-')))
          .map((p) => ({ x: p.children.length, y: p.events })),
      );
      const withRollback = parentPts.filter((p) => p.children.some((c) => c.includes('/rollback-')));
      const rbPerChild =
        (withRollback[1].events - withRollback[0].events) /
        (withRollback[1].children.length - withRollback[0].children.length);
      const rbBase = withRollback[0].events - rbPerChild * withRollback[0].children.length;

      // 2,000 servers, default slice: the worst number of children over every --batch width.
      const servers = 2000;
      const slice = DEFAULT_TIMING.sliceServers;
      const fanned = names(servers - 1);
      // One child per slice, whatever the window.
      const worstApplyChildren = slicesOf(fanned, slice).length;
      const worstWidth = 'any';
      // A rollback after the last apply: every server, one at a time, grouped by slice.
      const rollbackChildrenAt2000 = Math.ceil(servers / slice);
      // A child's worst case: runs of one server each (a window as wide as its slice), plus a ledger write per 10 servers.
      const childActivitiesAt = slice + Math.ceil(slice / 10) + 1;
      // The parent's cost per child varies by a few events with timing (workflow tasks merge): take the larger slope.
      const perChild = Math.max(seq.b, rbPerChild);
      const extrapolated = {
        child: CHILD_BASE_EVENTS + ACTIVITY_EVENTS * childActivitiesAt,
        parentCompleted: Math.ceil(seq.a + perChild * worstApplyChildren),
        parentRolledBack: Math.ceil(rbBase + perChild * (worstApplyChildren + rollbackChildrenAt2000)),
      };
      const table = all.map(
        (r) =>
          `  ${r.label.padEnd(8)} ${String(r.fleet).padStart(3)} servers: parent ${r.parent.events} events (${r.children.length} children, ${(r.parent.payloadBytes / 1024).toFixed(1)} KiB payloads); children ${r.children.map((c) => c.events).join(', ')}`,
      );
      console.log(
        [
          `    history events measured (slice ${SLICE}):`,
          ...table,
          `    fit: parent ${seq.a.toFixed(1)} + ${seq.b.toFixed(2)}·children (with rollback: ${rbBase.toFixed(1)} + ${rbPerChild.toFixed(2)}·children); a child ≤ ${CHILD_BASE_EVENTS} + ${ACTIVITY_EVENTS}·activities`,
          `    2,000 servers, slice ${slice}: a child (apply or rollback) ≤ ${extrapolated.child}, parent ≤ ${extrapolated.parentCompleted} (worst --batch ${worstWidth}: ${worstApplyChildren} children), parent with a full rollback ≤ ${extrapolated.parentRolledBack} (+${rollbackChildrenAt2000} rollback children); threshold ${HISTORY_WARN}`,
        ].join('\n'),
      );
      for (const [what, events] of Object.entries(extrapolated)) {
        assert.ok(events < HISTORY_WARN, `${what}: ${events} events at ${servers} servers with slices of ${slice}`);
      }
    });
  });
});
