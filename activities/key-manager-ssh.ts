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
import { defaultPayloadConverter } from '@temporalio/common';
import { eventAppender, LedgerEvent, serverStateAppender, ServerStateRow } from '../store/ledger';
import { ACTION_STATES, BatchAction, ServerState } from '../domain/rollout';
import type { FleetServer } from '../domain/fleet';
import { inventoryCache } from './inventory';
import { classified, nonRetryable, toFailure } from './failures';
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

/**
 * A server's step as it runs: where it got to, how to save that (a
 * heartbeat) so that a retry resumes there, and which attempt at this server
 * this is (a run's attempts count from when the server started).
 */
export interface StepTrack {
  progress: StepProgress;
  save(): void;
  attempt: number;
}

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

function isStepProgress(d: unknown): d is StepProgress {
  return typeof d === 'object' && d !== null && typeof (d as StepProgress).step === 'string';
}

/** A single-server activity: its heartbeat details are the step's progress. */
function singleTrack(): StepTrack {
  const ctx = currentContext();
  const d = ctx?.info.heartbeatDetails;
  const progress: StepProgress = isStepProgress(d) ? { ...d } : { step: 'start' };
  return { progress, save: () => { if (ctx) beat(ctx, progress); }, attempt: ctx?.info.attempt ?? 1 };
}

/** The worker sends a heartbeat at most this often (worker/worker.ts maxHeartbeatThrottleInterval). */
export const MAX_HEARTBEAT_THROTTLE_MS = 2000;

/** When each running attempt last heartbeat (its start, before the first). */
const lastBeat = new WeakMap<Context, number>();

