// The one read side of a rollout's status, for the CLI, the web page and the
// fallback to the ledger: Temporal first (the workflow's query while it runs,
// with its batch children and the ledger's live view; its result once it has
// completed), the ledger's record when Temporal has no answer. Callers differ
// only in which missing answers the ledger may stand in for.
import { Client, WorkflowHandle, WorkflowNotFoundError } from '@temporalio/client';
import type { WorkflowKind } from '../domain/rollout';
import type { RolloutStatus } from '../domain/messages/rollout';
import { statusQuery, WORKFLOW_TYPES } from '../domain/messages/rollout';
import { answerWithin, LedgerView, mergeBatches, QUERY_TIMEOUT_MS, withLedgerView } from './live';

const KIND_BY_TYPE: Record<string, WorkflowKind> = {
  [WORKFLOW_TYPES.rollout]: 'rollout',
  [WORKFLOW_TYPES.removal]: 'removal',
  [WORKFLOW_TYPES.upload]: 'upload',
};

/** A km-hotfix workflow as Temporal describes it. */
export interface Described {
  handle: WorkflowHandle;
  kind: WorkflowKind;
  running: boolean;
  /** Temporal's name for its status: RUNNING, COMPLETED, TERMINATED... */
  status: string;
}

/** Why Temporal gives no km-hotfix status for an id. */
export type NoAnswer =
  | { why: 'bad-id' }
  | { why: 'not-found' }
  | { why: 'not-ours'; type: string }
  /** It ended in Temporal without a km-hotfix outcome (terminated, timed out, failed). */
  | { why: 'ended'; status: string }
  /** It runs, but its status query was not answered in time (no worker, or one taking it over). */
  | { why: 'silent'; error: unknown }
  /** Temporal itself failed to answer (thrown by readRollout unless the caller falls back on it). */
  | { why: 'unreachable'; error: unknown };

/** A status and where it came from. */
export interface StatusAnswer {
  status: RolloutStatus;
  /** The running workflow answered (the page follows it); false: its result or the ledger's record. */
  live: boolean;
  from: 'temporal' | 'ledger';
  /** From the ledger: why Temporal had no answer. */
  because?: NoAnswer;
}

export function isNoAnswer(a: StatusAnswer | NoAnswer | Described): a is NoAnswer {
  return 'why' in a;
}

/** The workflow behind an id, or why there is none. Other failures (Temporal unreachable) are thrown. */
export async function describeRollout(client: Client, id: string): Promise<Described | NoAnswer> {
  if (!id || /[\s\0]/.test(id)) return { why: 'bad-id' };
  const handle = client.workflow.getHandle(id);
  let desc;
  try {
    desc = await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError || /not found/i.test((err as Error).message)) return { why: 'not-found' };
    throw err;
  }
  const kind = KIND_BY_TYPE[desc.type];
  if (!kind) return { why: 'not-ours', type: desc.type };
  return { handle, kind, running: desc.status.name === 'RUNNING', status: desc.status.name };
}

/**
 * A described workflow's status: its live query while it runs, with the
 * per-server states of the batch children running now merged over the
 * parent's (above the status threshold: the ledger's counts and failed
 * servers, when `ledger` is given); its result once it has completed.
 */
export async function temporalStatus(
  client: Client,
  d: Described,
  o: { queryTimeoutMs?: number; ledger?: LedgerView } = {},
): Promise<StatusAnswer | NoAnswer> {
  const queryTimeoutMs = o.queryTimeoutMs ?? QUERY_TIMEOUT_MS;
  if (!d.running) return endedStatus(d);
  let st: RolloutStatus;
  try {
    st = await answerWithin(client, () => d.handle.query(statusQuery), queryTimeoutMs);
  } catch (error) {
    // It may have ended between describe and query.
    const again = await describeRollout(client, d.handle.workflowId);
    if (isNoAnswer(again)) return again;
    if (!again.running) return endedStatus(again);
    return { why: 'silent', error };
  }
  const status = await withLedgerView(await mergeBatches(client, st, queryTimeoutMs, o.ledger), o.ledger);
  return { status, live: true, from: 'temporal' };
}

async function endedStatus(d: Described): Promise<StatusAnswer | NoAnswer> {
  if (d.status !== 'COMPLETED') return { why: 'ended', status: d.status };
  return { status: (await d.handle.result()) as RolloutStatus, live: false, from: 'temporal' };
}

export interface ReadOptions {
  queryTimeoutMs?: number;
  /** The ledger's live view of a large fleet (store/server-states.ts liveLedger). */
  ledger?: LedgerView;
  /** The ledger's record of a rollout (status/from-ledger.ts statusFromLedger); without it, no fallback. */
  fromLedger?: (id: string) => Promise<RolloutStatus | undefined>;
  /** Which missing answers the ledger stands in for; by default every one. */
  fallBackOn?: (n: NoAnswer) => boolean;
}

/**
 * A rollout's status from Temporal, else from the ledger where the caller
 * allows it; else why Temporal had none (an unreachable Temporal the ledger
 * may not stand in for is thrown).
 */
export async function readRollout(client: Client, id: string, o: ReadOptions = {}): Promise<StatusAnswer | NoAnswer> {
  let answer: StatusAnswer | NoAnswer;
  try {
    const d = await describeRollout(client, id);
    answer = isNoAnswer(d) ? d : await temporalStatus(client, d, o);
  } catch (error) {
    answer = { why: 'unreachable', error };
  }
  if (!isNoAnswer(answer)) return answer;
  if (o.fromLedger && (o.fallBackOn?.(answer) ?? true)) {
    const recorded = await o.fromLedger(id);
    return recorded ? { status: recorded, live: false, from: 'ledger', because: answer } : answer;
  }
  if (answer.why === 'unreachable') throw answer.error;
  return answer;
}
