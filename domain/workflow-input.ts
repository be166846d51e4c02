// What a workflow accepts as input, checked before it does anything: a
// workflow given something that can never work ends at once with one line
// saying what is wrong (the workflows turn it into a non-retryable
// ApplicationFailure), instead of failing its task and retrying forever.
import type { RemovalInput, RolloutInput, UploadInput } from './messages/rollout';
import { parseHotfixFileName } from './hotfix';
import { parseBatch } from './plan';

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isText = (v: unknown): v is string => typeof v === 'string' && v.trim().length > 0;
const isNames = (v: unknown): v is string[] => Array.isArray(v) && v.every(isText);

function timingProblem(t: unknown): string | undefined {
  if (t === undefined) return undefined;
  if (!isObject(t)) return 'timing must be an object';
  for (const [k, v] of Object.entries(t)) {
    if (
      !['servicesTimeoutMs', 'maxRetryIntervalMs', 'sliceServers', 'commandTimeoutMs', 'fullServerListMax'].includes(k)
    )
      return `timing.${k} is not a known setting`;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (k !== 'commandTimeoutMs' && v === 0))
      return `timing.${k} must be a positive number`;
  }
  return undefined;
}

/** The first thing wrong with a rollout's input, or undefined. */
export function rolloutInputProblem(input: unknown): string | undefined {
  if (!isObject(input)) return 'a rollout needs its input (hotfix, signed, servers, batch, ...)';
  const i = input as Partial<RolloutInput> & Record<string, unknown>;
  if (!isText(i.hotfix)) return 'a rollout needs a hotfix Name';
  if (!isObject(i.signed)) return 'a rollout needs its signed start decision (signed)';
  if (!isNames(i.servers)) return 'servers must be a list of server names';
  if (i.canary !== undefined && !isText(i.canary)) return 'canary must be a server name';
  if (typeof i.batch !== 'string') return 'batch must be text such as "1", "5" or "20%"';
  try {
    parseBatch(i.batch);
  } catch (err) {
    return (err as Error).message;
  }
  if (typeof i.maxFailures !== 'number' || !Number.isInteger(i.maxFailures) || i.maxFailures < 0)
    return 'maxFailures must be a whole number >= 0';
  if (!isNames(i.approvers)) return 'approvers must be a list of names';
  if (typeof i.approvalTimeoutMs !== 'number' || !Number.isFinite(i.approvalTimeoutMs) || i.approvalTimeoutMs <= 0)
    return 'approvalTimeoutMs must be a positive number of milliseconds';
  if (
    i.upload !== undefined &&
    (!isObject(i.upload) ||
      !isText(i.upload.sha256) ||
      (i.upload.via !== undefined && !isText(i.upload.via)) ||
      (i.upload.fileName !== undefined && !isText(i.upload.fileName)))
  )
    return 'upload must name a stored file by its sha256 (and optionally a server to upload through)';
  return timingProblem(i.timing);
}

export function removalInputProblem(input: unknown): string | undefined {
  if (!isObject(input)) return 'a removal needs its input (hotfix, signed, servers)';
  const i = input as Partial<RemovalInput>;
  if (!isText(i.hotfix)) return 'a removal needs a hotfix Name';
  if (!isObject(i.signed)) return 'a removal needs its signed start decision (signed)';
  if (!isNames(i.servers)) return 'servers must be a list of server names';
  if (typeof i.keepRegistered !== 'boolean') return 'keepRegistered must be true or false';
  return timingProblem(i.timing);
}

/** An upload's input checked: the first thing wrong with it, or the hotfix Name its file name holds (parsed once). */
export function uploadInputCheck(input: unknown): { problem: string } | { problem?: undefined; hotfix: string } {
  if (!isObject(input)) return { problem: 'an upload needs its input (signed, sha256, fileName)' };
  const i = input as Partial<UploadInput> & { fileName?: unknown };
  if (!isObject(i.signed)) return { problem: 'an upload needs its signed start decision (signed)' };
  if (!isText(i.sha256)) return { problem: 'an upload needs the sha256 of a stored hotfix file' };
  if (i.via !== undefined && !isText(i.via)) return { problem: 'via must be a server name' };
  if (typeof i.fileName !== 'string') return { problem: 'an upload needs the hotfix file name' };
  try {
    return { hotfix: parseHotfixFileName(i.fileName).name };
  } catch (err) {
    return { problem: (err as Error).message };
  }
}
