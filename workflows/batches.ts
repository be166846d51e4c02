// A window of servers, as a child workflow of a rollout or a removal: at most
// `window` servers in flight, the next one starts as soon as one finishes
// (workflows/batch-window.ts). Fan-out lives here (not in the parent) so that
// no execution's history grows with the fleet: a parent starts one child per
// slice of at most `sliceServers` servers (workflows/fanout.ts). When this
// child ends, nothing it started can still change a server.
import { CancellationScope, log, setHandler } from '@temporalio/workflow';
import { ACTION_STATES } from '../domain/rollout';
import {
  batchStatusQuery,
  type BatchesInput,
  type BatchesResult,
  type BatchProgress,
  pauseBatchesSignal,
  stopBatchesSignal,
  widenBatchesSignal,
} from '../domain/messages/batches';
import { activityProxies, timing } from './steps';
import { invalidInput } from './errors';
import { TemporalCancel } from './steering';
import { BatchWindow } from './batch-window';

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
  const w = new BatchWindow(input, t, activityProxies(t));
  setBatchHandlers(w, input.finishOnly !== true);
  await CancellationScope.nonCancellable(() => w.run());
  // In the order they started: a rollback goes in reverse of it.
  const servers = [...w.results.values()].sort((a, b) => (a.startedAt ?? '').localeCompare(b.startedAt ?? ''));
  return { servers, failures: w.failures, stopped: w.stopped() };
}

/** Pause, stop and widen from the parent, a cancel from Temporal, and the live status query. */
function setBatchHandlers(w: BatchWindow, steerable: boolean): void {
  // A finish-only child finishes what is under way: pause and stop have nothing to hold back there.
  const stop = (): void => {
    if (steerable) {
      w.stopRequested = true;
      w.halt();
    }
  };
  setHandler(stopBatchesSignal, stop);
  setHandler(pauseBatchesSignal, (p) => {
    const flag = pauseFlag(p);
    if (steerable && flag !== undefined) w.paused = flag;
    if (w.paused) w.halt();
  });
  // A cancel of this child from Temporal is a stop: what is under way is finished, never cut off.
  new TemporalCancel().onRequest(stop);
  setHandler(widenBatchesSignal, (n) => {
    if (Number.isInteger(n) && n > w.window) w.window = Math.min(n, w.fullWindow);
  });
  setHandler(batchStatusQuery, (): BatchProgress => w.progress());
}

/** pauseBatches carries one boolean; a bad payload is ignored with a warning in the worker's log, never a failed task. */
function pauseFlag(raw: unknown): boolean | undefined {
  if (typeof raw === 'boolean') return raw;
  log.warn(`ignored a pauseBatches signal: it takes true or false (got ${raw === null ? 'null' : typeof raw})`, {
    signal: 'pauseBatches',
  });
  return undefined;
}
