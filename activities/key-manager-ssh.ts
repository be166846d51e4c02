// The vendor procedure over SSH, as activities: a window place runs several
// servers in turn in one activity (a run), each one's apply (or unapply),
// restart and verify a step (activities/server-step.ts). The run hears from
// the workflow through heartbeats (activities/heartbeat.ts): whether it still
// wants the next server, and whether anybody will take the result.
import type { Sql } from 'postgres';
import type { KeyManagerSsh } from '../keymanager/key-manager-ssh';
import type { KeyManagerDatabase } from '../keymanager/database';
import { serverStateAppender } from '../store/ledger-writes';
import type { LedgerEvent, ServerStateRow } from '../domain/messages/ledger';
import type { RunResult, RunRetry, RunServerResult, ServerRun } from '../domain/messages/servers';
import { ACTION_STATES } from '../domain/rollout';
import { toFailure } from './failures';
import { activityLog } from './log';
import { attemptContext, beat, runAbandoned, stillWanted } from './heartbeat';
import { RunStopped, ServerWork, serverSteps, StepTrack } from './server-step';

export function keyManagerSshActivities(deps: { orchestrator: Sql; kmSsh: KeyManagerSsh; kmDb: KeyManagerDatabase }) {
  const { serverStep } = serverSteps(deps);
  const appendStates = serverStateAppender(deps.orchestrator);

  /** A run's server state as it changes, for status while the run goes on; never fails the step. True: written. */
  function noteState(rolloutId: string, row: ServerStateRow, unwritten: ServerStateRow[]): Promise<boolean> {
    return appendStates(rolloutId, [row]).then(
      () => true,
      () => {
        unwritten.push(row);
        return false;
      },
    );
  }

  /**
   * A window place's servers in turn, each apply (or unapply) → restart →
   * verify (serverStep, activities/server-step.ts): one activity for
   * several servers, so a server costs no round trip through Temporal. A
   * server that fails for good is a result; a lost connection or a timeout
   * ends the run at that server, which the workflow tries again on its own
   * (the rest go back to its queue, for any free place). Cancelled, the run
   * finishes the server under way and returns what it did. It never fails
   * for a server's sake: a failed activity means its worker was lost, and the
   * workflow starts its servers again.
   */
  async function runServers(run: ServerRun): Promise<RunResult> {
    const ctx = attemptContext();
    const onTick = () => {
      if (ctx) beat(ctx);
    };
    const states = ACTION_STATES[run.action];
    const applying = run.action === 'apply';
    const writes: Promise<unknown>[] = [];
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
      // Its running state goes to the ledger once it is known to start.
      const running = (wanted ?? Promise.resolve(true)).then((go) =>
        go
          ? noteState(
              run.rolloutId,
              { server, state: states.running, at: track.startedAt, startedAt: track.startedAt },
              unwritten,
            )
          : true,
      );
      writes.push(running);
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
      const end: ServerStateRow = {
        server,
        state: result.state,
        at: result.endedAt,
        startedAt: result.startedAt,
        endedAt: result.endedAt,
        ...(result.error ? { error: result.error } : {}),
      };
      // After its running state: the ledger orders a server's rows as the database receives them.
      // That one unwritten, this one is left to the workflow too, behind it.
      writes.push(
        running.then((ok) => {
          if (ok) return noteState(run.rolloutId, end, unwritten);
          unwritten.push(end);
          return false;
        }),
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
