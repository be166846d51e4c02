// Work whose result was lost, in one place: a run (one activity, in a batch
// child) whose worker died, and a slice (one batch child, in a rollout or a
// removal) that ended without a result. Nothing is hidden: a lost run's
// servers are started again, a lost slice's servers are reported back as
// lost, and the caller decides.
import type { BatchAction, BatchesResult, BatchServerResult } from '../domain/messages/batches';
import type { ServerState } from '../domain/rollout';
import { MAX_HEARTBEAT_THROTTLE_MS } from '../domain/rollout';
import type { RunServerResult } from '../domain/messages/servers';
import { failureMessage } from './errors';
import { HEARTBEAT_TIMEOUT_MS } from './steps';

/** A server whose runs were lost this many times (their worker died each time) has failed: its state is unknown. */
export const RUN_LOSSES_MAX = 3;

/** Once a batch child is lost, any activity of it has stopped sending commands by then (its heartbeat timeout, plus the throttle). */
export const QUIESCE_MS = HEARTBEAT_TIMEOUT_MS + MAX_HEARTBEAT_THROTTLE_MS;

/**
 * A run that ended without a result: each of its servers is started again
 * (`again`), unless its runs were lost RUN_LOSSES_MAX times (`failed`, with
 * the state `failedState`). `losses` counts per server, across runs.
 */
export function lostRun(
  servers: readonly string[],
  losses: Map<string, number>,
  err: unknown,
  failedState: ServerState,
): { again: string[]; failed: RunServerResult[] } {
  const again: string[] = [];
  const failed: RunServerResult[] = [];
  const at = new Date().toISOString();
  for (const name of servers) {
    const n = (losses.get(name) ?? 0) + 1;
    losses.set(name, n);
    if (n < RUN_LOSSES_MAX) again.push(name);
    else
      failed.push({
        name,
        state: failedState,
        startedAt: at,
        endedAt: at,
        error: `its run was lost ${n} times (${failureMessage(err)}): state unknown`,
      });
  }
  return { again, failed };
}

/**
 * A batch workflow that ended without a result (terminated, timed out, a
 * bug): which of its servers it reached is unknown. Its servers are reported
 * back as lost; the caller decides (a rollout finishes their changes and
 * rolls back; a rollback visits them again).
 */
export function lostSlice(action: BatchAction, servers: string[], err: unknown): BatchesResult & { lost: string[] } {
  const error = `the batch workflow ended without a result (${failureMessage(err)}): state unknown`;
  const out = servers.map((name): BatchServerResult => ({
    name,
    state: action === 'rollback' ? 'rollback_failed' : 'failed',
    error,
  }));
  return { servers: out, failures: out.length, stopped: action !== 'rollback', lost: servers };
}
