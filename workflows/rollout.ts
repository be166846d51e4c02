// The vendor procedure for applying a hotfix, as a durable workflow:
//   preflight → [upload] → [drain] → canary → verifying → [restore] → fanout → completed
// and on failure, rejection, timeout or abort:
//   rolling_back → rolled_back | rollback_failed.
import {
  allHandlersFinished,
  CancellationScope,
  condition,
  log,
  setHandler,
  sleep,
  workflowInfo,
} from '@temporalio/workflow';
import type { DecisionRecord, DrainedBackend, RolloutInput, RolloutStatus, SignedDecision } from '../domain/rollout';
import { ATTENTION_LIST_MAX, MAX_HEARTBEAT_THROTTLE_MS } from '../domain/rollout';
import type { DecisionFacts } from '../domain/decision';
import { gateAnswerRefusal } from '../domain/people';
import { approveUpdate, rejectUpdate, statusQuery } from './definitions';
import { activityProxies, HEARTBEAT_TIMEOUT_MS, Steps, timing } from './steps';
import { Fanout, FanoutControl } from './fanout';
import { NO_FAILURE_LIMIT } from './batches';
import { failureMessage, invalidInput } from './errors';
import { rolloutInputProblem } from '../domain/workflow-input';
import { expandPlan, formatDuration } from '../domain/plan';
import { someOf, stateRow, WorkflowRecorder, StopRollout } from './recorder';
import type { ServerStateRow } from '../store/ledger';
import { checkFacts, OneAtATime, refused, verifySigned } from './decisions';
import { setSteeringHandlers, TemporalCancel } from './steering';
import { Notifier } from './notify';
// The gate's facts that grow with the fleet: a count and a digest, or a few names (issue 31).
import { drainedFacts, type DrainedFacts } from '../domain/decision';
import { NAMES_IN_A_LINE, someNames } from '../domain/rollout';

export async function hotfixRollout(input: RolloutInput): Promise<RolloutStatus> {
  const problem = rolloutInputProblem(input);
  // Not even a hotfix: nothing to report under; the workflow fails at once.
  if (problem && typeof input?.hotfix !== 'string') throw invalidInput(problem);
  const notifier = new Notifier();
  // Nothing the rollout does is cut off by a cancel from Temporal: the cancel is taken as an abort (it rolls back).
  const cancel = new TemporalCancel();
  const status = await CancellationScope.nonCancellable(() => rollout(input, problem, notifier, cancel));
  // An answer still being checked when the rollout ended is refused, not cut off.
  await CancellationScope.nonCancellable(async () => {
    await condition(allHandlersFinished);
    await notifier.settled();
  });
  return status;
}

