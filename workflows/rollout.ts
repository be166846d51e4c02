// The vendor procedure for applying a hotfix, as a durable workflow:
//   preflight → [upload] → [drain] → canary → verifying → [restore] → fanout → completed
// and on failure, rejection, timeout or abort:
//   rolling_back → rolled_back | rollback_failed.
import { allHandlersFinished, CancellationScope, condition, isCancellation, log, setHandler, workflowInfo } from '@temporalio/workflow';
import type { DecisionRecord, DrainedBackend, RolloutInput, RolloutStatus, SignedDecision } from '../domain/rollout';
import { ATTENTION_LIST_MAX } from '../domain/rollout';
import type { DecisionFacts } from '../domain/decision';
import { approveUpdate, rejectUpdate, statusQuery } from './definitions';
import { activityProxies, patchServer, timing } from './steps';
import { Fanout } from './fanout';
import { NO_FAILURE_LIMIT } from './batches';
import { failureMessage, invalidInput } from './errors';
import { rolloutInputProblem } from '../domain/workflow-input';
import { expandPlan, formatDuration } from '../domain/plan';
import { someOf, WorkflowRecorder, StopRollout } from './recorder';
import { checkFacts, OneAtATime, refused, verifySigned } from './decisions';
import { setSteeringHandlers } from './steering';
import { Notifier } from './notify';
// The gate's facts that grow with the fleet: a count and a digest, or a few names (issue 31).
import { drainedFacts, type DrainedFacts } from '../domain/decision';
import { NAMES_IN_A_LINE, someNames } from '../domain/rollout';

export async function hotfixRollout(input: RolloutInput): Promise<RolloutStatus> {
  const problem = rolloutInputProblem(input);
  // Not even a hotfix: nothing to report under; the workflow fails at once.
  if (problem && typeof input?.hotfix !== 'string') throw invalidInput(problem);
  const notifier = new Notifier();
  const status = await rollout(input, problem, notifier);
  // An answer still being checked when the rollout ended is refused, not cut off.
  await CancellationScope.nonCancellable(async () => {
    await condition(allHandlersFinished);
    await notifier.settled();
  });
  return status;
}

