// A window of servers, as a child workflow of a rollout or a removal: at most
// `window` servers in flight, the next one starts as soon as one finishes.
// Fan-out lives here (not in the parent) so that no execution's history grows
// with the fleet: a parent starts one child per slice of at most
// `sliceServers` servers (workflows/fanout.ts).
//
// Each window place runs a run of servers in turn (one activity,
// activities/key-manager-ssh.ts runServers). What a run leaves under way
// stays in its place until it is finished: a server to retry (after its own
// backoff), or every server of a run whose worker was lost (each step judges
// from the Key Manager database, the change's record and the services' pids
// what is left to do, so starting one again is safe). Pause and stop start
// no new server; what is under way is finished, never abandoned, so that when
// this child ends, nothing it started can still change a server.
import {
  CancellationScope,
  condition,
  getExternalWorkflowHandle,
  isCancellation,
  setHandler,
  sleep,
  workflowInfo,
} from '@temporalio/workflow';
import { ACTION_STATES, BatchAction, runLength, RolloutTiming, ServerState } from '../domain/rollout';
import {
  batchFreedSignal,
  batchStatusQuery,
  BatchProgress,
  pauseBatchesSignal,
  stopBatchesSignal,
  widenBatchesSignal,
} from './definitions';
import { activityProxies, LedgerBacklog, retryDelayMs, runServers, stepLimits, Steps, timing } from './steps';
import type { RunResult, RunServerResult, ServerResume } from '../activities/key-manager-ssh';
import type { ServerStateRow } from '../store/ledger';
import { failureMessage, invalidInput } from './errors';
import { stateRow } from './recorder';
import { pauseFlag } from './messages';
import { TemporalCancel } from './steering';

export type { BatchAction };

/** A failure budget that never runs out: the window goes on whatever fails (a rollback visits every server). */
export const NO_FAILURE_LIMIT = -1;

/** A server whose runs were lost this many times (their worker died each time) has failed: its state is unknown. */
const RUN_LOSSES_MAX = 3;

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
  /** Send no apply or unapply: only finish changes already in effect (servers of a batch child that was lost). */
  finishOnly?: boolean;
}

export interface BatchServerResult {
  name: string;
  state: ServerState;
  startedAt?: string;
  endedAt?: string;
  error?: string;
}

export interface BatchesResult {
  /** The servers this child ended, in the order it started them. */
  servers: BatchServerResult[];
  failures: number;
  /** Servers were left unstarted (stop signal or too many failures). */
  stopped: boolean;
}

/** What one window place runs next: servers in turn; `underWay` ones are finished whatever pause or stop says. */
interface Unit {
  servers: string[];
  resume?: ServerResume;
  underWay: boolean;
}

