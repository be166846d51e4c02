// One server's step of a run (activities/key-manager-ssh.ts runServers),
// over SSH: apply (or unapply), restart, verify. Each step is judged from
// what can be observed, never from memory: the Key Manager database says
// whether the change is in effect, the record written before a change is
// sent says whether this rollout sent it, and the services' pids say whether
// a restart has happened since. So a step started again after any loss (a
// dropped connection, a worker killed, a run cancelled) neither applies
// twice, nor skips the restart it owes, nor restarts twice.
import type { Sql } from 'postgres';
import type { ExecOptions } from '../keymanager/ssh';
import type { KeyManagerSsh, ServiceStatus } from '../keymanager/key-manager-ssh';
import type { KeyManagerDatabase } from '../keymanager/database';
import { eventAppender, sentEvent } from '../store/ledger-writes';
import { lastSent } from '../store/ledger-reads';
import type { LedgerEvent } from '../domain/messages/ledger';
import type { ServerResume } from '../domain/messages/servers';
import type { FleetServer } from '../domain/fleet';
import { FAILURE } from '../domain/failures';
import { inventoryCache } from './inventory';
import { classified, nonRetryable } from './failures';
import { activityLog } from './log';
import { fence } from './heartbeat';

/** Per-command limits: a hung command is cut off and the step retried. */
export const COMMAND_TIMEOUT_MS = { apply: 5 * 60_000, restart: 2 * 60_000, status: 30_000 };

function limit(ms: number, cap?: number): number {
  return cap && cap > 0 ? Math.min(ms, cap) : ms;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        reject(new Error('cancelled'));
      },
      { once: true },
    );
  });
}

export function notRunning(services: ServiceStatus[]): ServiceStatus[] {
  return services.filter((s) => s.state !== 'RUNNING');
}

/**
 * Which processes run the services now, as one comparable string: supervisor
 * gives every program a new pid when it restarts, so two readings that differ
 * mean a restart happened between them.
 */
export function servicesIdentity(services: ServiceStatus[]): string {
  return services.map((s) => `${s.name}:${/\bpid (\d+)/.exec(s.detail)?.[1] ?? s.state}`).join(',');
}

/** A server's step as it goes: its attempt and deadlines, and whether a change was sent. */
export interface StepTrack extends ServerResume {
  touched: boolean;
}

/** Thrown inside a run when it was cancelled before a server's first command: nothing was changed on that server. */
export class RunStopped extends Error {}

/** How one server's step went: done, or (finish-only) nothing to finish. */
export type StepOutcome = 'done' | 'untouched';

export interface ServerWork {
  rolloutId: string;
  server: string;
  hotfix: string;
  servicesTimeoutMs: number;
  commandTimeoutMs?: number;
}