async function rollout(input: RolloutInput, problem: string | undefined, notifier: Notifier): Promise<RolloutStatus> {
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
  let drained: DrainedBackend[] = [];

  setHandler(statusQuery, () => r.report());
  setSteeringHandlers({
    steps, recorder: r, lock,
    stopping: () => abort !== undefined || r.status.phase === 'rolling_back',
    setPaused: (paused) => { void fanout.setPaused(paused); },
    abort: (rec) => {
      abort = rec;
      void fanout.stop();
    },
  });

  /** The drained backends by count and digest, recomputed from the workflow's own list (once: the list does not change). */
  let drainedDigest: { of: DrainedBackend[]; facts: DrainedFacts } | undefined;
  const drainedNow = (): DrainedFacts => {
    if (drainedDigest?.of !== drained) drainedDigest = { of: drained, facts: drainedFacts(drained.map((d) => d.server)) };
    return drainedDigest.facts;
  };
  /** What an answer at the gate must state: this rollout, file, canary and drained backends, as they are now. */
  const gateFacts = (action: 'approve' | 'reject'): DecisionFacts => ({
    action, rollout: id, hotfix: input.hotfix, sha256: r.status.sha256 ?? '', canary: r.status.canary ?? '', drained: drainedNow(),
  });

  /** Answers to the gate: only while verifying, only once, signed for exactly this canary. */
  function validateAnswer(action: 'approve' | 'reject', req: SignedDecision): void {
    if (r.status.phase !== 'verifying') throw refused(`rollout ${id} is not waiting for verification (phase ${r.status.phase}): there is nothing to answer`);
    if (decision || abort) throw refused(`rollout ${id} has already been answered`);
    const d = checkFacts(req, gateFacts(action));
    if (action === 'reject' && !d.comment) throw refused('a rejection needs a reason: --reason "what is wrong"');
  }

  /** The signer must not be the requester (by name or by key) and must be a listed approver when there is a list. */
  function answer(action: 'approve' | 'reject') {
    return (req: SignedDecision): Promise<RolloutStatus> => lock.run(async () => {
      validateAnswer(action, req);
      const rec = await verifySigned(steps, req, gateFacts(action));
      validateAnswer(action, req);
      if (rec.by === r.status.requestedBy || rec.key === r.status.requestedKey) {
        throw refused(`${rec.by} (${rec.key}) started this rollout${rec.by === r.status.requestedBy ? '' : ` as ${r.status.requestedBy} with the same key`}: someone else must verify the canary`);
      }
      if (input.approvers.length > 0 && !input.approvers.includes(rec.by)) {
        throw refused(`${rec.by} is not an approver of this rollout (approvers: ${input.approvers.join(', ')})`);
      }
      r.approval(rec);
      decision = { approved: action === 'approve', by: rec.by, reason: rec.comment };
      return r.report();
    });
  }
  setHandler(approveUpdate, answer('approve'), { validator: (req: SignedDecision) => validateAnswer('approve', req) });
  setHandler(rejectUpdate, answer('reject'), { validator: (req: SignedDecision) => validateAnswer('reject', req) });

  const checkAbort = () => {
    if (abort) throw new StopRollout(`aborted by ${abort.by}${abort.comment ? `: ${abort.comment}` : ''}`);
  };

  // ---- preflight: changes nothing -------------------------------------------------
  const ctx = await r.preflight(async () => {
    if (problem) throw invalidInput(`invalid rollout input: ${problem}`);
    const c = await steps.preflight.prepareRollout({ hotfix: input.hotfix, servers: input.servers, canary: input.canary, batch: input.batch, uploadSha256: input.upload?.sha256, uploadFileName: input.upload?.fileName });
    // The start signature names the requester; it must be for this rollout of this file.
    await r.start(input.signed, { action: 'rollout', rollout: id, hotfix: input.hotfix, sha256: input.upload?.sha256 ?? c.sha256 ?? '' }, {
      servers: input.servers,
      options: { canary: input.canary, batch: input.batch, maxFailures: input.maxFailures, approvers: input.approvers, approvalTimeoutMs: input.approvalTimeoutMs, upload: input.upload },
    }, (rec) => {
      if (input.approvers.length > 0 && input.approvers.every((a) => a === rec.by)) {
        throw refused(`--approvers lists only ${rec.by}, who starts this rollout and so may not verify it: name someone else`);
      }
    });
    await r.claim(c.plan.targets.names);
    await r.checkHealth(c.plan.targets.names);
    return c;
  });
  if (!ctx) return r.report();

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
  // Every target this rollout attempted, in the order it started them: the rollback's list.
  // (Servers skipped at preflight are never in it; whether each still has the hotfix is
  // asked of the Key Manager database when it is rolled back.)
  const attempted: string[] = [];
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
      await steps.server.uploadHotfix({ rolloutId: id, sha256: input.upload.sha256, fileName: input.upload.fileName, via: input.upload.via ?? canary, ...(t.commandTimeoutMs > 0 ? { commandTimeoutMs: t.commandTimeoutMs } : {}) });
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
    attempted.push(canary);
    await r.serverStep(canary, 'patching', () => patchServer(steps, t, r.backlog, id, canary, input.hotfix), 'patched', 'failed');

    // ---- verifying: a person checks the canary --------------------------------------
    // The gate is filled in before the phase shows: a status query never sees one without the other.
    const since = new Date();
    r.status.gate = {
      message: gateMessage(input.hotfix, canary, canaryInfo?.url, drained.map((d) => d.server), id),
      canary,
      ...(canaryInfo?.url ? { url: canaryInfo.url } : {}),
      drained: drainedNow(),
      approvers: input.approvers,
      waitingSince: since.toISOString(),
      deadline: new Date(since.getTime() + input.approvalTimeoutMs).toISOString(),
    };
    await r.phase('verifying');
    notifier.send({
      event: 'waiting', rolloutId: id, hotfix: input.hotfix, requestedBy: r.status.requestedBy, canary,
      ...(canaryInfo?.url ? { canaryUrl: canaryInfo.url } : {}),
      // A few names and the count: the notification's input is in the history, and it grows with the fleet otherwise.
      drained: drained.slice(0, NAMES_IN_A_LINE).map((d) => d.server), drainedCount: drained.length,
    });
    const answered = await condition(() => decision !== undefined || abort !== undefined, input.approvalTimeoutMs);
    // The gate stays filled in while the phase says verifying; the next phase clears it.
    const verdict = r.status.approvals.at(-1);
    if (decision && verdict) {
      void r.record({ key: 'decision', kind: verdict.decision, actor: verdict.by, detail: { comment: verdict.comment, key: verdict.key, ...(verdict.via ? { via: verdict.via } : {}), message: verdict.message, signature: verdict.signature } });
    }

    // ---- restore: whatever the outcome ----------------------------------------------
    if (drained.length > 0) {
      await r.phase('restore');
      await restore();
    }
    checkAbort();
    if (!answered) throw new StopRollout(`no approval within ${formatDuration(input.approvalTimeoutMs)}: the approval timeout counts as a rejection`);
    if (decision && !decision.approved) throw new StopRollout(`rejected by ${decision.by}: ${decision.reason}`);

    // ---- fan-out: the rest, in a window ---------------------------------------------
    await r.phase('fanout');
    const result = await fanout.run('apply', rest, window, input.maxFailures, {
      isPaused: () => r.status.paused,
      shouldStop: () => abort !== undefined,
      onChildren: (ids) => { r.status.activeBatchWorkflows = ids; },
      onResult: (s) => {
        attempted.push(s.name);
        r.batchResult(s);
      },
    });
    checkAbort();
    if (result.failures > input.maxFailures) {
      throw new StopRollout(`${result.failures} server(s) failed in fan-out, more than --max-failures ${input.maxFailures}: ${someOf(r.failedServers())}`);
    }
    await r.phase('completed');
    notifier.send({ event: 'completed', rolloutId: id, hotfix: input.hotfix, requestedBy: r.status.requestedBy, servers: r.status.servers.length });
    return r.report();
  } catch (err) {
    if (!(err instanceof StopRollout) && !isCancellation(err)) {
      r.status.error = failureMessage(err);
    } else if (err instanceof StopRollout) {
      r.status.error = err.message;
    } else {
      r.status.error = 'the workflow was cancelled';
    }
    // ---- rollback: cannot be cancelled halfway, never waits on the ledger -----------
    await CancellationScope.nonCancellable(async () => {
      const order = [...new Set(attempted)].reverse(); // reverse order of patching
      log.warn(`rolling back ${input.hotfix}: ${order.length} server(s) attempted`, { reason: r.status.error, servers: order.length });
      void r.phase('rolling_back', r.status.error ?? undefined);
      let restoreFailed = false;
      const restoring = restore().catch((e: unknown) => {
        restoreFailed = true;
        r.status.error = `${r.status.error}; restoring Maximum Processes failed: ${failureMessage(e)}`;
      });
      const rollingBack = fanout.run('rollback', order, window, NO_FAILURE_LIMIT, {
        isPaused: () => false,
        shouldStop: () => false,
        onChildren: (ids) => { r.status.activeBatchWorkflows = ids; },
        onResult: (s) => r.batchResult(s),
      });
      await Promise.all([restoring, rollingBack]);
      r.untouchedRest();
      const stuck = r.status.servers.filter((s) => s.state === 'rollback_failed').map((s) => s.name);
      if (restoreFailed) stuck.push(...drained.map((d) => `${d.server} (Maximum Processes ${d.maxProcesses})`));
      r.status.needsAttention = stuck;
      if (stuck.length > 0) log.error(`rollback of ${input.hotfix} ended: needs a person for ${someOf(stuck)}`, { needsAttention: stuck.length });
      else log.info(`rollback of ${input.hotfix} ended: every server it attempted is rolled back`);
      await r.phase(stuck.length > 0 ? 'rollback_failed' : 'rolled_back', stuck.length > 0 ? `needs a person: ${someOf(stuck)}` : undefined);
      notifier.send({
        event: stuck.length > 0 ? 'rollback_failed' : 'rolled_back', rolloutId: id, hotfix: input.hotfix, requestedBy: r.status.requestedBy,
        ...(r.status.error ? { error: r.status.error } : {}), needsAttention: stuck.slice(0, ATTENTION_LIST_MAX),
      });
    });
    return r.report();
  }
}

function gateMessage(hotfix: string, canary: string, url: string | undefined, drained: string[], id: string): string {
  const where = url ? `connect directly to ${url} (not through the load balancer)` : `connect directly to ${canary} (not through the load balancer)`;
  // A few names and the count: the whole list is on the rollout's page and in 'km-hotfix status ID --drained'.
  const drain = drained.length > 0 ? ` Backends ${someNames(drained)} have Maximum Processes 0, so only ${canary} runs operations.` : '';
  return `Verify ${hotfix} on canary ${canary}: ${where}.${drain} Then: km-hotfix approve ${id} or km-hotfix reject ${id} --reason "..."`;
}
