// The vendor procedure's per-server steps, over SSH: apply (or unapply),
// restart, verify. A window place runs several servers in turn in one
// activity (a run). Each step is judged from what can be observed, never
// from memory: the Key Manager database says whether the change is in
// effect, the record written before a change is sent says whether this
// rollout sent it, and the services' pids say whether a restart has happened
// since. So a step started again after any loss (a dropped connection, a
// worker killed, a run cancelled) neither applies twice, nor skips the
// restart it owes, nor restarts twice.
import { Context } from '@temporalio/activity';
import type { Sql } from 'postgres';
import type { ExecOptions } from '../keymanager/ssh';
import type { KeyManagerSsh, ServiceStatus } from '../keymanager/key-manager-ssh';
import type { KeyManagerDatabase } from '../keymanager/database';
import { eventAppender, lastSent, LedgerEvent, sentEvent, serverStateAppender, ServerStateRow } from '../store/ledger';
import { ACTION_STATES, BatchAction, MAX_HEARTBEAT_THROTTLE_MS, ServerState } from '../domain/rollout';
import type { FleetServer } from '../domain/fleet';
import { inventoryCache } from './inventory';
import { classified, nonRetryable, toFailure } from './failures';
import { activityLog } from './log';
import { FAILURE } from '../domain/failures';

/** The running activity's context, if any (unit tests call steps outside one). */
function currentContext(): Context | undefined {
  try {
    const ctx = Context.current();
    // The attempt's heartbeat clock starts when it runs (Temporal's starts when it is handed out, a little earlier).
    if (!lastBeat.has(ctx)) lastBeat.set(ctx, Date.now());
    return ctx;
  } catch {
    return undefined;
  }
}

export { MAX_HEARTBEAT_THROTTLE_MS };

/** When each running attempt last heartbeat (its start, before the first). */
const lastBeat = new WeakMap<Context, number>();

function beat(ctx: Context): void {
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
    throw new Error(
      `${server}: this attempt went ${((Date.now() - since) / 1000).toFixed(1)} s without a heartbeat (the worker was busy), so it does not send ${what}: the step is retried`,
    );
  }
}

