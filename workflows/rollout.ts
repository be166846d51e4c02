// The vendor procedure for applying a hotfix, as a durable workflow, one
// function per phase:
//   preflight → [upload] → [drain] → canary → verifying → [restore] → fanout → completed
// and on failure, rejection, timeout or abort (workflows/rollback.ts):
//   rolling_back → rolled_back | rollback_failed.
import { allHandlersFinished, CancellationScope, condition, setHandler } from '@temporalio/workflow';
import type { RolloutInput, RolloutStatus } from '../domain/messages/rollout';
import { someNames } from '../domain/rollout';
import { approversRefusal } from '../domain/people';
import { rolloutInputProblem } from '../domain/workflow-input';
import { statusQuery } from '../domain/messages/rollout';
import type { RolloutContext } from '../domain/messages/preflight';
import { failureMessage, invalidInput, NAMES_IN_AN_ERROR, StopRollout } from './errors';
import { refused } from './decisions';
import { setSteeringHandlers, TemporalCancel } from './steering';
import { Notifier } from './notify';
import { checkHealth, claim, preflight, verifyStart } from './preflight';
import { type RolloutPlan, rolloutPlan } from './rollout-plan';
import { RolloutState } from './rollout-state';
import { rollBack } from './rollback';

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

/** The procedure: each phase in turn; any failure, a rejection, the timeout or an abort rolls back. */
async function rollout(
  input: RolloutInput,
  problem: string | undefined,
  notifier: Notifier,
  cancel: TemporalCancel,
): Promise<RolloutStatus> {
  const s = new RolloutState(input, problem, notifier);
  const { r } = s;
  listen(s, cancel);
  const ctx = await preflight(r, () => preflightPhase(s, problem));
  if (!ctx) return r.report();
  if (s.cancelled) {
    r.status.error = 'cancelled during preflight: nothing was changed';
    await r.phase('failed', r.status.error);
    return r.report();
  }
  const { plan: p, targets } = rolloutPlan(ctx);
  r.setServers(targets.targets, targets.skipped);
  if (!p) {
    await r.phase('completed'); // every target already had it
    return r.report();
  }
  r.status.canary = p.canary;
  void r.record({ key: 'canary', kind: 'canary', server: p.canary, detail: { reason: p.canaryReason } });
  try {
    await uploadPhase(s, p);
    s.checkAbort();
    await drainPhase(s, p);
    s.checkAbort();
    await canaryPhase(s, p);
    const answered = await verifyPhase(s, p);
    // From the answer's record to a rejection's rollback nothing is awaited (but a restore): the histories have that order.
    s.gate.recordVerdict();
    if (s.drained.length > 0) await restorePhase(s);
    s.checkAbort();
    s.gate.judge(answered);
    await fanoutPhase(s, p);
    return await completedPhase(s, p);
  } catch (err) {
    r.status.error = err instanceof StopRollout ? err.message : failureMessage(err);
    // Everything this rollout started has ended when the error reaches here (each step is awaited): nothing can land behind the rollback.
    return rollBack(s, p);
  }
}

/** The status query, steering (pause, resume, abort), a cancel from Temporal, and the gate's Updates. */
function listen(s: RolloutState, cancel: TemporalCancel): void {
  setHandler(statusQuery, () => s.r.report());
  setSteeringHandlers({
    steps: s.steps,
    recorder: s.r,
    lock: s.lock,
    stopping: () => s.stopping(),
    setPaused: (paused) => {
      void s.fanout.setPaused(paused);
    },
    abort: (rec) => {
      s.abort = rec;
      void s.fanout.stop();
    },
  });
  cancel.onRequest(() => {
    s.cancelled = true;
    void s.fanout.stop();
  });
  s.gate.register();
}

/** Preflight changes nothing: the plan, the start signature (it names the requester), the claims, every target's health. */
async function preflightPhase(s: RolloutState, problem: string | undefined): Promise<RolloutContext> {
  const { input, steps, r, id } = s;
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
  await verifyStart(
    steps,
    r,
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
      const onlyRequester = approversRefusal(input.approvers, rec.by);
      if (onlyRequester) throw refused(onlyRequester);
    },
  );
  await claim(steps, r, c.plan.targets.names);
  await checkHealth(steps, c.plan.targets.names);
  return c;
}