export function serverSteps(deps: { orchestrator: Sql; kmSsh: KeyManagerSsh; kmDb: KeyManagerDatabase }) {
  const { orchestrator, kmSsh, kmDb } = deps;
  const servers = inventoryCache(orchestrator);
  const appendEvents = eventAppender(orchestrator);

  /**
   * The ledger is bookkeeping after the fact: a step never fails because the
   * orchestrator database is down (the workflow writes what is left over).
   * Never rejects, so it can run while the next command does.
   */
  async function note(events: LedgerEvent[], unrecorded: LedgerEvent[]): Promise<void> {
    try {
      await appendEvents(events);
    } catch (err) {
      activityLog(
        'warn',
        `ledger unreachable, ${events.map((e) => e.kind).join(' and ')} on ${events[0]?.server} will be recorded by the workflow: ${(err as Error).message}`,
        { server: events[0]?.server },
      );
      unrecorded.push(...events);
    }
  }

  /**
   * A change's record (store/ledger-writes.ts sentEvent): the services' pids before
   * its restart. Unlike the ledger's other writes it must land before the
   * restart is sent, since a later step judges the restart it owes by it. The
   * orchestrator database down: no restart, the server is tried again.
   */
  async function recordChange(
    w: ServerWork,
    action: 'apply' | 'unapply',
    track: StepTrack,
    services: string,
  ): Promise<void> {
    try {
      await appendEvents([sentEvent(w.rolloutId, w.server, action, `${track.startedAt}#${track.attempt}`, services)]);
    } catch (err) {
      throw new Error(
        `${w.server}: the record of the ${action} (which a retry judges its restart by) cannot be written, so no restart is sent: the orchestrator database is unreachable (${(err as Error).message}); it is retried`,
      );
    }
  }

  /** The services' pids now, as one string; a status read that fails after the verify deadline has failed the server. */
  async function runningNow(w: ServerWork, target: FleetServer, track: StepTrack, opts: ExecOptions): Promise<string> {
    try {
      return servicesIdentity(await classified(w.server, () => kmSsh.servicesStatus(target, opts), track.attempt));
    } catch (err) {
      // A step retried after its verify began keeps that deadline for every status read.
      if (track.verifyDeadline !== undefined && Date.now() > track.verifyDeadline) {
        throw nonRetryable(
          FAILURE.servicesDown,
          `${w.server}: services not confirmed RUNNING within ${Math.round(w.servicesTimeoutMs / 1000)}s after restart (last: ${(err as Error).message}): check 'supervisorctl status' on the server`,
        );
      }
      throw err;
    }
  }

  /**
   * Services RUNNING and the Key Manager database listing (or not) the hotfix,
   * by track.verifyDeadline (set on the first attempt, kept across retries).
   */
  async function verify(
    w: ServerWork,
    target: FleetServer,
    applied: boolean,
    track: StepTrack,
    opts: ExecOptions,
  ): Promise<void> {
    const deadline = (track.verifyDeadline ??= Date.now() + w.servicesTimeoutMs);
    const within = `within ${Math.round(w.servicesTimeoutMs / 1000)}s`;
    for (;;) {
      // Both questions at once (the database and the server); the database's answer is judged first.
      const status = classified(w.server, () => kmSsh.servicesStatus(target, opts), track.attempt);
      status.catch(() => undefined);
      const listed = await kmDb.isApplied(w.server, w.hotfix);
      if (listed !== applied) {
        throw nonRetryable(
          FAILURE.notApplied,
          `${w.server}: the Key Manager database ${applied ? 'does not list' : 'still lists'} ${w.hotfix} under Hotfixes Applied after ${applied ? 'applying' : 'unapplying'} it: check the server's ssh-mgr-controller log`,
        );
      }
      let services: ServiceStatus[];
      try {
        services = await status;
      } catch (err) {
        // A lost connection is retried, but never past the deadline.
        if (Date.now() > deadline)
          throw nonRetryable(
            FAILURE.servicesDown,
            `${w.server}: services not confirmed RUNNING ${within} after restart (last: ${(err as Error).message}): check 'supervisorctl status' on the server`,
          );
        throw err;
      }
      const down = notRunning(services);
      if (services.length > 0 && down.length === 0) return;
      const last = down.map((d) => `${d.name} ${d.state}`).join(', ') || 'no services listed';
      // FATAL will not recover by itself: fail now rather than at the deadline.
      if (down.some((d) => d.state === 'FATAL') || Date.now() > deadline) {
        activityLog('warn', `${w.server}: services not RUNNING after restart (${last})`, { server: w.server });
        throw nonRetryable(
          FAILURE.servicesDown,
          `${w.server}: services not RUNNING ${within} after restart (${last}): check 'supervisorctl status' on the server`,
        );
      }
      opts.onTick?.();
      await sleep(250, opts.signal);
    }
  }

  /**
   * One server's step: apply (or unapply) → restart → verify. Every server a
   * step is given was not in the target state when the workflow planned it
   * (preflight for an apply, the rollback's read of the Key Manager database
   * for an unapply), so a change found in effect is this rollout's. The change
   * is sent only where the database says it is needed; while it runs, the
   * services' pids (what runs before any restart: the change restarts
   * nothing) are read and recorded, and the restart waits for that record.
   * Where the change is already in effect, a restart is owed unless a record
   * of its pids shows that other processes run now. `wanted` (asked while the
   * server is read) is answered before anything is sent.
   */
  async function serverStep(
    w: ServerWork,
    applying: boolean,
    track: StepTrack,
    signal: AbortSignal | undefined,
    onTick: () => void,
    o: { wanted?: Promise<boolean>; finishOnly?: boolean },
  ): Promise<{ outcome: StepOutcome; unrecorded: LedgerEvent[] }> {
    const action = applying ? 'apply' : 'unapply';
    const unrecorded: LedgerEvent[] = [];
    const statusOpts: ExecOptions = { timeoutMs: limit(COMMAND_TIMEOUT_MS.status, w.commandTimeoutMs), signal, onTick };
    const [target, listed] = await Promise.all([servers.get(w.server), kmDb.isApplied(w.server, w.hotfix)]);
    if (o.wanted && !(await o.wanted)) throw new RunStopped();
    const sending = listed !== applying;
    if (sending && o.finishOnly) return { outcome: 'untouched', unrecorded };
    track.touched = true;
    let restart = true;
    if (sending) {
      fence(w.server, `the ${action}`);
      const opts: ExecOptions = { timeoutMs: limit(COMMAND_TIMEOUT_MS.apply, w.commandTimeoutMs), signal, onTick };
      const change = classified(
        w.server,
        () => (applying ? kmSsh.applyHotfix(target, w.hotfix, opts) : kmSsh.unapplyHotfix(target, w.hotfix, opts)),
        track.attempt,
      );
      const recording = runningNow(w, target, track, statusOpts).then((running) =>
        recordChange(w, action, track, running),
      );
      const [sent, recorded] = await Promise.allSettled([change, recording]);
      if (sent.status === 'rejected') throw sent.reason;
      if (recorded.status === 'rejected') throw recorded.reason;
      activityLog('info', `${w.server}: ${applying ? 'applied' : 'unapplied'} ${w.hotfix}`, {
        server: w.server,
        hotfix: w.hotfix,
      });
    } else {
      // In effect already: an earlier step's change. Its restart is owed unless its record's pids no longer run.
      const [made, running] = await Promise.all([
        classified(w.server, () => lastSent(orchestrator, w.rolloutId, w.server, action), track.attempt),
        runningNow(w, target, track, statusOpts),
      ]);
      if (made === undefined) await recordChange(w, action, track, running);
      else restart = made === running;
    }
    const sentNote: LedgerEvent[] = [
      {
        rolloutId: w.rolloutId,
        key: `${action}:${w.server}`,
        kind: action,
        server: w.server,
        detail: applying ? { hotfix: w.hotfix, changed: true } : { hotfix: w.hotfix },
      },
    ];
    const writing = note(sentNote, unrecorded);
    const later: LedgerEvent[] = [];
    try {
      if (restart) {
        fence(w.server, 'the restart');
        await classified(
          w.server,
          () =>
            kmSsh.restartServices(target, {
              timeoutMs: limit(COMMAND_TIMEOUT_MS.restart, w.commandTimeoutMs),
              signal,
              onTick,
            }),
          track.attempt,
        );
        later.push({
          rolloutId: w.rolloutId,
          key: `restart:${action}:${w.server}:${track.startedAt}#${track.attempt}`,
          kind: 'restart',
          server: w.server,
        });
      }
      await verify(w, target, applying, track, statusOpts);
      later.push({
        rolloutId: w.rolloutId,
        key: `verify:${action}:${w.server}`,
        kind: 'verified',
        server: w.server,
        detail: { hotfix: w.hotfix, applied: applying },
      });
    } finally {
      await writing;
      await note(later, unrecorded);
    }
    return { outcome: 'done', unrecorded };
  }

  return { serverStep };
}
