// The vendor procedure's per-server steps, over SSH: apply, unapply, restart,
// verify. Each is idempotent: it first asks the Key Manager database whether
// the work is already done, so a retry after a lost connection never applies
// twice.
import { Context } from '@temporalio/activity';
import type { Sql } from 'postgres';
import type { ExecOptions } from '../keymanager/ssh';
import type { KeyManagerSsh, ServiceStatus } from '../keymanager/key-manager-ssh';
import type { KeyManagerDatabase } from '../keymanager/database';
import { appendEvent } from '../store/ledger';
import { fleetServer } from './inventory';
import { classified, nonRetryable } from './failures';
import { activityLog } from './log';
import { FAILURE } from '../domain/failures';

export interface ServerStep {
  rolloutId: string;
  server: string;
  hotfix: string;
}

/** Heartbeat while a command runs; cancellation closes the SSH channel. */
export function activityExecOptions(timeoutMs: number): ExecOptions {
  let ctx: Context | undefined;
  try {
    ctx = Context.current();
  } catch {
    ctx = undefined;
  }
  return { timeoutMs, signal: ctx?.cancellationSignal, onTick: () => ctx?.heartbeat() };
}

/** Per-command limits: a hung command is cut off and the step retried. */
export const COMMAND_TIMEOUT_MS = { apply: 5 * 60_000, restart: 2 * 60_000, status: 30_000 };

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(t); reject(new Error('cancelled')); }, { once: true });
  });
}

export function notRunning(services: ServiceStatus[]): ServiceStatus[] {
  return services.filter((s) => s.state !== 'RUNNING');
}

export function keyManagerSshActivities(deps: { orchestrator: Sql; kmSsh: KeyManagerSsh; kmDb: KeyManagerDatabase }) {
  const { orchestrator, kmSsh, kmDb } = deps;
  return {
    async applyHotfix(s: ServerStep): Promise<'applied' | 'already-applied'> {
      const target = await fleetServer(orchestrator, s.server);
      if (await kmDb.isApplied(s.server, s.hotfix)) return 'already-applied';
      await classified(s.server, () => kmSsh.applyHotfix(target, s.hotfix, activityExecOptions(COMMAND_TIMEOUT_MS.apply)));
      activityLog('info', `${s.server}: applied ${s.hotfix}`, { server: s.server, hotfix: s.hotfix });
      await appendEvent(orchestrator, { rolloutId: s.rolloutId, key: `apply:${s.server}`, kind: 'apply', server: s.server, detail: { hotfix: s.hotfix } });
      return 'applied';
    },

    async unapplyHotfix(s: ServerStep): Promise<'unapplied' | 'not-applied'> {
      const target = await fleetServer(orchestrator, s.server);
      if (!(await kmDb.isApplied(s.server, s.hotfix))) return 'not-applied';
      await classified(s.server, () => kmSsh.unapplyHotfix(target, s.hotfix, activityExecOptions(COMMAND_TIMEOUT_MS.apply)));
      activityLog('info', `${s.server}: unapplied ${s.hotfix}`, { server: s.server, hotfix: s.hotfix });
      await appendEvent(orchestrator, { rolloutId: s.rolloutId, key: `unapply:${s.server}`, kind: 'unapply', server: s.server, detail: { hotfix: s.hotfix } });
      return 'unapplied';
    },

    async restartServices(s: { rolloutId: string; server: string; step: string }): Promise<void> {
      const target = await fleetServer(orchestrator, s.server);
      await classified(s.server, () => kmSsh.restartServices(target, activityExecOptions(COMMAND_TIMEOUT_MS.restart)));
      await appendEvent(orchestrator, { rolloutId: s.rolloutId, key: `restart:${s.step}:${s.server}`, kind: 'restart', server: s.server });
    },

    /**
     * Applied (or removed) means: the Key Manager database lists it (or not) under
     * the server's Hotfixes Applied, and all services are RUNNING again, within timeoutMs.
     */
    async verifyServer(s: ServerStep & { applied: boolean; timeoutMs: number; step: string }): Promise<void> {
      const target = await fleetServer(orchestrator, s.server);
      const opts = activityExecOptions(COMMAND_TIMEOUT_MS.status);
      const deadline = Date.now() + s.timeoutMs;
      let last = '';
      for (;;) {
        const listed = await kmDb.isApplied(s.server, s.hotfix);
        if (listed !== s.applied) {
          throw nonRetryable(FAILURE.notApplied, `${s.server}: the Key Manager database ${s.applied ? 'does not list' : 'still lists'} ${s.hotfix} under Hotfixes Applied after ${s.applied ? 'applying' : 'unapplying'} it: check the server's ssh-mgr-controller log`);
        }
        const services = await classified(s.server, () => kmSsh.servicesStatus(target, opts));
        const down = notRunning(services);
        if (services.length > 0 && down.length === 0) break;
        last = down.map((d) => `${d.name} ${d.state}`).join(', ') || 'no services listed';
        // FATAL will not recover by itself: fail now rather than at the deadline.
        if (down.some((d) => d.state === 'FATAL') || Date.now() > deadline) {
          activityLog('warn', `${s.server}: services not RUNNING after restart (${last})`, { server: s.server });
          throw nonRetryable(FAILURE.servicesDown, `${s.server}: services not RUNNING after restart (${last}): check 'supervisorctl status' on the server`);
        }
        opts.onTick?.();
        await sleep(250, opts.signal);
      }
      await appendEvent(orchestrator, { rolloutId: s.rolloutId, key: `verify:${s.step}:${s.server}`, kind: 'verified', server: s.server, detail: { hotfix: s.hotfix, applied: s.applied } });
    },
  };
}
