// The window of one batch child (workflows/batches.ts): at most `window`
// servers in flight, each window place running a run of servers in turn (one
// activity, activities/key-manager-ssh.ts runServers). What a run leaves
// under way stays in its place until it is finished: a server to retry (after
// its own backoff), or every server of a run whose worker was lost (each step
// judges from the Key Manager database, the change's record and the services'
// pids what is left to do, so starting one again is safe). Pause and stop
// start no new server; what is under way is finished, never abandoned.
import {
  CancellationScope,
  condition,
  getExternalWorkflowHandle,
  isCancellation,
  sleep,
  workflowInfo,
} from '@temporalio/workflow';
import { ACTION_STATES, runLength } from '../domain/rollout';
import { type RolloutTiming } from '../domain/messages/rollout';
import {
  batchFreedSignal,
  type BatchesInput,
  type BatchProgress,
  type BatchServerResult,
  NO_FAILURE_LIMIT,
} from '../domain/messages/batches';
import type { RunResult, RunServerResult, ServerResume } from '../domain/messages/servers';
import { retryDelayMs, runServers, stepLimits, type Steps } from './steps';
import { LedgerWriter, stateRow } from './ledger-writer';
import { lostRun } from './lost';

/** What one window place runs next: servers in turn; `underWay` ones are finished whatever pause or stop says. */
interface Unit {
  servers: string[];
  resume?: ServerResume;
  underWay: boolean;
}

export class BatchWindow {
  readonly results = new Map<string, BatchServerResult>();
  failures = 0;
  stopRequested = false;
  paused: boolean;
  /** Places this child may use now; grows to fullWindow (widenBatchesSignal), shrinks at a hand-off. */
  window: number;
  readonly fullWindow: number;
  /** Servers handed to runs whose results are not in yet: status reads their states from the ledger. */
  private readonly inRun = new Set<string>();
  /** Runs that may be cancelled (they hold no server under way yet): pause and stop cancel them, and each finishes its current server. */
  private readonly cancellable = new Set<CancellationScope>();
  private readonly queue: string[];
  private readonly length: number;
  private readonly losses = new Map<string, number>();
  private readonly states;
  private readonly ledger: LedgerWriter;
  private readonly serverRetryMs: number;
  /** Window places in use: a run in flight, or a server waiting for its retry. */
  private places = 0;
  private readonly working = new Set<Promise<void>>();

  constructor(
    private readonly input: BatchesInput,
    private readonly t: RolloutTiming,
    steps: Steps,
  ) {
    this.states = ACTION_STATES[input.action];
    this.paused = input.paused ?? false;
    // Started with the places its predecessor in the lane had freed; the rest come when that one has ended.
    this.fullWindow = Math.max(input.window, input.fullWindow ?? input.window);
    this.window = input.window;
    this.ledger = new LedgerWriter(steps, input.rolloutId);
    this.queue = [...input.servers];
    this.length = runLength(this.fullWindow, this.queue.length);
    this.serverRetryMs = stepLimits(t).retryMs;
  }

  /** Cancel the runs that hold no server under way (pause, stop, a spent budget). */
  halt(): void {
    for (const scope of this.cancellable) scope.cancel();
  }

  private spent(): boolean {
    return this.input.maxFailures !== NO_FAILURE_LIMIT && this.failures > this.input.maxFailures;
  }

  stopping(): boolean {
    return this.stopRequested || this.spent();
  }

  progress(): BatchProgress {
    return {
      servers: [...this.results.values()],
      paused: this.paused,
      ...(this.inRun.size > 0 ? { inRun: [...this.inRun] } : {}),
    };
  }

  /** Servers left unstarted (stop signal or too many failures). */
  stopped(): boolean {
    return this.queue.length > 0;
  }

