// Removing a hotfix, as the vendor describes it: unapply it (and restart) on
// every server that has it, then delete it from the Key Manager database
// once it is applied nowhere.
import { allHandlersFinished, condition, setHandler, workflowInfo } from '@temporalio/workflow';
import type { RemovalInput, RolloutStatus } from '../domain/rollout';
import { NO_FILE } from '../domain/decision';
import { statusQuery } from './definitions';
import { activityProxies, timing } from './steps';
import { Fanout } from './fanout';
import { failureMessage } from './errors';
import { WorkflowRecorder } from './recorder';
import { OneAtATime } from './decisions';
import { setSteeringHandlers } from './steering';

export async function hotfixRemoval(input: RemovalInput): Promise<RolloutStatus> {
  const status = await removal(input);
  await condition(allHandlersFinished);
  return status;
}

async function removal(input: RemovalInput): Promise<RolloutStatus> {
  const t = timing(input.timing);
  const steps = activityProxies(t);
  const id = workflowInfo().workflowId;
  const r = new WorkflowRecorder(steps, id, 'removal', input.hotfix);
  const fanout = new Fanout(id, input.hotfix, input.timing);
  let aborted = false;
  setHandler(statusQuery, () => r.status);
  setSteeringHandlers({
    steps, recorder: r, lock: new OneAtATime(),
    stopping: () => aborted,
    setPaused: (paused) => { void fanout.setPaused(paused); },
    abort: () => {
      aborted = true;
      void fanout.stop();
    },
  });

  const ctx = await r.preflight(async () => {
    const c = await steps.preflight.prepareRemoval({ hotfix: input.hotfix, servers: input.servers });
    // A hotfix applied somewhere but no longer registered has no file: the signature says 'none'.
    await r.start(input.signed, { action: 'remove', rollout: id, hotfix: input.hotfix, sha256: c.sha256 ?? NO_FILE }, {
      servers: input.servers, options: { keepRegistered: input.keepRegistered },
    });
    await r.claim(c.targets);
    await r.checkHealth(c.targets);
    return c;
  });
  if (!ctx) return r.status;

  const targets = new Set(ctx.targets);
  r.setServers(ctx.servers, ctx.servers.filter((s) => !targets.has(s.name)).map((s) => s.name));
  try {
    await r.phase('removing');
    // One server at a time, in inventory order: the fleet keeps serving.
    const result = await fanout.run('remove', ctx.targets.map((s) => [s]), 0, {
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
