// A window of servers, as a child workflow of a rollout or a removal: at most
// `window` servers in flight, the next one starts as soon as one finishes.
// Fan-out lives here (not in the parent) so that no execution's history grows
// with the fleet: a parent starts one child per slice of at most
// `sliceServers` servers (workflows/fanout.ts).
import { CancellationScope, condition, getExternalWorkflowHandle, isCancellation, patched, setHandler, workflowInfo } from '@temporalio/workflow';
import { ACTION_STATES, BatchAction, runLength, RolloutTiming, ServerState } from '../domain/rollout';
import { batchFreedSignal, batchStatusQuery, BatchProgress, pauseBatchesSignal, stopBatchesSignal, widenBatchesSignal } from './definitions';
import { activityProxies, LedgerBacklog, patchServer, runServers, stepLimits, Steps, timing, unpatchServer } from './steps';
import type { RunServerResult } from '../activities/key-manager-ssh';
import type { ServerStateRow } from '../store/ledger';
import { failureMessage, invalidInput } from './errors';
import { stateRow } from './recorder';
import { pauseFlag } from './messages';

export type { BatchAction };

/**
 * Workflows started before runs patched one server per activity, and replay
 * so; later ones run each window place's servers in runs (runServers).
 */
const SERVER_RUNS = 'server-runs';

/** A failure budget that never runs out: the window goes on whatever fails (a rollback visits every server). */
export const NO_FAILURE_LIMIT = -1;

export interface BatchesInput {
  rolloutId: string;
  hotfix: string;
  action: BatchAction;
  /** In order; at most `window` of them at once. */
  servers: string[];
  window: number;
  /** Failures this child may absorb before it starts no new server; NO_FAILURE_LIMIT = never stop. */
  maxFailures: number;
  timing?: Partial<RolloutTiming>;
  /** Start paused (the parent was paused when it started this child). */
  paused?: boolean;
  /** The window this child may grow to (widenBatchesSignal); it starts at `window`. Default: `window`. */
  fullWindow?: number;
  /** Tell the parent, once, when its last server has started and half its full window is free for good (batchFreedSignal). */
  handOff?: boolean;
}

export interface BatchServerResult {
  name: string;
  state: ServerState;
  startedAt?: string;
  endedAt?: string;
  error?: string;
}

export interface BatchesResult {
  /** The servers this child started, in the order it started them. */
  servers: BatchServerResult[];
  failures: number;
  /** Servers were left unstarted (stop signal or too many failures). */
  stopped: boolean;
}

