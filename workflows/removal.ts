// Removing a hotfix, as the vendor describes it: unapply it (and restart) on
// every server that has it, then delete it from the Key Manager database
// once it is applied nowhere.
import { setHandler, workflowInfo } from '@temporalio/workflow';
import type { RemovalInput, RolloutStatus, SteerRequest } from '../domain/rollout';
import { abortSignal, pauseSignal, resumeSignal, statusQuery } from './definitions';
import { activityProxies, timing } from './steps';
import { Fanout } from './fanout';
import { failureMessage, invalidInput } from './errors';
import { removalInputProblem } from '../domain/workflow-input';
import { WorkflowRecorder } from './recorder';

export async function hotfixRemoval(input: RemovalInput): Promise<RolloutStatus> {
  const problem = removalInputProblem(input);
  if (problem && !(typeof input?.hotfix === 'string' && typeof input?.requestedBy === 'string')) throw invalidInput(problem);
  const t = timing(problem ? undefined : input.timing);
  const steps = activityProxies(t);
  const id = workflowInfo().workflowId;
  const r = new WorkflowRecorder(steps, id, 'removal', input.hotfix, input.requestedBy);
  const fanout = new Fanout(id, input.hotfix, problem ? undefined : input.timing);
  let aborted = false;
  setHandler(statusQuery, () => r.status);
  setHandler(pauseSignal, (req: SteerRequest) => { if (!r.final()) { r.status.paused = true; r.note('pause', req.by, req.reason); void fanout.setPaused(true); } });
  setHandler(resumeSignal, (req: SteerRequest) => { if (!r.final()) { r.status.paused = false; r.note('resume', req.by, req.reason); void fanout.setPaused(false); } });
  setHandler(abortSignal, (req: SteerRequest) => { if (!r.final() && !aborted) { aborted = true; r.note('abort', req.by, req.reason); void fanout.stop(); } });

  const ctx = await r.preflight(async () => {
    if (problem) throw invalidInput(`invalid removal input: ${problem}`);
    const c = await steps.preflight.prepareRemoval({ hotfix: input.hotfix, servers: input.servers });
    await r.claim(c.targets);
    await r.checkHealth(c.targets);
    return c;
  }, { hotfix: input.hotfix, servers: problem ? [] : input.servers, options: problem ? {} : { keepRegistered: input.keepRegistered } });
  if (!ctx) return r.status;

  const targets = new Set(ctx.targets);
  r.setServers(ctx.servers, ctx.servers.filter((s) => !targets.has(s.name)).map((s) => s.name));
  try {
    await r.phase('removing');
    // One server at a time, in inventory order: the fleet keeps serving.
    const result = await fanout.run('remove', ctx.targets, 1, 0, {
      isPaused: () => r.status.paused,
      shouldStop: () => aborted,
      onChildren: (ids) => { r.status.activeBatchWorkflows = ids; },
      onResult: (s) => r.updateServer(s.name, s.state, s.error, s.startedAt, s.endedAt),
    });
    r.untouchedRest();
    if (result.failures > 0 || aborted) {
      const failed = r.failedServers();
      r.status.needsAttention = failed;
      r.status.error = aborted ? 'aborted: the hotfix is still applied on the servers not yet reached' : `could not remove ${input.hotfix} from ${failed.join(', ')}: it stays registered; fix those servers and run the removal again`;
      await r.phase('failed', r.status.error);
      return r.status;
    }
    // A removal limited to some servers keeps the registration: others may still want it.
    if (!input.keepRegistered && input.servers.length === 0 && ctx.registered) {
      await r.phase('deleting');
      const deleted = await steps.keyManagerDb.deleteHotfix({ rolloutId: id, hotfix: input.hotfix });
      if (deleted === 'still-applied') {
        const where = await steps.keyManagerDb.serversWithHotfix(input.hotfix);
        r.status.error = `${input.hotfix} is still applied on ${where.join(', ')} (outside the inventory?): it stays registered`;
        r.status.needsAttention = where;
        await r.phase('failed', r.status.error);
        return r.status;
      }
    }
    await r.phase('completed');
  } catch (err) {
    r.status.error = failureMessage(err);
    await r.phase('failed', r.status.error);
  }
  return r.status;
}
