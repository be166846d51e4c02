// Removing a hotfix, as the vendor describes it: unapply it (and restart) on
// every server that has it, then delete it from the Key Manager database
// once it is applied nowhere.
import { allHandlersFinished, CancellationScope, condition, setHandler, workflowInfo } from '@temporalio/workflow';
import type { RemovalInput, RolloutStatus } from '../domain/messages/rollout';
import { someNames } from '../domain/rollout';
import type { RemovalContext } from '../domain/messages/preflight';
import { NO_FILE } from '../domain/decision';
import { statusQuery } from '../domain/messages/rollout';
import { activityProxies, timing } from './steps';
import { Fanout } from './fanout';
import type { Steps } from './steps';
import { failureMessage, invalidInput, NAMES_IN_AN_ERROR } from './errors';
import { removalInputProblem } from '../domain/workflow-input';
import { WorkflowRecorder } from './recorder';
import { checkHealth, claim, preflight, verifyStart } from './preflight';
import { unpackServers } from '../domain/plan';
import { OneAtATime } from './decisions';
import { setSteeringHandlers, TemporalCancel } from './steering';

export async function hotfixRemoval(input: RemovalInput): Promise<RolloutStatus> {
  const problem = removalInputProblem(input);
  if (problem && typeof input?.hotfix !== 'string') throw invalidInput(problem);
  // A cancel from Temporal is an abort: the server under way is finished, the rest left as they are.
  const cancel = new TemporalCancel();
  const status = await CancellationScope.nonCancellable(() => removal(input, problem, cancel));
  await CancellationScope.nonCancellable(() => condition(allHandlersFinished));
  return status;
}

async function removal(
  input: RemovalInput,
  problem: string | undefined,
  cancel: TemporalCancel,
): Promise<RolloutStatus> {
  const t = timing(problem ? undefined : input.timing);
  const steps = activityProxies(t);
  const id = workflowInfo().workflowId;
  const r = new WorkflowRecorder(steps, id, 'removal', input.hotfix, t.fullServerListMax);
  const fanout = new Fanout(id, input.hotfix, problem ? undefined : input.timing);
  const steer = { aborted: false };
  setHandler(statusQuery, () => r.report());
  setSteeringHandlers({
    steps,
    recorder: r,
    lock: new OneAtATime(),
    stopping: () => steer.aborted,
    setPaused: (paused) => {
      void fanout.setPaused(paused);
    },
    abort: () => {
      steer.aborted = true;
      void fanout.stop();
    },
  });
  cancel.onRequest(() => {
    steer.aborted = true;
    void fanout.stop();
  });

  const ctx = await preflight(r, () => removalPreflight(steps, r, input, problem));
  if (!ctx) return r.report();
  const inScope = new Set(ctx.targets);
  r.setServers(
    unpackServers(ctx.scope),
    ctx.scope.names.filter((_, i) => !inScope.has(i)),
  );
  try {
    await remove(steps, r, fanout, input, ctx, steer);
  } catch (err) {
    r.status.error = failureMessage(err);
    await r.phase('failed', r.status.error);
  }
  return r.report();
}

/** Changes nothing: the start signature, the claims on the servers that have the hotfix, their health. */
async function removalPreflight(
  steps: Steps,
  r: WorkflowRecorder,
  input: RemovalInput,
  problem: string | undefined,
): Promise<RemovalContext> {
  if (problem) throw invalidInput(`invalid removal input: ${problem}`);
  const c = await steps.preflight.prepareRemoval({ hotfix: input.hotfix, servers: input.servers });
  // A hotfix applied somewhere but no longer registered has no file: the signature says 'none'.
  await verifyStart(
    steps,
    r,
    input.signed,
    { action: 'remove', rollout: r.status.id, hotfix: input.hotfix, sha256: c.sha256 ?? NO_FILE },
    {
      servers: input.servers,
      options: { keepRegistered: input.keepRegistered },
    },
  );
  const targets = c.targets.map((i) => c.scope.names[i]);
  await claim(steps, r, targets);
  await checkHealth(steps, targets);
  return c;
}

/** Unapply (and restart) where the hotfix is, one server at a time; then delete it once it is applied nowhere. */
async function remove(
  steps: Steps,
  r: WorkflowRecorder,
  fanout: Fanout,
  input: RemovalInput,
  ctx: RemovalContext,
  steer: { aborted: boolean },
): Promise<void> {
  const targets = ctx.targets.map((i) => ctx.scope.names[i]);
  await r.phase('removing');
  // One server at a time, in inventory order: the fleet keeps serving.
  const result = await fanout.run('remove', targets, 1, 0, {
    isPaused: () => r.status.paused,
    shouldStop: () => steer.aborted,
    onChildren: (ids) => {
      r.status.activeBatchWorkflows = ids;
    },
    onResult: (s) => r.batchResult(s),
  });
  r.untouchedRest();
  if (result.failures > 0 || steer.aborted) {
    const failed = r.model.failedServers();
    r.status.needsAttention = failed;
    r.status.error = steer.aborted
      ? 'aborted: the hotfix is still applied on the servers not yet reached'
      : `could not remove ${input.hotfix} from ${someNames(failed, NAMES_IN_AN_ERROR)}: it stays registered; fix those servers and run the removal again`;
    await r.phase('failed', r.status.error);
    return;
  }
  // A removal limited to some servers keeps the registration: others may still want it.
  if (!input.keepRegistered && input.servers.length === 0 && ctx.registered) {
    await r.phase('deleting');
    const deleted = await steps.keyManagerDb.deleteHotfix({ rolloutId: r.status.id, hotfix: input.hotfix });
    if (deleted === 'still-applied') {
      const where = await steps.keyManagerDb.serversWithHotfix(input.hotfix);
      r.status.error = `${input.hotfix} is still applied on ${someNames(where, NAMES_IN_AN_ERROR)} (outside the inventory?): it stays registered`;
      r.status.needsAttention = where;
      await r.phase('failed', r.status.error);
      return;
    }
  }
  await r.phase('completed');
}
