// The vendor procedure for applying a hotfix, as a durable workflow:
//   preflight → [upload] → [drain] → canary → verifying → [restore] → fanout → completed
// and on failure, rejection, timeout or abort:
//   rolling_back → rolled_back | rollback_failed.
import { CancellationScope, condition, isCancellation, log, setHandler, workflowInfo } from '@temporalio/workflow';
import type { ApproveRequest, DrainedBackend, RejectRequest, RolloutInput, RolloutStatus, SteerRequest } from '../domain/rollout';
import { abortSignal, approveUpdate, pauseSignal, rejectUpdate, resumeSignal, statusQuery } from './definitions';
import { activityProxies, patchServer, timing } from './steps';
import { Fanout } from './fanout';
import { NO_FAILURE_LIMIT } from './batches';
import { failureMessage, invalidInput } from './errors';
import { rolloutInputProblem } from '../domain/workflow-input';
import { formatDuration } from '../domain/plan';
import { WorkflowRecorder, StopRollout } from './recorder';

export async function hotfixRollout(input: RolloutInput): Promise<RolloutStatus> {
  const problem = rolloutInputProblem(input);
  // Not even a hotfix and a requester: nothing to record under; the workflow fails at once.
  if (problem && !(typeof input?.hotfix === 'string' && typeof input?.requestedBy === 'string')) throw invalidInput(problem);
  const t = timing(problem ? undefined : input.timing);
  const steps = activityProxies(t);
  const id = workflowInfo().workflowId;
  const r = new WorkflowRecorder(steps, id, 'rollout', input.hotfix, input.requestedBy);
  r.status.batch = input.batch;
  r.status.maxFailures = input.maxFailures;
  const fanout = new Fanout(id, input.hotfix, problem ? undefined : input.timing);

  let decision: { approved: boolean; by: string; reason: string } | undefined;
  let abort: SteerRequest | undefined;

  setHandler(statusQuery, () => r.status);
  setHandler(approveUpdate, (req: ApproveRequest) => {
    r.approval(req.by, 'approve', req.comment ?? '');
    decision = { approved: true, by: req.by, reason: '' };
    return r.status;
  }, { validator: (req: ApproveRequest) => validateAnswer(req.by) });
  setHandler(rejectUpdate, (req: RejectRequest) => {
    r.approval(req.by, 'reject', req.reason);
    decision = { approved: false, by: req.by, reason: req.reason };
    return r.status;
  }, {
    validator: (req: RejectRequest) => {
      validateAnswer(req.by);
      if (!req.reason || !req.reason.trim()) throw new Error('a rejection needs a reason: --reason "what is wrong"');
    },
  });
  setHandler(pauseSignal, (req: SteerRequest) => {
    if (r.final() || r.status.paused) return;
    r.status.paused = true;
    r.note('pause', req.by, req.reason);
    void fanout.setPaused(true);
  });
  setHandler(resumeSignal, (req: SteerRequest) => {
    if (r.final() || !r.status.paused) return;
    r.status.paused = false;
    r.note('resume', req.by, req.reason);
    void fanout.setPaused(false);
  });
  setHandler(abortSignal, (req: SteerRequest) => {
    if (r.final() || abort) return;
    abort = req;
    r.note('abort', req.by, req.reason);
    void fanout.stop();
  });

  /** Answers to the gate: only while verifying, only once, never by the requester, only listed approvers. */
  function validateAnswer(by: string): void {
    if (!by || !by.trim()) throw new Error('say who you are: --as USER');
    if (r.status.phase !== 'verifying') throw new Error(`rollout ${id} is not waiting for verification (phase ${r.status.phase}): there is nothing to answer`);
    if (decision || abort) throw new Error(`rollout ${id} has already been answered`);
    if (by === input.requestedBy) throw new Error(`${by} started this rollout: someone else must verify the canary`);
    if (input.approvers.length > 0 && !input.approvers.includes(by)) throw new Error(`${by} is not an approver of this rollout (approvers: ${input.approvers.join(', ')})`);
  }

  const checkAbort = () => {
    if (abort) throw new StopRollout(`aborted by ${abort.by}${abort.reason ? `: ${abort.reason}` : ''}`);
  };

  // ---- preflight: changes nothing -------------------------------------------------
  const ctx = await r.preflight(async () => {
    if (problem) throw invalidInput(`invalid rollout input: ${problem}`);
    const c = await steps.preflight.prepareRollout({ hotfix: input.hotfix, servers: input.servers, canary: input.canary, batch: input.batch, uploadSha256: input.upload?.sha256 });
    await r.claim(c.plan.targets);
    await r.checkHealth(c.plan.targets);
    return c;
  }, { hotfix: input.hotfix, servers: problem ? [] : input.servers, options: problem ? {} : { canary: input.canary, batch: input.batch, maxFailures: input.maxFailures, approvers: input.approvers, approvalTimeoutMs: input.approvalTimeoutMs, upload: input.upload } });
  if (!ctx) return r.status;

  const { plan } = ctx;
  r.setServers(ctx.servers.filter((s) => plan.targets.includes(s.name)), plan.skipped);
  if (!plan.canary) {
    await r.phase('completed'); // every target already had it
    return r.status;
  }
  const canary = plan.canary.server;
  r.status.canary = canary;
  void r.record({ key: 'canary', kind: 'canary', server: canary, detail: { reason: plan.canary.reason } });
  const canaryInfo = ctx.servers.find((s) => s.name === canary);
  const rest = plan.batches.flat();
  // --batch is a window: at most this many servers at once, the next starts when one finishes.
  const window = Math.max(1, plan.batches[0]?.length ?? 1);
  // Every target this rollout attempted, in the order it started them: the rollback's list.
  // (Servers skipped at preflight are never in it; whether each still has the hotfix is
  // asked of the Key Manager database when it is rolled back.)
  const attempted: string[] = [];
  // Maximum Processes as read before the drain: held here (and in the ledger) before anything changes.
  let drained: DrainedBackend[] = [];
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
      await steps.server.uploadHotfix({ rolloutId: id, sha256: input.upload.sha256, via: input.upload.via ?? canary, ...(t.commandTimeoutMs > 0 ? { commandTimeoutMs: t.commandTimeoutMs } : {}) });
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
      drained: drained.map((d) => d.server),
      approvers: input.approvers,
      waitingSince: since.toISOString(),
      deadline: new Date(since.getTime() + input.approvalTimeoutMs).toISOString(),
    };
    await r.phase('verifying');
    const answered = await condition(() => decision !== undefined || abort !== undefined, input.approvalTimeoutMs);
    if (decision) void r.record({ key: 'decision', kind: decision.approved ? 'approve' : 'reject', actor: decision.by, detail: { comment: decision.approved ? r.status.approvals.at(-1)?.comment ?? '' : decision.reason } });

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
        r.updateServer(s.name, s.state, s.error, s.startedAt, s.endedAt);
      },
    });
    checkAbort();
    if (result.failures > input.maxFailures) {
      throw new StopRollout(`${result.failures} server(s) failed in fan-out, more than --max-failures ${input.maxFailures}: ${r.failedServers().join(', ')}`);
    }
    await r.phase('completed');
    return r.status;
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
        onResult: (s) => r.updateServer(s.name, s.state, s.error, s.startedAt, s.endedAt),
      });
      await Promise.all([restoring, rollingBack]);
      r.untouchedRest();
      const stuck = r.status.servers.filter((s) => s.state === 'rollback_failed').map((s) => s.name);
      if (restoreFailed) stuck.push(...drained.map((d) => `${d.server} (Maximum Processes ${d.maxProcesses})`));
      r.status.needsAttention = stuck;
      if (stuck.length > 0) log.error(`rollback of ${input.hotfix} ended: needs a person for ${stuck.join(', ')}`, { needsAttention: stuck });
      else log.info(`rollback of ${input.hotfix} ended: every server it attempted is rolled back`);
      await r.phase(stuck.length > 0 ? 'rollback_failed' : 'rolled_back', stuck.length > 0 ? `needs a person: ${stuck.join(', ')}` : undefined);
    });
    return r.status;
  }
}

function gateMessage(hotfix: string, canary: string, url: string | undefined, drained: string[], id: string): string {
  const where = url ? `connect directly to ${url} (not through the load balancer)` : `connect directly to ${canary} (not through the load balancer)`;
  const drain = drained.length > 0 ? ` Backends ${drained.join(', ')} have Maximum Processes 0, so only ${canary} runs operations.` : '';
  return `Verify ${hotfix} on canary ${canary}: ${where}.${drain} Then: km-hotfix approve ${id} or km-hotfix reject ${id} --reason "..."`;
}
