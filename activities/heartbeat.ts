// An attempt's heartbeats and what they tell it: when it last beat (so an
// attempt Temporal may have replaced sends nothing that changes a server),
// whether the workflow still wants a run to go on, and when nobody will take
// a run's result.
import type { Context } from '@temporalio/activity';
import type { ExecOptions } from '../keymanager/ssh';
import { MAX_HEARTBEAT_THROTTLE_MS } from '../domain/rollout';
import { activityContext } from './context';
import { activityLog } from './log';

export { MAX_HEARTBEAT_THROTTLE_MS };

/** When each running attempt last heartbeat (its start, before the first). */
const lastBeat = new WeakMap<Context, number>();

/** The running activity's context, if any, with its heartbeat clock started. */
export function attemptContext(): Context | undefined {
  const ctx = activityContext();
  // The attempt's heartbeat clock starts when it runs (Temporal's starts when it is handed out, a little earlier).
  if (ctx && !lastBeat.has(ctx)) lastBeat.set(ctx, Date.now());
  return ctx;
}

export function beat(ctx: Context): void {
  lastBeat.set(ctx, Date.now());
  ctx.heartbeat();
}

/**
 * Whether Temporal may already have timed this attempt out and started
 * another: its last heartbeat (sent up to the throttle interval late) is
 * older than the heartbeat timeout. Happens when the worker's event loop is
 * starved for seconds (20,000 servers, a window of 2,000 on 2 cores).
 */
export function attemptMayBeStale(
  lastBeatMs: number,
  nowMs: number,
  heartbeatTimeoutMs: number | undefined,
  throttleMs = MAX_HEARTBEAT_THROTTLE_MS,
): boolean {
  return (
    heartbeatTimeoutMs !== undefined && heartbeatTimeoutMs > 0 && nowMs - lastBeatMs > heartbeatTimeoutMs - throttleMs
  );
}

/**
 * Before a command that changes the server (apply, unapply, restart): an
 * attempt that may have been replaced sends nothing, so a stale attempt
 * never acts beside its successor. The server is tried again.
 */
export function fence(server: string, what: string): void {
  const ctx = activityContext();
  if (!ctx) return; // outside an activity
  const since = lastBeat.get(ctx);
  if (since === undefined) return;
  if (attemptMayBeStale(since, Date.now(), ctx.info.heartbeatTimeoutMs)) {
    throw new Error(
      `${server}: this attempt went ${((Date.now() - since) / 1000).toFixed(1)} s without a heartbeat (the worker was busy), so it does not send ${what}: the step is retried`,
    );
  }
}

/** Heartbeat while a command runs; cancellation closes the SSH channel (uploads, health checks). */
export function activityExecOptions(timeoutMs: number): ExecOptions {
  const ctx = activityContext();
  return {
    timeoutMs,
    signal: ctx?.cancellationSignal,
    onTick: () => {
      if (ctx) beat(ctx);
    },
  };
}

/**
 * A run's commands are cut off only when nobody will take its result: the
 * workflow is gone (terminated), or Temporal has given up on this attempt.
 * A cancel the workflow asked for lets the current server finish.
 */
export function runAbandoned(ctx: Context | undefined): AbortSignal | undefined {
  if (!ctx) return undefined;
  const gone = new AbortController();
  const check = () => {
    const d = ctx.cancellationDetails;
    if (!d || d.notFound || d.timedOut || d.reset) gone.abort();
  };
  if (ctx.cancellationSignal.aborted) check();
  else ctx.cancellationSignal.addEventListener('abort', check, { once: true });
  return gone.signal;
}

const GRPC_NOT_FOUND = 5;

/**
 * Whether the workflow still wants this run to go on: a heartbeat sent now,
 * not throttled, whose answer says whether cancellation was requested (the
 * workflow cancels its runs on pause, abort and a spent failure budget). A
 * throttled heartbeat would bring it up to 2 s later. Temporal unreachable
 * counts as no: a run starts no server that Temporal cannot hear about.
 */
export async function stillWanted(ctx: Context): Promise<boolean> {
  if (ctx.cancellationSignal.aborted) return false;
  try {
    const r = await ctx.client.workflowService.recordActivityTaskHeartbeat({
      namespace: ctx.info.namespace,
      taskToken: ctx.info.taskToken,
    });
    lastBeat.set(ctx, Date.now());
    return !r.cancelRequested && !ctx.cancellationSignal.aborted;
  } catch (err) {
    if ((err as { code?: number }).code !== GRPC_NOT_FOUND)
      activityLog(
        'warn',
        `Temporal did not answer a run's heartbeat: the run starts no further server: ${(err as Error).message}`,
      );
    return false;
  }
}
