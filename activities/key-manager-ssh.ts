// The vendor procedure's per-server steps, over SSH: apply (or unapply),
// restart, verify, as ONE activity per server. It is idempotent: it asks the
// Key Manager database whether the hotfix is listed before sending a command,
// so a retry after a lost connection never applies twice, and it resumes at
// the step its heartbeat recorded.
import { Context } from '@temporalio/activity';
import type { Sql } from 'postgres';
import type { ExecOptions } from '../keymanager/ssh';
import type { KeyManagerSsh, ServiceStatus } from '../keymanager/key-manager-ssh';
import type { KeyManagerDatabase } from '../keymanager/database';
import { eventAppender, LedgerEvent } from '../store/ledger';
import type { FleetServer } from '../domain/fleet';
import { inventoryCache } from './inventory';
import { classified, nonRetryable } from './failures';
import { activityLog } from './log';
import { FAILURE } from '../domain/failures';

export interface ServerStep {
  rolloutId: string;
  server: string;
  hotfix: string;
}

/** One server's whole step (apply or unapply → restart → verify), as the workflow asks for it. */
export interface ServerWork extends ServerStep {
  /** How long services may take to be RUNNING again, in all (across retries). */
  servicesTimeoutMs: number;
  /** Caps every command's own timeout (tests and fault drills use short ones). */
  commandTimeoutMs?: number;
}

/** Where a per-server activity got to, kept in its heartbeat details so that a retry resumes there. */
export interface StepProgress {
  step: 'start' | 'apply' | 'unapply' | 'restart' | 'verify' | 'done';
  /** The apply/unapply command was sent (it may have taken effect even if its answer was lost). */
  sent?: boolean;
  /** Absolute time (ms) by which services must be RUNNING: one deadline for all attempts. */
  verifyDeadline?: number;
}

/** Ledger events an activity could not write (orchestrator database down): the workflow writes them later. */
export interface ServerWorkResult {
  /** apply: whether this rollout's command changed the server (false: it was already listed). */
  changed: boolean;
  unrecorded: LedgerEvent[];
}

function progressOf(): StepProgress {
  try {
    const ctx = Context.current();
    // The attempt's heartbeat clock starts when it runs (Temporal's starts when it is handed out, a little earlier).
    if (!lastBeat.has(ctx)) lastBeat.set(ctx, Date.now());
    const d = ctx.info.heartbeatDetails as StepProgress | undefined;
    return d && typeof d.step === 'string' ? { ...d } : { step: 'start' };
  } catch {
    return { step: 'start' };
  }
}

/** The worker sends a heartbeat at most this often (worker/worker.ts maxHeartbeatThrottleInterval). */
export const MAX_HEARTBEAT_THROTTLE_MS = 2000;

/** When each running attempt last heartbeat (its start, before the first). */
const lastBeat = new WeakMap<Context, number>();

function beat(ctx: Context, progress?: StepProgress): void {
  lastBeat.set(ctx, Date.now());
  ctx.heartbeat(progress);
}

/**
 * Whether Temporal may already have timed this attempt out and started
 * another: its last heartbeat (sent up to the throttle interval late) is
 * older than the heartbeat timeout. Happens when the worker's event loop is
 * starved for seconds (20,000 servers, a window of 2,000 on 2 cores).
 */
export function attemptMayBeStale(lastBeatMs: number, nowMs: number, heartbeatTimeoutMs: number | undefined, throttleMs = MAX_HEARTBEAT_THROTTLE_MS): boolean {
  return heartbeatTimeoutMs !== undefined && heartbeatTimeoutMs > 0 && nowMs - lastBeatMs > heartbeatTimeoutMs - throttleMs;
}

/**
 * Before a command that changes the server (apply, unapply, restart): an
 * attempt that may have been replaced sends nothing, so a stale attempt
 * never applies twice or restarts a server its successor has verified. It
 * fails retryably (ignored by Temporal if it already timed it out).
 */
function fence(server: string, what: string): void {
  let ctx: Context;
  try {
    ctx = Context.current();
  } catch {
    return; // outside an activity
  }
  const since = lastBeat.get(ctx);
  if (since === undefined) return;
  if (attemptMayBeStale(since, Date.now(), ctx.info.heartbeatTimeoutMs)) {
    throw new Error(`${server}: this attempt went ${((Date.now() - since) / 1000).toFixed(1)} s without a heartbeat (the worker was busy), so it does not send ${what}: the step is retried`);
  }
}