/** Heartbeat while a command runs; cancellation closes the SSH channel (uploads, health checks). */
export function activityExecOptions(timeoutMs: number): ExecOptions {
  let ctx: Context | undefined;
  try {
    ctx = Context.current();
  } catch {
    ctx = undefined;
  }
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
function runAbandoned(ctx: Context | undefined): AbortSignal | undefined {
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

/** A server's attempts so far, as the workflow hands them from one run to the next. */
export interface ServerResume {
  /** This server's attempt, from 1: a command that exits non-zero fails the server at COMMAND_ATTEMPTS. */
  attempt: number;
  /** When the server's first attempt started: lost connections are retried for `serverRetryMs` from then. */
  startedAt: string;
  /** Absolute time (ms) by which services must be RUNNING: one deadline for all attempts. */
  verifyDeadline?: number;
  /** An earlier attempt sent a change (or found one in effect with this rollout's record). */
  touched?: boolean;
}

/** A run of servers, as the workflow asks for it: one window place runs them in turn, in one activity. */
export interface ServerRun {
  rolloutId: string;
  hotfix: string;
  action: BatchAction;
  servers: string[];
  servicesTimeoutMs: number;
  commandTimeoutMs?: number;
  /** End the run at its first failed server (a failure budget is set): the workflow applies the budget as results arrive. */
  stopAtFailure: boolean;
  /** How long one server's lost connections and timeouts are retried before that server has failed (ms). */
  serverRetryMs: number;
  /** The first server's earlier attempts (it is being retried). */
  resume?: ServerResume;
  /** Send no apply or unapply: only finish a change already in effect (its restart, its verify). */
  finishOnly?: boolean;
}

/** One server of a run, as it ended. */
export interface RunServerResult {
  name: string;
  state: ServerState;
  startedAt: string;
  endedAt: string;
  error?: string;
}

/** A server the run stopped at to be tried again: where its attempts are, and whether a change may have been sent. */
export interface RunRetry extends ServerResume {
  name: string;
  error: string;
  /** A change was sent to it (or found in effect with this rollout's record), now or by an earlier attempt: it is under way and must be finished. */
  touched: boolean;
}

/**
 * What a run did: its first servers, in order, as they ended; the server it
 * stopped at for a retry, if any; servers a finish-only run found nothing to
 * finish on. The rest were not started. Also ledger writes it could not make.
 */
export interface RunResult {
  servers: RunServerResult[];
  retry?: RunRetry;
  untouched?: string[];
  unrecorded: LedgerEvent[];
  /** Server states the run could not write to the ledger (orchestrator database down): the workflow writes them. */
  unwritten?: ServerStateRow[];
}

/** A server's step as it goes: its attempt and deadlines, and whether a change was sent. */
interface StepTrack extends ServerResume {
  touched: boolean;
}

const GRPC_NOT_FOUND = 5;

/** Thrown inside a run when it was cancelled before a server's first command: nothing was changed on that server. */
class RunStopped extends Error {}

/**
 * Whether the workflow still wants this run to go on: a heartbeat sent now,
 * not throttled, whose answer says whether cancellation was requested (the
 * workflow cancels its runs on pause, abort and a spent failure budget). A
 * throttled heartbeat would bring it up to 2 s later. Temporal unreachable
 * counts as no: a run starts no server that Temporal cannot hear about.
 */
async function stillWanted(ctx: Context): Promise<boolean> {
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

/** How one server's step went: done, or (finish-only) nothing to finish. */
type StepOutcome = 'done' | 'untouched';

interface ServerWork {
  rolloutId: string;
  server: string;
  hotfix: string;
  servicesTimeoutMs: number;
  commandTimeoutMs?: number;
}

export function keyManagerSshActivities(deps: { orchestrator: Sql; kmSsh: KeyManagerSsh; kmDb: KeyManagerDatabase }) {
  const { orchestrator, kmSsh, kmDb } = deps;
  const servers = inventoryCache(orchestrator);
  const appendEvents = eventAppender(orchestrator);
  const appendStates = serverStateAppender(orchestrator);

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

  /** A run's server state as it changes, for status while the run goes on; never fails the step. */
  function noteState(rolloutId: string, row: ServerStateRow, unwritten: ServerStateRow[]): Promise<void> {
    return appendStates(rolloutId, [row]).catch(() => {
      unwritten.push(row);
    });
  }

  /**
   * A change's record (store/ledger.ts sentEvent): the services' pids before
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

  /**
   * A window place's servers in turn, each apply (or unapply) → restart →
   * verify as above: one activity for several servers, so a server costs no
   * round trip through Temporal. A server that fails for good is a result; a
   * lost connection or a timeout ends the run at that server, which the
   * workflow tries again on its own (the rest go back to its queue, for any
   * free place). Cancelled, the run finishes the server under way and returns
   * what it did. It never fails for a server's sake: a failed activity means
   * its worker was lost, and the workflow starts its servers again.
   */
  async function runServers(run: ServerRun): Promise<RunResult> {
    const ctx = currentContext();
    const onTick = () => {
      if (ctx) beat(ctx);
    };
    const states = ACTION_STATES[run.action];
    const applying = run.action === 'apply';
    const writes: Promise<void>[] = [];
    const unwritten: ServerStateRow[] = [];
    const unrecorded: LedgerEvent[] = [];
    const done: RunServerResult[] = [];
    const untouched: string[] = [];
    const abandoned = runAbandoned(ctx);
    let retry: RunRetry | undefined;
    for (let i = 0; i < run.servers.length; i++) {
      if (ctx?.cancellationSignal.aborted) break;
      const server = run.servers[i];
      const w: ServerWork = {
        rolloutId: run.rolloutId,
        server,
        hotfix: run.hotfix,
        servicesTimeoutMs: run.servicesTimeoutMs,
        ...(run.commandTimeoutMs ? { commandTimeoutMs: run.commandTimeoutMs } : {}),
      };
      const resumed = i === 0 ? run.resume : undefined;
      const track: StepTrack = {
        attempt: resumed?.attempt ?? 1,
        startedAt: resumed?.startedAt ?? new Date().toISOString(),
        ...(resumed?.verifyDeadline ? { verifyDeadline: resumed.verifyDeadline } : {}),
        touched: resumed?.touched === true,
      };
      // Asked from the second server on (the run's start answered it for the first).
      const wanted = ctx && i > 0 ? stillWanted(ctx) : undefined;
      // Its running state goes to the ledger once it is known to start (the row carries its own time).
      writes.push(
        (wanted ?? Promise.resolve(true)).then((go) =>
          go
            ? noteState(
                run.rolloutId,
                { server, state: states.running, at: track.startedAt, startedAt: track.startedAt },
                unwritten,
              )
            : undefined,
        ),
      );
      let result: RunServerResult;
      try {
        const r = await serverStep(w, applying, track, abandoned, onTick, { wanted, finishOnly: run.finishOnly });
        unrecorded.push(...r.unrecorded);
        if (r.outcome === 'untouched') {
          untouched.push(server);
          continue;
        }
        result = { name: server, state: states.done, startedAt: track.startedAt, endedAt: new Date().toISOString() };
      } catch (err) {
        if (err instanceof RunStopped) break;
        const failure = toFailure(err, server, track.attempt);
        if (!failure.nonRetryable && Date.now() - Date.parse(track.startedAt) < run.serverRetryMs) {
          retry = {
            name: server,
            attempt: track.attempt + 1,
            startedAt: track.startedAt,
            ...(track.verifyDeadline ? { verifyDeadline: track.verifyDeadline } : {}),
            touched: track.touched,
            error: failure.message,
          };
          activityLog('warn', `${server}: ${failure.message} (attempt ${track.attempt}): it is tried again`, {
            server,
          });
          break;
        }
        result = {
          name: server,
          state: states.failed,
          startedAt: track.startedAt,
          endedAt: new Date().toISOString(),
          error: failure.message,
        };
      }
      done.push(result);
      writes.push(
        noteState(
          run.rolloutId,
          {
            server,
            state: result.state,
            at: result.endedAt,
            startedAt: result.startedAt,
            endedAt: result.endedAt,
            ...(result.error ? { error: result.error } : {}),
          },
          unwritten,
        ),
      );
      if (result.state === states.failed && run.stopAtFailure) break;
    }
    await Promise.all(writes);
    return {
      servers: done,
      ...(retry ? { retry } : {}),
      ...(untouched.length > 0 ? { untouched } : {}),
      unrecorded,
      ...(unwritten.length > 0 ? { unwritten } : {}),
    };
  }

  /** Several servers in turn (canary, fan-out, rollback and removal windows): see runServers above. */
  return { runServers };
}
