// Upload: copy a stored hotfix file to a Key Manager server and register it.
import { setHandler, workflowInfo } from '@temporalio/workflow';
import type { RolloutStatus, UploadInput } from '../domain/messages/rollout';
import { statusQuery } from '../domain/messages/rollout';
import { activityProxies, timing } from './steps';
import { failureMessage, invalidInput } from './errors';
import { uploadInputCheck } from '../domain/workflow-input';
import { WorkflowRecorder } from './recorder';
import { claim, preflight, verifyStart } from './preflight';

export async function hotfixUpload(input: UploadInput & { fileName: string }): Promise<RolloutStatus> {
  const checked = uploadInputCheck(input);
  const problem = checked.problem;
  if (problem && typeof input?.fileName !== 'string') throw invalidInput(problem);
  const steps = activityProxies(timing());
  const id = workflowInfo().workflowId;
  // A file name that is not a hotfix's: the upload ends failed under the name given (nothing is recorded: no start was checked).
  const hotfix = checked.problem === undefined ? checked.hotfix : input.fileName;
  const r = new WorkflowRecorder(steps, id, 'upload', hotfix);
  setHandler(statusQuery, () => r.report());
  const ok = await preflight(r, async () => {
    if (problem) throw invalidInput(`invalid upload: ${problem}`);
    await verifyStart(
      steps,
      r,
      input.signed,
      { action: 'upload', rollout: id, hotfix, sha256: input.sha256 },
      {
        servers: input.via ? [input.via] : [],
        options: { sha256: input.sha256, fileName: input.fileName, via: input.via },
      },
    );
    await claim(steps, r, []);
    return true;
  });
  if (!ok) return r.report();
  try {
    await r.phase('upload');
    const done = await steps.server.uploadHotfix({
      rolloutId: id,
      sha256: input.sha256,
      fileName: input.fileName,
      via: input.via,
    });
    if (done.server) r.status.servers = [{ ...done.server, state: 'patched' }];
    await r.phase('completed');
  } catch (err) {
    r.status.error = failureMessage(err);
    await r.phase('failed', r.status.error);
  }
  return r.report();
}