export async function serverBatches(input: BatchesInput): Promise<BatchesResult> {
  if (!input || !Array.isArray(input.servers) || !ACTION_STATES[input.action] || !Number.isInteger(input.window) || input.window < 1 || !Number.isInteger(input.maxFailures)) {
    throw invalidInput('a batch workflow needs servers, an action, a window >= 1 and a failure budget');
  }
  const t = timing(input.timing);
  const steps = activityProxies(t);
  const backlog = new LedgerBacklog(steps);
  const states = ACTION_STATES[input.action];
  // Only servers this child has started are reported: the parent knows the rest.
  const results = new Map<string, BatchServerResult>();
  let stopRequested = false;
  let paused = input.paused ?? false;
  // Runs in flight (SERVER_RUNS), and why each was cancelled: a pause gives its servers back, a stop does not.
  const runs = new Map<Promise<void>, { scope: CancellationScope; cancelled?: 'pause' | 'stop' }>();
  // Pause and stop cancel the runs in flight: each finishes its current server and returns what it did.
  const halt = (why: 'pause' | 'stop'): void => {
    for (const r of runs.values()) {
      if (r.cancelled !== 'stop') r.cancelled = why;
      r.scope.cancel();
    }
  };
  setHandler(stopBatchesSignal, () => { stopRequested = true; halt('stop'); });
  setHandler(pauseBatchesSignal, (p) => { const flag = pauseFlag(p); if (flag !== undefined) paused = flag; if (paused) halt('pause'); });
  // Started with the places its predecessor in the lane had freed; the rest come when that one has ended.
  const fullWindow = Math.max(input.window, input.fullWindow ?? input.window);
  let window = input.window;
  setHandler(widenBatchesSignal, (w) => { if (Number.isInteger(w) && w > window) window = Math.min(w, fullWindow); });
  // Servers handed to runs whose results are not in yet: status reads their states from the ledger.
  const inRun = new Set<string>();
  setHandler(batchStatusQuery, (): BatchProgress => ({ servers: [...results.values()], paused, ...(inRun.size > 0 ? { inRun: [...inRun] } : {}) }));

  let failures = 0;
  let stopped = false;
  const budget = input.maxFailures;
  const spent = () => budget !== NO_FAILURE_LIMIT && failures > budget;
  const inFlight = new Set<Promise<void>>();
  const ledger = new ServerStateWriter(steps, input.rolloutId);

  const one = async (server: string): Promise<void> => {
    const startedAt = new Date().toISOString();
    const r: BatchServerResult = { name: server, state: states.running, startedAt };
    results.set(server, r);
    ledger.started(stateRow(r, startedAt));
    try {
      if (input.action === 'apply') await patchServer(steps, t, backlog, input.rolloutId, server, input.hotfix);
      else await unpatchServer(steps, t, backlog, input.rolloutId, server, input.hotfix);
      r.state = states.done;
    } catch (err) {
      failures++;
      r.state = states.failed;
      r.error = failureMessage(err);
    }
    r.endedAt = new Date().toISOString();
    ledger.ended(stateRow(r, r.endedAt));
  };

  if (patched(SERVER_RUNS)) {
    // Each window place runs a run of servers in turn (one activity): see domain/rollout.ts runLength.
    const queue = [...input.servers];
    const length = runLength(fullWindow, queue.length);
    const serverRetryMs = stepLimits(t).retryMs;
    // A run writes its servers' states to the ledger itself; the workflow writes only what it could not, and lost runs.
    const settle = (s: RunServerResult, write: boolean): void => {
      const r: BatchServerResult = { name: s.name, state: s.state, startedAt: s.startedAt, endedAt: s.endedAt, ...(s.error ? { error: s.error } : {}) };
      if (r.state === states.failed) failures++;
      results.set(r.name, r);
      if (write) ledger.ended(stateRow(r, s.endedAt));
      if (spent()) halt('stop');
    };
    const launch = (servers: string[]): void => {
      for (const s of servers) inRun.add(s);
      const scope = new CancellationScope();
      const self: { scope: CancellationScope; cancelled?: 'pause' | 'stop' } = { scope };
      const run = runServers(t, servers.length);
      const p: Promise<void> = scope
        .run(() => run({ rolloutId: input.rolloutId, hotfix: input.hotfix, action: input.action, servers, servicesTimeoutMs: t.servicesTimeoutMs, ...(t.commandTimeoutMs > 0 ? { commandTimeoutMs: t.commandTimeoutMs } : {}), stopAtFailure: budget !== NO_FAILURE_LIMIT, serverRetryMs }))
        .then((done) => {
          backlog.add(done.unrecorded);
          ledger.rows(done.unwritten ?? []);
          for (const s of done.servers) settle(s, false);
          // Not started (cancelled, or stopped at a failure): back to the front of the queue.
          queue.unshift(...servers.slice(done.servers.length));
        }, (err: unknown) => {
          // Cancelled before it started: nothing ran. Otherwise its results are lost, and every server in it counts as attempted and failed.
          if (isCancellation(err) && self.cancelled === 'pause') queue.unshift(...servers);
          else for (const s of lostRun(servers, states.failed, err)) settle(s, true);
        })
        .finally(() => {
          for (const s of servers) inRun.delete(s);
          runs.delete(p);
        });
      runs.set(p, self);
    };
    let handedOff = false;
    const mayHandOff = () => input.handOff === true && !handedOff && window >= fullWindow && fullWindow - runs.size >= Math.ceil(fullWindow / 2);
    for (;;) {
      await condition(() => stopRequested || spent() || (queue.length > 0 ? !paused && runs.size < window : runs.size === 0 || mayHandOff()));
      if (stopRequested || spent()) {
        stopped = true;
        halt('stop');
        break;
      }
      if (queue.length > 0) {
        launch(queue.splice(0, length));
        continue;
      }
      if (runs.size === 0) break;
      // Nothing left to start and half the window free for good: the parent may start the next slice's child there.
      handedOff = true;
      const parent = workflowInfo().parent;
      if (parent) {
        const freed = fullWindow - runs.size;
        // A run cancelled by a pause may give servers back: they start only in the places this child kept.
        window = fullWindow - freed;
        await getExternalWorkflowHandle(parent.workflowId).signal(batchFreedSignal, { workflowId: workflowInfo().workflowId, freed }).catch(() => undefined);
      }
    }
    while (runs.size > 0) await Promise.all([...runs.keys()]);
    await backlog.drain();
    await ledger.flushed();
    // In the order they started: a rollback goes in reverse of it.
    const servers = [...results.values()].sort((a, b) => (a.startedAt ?? '').localeCompare(b.startedAt ?? ''));
    return { servers, failures, stopped: stopped || queue.length > 0 };
  }

  for (const server of input.servers) {
    // A free place in the window, unless paused; stop and the budget are checked as results arrive.
    await condition(() => stopRequested || spent() || (!paused && inFlight.size < window));
    if (stopRequested || spent()) {
      stopped = true;
      break;
    }
    const p: Promise<void> = one(server).finally(() => inFlight.delete(p));
    inFlight.add(p);
  }
  // Nothing more to start: once half the window is free for good, the parent
  // may start the next slice's child in those places (one signal, not one per server).
  if (input.handOff && !stopped) {
    await condition(() => inFlight.size === 0 || (window >= fullWindow && fullWindow - inFlight.size >= Math.ceil(fullWindow / 2)));
    const parent = workflowInfo().parent;
    if (inFlight.size > 0 && parent) {
      await getExternalWorkflowHandle(parent.workflowId).signal(batchFreedSignal, { workflowId: workflowInfo().workflowId, freed: fullWindow - inFlight.size }).catch(() => undefined);
    }
  }
  // The running ones finish.
  await Promise.all([...inFlight]);
  await backlog.drain();
  await ledger.flushed();
  return { servers: [...results.values()], failures, stopped };
}