  /** Start servers until none is left or the child stops; then finish what is under way and write the ledger. */
  async run(): Promise<void> {
    let handedOff = false;
    const mayHandOff = () =>
      this.input.handOff === true &&
      !handedOff &&
      this.window >= this.fullWindow &&
      this.fullWindow - this.places >= Math.ceil(this.fullWindow / 2);
    for (;;) {
      await condition(
        () =>
          this.stopping() ||
          (this.queue.length > 0 ? !this.paused && this.places < this.window : this.places === 0 || mayHandOff()),
      );
      if (this.stopping()) {
        this.halt();
        break;
      }
      if (this.queue.length > 0) {
        this.place({ servers: this.queue.splice(0, this.length), underWay: false });
        continue;
      }
      if (this.places === 0) break;
      // Nothing left to start and half the window free for good: the parent may start the next slice's child there.
      handedOff = true;
      const parent = workflowInfo().parent;
      if (parent) {
        const freed = this.fullWindow - this.places;
        // Servers a pause gives back start only in the places this child kept.
        this.window = this.fullWindow - freed;
        await getExternalWorkflowHandle(parent.workflowId)
          .signal(batchFreedSignal, { workflowId: workflowInfo().workflowId, freed })
          .catch(() => undefined);
      }
    }
    // What is under way is finished before this child ends.
    while (this.working.size > 0) await Promise.all([...this.working]);
    await this.ledger.childFlushed();
  }

  private place(first: Unit): void {
    this.places++;
    const p: Promise<void> = (async () => {
      let unit: Unit | undefined = first;
      while (unit) unit = await this.runUnit(unit);
    })().finally(() => {
      this.places--;
      this.working.delete(p);
    });
    this.working.add(p);
  }

  // A run writes its servers' states to the ledger itself; the workflow writes only what it could not, and lost servers.
  private settle(s: RunServerResult, write: boolean): void {
    const r: BatchServerResult = {
      name: s.name,
      state: s.state,
      startedAt: s.startedAt,
      endedAt: s.endedAt,
      ...(s.error ? { error: s.error } : {}),
    };
    if (r.state === this.states.failed) this.failures++;
    this.results.set(r.name, r);
    if (write) this.ledger.serverEnded(stateRow(r, s.endedAt));
    if (this.spent()) this.halt();
  }

  /** Run one unit in its place; returns what it leaves under way (the place's next unit), if anything. */
  private async runUnit(unit: Unit): Promise<Unit | undefined> {
    const { input, t } = this;
    // Under way while paused or stopping: only what is in effect is finished; the rest goes back to the queue.
    const finishOnly = input.finishOnly === true || (unit.underWay && (this.paused || this.stopping()));
    const scope = new CancellationScope();
    if (!unit.underWay) this.cancellable.add(scope);
    for (const s of unit.servers) this.inRun.add(s);
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
          stopAtFailure: input.maxFailures !== NO_FAILURE_LIMIT,
          serverRetryMs: this.serverRetryMs,
          ...(unit.resume ? { resume: unit.resume } : {}),
          ...(finishOnly ? { finishOnly } : {}),
        }),
      );
    } catch (err) {
      // Cancelled before it started: nothing ran. Otherwise its worker was lost: every server of it is started again.
      if (isCancellation(err)) {
        this.queue.unshift(...unit.servers);
        return undefined;
      }
      return this.lost(unit, err);
    } finally {
      for (const s of unit.servers) this.inRun.delete(s);
      this.cancellable.delete(scope);
    }
    // Rows the run could not write reach the ledger before any of its servers runs again: the ledger orders a
    // server's rows as the database receives them, so a late one would hide the retry's.
    if (r.unwritten?.length) await this.ledger.unwrittenRowsWritten(r.unwritten);
    const keep = this.ended(unit, r);
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
  }

  /** What a run returned: its results in, the servers it did not reach back in the queue; the retry it keeps in its place. */
  private ended(unit: Unit, r: RunResult): RunResult['retry'] {
    this.ledger.unrecorded(r.unrecorded);
    for (const s of r.servers) this.settle(s, false);
    const ended = new Set(r.servers.map((s) => s.name));
    const retry = r.retry;
    // A retry that sent nothing yet waits in the queue like any server while pausing or stopping.
    const keep = retry && (retry.touched || !(this.paused || this.stopping())) ? retry : undefined;
    // In a finish-only child, a server with nothing to finish is done with; elsewhere it waits in the queue (for a resume).
    if (this.input.finishOnly) for (const s of r.untouched ?? []) ended.add(s);
    this.queue.unshift(...unit.servers.filter((s) => !ended.has(s) && s !== keep?.name));
    return keep;
  }

  /** A run that ended without a result (workflows/lost.ts lostRun). */
  private lost(unit: Unit, err: unknown): Unit | undefined {
    const { again, failed } = lostRun(unit.servers, this.losses, err, this.states.failed);
    for (const s of failed) this.settle(s, true);
    return again.length > 0 ? { servers: again, underWay: true } : undefined;
  }
}
