// Runs batches of servers through child workflows (serverBatches), slice by
// slice, so that every execution's history stays bounded on a large fleet.
import { ChildWorkflowHandle, condition, ParentClosePolicy, startChild } from '@temporalio/workflow';
import type { RolloutTiming, ServerState } from '../domain/rollout';
import { failureMessage } from './errors';
import { pauseBatchesSignal, stopBatchesSignal } from './definitions';
import { Batch, BatchAction, BatchesResult, BatchServerResult, NO_FAILURE_LIMIT, serverBatches } from './batches';
import { timing } from './steps';

/** The batches one child workflow runs, one after the other. */
export type Slice = Batch[];
/** Children started together, in parallel. */
export type Wave = Slice[];

/** Group batches into waves of child workflows: consecutive batches share a child up to `slice` servers; a wider batch is split across parallel children. */
export function slicesOf(batches: Batch[], slice: number): Wave[] {
  const waves: Wave[] = [];
  let current: Slice = [];
  let size = 0;
  const flush = () => { if (current.length) { waves.push([current]); current = []; size = 0; } };
  for (const batch of batches) {
    if (batch.length > slice) {
      flush();
      const parts: Wave = [];
      for (let i = 0; i < batch.length; i += slice) parts.push([batch.slice(i, i + slice)]);
      waves.push(parts);
      continue;
    }
    if (size + batch.length > slice) flush();
    current.push(batch);
    size += batch.length;
  }
  flush();
  return waves;
}

/**
 * A batch workflow that ended without a result (terminated, timed out, a
 * bug): which of its servers it changed is unknown, so every one of them is
 * reported failed and changed — a rollback then visits them all (unapply is
 * a no-op where nothing was applied). Nothing is hidden.
 */
function lostSlice(action: BatchAction, slice: Slice, err: unknown): BatchesResult {
  const error = `the batch workflow ended without a result (${failureMessage(err)}): state unknown`;
  const servers = slice.flat().map((name) => ({ name, state: (action === 'rollback' ? 'rollback_failed' : 'failed') as ServerState, error, changed: true }));
  return { servers, failures: servers.length, stopped: true };
}

export interface FanoutControl {
  isPaused(): boolean;
  shouldStop(): boolean;
  /** Called with the ids of the children that run now. */
  onChildren(ids: string[]): void;
  onResult(r: BatchServerResult): void;
}

export class Fanout {
  private running: ChildWorkflowHandle<typeof serverBatches>[] = [];
  private seq = 0;

  constructor(private readonly rolloutId: string, private readonly hotfix: string, private readonly timing: Partial<RolloutTiming> | undefined) {}

  /** Forward pause/resume to the children that run now. */
  async setPaused(paused: boolean): Promise<void> {
    await Promise.all(this.running.map((h) => h.signal(pauseBatchesSignal, paused).catch(() => undefined)));
  }

  /** Ask running children to start no new batch. */
  async stop(): Promise<void> {
    await Promise.all(this.running.map((h) => h.signal(stopBatchesSignal).catch(() => undefined)));
  }

  /** Run the batches; maxFailures NO_FAILURE_LIMIT = keep going whatever fails. Returns the failures counted. */
  async run(action: BatchAction, batches: Batch[], maxFailures: number, ctl: FanoutControl): Promise<{ failures: number; stopped: boolean }> {
    let failures = 0;
    for (const wave of slicesOf(batches, timing(this.timing).sliceServers)) {
      await condition(() => !ctl.isPaused() || ctl.shouldStop());
      if (ctl.shouldStop() || (maxFailures !== NO_FAILURE_LIMIT && failures > maxFailures)) return { failures, stopped: true };
      const budget = maxFailures === NO_FAILURE_LIMIT ? NO_FAILURE_LIMIT : maxFailures - failures;
      this.running = await Promise.all(wave.map((slice) =>
        startChild(serverBatches, {
          workflowId: `${this.rolloutId}/${action}-${++this.seq}`,
          args: [{ rolloutId: this.rolloutId, hotfix: this.hotfix, action, batches: slice, maxFailures: budget, timing: this.timing, paused: ctl.isPaused() }],
          // The children are the parent's hands: they end with it.
          parentClosePolicy: ParentClosePolicy.TERMINATE,
        })));
      ctl.onChildren(this.running.map((h) => h.workflowId));
      const results = await Promise.all(this.running.map((h, i) => h.result().catch((err: unknown) => lostSlice(action, wave[i], err))));
      this.running = [];
      ctl.onChildren([]);
      let stopped = false;
      for (const r of results) {
        for (const s of r.servers) ctl.onResult(s);
        failures += r.failures;
        stopped = stopped || r.stopped;
      }
      if (stopped) return { failures, stopped: true };
    }
    return { failures, stopped: false };
  }
}