/**
 * A run that ended without a result (its retries ran out, a bug): which of its
 * servers it reached is unknown, so each counts as attempted and failed — a
 * rollback then visits them all (it unapplies only where the Key Manager
 * database lists the hotfix). Nothing is hidden.
 */
function lostRun(servers: string[], failed: ServerState, err: unknown): RunServerResult[] {
  const at = new Date().toISOString();
  const error = `the run of ${servers.length} server(s) ended without a result (${failureMessage(err)}): state unknown`;
  return servers.map((name) => ({ name, state: failed, startedAt: at, endedAt: at, error }));
}

/** Servers that end before the ledger is written (the rest at the child's end): a slice of 500 costs at most ~51 writes. */
const SERVERS_PER_LEDGER_WRITE = 10;

/**
 * Writes the states of this child's servers to the ledger: 'km-hotfix status
 * ID --servers', and the live counts of a fleet above the status threshold
 * (platform/workflow-status.ts), whose parent learns a child's results only
 * when the child ends. At most one activity in flight, each writing
 * everything since the last once SERVERS_PER_LEDGER_WRITE servers have ended
 * (starts ride along), and the rest before the child ends. Far fewer
 * activities than servers, and a small slice's history does not depend on
 * timing (one write at its end). Never awaited before work on a server (the
 * ledger catches up).
 */
class ServerStateWriter {
  private buffered: ServerStateRow[] = [];
  /** Servers ended since the last write began. */
  private endedSince = 0;
  private writing: Promise<void> | undefined;

  constructor(private readonly steps: Steps, private readonly rolloutId: string) {}

  started(row: ServerStateRow): void {
    this.buffered.push(row);
  }

  ended(row: ServerStateRow): void {
    this.buffered.push(row);
    this.endedSince++;
    this.kick(SERVERS_PER_LEDGER_WRITE);
  }

  /** Rows a run could not write (written with the next write, or at the child's end). */
  rows(rows: ServerStateRow[]): void {
    this.buffered.push(...rows);
  }

  private kick(atLeast: number): void {
    if (!this.writing && this.endedSince >= atLeast && this.buffered.length > 0) this.writing = this.write();
  }

  private async write(): Promise<void> {
    const servers = this.buffered.splice(0);
    this.endedSince = 0;
    await this.steps.record.recordServerStates({ rolloutId: this.rolloutId, servers }).catch(() => undefined);
    this.writing = undefined;
    this.kick(SERVERS_PER_LEDGER_WRITE);
  }

  /** Everything buffered has been written (before the child ends). */
  async flushed(): Promise<void> {
    for (;;) {
      this.kick(0);
      if (!this.writing) return;
      await this.writing;
    }
  }
}
