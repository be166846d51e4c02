// The per-server steps of the vendor procedure, as activity calls with the
// timeouts and retry policies chosen for each (and why).
import { proxyActivities, ActivityOptions } from '@temporalio/workflow';
import type { KmHotfixActivities } from '../activities';
import type { RolloutTiming } from '../domain/rollout';
import { NEVER_RETRY } from '../domain/failures';

export const DEFAULT_TIMING: RolloutTiming = {
  servicesTimeoutMs: 5 * 60_000,
  maxRetryIntervalMs: 60_000,
  // 18 history events per server (measured, test/history.test.ts): a child of 100 stays near 1,800, far below Temporal's 10,240 warning.
  sliceServers: 100,
};

export function timing(t?: Partial<RolloutTiming>): RolloutTiming {
  return { ...DEFAULT_TIMING, ...(t ?? {}) };
}


/** The activities as the workflows call them, grouped by the timeouts and retries each kind of step needs. */
export function activityProxies(t: RolloutTiming) {
  const retry = (overrides: Partial<NonNullable<ActivityOptions['retry']>> = {}): ActivityOptions['retry'] => ({
    initialInterval: Math.min(2000, t.maxRetryIntervalMs),
    backoffCoefficient: 2,
    maximumInterval: t.maxRetryIntervalMs,
    nonRetryableErrorTypes: [...NEVER_RETRY],
    ...overrides,
  });
  return {
    // Databases: a restart or failover of PostgreSQL is waited out for minutes.
    record: proxyActivities<Pick<KmHotfixActivities, 'recordRolloutStart' | 'recordPhase' | 'recordEvent' | 'claimServers'>>({
      startToCloseTimeout: '30s',
      scheduleToCloseTimeout: '15m',
      retry: retry(),
    }),
    keyManagerDb: proxyActivities<Pick<KmHotfixActivities, 'drainBackends' | 'restoreMaxProcesses' | 'serversWithHotfix' | 'deleteHotfix'>>({
      startToCloseTimeout: '1m',
      scheduleToCloseTimeout: '15m',
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
    // One SSH round trip per server, 16 at a time: minutes on a large fleet; heartbeats prove progress.
    health: proxyActivities<Pick<KmHotfixActivities, 'checkServers'>>({
      startToCloseTimeout: '30m',
      heartbeatTimeout: '1m',
      retry: retry({ maximumAttempts: 3 }),
    }),
    // Commands that change a server. A command may run up to 5 min (its own
    // timeout); lost connections and timeouts retry with backoff for up to
    // 20 min; a non-zero exit is made non-retryable by the activity after 3
    // attempts; heartbeats every second catch a dead worker within 30 s.
    server: proxyActivities<Pick<KmHotfixActivities, 'applyHotfix' | 'unapplyHotfix' | 'restartServices' | 'uploadHotfix'>>({
      startToCloseTimeout: '6m',
      scheduleToCloseTimeout: '20m',
      heartbeatTimeout: '30s',
      retry: retry(),
    }),
    // Polls until services are RUNNING (its own deadline); retried only for a lost connection.
    verify: proxyActivities<Pick<KmHotfixActivities, 'verifyServer'>>({
      startToCloseTimeout: t.servicesTimeoutMs + 60_000,
      heartbeatTimeout: '30s',
      retry: retry({ maximumAttempts: 4 }),
    }),
  };
}

export type Steps = ReturnType<typeof activityProxies>;

/** Patch one server: apply, restart, verify. Returns whether this call applied it. */
export async function patchServer(steps: Steps, t: RolloutTiming, rolloutId: string, server: string, hotfix: string): Promise<boolean> {
  const applied = await steps.server.applyHotfix({ rolloutId, server, hotfix });
  await steps.server.restartServices({ rolloutId, server, step: 'apply' });
  await steps.verify.verifyServer({ rolloutId, server, hotfix, applied: true, timeoutMs: t.servicesTimeoutMs, step: 'apply' });
  return applied === 'applied';
}

/** Unpatch one server: unapply, restart, verify. A server that never had it is left alone. */
export async function unpatchServer(steps: Steps, t: RolloutTiming, rolloutId: string, server: string, hotfix: string): Promise<void> {
  const result = await steps.server.unapplyHotfix({ rolloutId, server, hotfix });
  if (result === 'not-applied') {
    // Nothing was applied here (e.g. a checksum mismatch): no restart needed, but the services must be up.
    await steps.verify.verifyServer({ rolloutId, server, hotfix, applied: false, timeoutMs: t.servicesTimeoutMs, step: 'unapply' });
    return;
  }
  await steps.server.restartServices({ rolloutId, server, step: 'unapply' });
  await steps.verify.verifyServer({ rolloutId, server, hotfix, applied: false, timeoutMs: t.servicesTimeoutMs, step: 'unapply' });
}