/** Heartbeat while a command runs (with the progress so far); cancellation closes the SSH channel. */
export function activityExecOptions(timeoutMs: number, progress?: StepProgress): ExecOptions {
  let ctx: Context | undefined;
  try {
    ctx = Context.current();
  } catch {
    ctx = undefined;
  }
  return { timeoutMs, signal: ctx?.cancellationSignal, onTick: () => { if (ctx) beat(ctx, progress); } };
}

/** Record progress now: a retry after this point starts here. */
function checkpoint(progress: StepProgress): void {
  try {
    beat(Context.current(), progress);
  } catch { /* outside an activity */ }
}

/** Per-command limits: a hung command is cut off and the step retried. */
export const COMMAND_TIMEOUT_MS = { apply: 5 * 60_000, restart: 2 * 60_000, status: 30_000 };

function limit(ms: number, cap?: number): number {
  return cap && cap > 0 ? Math.min(ms, cap) : ms;
}

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
  const servers = inventoryCache(orchestrator);
  const appendEvents = eventAppender(orchestrator);

  /**
   * The ledger is bookkeeping: a server's step never fails because the
   * orchestrator database is down (the workflow writes what is left over).
   * Never rejects, so it can run while the next command does.
   */
  async function note(events: LedgerEvent[], unrecorded: LedgerEvent[]): Promise<void> {
    try {
      await appendEvents(events);
    } catch (err) {
      activityLog('warn', `ledger unreachable, ${events.map((e) => e.kind).join(' and ')} on ${events[0]?.server} will be recorded by the workflow: ${(err as Error).message}`, { server: events[0]?.server });
      unrecorded.push(...events);
    }
  }

  /**
   * The server's inventory entry and, when the step starts with its command,
   * whether the Key Manager database lists the hotfix: both at once (two
   * databases, one wait).
   */
  async function begin(w: ServerWork, asking: boolean): Promise<{ target: FleetServer; listed?: boolean }> {
    const [target, listed] = await Promise.all([servers.get(w.server), asking ? kmDb.isApplied(w.server, w.hotfix) : Promise.resolve(undefined)]);
    return { target, ...(listed === undefined ? {} : { listed }) };
  }

  /**
   * Restart, then verify. The apply/unapply event (if any) is written while
   * the restart runs, and always before this returns or throws; the restart
   * and verified events go in one insert at the end (a failed verify still
   * records the restart).
   */
  async function restartAndVerify(w: ServerWork, target: FleetServer, applied: boolean, progress: StepProgress, sentNote: LedgerEvent[], unrecorded: LedgerEvent[]): Promise<void> {
    const action = applied ? 'apply' : 'unapply';
    const writing = note(sentNote, unrecorded);
    const later: LedgerEvent[] = [];
    try {
      if (progress.step === 'restart') {
        await restart(w, target, progress);
        later.push({ rolloutId: w.rolloutId, key: `restart:${action}:${w.server}`, kind: 'restart', server: w.server });
      }
      await verify(w, target, applied, progress);
      later.push({ rolloutId: w.rolloutId, key: `verify:${action}:${w.server}`, kind: 'verified', server: w.server, detail: { hotfix: w.hotfix, applied } });
    } finally {
      await writing;
      await note(later, unrecorded);
    }
  }

  /**
   * Services RUNNING and the Key Manager database listing (or not) the hotfix,
   * by progress.verifyDeadline (set on the first attempt, kept across retries).
   */
  async function verify(w: ServerWork, target: FleetServer, applied: boolean, progress: StepProgress): Promise<void> {
    progress.step = 'verify';
    progress.verifyDeadline ??= Date.now() + w.servicesTimeoutMs;
    checkpoint(progress);
    const opts = activityExecOptions(limit(COMMAND_TIMEOUT_MS.status, w.commandTimeoutMs), progress);
    const within = `within ${Math.round(w.servicesTimeoutMs / 1000)}s`;
    let last = '';
    for (;;) {
      // Both questions at once (the database and the server); the database's answer is judged first.
      const status = classified(w.server, () => kmSsh.servicesStatus(target, opts));
      status.catch(() => undefined);
      const listed = await kmDb.isApplied(w.server, w.hotfix);
      if (listed !== applied) {
        throw nonRetryable(FAILURE.notApplied, `${w.server}: the Key Manager database ${applied ? 'does not list' : 'still lists'} ${w.hotfix} under Hotfixes Applied after ${applied ? 'applying' : 'unapplying'} it: check the server's ssh-mgr-controller log`);
      }
      let services: ServiceStatus[];
      try {
        services = await status;
      } catch (err) {
        // A lost connection is retried, but never past the deadline.
        if (Date.now() > progress.verifyDeadline) throw nonRetryable(FAILURE.servicesDown, `${w.server}: services not confirmed RUNNING ${within} after restart (last: ${(err as Error).message}): check 'supervisorctl status' on the server`);
        throw err;
      }
      const down = notRunning(services);
      if (services.length > 0 && down.length === 0) return;
      last = down.map((d) => `${d.name} ${d.state}`).join(', ') || 'no services listed';
      // FATAL will not recover by itself: fail now rather than at the deadline.
      if (down.some((d) => d.state === 'FATAL') || Date.now() > progress.verifyDeadline) {
        activityLog('warn', `${w.server}: services not RUNNING after restart (${last})`, { server: w.server });
        throw nonRetryable(FAILURE.servicesDown, `${w.server}: services not RUNNING ${within} after restart (${last}): check 'supervisorctl status' on the server`);
      }
      opts.onTick?.();
      await sleep(250, opts.signal);
    }
  }

  async function restart(w: ServerWork, target: FleetServer, progress: StepProgress): Promise<void> {
    progress.step = 'restart';
    fence(w.server, 'the restart');
    checkpoint(progress);
    await classified(w.server, () => kmSsh.restartServices(target, activityExecOptions(limit(COMMAND_TIMEOUT_MS.restart, w.commandTimeoutMs), progress)));
  }

  /**
   * One server's step: apply (or unapply) → restart → verify. The command is
   * sent only where the Key Manager database says it is needed (not listed
   * for an apply, listed for an unapply); heartbeat details say which step an
   * earlier attempt reached, so a retry resumes there.
   */
  async function serverStep(w: ServerWork, applying: boolean): Promise<ServerWorkResult> {
    const action = applying ? 'apply' : 'unapply';
    const progress = progressOf();
    const unrecorded: LedgerEvent[] = [];
    let changed = progress.sent === true;
    const sending = progress.step === 'start' || progress.step === action;
    const { target, listed } = await begin(w, sending);
    const sentNote: LedgerEvent[] = [];
    if (sending) {
      progress.step = action;
      if (listed !== applying) {
        fence(w.server, `the ${action}`);
        progress.sent = true;
        changed = true;
        checkpoint(progress);
        const opts = activityExecOptions(limit(COMMAND_TIMEOUT_MS.apply, w.commandTimeoutMs), progress);
        await classified(w.server, () => (applying ? kmSsh.applyHotfix(target, w.hotfix, opts) : kmSsh.unapplyHotfix(target, w.hotfix, opts)));
        activityLog('info', `${w.server}: ${applying ? 'applied' : 'unapplied'} ${w.hotfix}`, { server: w.server, hotfix: w.hotfix });
      }
      // An apply is recorded whether it changed the server or found it listed; an unapply only when sent.
      if (applying || changed) sentNote.push({ rolloutId: w.rolloutId, key: `${action}:${w.server}`, kind: action, server: w.server, detail: applying ? { hotfix: w.hotfix, changed } : { hotfix: w.hotfix } });
      // Nothing unapplied (it was not listed): only the services are checked.
      progress.step = applying || changed ? 'restart' : 'verify';
    }
    await restartAndVerify(w, target, applying, progress, sentNote, unrecorded);
    return { changed, unrecorded };
  }

  return {
    /**
     * Patch one server: apply → restart → verify, as one activity. An apply
     * that took effect but whose answer was lost is found listed in the Key
     * Manager database on retry, and still restarted and verified.
     */
    patchServer: (w: ServerWork): Promise<ServerWorkResult> => serverStep(w, true),

    /**
     * Roll back (or remove) on one server, if the Key Manager database lists
     * the hotfix there: unapply → restart → verify. Where it is not listed and
     * no attempt sent the unapply, only the services are checked (e.g. after a
     * checksum mismatch: nothing changed).
     */
    unpatchServer: (w: ServerWork): Promise<ServerWorkResult> => serverStep(w, false),
  };
}
