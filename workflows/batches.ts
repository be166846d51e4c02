// A run of batches over servers, as a child workflow of a rollout or a
// removal. Fan-out lives here (not in the parent) so that no execution's
// history grows with the fleet: a parent starts one child per slice of at
// most `sliceServers` servers (workflows/steps.ts).
import { condition, setHandler } from '@temporalio/workflow';
import type { RolloutTiming, ServerState } from '../domain/rollout';
import { batchStatusQuery, BatchProgress, pauseBatchesSignal, stopBatchesSignal } from './definitions';
import { activityProxies, patchServer, timing, unpatchServer } from './steps';
import { failureMessage } from './errors';
import { pauseFlag } from './messages';

export type BatchAction = 'apply' | 'rollback' | 'remove';

/** Servers patched (or rolled back) together. */
export type Batch = string[];

/** A failure budget that never runs out: the batches go on whatever fails (a rollback visits every server). */
export const NO_FAILURE_LIMIT = -1;

export interface BatchesInput {
  rolloutId: string;
  hotfix: string;
  action: BatchAction;
  batches: Batch[];
  /** Failures this child may absorb before it stops starting batches; NO_FAILURE_LIMIT = never stop. */
  maxFailures: number;
  timing?: Partial<RolloutTiming>;
  /** Start paused (the parent was paused when it started this child). */
  paused?: boolean;
}

export interface BatchServerResult {
  name: string;
  state: ServerState;
  startedAt?: string;
  endedAt?: string;
  error?: string;
  /** apply: this run applied it (so a rollback must unapply it). */
  changed?: boolean;
}

export interface BatchesResult {
  servers: BatchServerResult[];
  failures: number;
  /** Batches were left unstarted (stop signal or too many failures). */
  stopped: boolean;
}

const STATES: Record<BatchAction, { running: ServerState; done: ServerState; failed: ServerState }> = {
  apply: { running: 'patching', done: 'patched', failed: 'failed' },
  rollback: { running: 'rolling_back', done: 'rolled_back', failed: 'rollback_failed' },
  remove: { running: 'removing', done: 'removed', failed: 'failed' },
};

export async function serverBatches(input: BatchesInput): Promise<BatchesResult> {
  const t = timing(input.timing);
  const steps = activityProxies(t);
  const states = STATES[input.action];
  // Only servers this child has started are reported: the parent knows the rest.
  const results = new Map<string, BatchServerResult>();
  let stopRequested = false;
  let paused = input.paused ?? false;
  setHandler(stopBatchesSignal, () => { stopRequested = true; });
  setHandler(pauseBatchesSignal, (p) => { const flag = pauseFlag(p); if (flag !== undefined) paused = flag; });
  setHandler(batchStatusQuery, (): BatchProgress => ({ servers: [...results.values()], paused }));

  let failures = 0;
  let stopped = false;
  const budget = input.maxFailures;
  for (let i = 0; i < input.batches.length; i++) {
    // Between batches: honour pause, stop, and the failure budget.
    await condition(() => !paused || stopRequested);
    if (stopRequested || (budget !== NO_FAILURE_LIMIT && failures > budget)) {
      stopped = true;
      break;
    }
    await Promise.all(input.batches[i].map(async (server) => {
      const r: BatchServerResult = { name: server, state: states.running, startedAt: new Date().toISOString() };
      results.set(server, r);
      try {
        if (input.action === 'apply') r.changed = await patchServer(steps, t, input.rolloutId, server, input.hotfix);
        else await unpatchServer(steps, t, input.rolloutId, server, input.hotfix);
        r.state = states.done;
      } catch (err) {
        failures++;
        r.state = states.failed;
        r.error = failureMessage(err);
        // A failed apply may have half-happened: the rollback must visit it.
        if (input.action === 'apply') r.changed = true;
      }
      r.endedAt = new Date().toISOString();
    }));
  }
  return { servers: [...results.values()], failures, stopped };
}