export async function serverBatches(input: BatchesInput): Promise<BatchesResult> {
  if (
    !input ||
    !Array.isArray(input.servers) ||
    !ACTION_STATES[input.action] ||
    !Number.isInteger(input.window) ||
    input.window < 1 ||
    !Number.isInteger(input.maxFailures)
  ) {
    throw invalidInput('a batch workflow needs servers, an action, a window >= 1 and a failure budget');
  }
  const t = timing(input.timing);
  const steps = activityProxies(t);
  const backlog = new LedgerBacklog(steps);
  const states = ACTION_STATES[input.action];
  const results = new Map<string, BatchServerResult>();
  let stopRequested = false;
  let paused = input.paused ?? false;
  // Runs that may be cancelled (they hold no server under way yet): pause and stop cancel them, and each finishes its current server.
  const cancellable = new Set<CancellationScope>();
  const halt = (): void => {
    for (const scope of cancellable) scope.cancel();
  };
  // A finish-only child finishes what is under way: pause and stop have nothing to hold back there.
  const steerable = input.finishOnly !== true;
  setHandler(stopBatchesSignal, () => {
    if (steerable) {
      stopRequested = true;
      halt();
    }
  });
  setHandler(pauseBatchesSignal, (p) => {
    const flag = pauseFlag(p);
    if (steerable && flag !== undefined) paused = flag;
    if (paused) halt();
  });
  // A cancel of this child from Temporal is a stop: what is under way is finished, never cut off.
  new TemporalCancel().onRequest(() => {
    if (steerable) {
      stopRequested = true;
      halt();
    }
  });
  // Started with the places its predecessor in the lane had freed; the rest come when that one has ended.
  const fullWindow = Math.max(input.window, input.fullWindow ?? input.window);
  let window = input.window;
  setHandler(widenBatchesSignal, (w) => {
    if (Number.isInteger(w) && w > window) window = Math.min(w, fullWindow);
  });
  // Servers handed to runs whose results are not in yet: status reads their states from the ledger.
  const inRun = new Set<string>();
  setHandler(batchStatusQuery, (): BatchProgress => ({
    servers: [...results.values()],
    paused,
    ...(inRun.size > 0 ? { inRun: [...inRun] } : {}),
  }));

  let failures = 0;
  const budget = input.maxFailures;
  const spent = () => budget !== NO_FAILURE_LIMIT && failures > budget;
  const stopping = () => stopRequested || spent();
  const ledger = new ServerStateWriter(steps, input.rolloutId);
  const queue = [...input.servers];
  const length = runLength(fullWindow, queue.length);
  const serverRetryMs = stepLimits(t).retryMs;
  const losses = new Map<string, number>();
  // Window places in use: a run in flight, or a server waiting for its retry.
  let places = 0;
  const working = new Set<Promise<void>>();

  // A run writes its servers' states to the ledger itself; the workflow writes only what it could not, and lost servers.
  const settle = (s: RunServerResult, write: boolean): void => {
    const r: BatchServerResult = {
      name: s.name,
      state: s.state,
      startedAt: s.startedAt,
      endedAt: s.endedAt,
      ...(s.error ? { error: s.error } : {}),
    };
    if (r.state === states.failed) failures++;
    results.set(r.name, r);
    if (write) ledger.ended(stateRow(r, s.endedAt));
    if (spent()) halt();
  };

  /** Run one unit in its place; returns what it leaves under way (the place's next unit), if anything. */
  const runUnit = async (unit: Unit): Promise<Unit | undefined> => {
    // Under way while paused or stopping: only what is in effect is finished; the rest goes back to the queue.
    const finishOnly = input.finishOnly === true || (unit.underWay && (paused || stopping()));
    const scope = new CancellationScope();
    if (!unit.underWay) cancellable.add(scope);
    for (const s of unit.servers) inRun.add(s);
    const run = runServers(t, unit.servers.length);
    let r: RunResult;
    try {
      r = await scope.run(() =>
        run({
          rolloutId: input.rolloutId,
          hotfix: input.hotfix,
          action: input.action,
          servers: unit.servers,
          servicesTimeoutMs: t.servicesTimeoutMs,
          ...(t.commandTimeoutMs > 0 ? { commandTimeoutMs: t.commandTimeoutMs } : {}),
          stopAtFailure: budget !== NO_FAILURE_LIMIT,
          serverRetryMs,
          ...(unit.resume ? { resume: unit.resume } : {}),
          ...(finishOnly ? { finishOnly } : {}),
        }),
      );
    } catch (err) {
      // Cancelled before it started: nothing ran. Otherwise its worker was lost: every server of it is started again.
      if (isCancellation(err)) {
        queue.unshift(...unit.servers);
        return undefined;
      }
      return lostRun(unit, err);
    } finally {
      for (const s of unit.servers) inRun.delete(s);
      cancellable.delete(scope);
    }
    backlog.add(r.unrecorded);
    ledger.rows(r.unwritten ?? []);
    for (const s of r.servers) settle(s, false);
    const ended = new Set(r.servers.map((s) => s.name));
    const retry = r.retry;
    // A retry that sent nothing yet waits in the queue like any server while pausing or stopping.
    const keep = retry && (retry.touched || !(paused || stopping())) ? retry : undefined;
    // In a finish-only child, a server with nothing to finish is done with; elsewhere it waits in the queue (for a resume).
    if (input.finishOnly) for (const s of r.untouched ?? []) ended.add(s);
    queue.unshift(...unit.servers.filter((s) => !ended.has(s) && s !== keep?.name));
    if (!keep) return undefined;
    await sleep(retryDelayMs(t, keep.attempt));
    return {
      servers: [keep.name],
      resume: {
        attempt: keep.attempt,
        startedAt: keep.startedAt,
        ...(keep.verifyDeadline ? { verifyDeadline: keep.verifyDeadline } : {}),
        ...(keep.touched ? { touched: true } : {}),
      },
      underWay: true,
    };
  };

  /** A run that ended without a result: its servers are started again, each at most RUN_LOSSES_MAX times. */
  const lostRun = (unit: Unit, err: unknown): Unit | undefined => {
    const again: string[] = [];
    const at = new Date().toISOString();
    for (const name of unit.servers) {
      const n = (losses.get(name) ?? 0) + 1;
      losses.set(name, n);
      if (n < RUN_LOSSES_MAX) again.push(name);
      else
        settle(
          {
            name,
            state: states.failed,
            startedAt: at,
            endedAt: at,
            error: `its run was lost ${n} times (${failureMessage(err)}): state unknown`,
          },
          true,
        );
    }
    return again.length > 0 ? { servers: again, underWay: true } : undefined;
  };

  const place = (first: Unit): void => {
    places++;
    const p: Promise<void> = (async () => {
      let unit: Unit | undefined = first;
      while (unit) unit = await runUnit(unit);
    })().finally(() => {
      places--;
      working.delete(p);
    });
    working.add(p);
  };

  await CancellationScope.nonCancellable(async () => {
    let handedOff = false;
    const mayHandOff = () =>
      input.handOff === true && !handedOff && window >= fullWindow && fullWindow - places >= Math.ceil(fullWindow / 2);
    for (;;) {
      await condition(
        () => stopping() || (queue.length > 0 ? !paused && places < window : places === 0 || mayHandOff()),
      );
      if (stopping()) {
        halt();
        break;
      }
      if (queue.length > 0) {
        place({ servers: queue.splice(0, length), underWay: false });
        continue;
      }
      if (places === 0) break;
      // Nothing left to start and half the window free for good: the parent may start the next slice's child there.
      handedOff = true;
      const parent = workflowInfo().parent;
      if (parent) {
        const freed = fullWindow - places;
        // Servers a pause gives back start only in the places this child kept.
        window = fullWindow - freed;
        await getExternalWorkflowHandle(parent.workflowId)
          .signal(batchFreedSignal, { workflowId: workflowInfo().workflowId, freed })
          .catch(() => undefined);
      }
    }
    // What is under way is finished before this child ends.
    while (working.size > 0) await Promise.all([...working]);
    await backlog.drain();
    await ledger.flushed();
  });
  // In the order they started: a rollback goes in reverse of it.
  const servers = [...results.values()].sort((a, b) => (a.startedAt ?? '').localeCompare(b.startedAt ?? ''));
  return { servers, failures, stopped: queue.length > 0 };
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

  constructor(
    private readonly steps: Steps,
    private readonly rolloutId: string,
  ) {}

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