async function rollout(
  input: RolloutInput,
  problem: string | undefined,
  notifier: Notifier,
  cancel: TemporalCancel,
): Promise<RolloutStatus> {
  const t = timing(problem ? undefined : input.timing);
  const steps = activityProxies(t);
  const id = workflowInfo().workflowId;
  const r = new WorkflowRecorder(steps, id, 'rollout', input.hotfix, t.fullServerListMax);
  r.status.batch = input.batch;
  r.status.maxFailures = input.maxFailures;
  const fanout = new Fanout(id, input.hotfix, problem ? undefined : input.timing);
  const lock = new OneAtATime();

  let decision: { approved: boolean; by: string; reason: string } | undefined;
  let abort: DecisionRecord | undefined;
  // A cancel from Temporal (its Web UI, `temporal workflow cancel`) is an abort: it rolls back, it never cuts a step off.
  let cancelled = false;
  let drained: DrainedBackend[] = [];
  const stopping = () => abort !== undefined || cancelled || r.status.phase === 'rolling_back';

  setHandler(statusQuery, () => r.report());
  setSteeringHandlers({
    steps,
    recorder: r,
    lock,
    stopping,
    setPaused: (paused) => {
      void fanout.setPaused(paused);
    },
    abort: (rec) => {
      abort = rec;
      void fanout.stop();
    },
  });
  cancel.onRequest(() => {
    cancelled = true;
    void fanout.stop();
  });

  /** The drained backends by count and digest, recomputed from the workflow's own list (once: the list does not change). */
  let drainedDigest: { of: DrainedBackend[]; facts: DrainedFacts } | undefined;
  const drainedNow = (): DrainedFacts => {
    if (drainedDigest?.of !== drained)
      drainedDigest = { of: drained, facts: drainedFacts(drained.map((d) => d.server)) };
    return drainedDigest.facts;
  };
  /** What an answer at the gate must state: this rollout, file, canary and drained backends, as they are now. */
  const gateFacts = (action: 'approve' | 'reject'): DecisionFacts => ({
    action,
    rollout: id,
    hotfix: input.hotfix,
    sha256: r.status.sha256 ?? '',
    canary: r.status.canary ?? '',
    drained: drainedNow(),
  });

  /** Answers to the gate: only while verifying, only once, signed for exactly this canary. */
  function validateAnswer(action: 'approve' | 'reject', req: SignedDecision): void {
    if (r.status.phase !== 'verifying')
      throw refused(
        `rollout ${id} is not waiting for verification (phase ${r.status.phase}): there is nothing to answer`,
      );
    if (decision || abort) throw refused(`rollout ${id} has already been answered`);
    const d = checkFacts(req, gateFacts(action));
    if (action === 'reject' && !d.comment) throw refused('a rejection needs a reason: --reason "what is wrong"');
  }

  /** The signer must not be the requester (by name or by key) and must be a listed approver when there is a list. */
  function answer(action: 'approve' | 'reject') {
    return (req: SignedDecision): Promise<RolloutStatus> =>
      lock.run(async () => {
        validateAnswer(action, req);
        const { personKeys, ...rec } = await verifySigned(steps, req, gateFacts(action));
        validateAnswer(action, req);
        // Principals and keys, the file's (domain/people.ts): through a delegate the key that signed is the delegate's, so the person's own keys count.
        const why = gateAnswerRefusal(
          { by: rec.by, ...(rec.via ? {} : { key: rec.key }), keys: [rec.key, ...(personKeys ?? [])] },
          { requestedBy: r.status.requestedBy, requestedKey: r.status.requestedKey, approvers: input.approvers },
        );
        if (why) throw refused(why);
        r.approval(rec);
        decision = { approved: action === 'approve', by: rec.by, reason: rec.comment };
        return r.report();
      });
  }
  setHandler(approveUpdate, answer('approve'), { validator: (req: SignedDecision) => validateAnswer('approve', req) });
  setHandler(rejectUpdate, answer('reject'), { validator: (req: SignedDecision) => validateAnswer('reject', req) });

  const checkAbort = () => {
    if (abort) throw new StopRollout(`aborted by ${abort.by}${abort.comment ? `: ${abort.comment}` : ''}`);
    if (cancelled) throw new StopRollout('the workflow was cancelled from Temporal: a cancel is an abort');
  };

  // ---- preflight: changes nothing -------------------------------------------------
  const ctx = await r.preflight(async () => {
    if (problem) throw invalidInput(`invalid rollout input: ${problem}`);
    const c = await steps.preflight.prepareRollout({
      hotfix: input.hotfix,
      servers: input.servers,
      canary: input.canary,
      batch: input.batch,
      uploadSha256: input.upload?.sha256,
      uploadFileName: input.upload?.fileName,
    });
    // The start signature names the requester; it must be for this rollout of this file.
    await r.start(
      input.signed,
      { action: 'rollout', rollout: id, hotfix: input.hotfix, sha256: input.upload?.sha256 ?? c.sha256 ?? '' },
      {
        servers: input.servers,
        options: {
          canary: input.canary,
          batch: input.batch,
          maxFailures: input.maxFailures,
          approvers: input.approvers,
          approvalTimeoutMs: input.approvalTimeoutMs,
          upload: input.upload,
        },
      },
      (rec) => {
        if (input.approvers.length > 0 && input.approvers.every((a) => a === rec.by)) {
          throw refused(
            `--approvers lists only ${rec.by}, who starts this rollout and so may not verify it: name someone else`,
          );
        }
      },
    );
    await r.claim(c.plan.targets.names);
    await r.checkHealth(c.plan.targets.names);
    return c;
  });
  if (!ctx) return r.report();
  if (cancelled) {
    r.status.error = 'cancelled during preflight: nothing was changed';
    await r.phase('failed', r.status.error);
    return r.report();
  }

  const plan = ctx.plan;
  const { targets, skipped, rest } = expandPlan(plan);
  r.setServers(targets, skipped);
  if (!plan.canary) {
    await r.phase('completed'); // every target already had it
    return r.report();
  }
  const canary = plan.canary.server;
  r.status.canary = canary;
  void r.record({ key: 'canary', kind: 'canary', server: canary, detail: { reason: plan.canary.reason } });
  const canaryInfo = plan.canary;
  // --batch is a window: at most this many servers at once, the next starts when one finishes.
  const window = plan.window;
  // The rollback's scope is every target (skipped ones excepted), in reverse plan order: never a list kept in memory.
  const scope = [canary, ...rest].reverse();
  // Maximum Processes as read before the drain (`drained`, above): held here (and in the ledger) before anything changes.
  let draining: Promise<void> | undefined;
  let restored = false;
  const restore = async () => {
    if (draining) await draining.catch(() => undefined); // never race a drain still running
    if (drained.length > 0 && !restored) {
      await steps.keyManagerDb.restoreMaxProcesses({ rolloutId: id, drained });
      restored = true;
      r.status.drained = drained;
    }
  };

  try {
    // ---- upload (when the rollout was given a file) -----------------------------------
    if (input.upload) {
      await r.phase('upload');
      await steps.server.uploadHotfix({
        rolloutId: id,
        sha256: input.upload.sha256,
        fileName: input.upload.fileName,
        via: input.upload.via ?? canary,
        ...(t.commandTimeoutMs > 0 ? { commandTimeoutMs: t.commandTimeoutMs } : {}),
      });
    }
    checkAbort();

    // ---- drain: only the canary runs backend operations while it is verified --------
    if (plan.drain.length > 0) {
      await r.phase('drain');
      drained = await steps.keyManagerDb.readMaxProcesses({ servers: plan.drain });
      r.status.drained = drained;
      await r.record({ key: 'drain:recorded', kind: 'drain', detail: { drained } });
      draining = steps.drain.drainBackends({ rolloutId: id, drained });
      await draining;
    }
    checkAbort();

    // ---- canary ---------------------------------------------------------------------
    await r.phase('canary');
    r.updateServer(canary, 'patching', undefined, new Date().toISOString());
    const patchedCanary = await fanout.run(
      'apply',
      [canary],
      1,
      0,
      control(
        () => r.status.paused,
        () => abort !== undefined || cancelled,
      ),
    );
    await finishLost(patchedCanary.lost);
    const canaryState = r.status.servers.find((s) => s.name === canary);
    if (canaryState?.state !== 'patched') {
      checkAbort();
      throw new StopRollout(`the canary ${canary} failed: ${canaryState?.error ?? 'no result'}`);
    }

    // ---- verifying: a person checks the canary --------------------------------------
    // The gate is filled in before the phase shows: a status query never sees one without the other.
    const since = new Date();
    r.status.gate = {
      message: gateMessage(
        input.hotfix,
        canary,
        canaryInfo?.url,
        drained.map((d) => d.server),
        id,
      ),
      canary,
      ...(canaryInfo?.url ? { url: canaryInfo.url } : {}),
      drained: drainedNow(),
      approvers: input.approvers,
      waitingSince: since.toISOString(),
      deadline: new Date(since.getTime() + input.approvalTimeoutMs).toISOString(),
    };
    await r.phase('verifying');
    notifier.send({
      event: 'waiting',
      rolloutId: id,
      hotfix: input.hotfix,
      requestedBy: r.status.requestedBy,
      canary,
      ...(canaryInfo?.url ? { canaryUrl: canaryInfo.url } : {}),
      // A few names and the count: the notification's input is in the history, and it grows with the fleet otherwise.
      drained: drained.slice(0, NAMES_IN_A_LINE).map((d) => d.server),
      drainedCount: drained.length,
    });
    const answered = await condition(() => decision !== undefined || abort !== undefined, input.approvalTimeoutMs);
    // The gate stays filled in while the phase says verifying; the next phase clears it.
    const verdict = r.status.approvals.at(-1);
    if (decision && verdict) {
      void r.record({
        key: 'decision',
        kind: verdict.decision,
        actor: verdict.by,
        detail: {
          comment: verdict.comment,
          key: verdict.key,
          ...(verdict.via ? { via: verdict.via } : {}),
          message: verdict.message,
          signature: verdict.signature,
        },
      });
    }

    // ---- restore: whatever the outcome ----------------------------------------------
    if (drained.length > 0) {
      await r.phase('restore');
      await restore();
    }
    checkAbort();
    if (!answered)
      throw new StopRollout(
        `no approval within ${formatDuration(input.approvalTimeoutMs)}: the approval timeout counts as a rejection`,
      );
    if (decision && !decision.approved) throw new StopRollout(`rejected by ${decision.by}: ${decision.reason}`);

    // ---- fan-out: the rest, in a window ---------------------------------------------
    await r.phase('fanout');
    const result = await fanout.run(
      'apply',
      rest,
      window,
      input.maxFailures,
      control(
        () => r.status.paused,
        () => abort !== undefined || cancelled,
      ),
    );
    await finishLost(result.lost);
    checkAbort();
    if (result.failures > input.maxFailures || result.stopped) {
      throw new StopRollout(
        `${result.failures} server(s) failed in fan-out, more than --max-failures ${input.maxFailures}: ${someOf(r.failedServers())}`,
      );
    }
    // Read, not remembered: every target lists the hotfix, but for failures within --max-failures.
    const missing = await differing(steps, input.hotfix, [canary, ...rest], true);
    for (const s of missing) {
      const st = r.status.servers.find((x) => x.name === s);
      if (st && st.state !== 'failed')
        r.updateServer(s, 'failed', `the Key Manager database does not list ${input.hotfix} on ${s}`);
    }
    if (missing.length > input.maxFailures) {
      throw new StopRollout(
        `${missing.length} server(s) do not have ${input.hotfix} after fan-out, more than --max-failures ${input.maxFailures}: ${someOf(missing)}`,
      );
    }
    r.recordServers(r.status.servers.filter((s) => s.state === 'failed').map((s) => stateRow(s, r.status.updatedAt)));
    await r.phase('completed');
    notifier.send({
      event: 'completed',
      rolloutId: id,
      hotfix: input.hotfix,
      requestedBy: r.status.requestedBy,
      servers: r.status.servers.length,
    });
    return r.report();
  } catch (err) {
    r.status.error = err instanceof StopRollout ? err.message : failureMessage(err);
    // Everything this rollout started has ended when the error reaches here (each step is awaited): nothing can land behind the rollback.
    return rollback();
  }

  /** Fan-out controls: results go to the status; the children's ids too. */
  function control(isPaused: () => boolean, shouldStop: () => boolean): FanoutControl {
    return {
      isPaused,
      shouldStop,
      onChildren: (ids) => {
        r.status.activeBatchWorkflows = ids;
      },
      onResult: (s) => r.batchResult(s),
    };
  }

  /**
   * Servers of a batch child that ended without a result: once any activity
   * of it can no longer send a command (its heartbeat timeout has passed), a
   * finish-only child gives each change in effect its restart and verify.
   */
  async function finishLost(lost: string[]): Promise<void> {
    if (lost.length === 0) return;
    await sleep(QUIESCE_MS);
    await fanout.run(
      'apply',
      lost,
      window,
      NO_FAILURE_LIMIT,
      control(
        () => false,
        () => false,
      ),
      true,
    );
  }

  /**
   * Roll back from the truth: ask the Key Manager database which targets list
   * the hotfix, unapply exactly those (reverse plan order, same window), ask
   * again and visit what is still listed or was lost (a few passes); then the
   * outcome is a last read of the database and of Maximum Processes. Cannot
   * be paused, stopped or cancelled.
   */
  async function rollback(): Promise<RolloutStatus> {
    log.warn(`rolling back ${input.hotfix}: ${scope.length} target(s)`, {
      reason: r.status.error,
      servers: scope.length,
    });
    r.status.paused = false;
    void r.phase('rolling_back', r.status.error ?? undefined);
    let restoreError: string | undefined;
    const restoring = restore().catch((e: unknown) => {
      restoreError = failureMessage(e);
    });
    const failedForGood = new Map<string, string>();
    const ctl: FanoutControl = {
      ...control(
        () => false,
        () => false,
      ),
      onResult: (s) => {
        r.batchResult(s);
        if (s.state === 'rollback_failed') failedForGood.set(s.name, s.error ?? 'rollback failed');
        else failedForGood.delete(s.name);
      },
    };
    let visit = await differing(steps, input.hotfix, scope, false);
    for (let pass = 1; visit.length > 0; pass++) {
      const res = await fanout.run('rollback', visit, window, NO_FAILURE_LIMIT, ctl);
      if (pass >= ROLLBACK_PASSES) break;
      if (res.lost.length > 0) await sleep(QUIESCE_MS);
      const listed = new Set(await differing(steps, input.hotfix, scope, false));
      const lost = new Set(res.lost);
      visit = scope.filter((s) => lost.has(s) || (listed.has(s) && !failedForGood.has(s)));
    }
    await restoring;
    // The outcome, read: where the hotfix is, and Maximum Processes of every drained backend.
    const still = await differing(steps, input.hotfix, scope, false);
    const now =
      drained.length > 0 ? await steps.keyManagerDb.readMaxProcesses({ servers: drained.map((d) => d.server) }) : [];
    const stillSet = new Set(still);
    const stuck = [
      ...still.map((s) => `${s} (${input.hotfix} still applied)`),
      ...[...failedForGood].filter(([s]) => !stillSet.has(s)).map(([s, e]) => `${s} (${e})`),
      ...drained
        .filter((d) => now.find((x) => x.server === d.server)?.maxProcesses !== d.maxProcesses)
        .map(
          (d) =>
            `${d.server} (Maximum Processes ${now.find((x) => x.server === d.server)?.maxProcesses ?? 'unknown'}, was ${d.maxProcesses})`,
        ),
    ];
    if (restoreError) r.status.error = `${r.status.error}; restoring Maximum Processes failed: ${restoreError}`;
    const named = new Set(stuck.map((s) => s.split(' ')[0]));
    const rows: ServerStateRow[] = [];
    for (const s of r.status.servers) {
      if (s.state === 'skipped') continue;
      const state = named.has(s.name) ? 'rollback_failed' : s.state === 'pending' ? 'untouched' : 'rolled_back';
      if (state !== s.state) {
        r.updateServer(s.name, state);
        rows.push(stateRow(s, r.status.updatedAt));
      }
    }
    r.recordServers(rows);
    r.status.needsAttention = stuck;
    if (stuck.length > 0)
      log.error(`rollback of ${input.hotfix} ended: needs a person for ${someOf(stuck)}`, {
        needsAttention: stuck.length,
      });
    else log.info(`rollback of ${input.hotfix} ended: no target lists it and Maximum Processes are back`);
    await r.phase(
      stuck.length > 0 ? 'rollback_failed' : 'rolled_back',
      stuck.length > 0 ? `needs a person: ${someOf(stuck)}` : undefined,
    );
    notifier.send({
      event: stuck.length > 0 ? 'rollback_failed' : 'rolled_back',
      rolloutId: id,
      hotfix: input.hotfix,
      requestedBy: r.status.requestedBy,
      ...(r.status.error ? { error: r.status.error } : {}),
      needsAttention: stuck.slice(0, ATTENTION_LIST_MAX),
    });
    return r.report();
  }
}

