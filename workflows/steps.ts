// The per-server steps of the vendor procedure, as activity calls with the
// timeouts and retry policies chosen for each (and why).
import { proxyActivities, ActivityCancellationType, ActivityOptions } from '@temporalio/workflow';
import type { KmHotfixActivities } from '../activities';
import { FULL_SERVER_LIST_MAX } from '../domain/rollout';
import { RolloutTiming } from '../domain/messages/rollout';
import { NEVER_RETRY } from '../domain/failures';

export const DEFAULT_TIMING: RolloutTiming = {
  servicesTimeoutMs: 5 * 60_000,
  maxRetryIntervalMs: 60_000,
  // ~6 history events per server (one activity each; measured, test/history.test.ts): a child of 500 stays
  // near 3,300, under Temporal's 10,240 warning. Longer slices mean fewer hand-offs between children
  // (workflows/fanout.ts; workflows started before this ran slices of 100, and replay so).
  sliceServers: 500,
  commandTimeoutMs: 0,
  fullServerListMax: FULL_SERVER_LIST_MAX,
};

export function timing(t?: Partial<RolloutTiming>): RolloutTiming {
  return { ...DEFAULT_TIMING, ...(t ?? {}) };
}

/**
 * How long a server step may go without a heartbeat before Temporal counts
 * its worker as dead and runs the step again elsewhere (after the retry's 2 s
 * backoff). The SSH layer ticks every second while a command runs and the
 * worker sends at most one heartbeat per 2 s (worker/worker.ts,
 * maxHeartbeatThrottleInterval), so 5 s tolerates one late heartbeat, while
 * a step whose worker died starts again elsewhere 7-8 s after the death
 * instead of 32 s (measured by test/production/). Shorter would retry steps of live workers that
 * are merely busy; the retry asks the Key Manager database first either way.
 * The database-only activities below keep their start-to-close timeouts: they
 * run for milliseconds, and running drainBackends twice at once is not safe.
 */
export const HEARTBEAT_TIMEOUT_MS = 5_000;
export const HEARTBEAT_TIMEOUT = '5s';

/** Retries with backoff up to the timing's ceiling; errors the activities mark never-retry fail at once. */
function retryPolicy(
  t: RolloutTiming,
  overrides: Partial<NonNullable<ActivityOptions['retry']>> = {},
): ActivityOptions['retry'] {
  return {
    initialInterval: Math.min(2000, t.maxRetryIntervalMs),
    backoffCoefficient: 2,
    maximumInterval: t.maxRetryIntervalMs,
    nonRetryableErrorTypes: [...NEVER_RETRY],
    ...overrides,
  };
}

/**
 * One server's whole step: an attempt may take apply (5 min) + restart (2 min)
 * + services (their timeout), plus slack; lost connections and timeouts are
 * retried for at least 20 minutes.
 */
export function stepLimits(t: RolloutTiming): { attemptMs: number; retryMs: number } {
  const attemptMs = 7 * 60_000 + t.servicesTimeoutMs + 60_000;
  return { attemptMs, retryMs: Math.max(20 * 60_000, 2 * attemptMs) };
}

/** The activities as the workflows call them, grouped by the timeouts and retries each kind of step needs. */
export function activityProxies(t: RolloutTiming) {
  const retry = (overrides: Partial<NonNullable<ActivityOptions['retry']>> = {}) => retryPolicy(t, overrides);
  const serverStepMs = stepLimits(t).attemptMs;
  return {
    // The ledger: retried until the orchestrator database is back (the ledger catches up);
    // the rollback never waits on it (workflows/ledger-writer.ts writes in the background).
    record: proxyActivities<
      Pick<
        KmHotfixActivities,
        | 'recordRolloutStart'
        | 'recordPhase'
        | 'recordEvent'
        | 'recordServerStates'
        | 'recordServerList'
        | 'claimServers'
      >
    >({
      startToCloseTimeout: '30s',
      retry: retry(),
    }),
    // The Key Manager database: a restart or failover of PostgreSQL is waited out for minutes.
    keyManagerDb: proxyActivities<
      Pick<
        KmHotfixActivities,
        'readMaxProcesses' | 'restoreMaxProcesses' | 'serversWithHotfix' | 'serversDiffering' | 'deleteHotfix'
      >
    >({
      startToCloseTimeout: '1m',
      scheduleToCloseTimeout: '15m',
      heartbeatTimeout: '30s',
      retry: retry(),
    }),
    // Setting Maximum Processes 0: a cancelled workflow waits until the drain has really stopped, so its restore comes last.
    drain: proxyActivities<Pick<KmHotfixActivities, 'drainBackends'>>({
      startToCloseTimeout: '1m',
      scheduleToCloseTimeout: '15m',
      heartbeatTimeout: '30s',
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      retry: retry(),
    }),
    // Read-only look-ups: a few attempts; a wrong input fails at once.
    preflight: proxyActivities<Pick<KmHotfixActivities, 'prepareRollout' | 'prepareRemoval'>>({
      startToCloseTimeout: '1m',
      retry: retry({ maximumAttempts: 5 }),
    }),
    // Reading the signers file and checking a signature: a caller waits on it (an Update), so a few quick tries.
    signing: proxyActivities<Pick<KmHotfixActivities, 'verifyDecision'>>({
      startToCloseTimeout: '30s',
      retry: retry({ maximumAttempts: 3, maximumInterval: '2s' }),
    }),
    // One SSH round trip per server, 16 at a time: minutes on a large fleet; heartbeats (every second) prove progress.
    health: proxyActivities<Pick<KmHotfixActivities, 'checkServers'>>({
      startToCloseTimeout: '30m',
      heartbeatTimeout: HEARTBEAT_TIMEOUT,
      retry: retry({ maximumAttempts: 3 }),
    }),
    // Uploading the file through one server: lost connections and timeouts retry with backoff for up to 20 min.
    server: proxyActivities<Pick<KmHotfixActivities, 'uploadHotfix'>>({
      startToCloseTimeout: serverStepMs,
      scheduleToCloseTimeout: stepLimits(t).retryMs,
      heartbeatTimeout: HEARTBEAT_TIMEOUT,
      retry: retry(),
    }),
  };
}

export type Steps = ReturnType<typeof activityProxies>;

/**
 * runServers for a run of `length` servers (workflows/batches.ts): a server's
 * limits times the run's length. Cancelling a run (pause, abort, a spent
 * budget) waits for it: it finishes the server under way and returns what it
 * did. One attempt: a server's retries are the workflow's (each server
 * on its own, with its own backoff), and a run whose worker was lost is
 * started again by the workflow, which never loses track of its servers.
 */
export function runServers(t: RolloutTiming, length: number) {
  const { attemptMs } = stepLimits(t);
  return proxyActivities<Pick<KmHotfixActivities, 'runServers'>>({
    startToCloseTimeout: attemptMs * length,
    heartbeatTimeout: HEARTBEAT_TIMEOUT,
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    retry: { maximumAttempts: 1 },
  }).runServers;
}

/** The wait before a server's next attempt: doubling from 2 s up to the timing's ceiling, per server. */
export function retryDelayMs(t: RolloutTiming, attempt: number): number {
  return Math.min(t.maxRetryIntervalMs, Math.min(2000, t.maxRetryIntervalMs) * 2 ** Math.max(0, attempt - 2));
}
