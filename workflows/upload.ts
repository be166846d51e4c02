// Upload: copy a stored hotfix file to a Key Manager server and register it.
import { setHandler, workflowInfo } from '@temporalio/workflow';
import type { RolloutStatus, UploadInput } from '../domain/rollout';
import { parseHotfixFileName } from '../domain/hotfix';
import { statusQuery } from './definitions';
import { activityProxies, timing } from './steps';
import { failureMessage, invalidInput } from './errors';
import { uploadInputProblem } from '../domain/workflow-input';
import { WorkflowRecorder } from './recorder';

export async function hotfixUpload(input: UploadInput & { fileName: string }): Promise<RolloutStatus> {
  const problem = uploadInputProblem(input);
  if (problem && !(typeof input?.fileName === 'string' && typeof input?.requestedBy === 'string')) throw invalidInput(problem);
  const steps = activityProxies(timing());
  const id = workflowInfo().workflowId;
  // A file name that is not a hotfix's is recorded under the name given, and the upload ends failed.
  const hotfix = problem ? input.fileName : parseHotfixFileName(input.fileName).name;
  const r = new WorkflowRecorder(steps, id, 'upload', hotfix, input.requestedBy);
  setHandler(statusQuery, () => r.status);
  const ok = await r.preflight(async () => {
    if (problem) throw invalidInput(`invalid upload: ${problem}`);
    await r.claim([]);
    return true;
  }, { hotfix, servers: input.via ? [input.via] : [], options: { sha256: input.sha256, fileName: input.fileName, via: input.via } });
  if (!ok) return r.status;
  try {
    await r.phase('upload');
    const done = await steps.server.uploadHotfix({ rolloutId: id, sha256: input.sha256, via: input.via });
    if (done.server) r.status.servers = [{ ...done.server, state: 'patched' }];
    await r.phase('completed');
  } catch (err) {
    r.status.error = failureMessage(err);
    await r.phase('failed', r.status.error);
  }
  return r.status;
}
