// What a rollout's phases share (workflows/rollout.ts): the rollout's input,
// its status and ledger (the recorder), its fan-out, its gate, and the few
// facts that change as it goes: an abort, a cancel, the drained backends.
import { sleep, workflowInfo } from '@temporalio/workflow';
import type { DecisionRecord, DrainedBackend, RolloutInput, RolloutTiming } from '../domain/messages/rollout';
import { NO_FAILURE_LIMIT } from '../domain/messages/batches';
import { activityProxies, type Steps, timing } from './steps';
import { Fanout, type FanoutControl } from './fanout';
import { WorkflowRecorder } from './recorder';
import { OneAtATime } from './decisions';
import { VerificationGate } from './gate';
import { StopRollout } from './errors';
import { QUIESCE_MS } from './lost';
import type { Notifier } from './notify';

export class RolloutState {
  readonly id = workflowInfo().workflowId;
  readonly t: RolloutTiming;
  readonly steps: Steps;
  readonly r: WorkflowRecorder;
  readonly fanout: Fanout;
  readonly lock = new OneAtATime();
  readonly gate: VerificationGate;
  /** An accepted abort. */
  abort: DecisionRecord | undefined;
  /** A cancel from Temporal (its Web UI, `temporal workflow cancel`) is an abort: it rolls back, it never cuts a step off. */
  cancelled = false;
  /** Maximum Processes as read before the drain: held here (and in the ledger) before anything changes. */
  drained: DrainedBackend[] = [];
  private draining: Promise<void> | undefined;
  private restored = false;

  constructor(
    readonly input: RolloutInput,
    problem: string | undefined,
    readonly notifier: Notifier,
  ) {
    this.t = timing(problem ? undefined : input.timing);
    this.steps = activityProxies(this.t);
    this.r = new WorkflowRecorder(this.steps, this.id, 'rollout', input.hotfix, this.t.fullServerListMax);
    this.r.status.batch = input.batch;
    this.r.status.maxFailures = input.maxFailures;
    this.fanout = new Fanout(this.id, input.hotfix, problem ? undefined : input.timing);
    this.gate = new VerificationGate(this);
  }

  /** An abort or a cancel: the phases start nothing new, the rollout rolls back. */
  stopRequested(): boolean {
    return this.abort !== undefined || this.cancelled;
  }

  /** Steering is refused from now on: an abort, a cancel, or a rollback for another reason. */
  stopping(): boolean {
    return this.stopRequested() || this.r.status.phase === 'rolling_back';
  }

  checkAbort(): void {
    if (this.abort)
      throw new StopRollout(`aborted by ${this.abort.by}${this.abort.comment ? `: ${this.abort.comment}` : ''}`);
    if (this.cancelled) throw new StopRollout('the workflow was cancelled from Temporal: a cancel is an abort');
  }

  /** Fan-out controls: results go to the status; the children's ids too. */
  control(isPaused: () => boolean, shouldStop: () => boolean): FanoutControl {
    return {
      isPaused,
      shouldStop,
      onChildren: (ids) => {
        this.r.status.activeBatchWorkflows = ids;
      },
      onResult: (s) => this.r.batchResult(s),
    };
  }

  /** Fan-out that pause, abort and a cancel steer (the canary, the rest). */
  steered(): FanoutControl {
    return this.control(
      () => this.r.status.paused,
      () => this.stopRequested(),
    );
  }

  /**
   * Servers of a batch child that ended without a result: once any activity
   * of it can no longer send a command (its heartbeat timeout has passed), a
   * finish-only child gives each change in effect its restart and verify.
   */
  async finishLost(lost: string[], window: number): Promise<void> {
    if (lost.length === 0) return;
    await sleep(QUIESCE_MS);
    await this.fanout.run(
      'apply',
      lost,
      window,
      NO_FAILURE_LIMIT,
      this.control(
        () => false,
        () => false,
      ),
      true,
    );
  }

  /** Set Maximum Processes 0 on the backends read before (`drained`); a restore waits for it. */
  async drain(): Promise<void> {
    this.draining = this.steps.drain.drainBackends({ rolloutId: this.id, drained: this.drained });
    await this.draining;
  }

  /** Maximum Processes back as read before the drain, once. */
  async restore(): Promise<void> {
    if (this.draining) await this.draining.catch(() => undefined); // never race a drain still running
    if (this.drained.length > 0 && !this.restored) {
      await this.steps.keyManagerDb.restoreMaxProcesses({ rolloutId: this.id, drained: this.drained });
      this.restored = true;
      this.r.status.drained = this.drained;
    }
  }

  /** Of `servers`, those whose listing in the Key Manager database is not `applied`, in their order. */
  differing(servers: string[], applied: boolean): Promise<string[]> {
    return differing(this.steps, this.input.hotfix, servers, applied);
  }
}

/** Servers per read of the Key Manager database: each activity's input stays under ~100 KiB. */
const SERVERS_PER_READ = 5_000;

async function differing(steps: Steps, hotfix: string, servers: string[], applied: boolean): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < servers.length; i += SERVERS_PER_READ) {
    out.push(
      ...(await steps.keyManagerDb.serversDiffering({
        hotfix,
        servers: servers.slice(i, i + SERVERS_PER_READ),
        applied,
      })),
    );
  }
  return out;
}