/** Once a batch child is lost, any activity of it has stopped sending commands by then (its heartbeat timeout, plus the throttle). */
const QUIESCE_MS = HEARTBEAT_TIMEOUT_MS + MAX_HEARTBEAT_THROTTLE_MS;

/** Passes of a rollback: the first over what is listed; the next over what is still listed or was lost. */
const ROLLBACK_PASSES = 3;

/** Servers per read of the Key Manager database: each activity's input stays under ~100 KiB. */
const SERVERS_PER_READ = 5_000;

/** Of `servers`, those whose listing in the Key Manager database is not `applied`, in their order. */
async function differing(steps: Steps, hotfix: string, servers: string[], applied: boolean): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < servers.length; i += SERVERS_PER_READ) {
    out.push(
      ...(await steps.keyManagerDb.serversDiffering({
        hotfix,
        servers: servers.slice(i, i + SERVERS_PER_READ),
        applied,
      })),
    );
  }
  return out;
}

function gateMessage(hotfix: string, canary: string, url: string | undefined, drained: string[], id: string): string {
  const where = url
    ? `connect directly to ${url} (not through the load balancer)`
    : `connect directly to ${canary} (not through the load balancer)`;
  // A few names and the count: the whole list is on the rollout's page and in 'km-hotfix status ID --drained'.
  const drain =
    drained.length > 0
      ? ` Backends ${someNames(drained)} have Maximum Processes 0, so only ${canary} runs operations.`
      : '';
  return `Verify ${hotfix} on canary ${canary}: ${where}.${drain} Then: km-hotfix approve ${id} or km-hotfix reject ${id} --reason "..."`;
}