/** When the rollout was given a file: upload it through one server (the canary unless told otherwise). */
async function uploadPhase(s: RolloutState, p: RolloutPlan): Promise<void> {
  const { input, t } = s;
  if (!input.upload) return;
  await s.r.phase('upload');
  await s.steps.server.uploadHotfix({
    rolloutId: s.id,
    sha256: input.upload.sha256,
    fileName: input.upload.fileName,
    via: input.upload.via ?? p.canary,
    ...(t.commandTimeoutMs > 0 ? { commandTimeoutMs: t.commandTimeoutMs } : {}),
  });
}

/** Only the canary runs backend operations while it is verified: Maximum Processes read and recorded, then 0. */
async function drainPhase(s: RolloutState, p: RolloutPlan): Promise<void> {
  if (p.drain.length === 0) return;
  const { r } = s;
  await r.phase('drain');
  s.drained = await s.steps.keyManagerDb.readMaxProcesses({ servers: p.drain });
  r.status.drained = s.drained;
  // Awaited (resolved at once): the record's write is scheduled before the drain, as the histories have it.
  await r.record({ key: 'drain:recorded', kind: 'drain', detail: { drained: s.drained } });
  await s.drain();
}

/** Apply, restart and verify the canary alone. */
async function canaryPhase(s: RolloutState, p: RolloutPlan): Promise<void> {
  const { r } = s;
  await r.phase('canary');
  r.updateServer(p.canary, 'patching', undefined, new Date().toISOString());
  const patched = await s.fanout.run('apply', [p.canary], 1, 0, s.steered());
  await s.finishLost(patched.lost, p.window);
  const canary = r.model.server(p.canary);
  if (canary?.state !== 'patched') {
    s.checkAbort();
    throw new StopRollout(`the canary ${p.canary} failed: ${canary?.error ?? 'no result'}`);
  }
}

/** A person checks the canary; returns whether anyone answered before the approval timeout. */
async function verifyPhase(s: RolloutState, p: RolloutPlan): Promise<boolean> {
  await s.gate.open(p);
  return s.gate.wait();
}

/** Maximum Processes back whatever the answer. */
async function restorePhase(s: RolloutState): Promise<void> {
  await s.r.phase('restore');
  await s.restore();
}

/** The rest, in a window; more failures than --max-failures roll back. */
async function fanoutPhase(s: RolloutState, p: RolloutPlan): Promise<void> {
  const { r, input } = s;
  await r.phase('fanout');
  const result = await s.fanout.run('apply', p.rest, p.window, input.maxFailures, s.steered());
  await s.finishLost(result.lost, p.window);
  s.checkAbort();
  if (result.failures > input.maxFailures || result.stopped) {
    throw new StopRollout(
      `${result.failures} server(s) failed in fan-out, more than --max-failures ${input.maxFailures}: ${someNames(r.model.failedServers(), NAMES_IN_AN_ERROR)}`,
    );
  }
}

/** Read, not remembered: every target lists the hotfix, but for failures within --max-failures. */
async function completedPhase(s: RolloutState, p: RolloutPlan): Promise<RolloutStatus> {
  const { r, input } = s;
  const missing = await s.differing([p.canary, ...p.rest], true);
  for (const x of missing) {
    const st = r.model.server(x);
    if (st && st.state !== 'failed')
      r.updateServer(x, 'failed', `the Key Manager database does not list ${input.hotfix} on ${x}`);
  }
  if (missing.length > input.maxFailures) {
    throw new StopRollout(
      `${missing.length} server(s) do not have ${input.hotfix} after fan-out, more than --max-failures ${input.maxFailures}: ${someNames(missing, NAMES_IN_AN_ERROR)}`,
    );
  }
  r.recordServers(r.rows(r.status.servers.filter((x) => x.state === 'failed')));
  await r.phase('completed');
  s.notifier.send({
    event: 'completed',
    rolloutId: s.id,
    hotfix: input.hotfix,
    requestedBy: r.status.requestedBy,
    servers: r.status.servers.length,
  });
  return r.report();
}