function beat(ctx: Context, progress?: StepProgress | RunProgress): void {
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

/** Heartbeat while a command runs; cancellation closes the SSH channel. */
export function activityExecOptions(timeoutMs: number): ExecOptions {
  let ctx: Context | undefined;
  try {
    ctx = Context.current();
  } catch {
    ctx = undefined;
  }
  return { timeoutMs, signal: ctx?.cancellationSignal, onTick: () => { if (ctx) beat(ctx); } };
}

/**
 * A server step's commands: heartbeat (with the progress so far) while one
 * runs. A single server's step is cut off by cancellation; a run's is not
 * (cancelling a run means "start no further server": the one under way
 * finishes, never half-applied).
 */
function stepExecOptions(timeoutMs: number, track: StepTrack, signal: AbortSignal | undefined): ExecOptions {
  return { timeoutMs, signal, onTick: () => track.save() };
}

/** A single server's step stops at cancellation, whatever its reason. */
function cancellation(): AbortSignal | undefined {
  try {
    return Context.current().cancellationSignal;
  } catch {
    return undefined; // outside an activity
  }
}

/**
 * A run's commands are cut off only when nobody will take its result: the
 * workflow is gone (terminated), or Temporal has handed the run to another
 * attempt. A cancel the workflow asked for lets the current server finish.
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
    signal?.addEventListener('abort', () => { clearTimeout(t); reject(new Error('cancelled')); }, { once: true });
  });
}

export function notRunning(services: ServiceStatus[]): ServiceStatus[] {
  return services.filter((s) => s.state !== 'RUNNING');
}

/** A run of servers, as the workflow asks for it: one window place runs them in turn, in one activity. */
export interface ServerRun {
  rolloutId: string;
  hotfix: string;
  action: BatchAction;
  /** In order; a retry resumes at the server the run's heartbeat reached. */
  servers: string[];
  servicesTimeoutMs: number;
  commandTimeoutMs?: number;
  /** End the run at its first failed server (a failure budget is set): the workflow applies the budget as results arrive. */
  stopAtFailure: boolean;
  /** How long one server's lost connections and timeouts are retried before that server has failed (ms). */
  serverRetryMs: number;
}

/** One server of a run, as it ended. */
export interface RunServerResult {
  name: string;
  state: ServerState;
  startedAt: string;
  endedAt: string;
  error?: string;
}

/**
 * What a run did: its first servers, in order (the rest were not started:
 * the run was cancelled, or stopped at a failure), and ledger events it could
 * not write.
 */
export interface RunResult {
  servers: RunServerResult[];
  unrecorded: LedgerEvent[];
  /** Server states the run could not write to the ledger (orchestrator database down): the workflow writes them. */
  unwritten?: ServerStateRow[];
}

/** A run's heartbeat details: the servers done, and where the current one got to. */
interface RunProgress {
  done: RunServerResult[];
  unrecorded: LedgerEvent[];
  unwritten?: ServerStateRow[];
  current?: { index: number; startedAt: string; firstAttempt: number; step: StepProgress };
}

function isRunProgress(d: unknown): d is RunProgress {
  return typeof d === 'object' && d !== null && Array.isArray((d as RunProgress).done) && Array.isArray((d as RunProgress).unrecorded);
}

const GRPC_NOT_FOUND = 5;

/** Thrown inside a run when it was cancelled before a server's first command: nothing was changed on that server. */
class RunStopped extends Error {}

/**
 * Whether the workflow still wants this run to go on: a heartbeat sent now,
 * not throttled, whose answer says whether cancellation was requested (the
 * workflow cancels its runs on pause, abort and a spent failure budget). A
 * throttled heartbeat would bring it up to 2 s later, a server or more too late.
 */
async function stillWanted(ctx: Context, details: RunProgress): Promise<boolean> {
  if (ctx.cancellationSignal.aborted) return false;
  try {
    const r = await ctx.client.workflowService.recordActivityTaskHeartbeat({
      namespace: ctx.info.namespace,
      taskToken: ctx.info.taskToken,
      details: { payloads: [defaultPayloadConverter.toPayload(details)] },
    });
    return !r.cancelRequested && !ctx.cancellationSignal.aborted;
  } catch (err) {
    // NOT_FOUND: the workflow or this attempt is gone. Otherwise Temporal is unreachable: throttled heartbeats still carry a cancellation.
    if ((err as { code?: number }).code === GRPC_NOT_FOUND) return false;
    return !ctx.cancellationSignal.aborted;
  }
}

export function keyManagerSshActivities(deps: { orchestrator: Sql; kmSsh: KeyManagerSsh; kmDb: KeyManagerDatabase }) {
  const { orchestrator, kmSsh, kmDb } = deps;
  const servers = inventoryCache(orchestrator);
  const appendEvents = eventAppender(orchestrator);
  const appendStates = serverStateAppender(orchestrator);

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
   * A run's server state as it changes, for status while the run goes on and
   * `status --servers` after. Never fails the step: a row that cannot be
   * written is left to the workflow (`unwritten`).
   */
  function noteState(rolloutId: string, row: ServerStateRow, unwritten: ServerStateRow[]): Promise<void> {
    return appendStates(rolloutId, [row]).catch(() => { unwritten.push(row); });
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
  async function restartAndVerify(w: ServerWork, target: FleetServer, applied: boolean, track: StepTrack, signal: AbortSignal | undefined, sentNote: LedgerEvent[], unrecorded: LedgerEvent[]): Promise<void> {
    const action = applied ? 'apply' : 'unapply';
    const writing = note(sentNote, unrecorded);
    const later: LedgerEvent[] = [];
    try {
      if (track.progress.step === 'restart') {
        await restart(w, target, track, signal);
        later.push({ rolloutId: w.rolloutId, key: `restart:${action}:${w.server}`, kind: 'restart', server: w.server });
      }
      await verify(w, target, applied, track, signal);
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
  async function verify(w: ServerWork, target: FleetServer, applied: boolean, track: StepTrack, signal: AbortSignal | undefined): Promise<void> {
    const progress = track.progress;
    progress.step = 'verify';
    const deadline = (progress.verifyDeadline ??= Date.now() + w.servicesTimeoutMs);
    track.save();
    const opts = stepExecOptions(limit(COMMAND_TIMEOUT_MS.status, w.commandTimeoutMs), track, signal);
    const within = `within ${Math.round(w.servicesTimeoutMs / 1000)}s`;
    let last = '';
    for (;;) {
      // Both questions at once (the database and the server); the database's answer is judged first.
      const status = classified(w.server, () => kmSsh.servicesStatus(target, opts), track.attempt);
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
        if (Date.now() > deadline) throw nonRetryable(FAILURE.servicesDown, `${w.server}: services not confirmed RUNNING ${within} after restart (last: ${(err as Error).message}): check 'supervisorctl status' on the server`);
        throw err;
      }
      const down = notRunning(services);
      if (services.length > 0 && down.length === 0) return;
      last = down.map((d) => `${d.name} ${d.state}`).join(', ') || 'no services listed';
      // FATAL will not recover by itself: fail now rather than at the deadline.
      if (down.some((d) => d.state === 'FATAL') || Date.now() > deadline) {
        activityLog('warn', `${w.server}: services not RUNNING after restart (${last})`, { server: w.server });
        throw nonRetryable(FAILURE.servicesDown, `${w.server}: services not RUNNING ${within} after restart (${last}): check 'supervisorctl status' on the server`);
      }
      opts.onTick?.();
      await sleep(250, opts.signal);
    }
  }

  async function restart(w: ServerWork, target: FleetServer, track: StepTrack, signal: AbortSignal | undefined): Promise<void> {
    track.progress.step = 'restart';
    fence(w.server, 'the restart');
    track.save();
    await classified(w.server, () => kmSsh.restartServices(target, stepExecOptions(limit(COMMAND_TIMEOUT_MS.restart, w.commandTimeoutMs), track, signal)), track.attempt);
  }

  /**
   * One server's step: apply (or unapply) → restart → verify. The command is
   * sent only where the Key Manager database says it is needed (not listed
   * for an apply, listed for an unapply); the track says which step an
   * earlier attempt reached, so a retry resumes there. In a run, `wanted`
   * is asked while the server is read, and answered before anything is sent.
   */
  async function serverStep(w: ServerWork, applying: boolean, track: StepTrack, signal: AbortSignal | undefined, wanted?: Promise<boolean>): Promise<ServerWorkResult> {
    const action = applying ? 'apply' : 'unapply';
    const progress = track.progress;
    const unrecorded: LedgerEvent[] = [];
    let changed = progress.sent === true;
    const sending = progress.step === 'start' || progress.step === action;
    const { target, listed } = await begin(w, sending);
    if (wanted && !(await wanted)) throw new RunStopped();
    const sentNote: LedgerEvent[] = [];
    if (sending) {
      progress.step = action;
      if (listed !== applying) {
        fence(w.server, `the ${action}`);
        progress.sent = true;
        changed = true;
        track.save();
        const opts = stepExecOptions(limit(COMMAND_TIMEOUT_MS.apply, w.commandTimeoutMs), track, signal);
        await classified(w.server, () => (applying ? kmSsh.applyHotfix(target, w.hotfix, opts) : kmSsh.unapplyHotfix(target, w.hotfix, opts)), track.attempt);
        activityLog('info', `${w.server}: ${applying ? 'applied' : 'unapplied'} ${w.hotfix}`, { server: w.server, hotfix: w.hotfix });
      }
      // An apply is recorded whether it changed the server or found it listed; an unapply only when sent.
      if (applying || changed) sentNote.push({ rolloutId: w.rolloutId, key: `${action}:${w.server}`, kind: action, server: w.server, detail: applying ? { hotfix: w.hotfix, changed } : { hotfix: w.hotfix } });
      // Nothing unapplied (it was not listed): only the services are checked.
      progress.step = applying || changed ? 'restart' : 'verify';
    }
    await restartAndVerify(w, target, applying, track, signal, sentNote, unrecorded);
    return { changed, unrecorded };
  }

  /**
   * A window place's servers in turn, each apply (or unapply) → restart →
   * verify as above: one activity for several servers, so a server costs no
   * round trip through Temporal. Heartbeat details hold the servers done and
   * the current one's step, so a retry resumes there; a server's attempts
   * count from when it started. A server that fails for good is a result, not
   * the run's failure; a lost connection retries the run (from that server)
   * until `serverRetryMs` has passed since the server started. Cancelled, the
   * run finishes the server under way and returns what it did.
   */
  async function runServers(run: ServerRun): Promise<RunResult> {
    const ctx = currentContext();
    const saved = ctx?.info.heartbeatDetails;
    const state: RunProgress = isRunProgress(saved) ? saved : { done: [], unrecorded: [] };
    const save = () => { if (ctx) beat(ctx, state); };
    const states = ACTION_STATES[run.action];
    const applying = run.action === 'apply';
    const attempt = ctx?.info.attempt ?? 1;
    const writes: Promise<void>[] = [];
    const unwritten = (state.unwritten ??= []);
    const abandoned = runAbandoned(ctx);
    for (let i = state.done.length; i < run.servers.length; i++) {
      const server = run.servers[i];
      const w: ServerWork = { rolloutId: run.rolloutId, server, hotfix: run.hotfix, servicesTimeoutMs: run.servicesTimeoutMs, ...(run.commandTimeoutMs ? { commandTimeoutMs: run.commandTimeoutMs } : {}) };
      const fresh = state.current?.index !== i;
      if (fresh) {
        if (ctx?.cancellationSignal.aborted) break;
        state.current = { index: i, startedAt: new Date().toISOString(), firstAttempt: attempt, step: { step: 'start' } };
      }
      const cur = state.current!;
      const track: StepTrack = { progress: cur.step, save, attempt: attempt - cur.firstAttempt + 1 };
      // Asked from the second server on (the run's start answered it for the first).
      const wanted = fresh && ctx && i > 0 ? stillWanted(ctx, state) : undefined;
      // Its running state goes to the ledger once it is known to start (the row carries its own time).
      if (fresh) writes.push((wanted ?? Promise.resolve(true)).then((go) => (go ? noteState(run.rolloutId, { server, state: states.running, at: cur.startedAt, startedAt: cur.startedAt }, unwritten) : undefined)));
      let result: RunServerResult;
      try {
        const r = await serverStep(w, applying, track, abandoned, wanted);
        state.unrecorded.push(...r.unrecorded);
        result = { name: server, state: states.done, startedAt: cur.startedAt, endedAt: new Date().toISOString() };
      } catch (err) {
        if (err instanceof RunStopped) {
          state.current = undefined;
          break;
        }
        const failure = toFailure(err, server, track.attempt);
        if (!failure.nonRetryable && Date.now() - Date.parse(cur.startedAt) < run.serverRetryMs) {
          // Rows that could not be written go into the last heartbeat too: the retry returns them.
          await Promise.all(writes);
          save();
          throw failure; // the run is retried from this server
        }
        result = { name: server, state: states.failed, startedAt: cur.startedAt, endedAt: new Date().toISOString(), error: failure.message };
      }
      state.done.push(result);
      state.current = undefined;
      save();
      writes.push(noteState(run.rolloutId, { server, state: result.state, at: result.endedAt, startedAt: result.startedAt, endedAt: result.endedAt, ...(result.error ? { error: result.error } : {}) }, unwritten));
      if (result.state === states.failed && run.stopAtFailure) break;
    }
    await Promise.all(writes);
    return { servers: state.done, unrecorded: state.unrecorded, ...(unwritten.length > 0 ? { unwritten } : {}) };
  }

  return {
    /**
     * Patch one server: apply → restart → verify, as one activity. An apply
     * that took effect but whose answer was lost is found listed in the Key
     * Manager database on retry, and still restarted and verified.
     */
    patchServer: (w: ServerWork): Promise<ServerWorkResult> => serverStep(w, true, singleTrack(), cancellation()),

    /**
     * Roll back (or remove) on one server, if the Key Manager database lists
     * the hotfix there: unapply → restart → verify. Where it is not listed and
     * no attempt sent the unapply, only the services are checked (e.g. after a
     * checksum mismatch: nothing changed).
     */
    unpatchServer: (w: ServerWork): Promise<ServerWorkResult> => serverStep(w, false, singleTrack(), cancellation()),

    /** Several servers in turn (fan-out, rollback and removal windows): see runServers above. */
    runServers,
  };
}
