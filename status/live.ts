// Reading a running workflow's status: its query, with the per-server states
// of the batch children running now merged over the parent's (or, above the
// status threshold, the ledger's counts and failed servers). Shared by the CLI
// and the web page.
import type { Client } from '@temporalio/client';
import { ATTENTION_LIST_MAX, ATTENTION_STATES, isFinalPhase, ServerState } from '../domain/rollout';
import { RolloutStatus, ServerStatus } from '../domain/messages/rollout';
import { countByState, boundedServer } from '../domain/status';
import type { Role } from '../domain/fleet';
import { batchStatusQuery } from '../domain/messages/batches';

/** A query is answered by a worker: without one it would wait for ever. */
export const QUERY_TIMEOUT_MS = 15_000;

/**
 * Ask, and give up after ms. The call is cancelled, not left pending: a query
 * retried after the connection closes throws 'Channel has been shut down'
 * from a timer, outside any promise.
 */
export async function answerWithin<T>(client: Client, ask: () => Promise<T>, ms: number): Promise<T> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), ms);
  try {
    return await client.withAbortSignal(controller.signal, ask);
  } catch (err) {
    if (controller.signal.aborted) throw new Error(`no answer within ${ms / 1000} s`);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The states of the servers that the batch children running now have, over
 * the parent's. A child running servers in runs knows a run's results only
 * when it ends; which of the run's servers has started or ended meanwhile
 * is in the ledger (the run writes each one's state), read when `ledger` is given.
 */
export async function mergeBatches(
  client: Client,
  st: RolloutStatus,
  queryTimeoutMs = QUERY_TIMEOUT_MS,
  ledger?: Pick<LedgerView, 'of'>,
): Promise<RolloutStatus> {
  // Above FULL_SERVER_LIST_MAX the status has no per-server list to merge into:
  // its counts are the parent's (a child's servers count once the child ends, at most a slice later).
  if (st.activeBatchWorkflows.length === 0 || !st.servers) return st;
  const byName = new Map(st.servers.map((s) => [s.name, s]));
  await Promise.all(
    st.activeBatchWorkflows.map(async (childId) => {
      try {
        const progress = await answerWithin(
          client,
          () => client.workflow.getHandle(childId).query(batchStatusQuery),
          queryTimeoutMs,
        );
        const running = ledger && progress.inRun?.length ? await ledger.of(st.id, progress.inRun).catch(() => []) : [];
        // A run's server still 'pending' in the ledger has not started: the parent's state stays.
        for (const live of [...running.filter((r) => r.state !== 'pending'), ...progress.servers]) {
          const s = byName.get(live.name);
          if (!s) continue;
          s.state = live.state;
          if (live.startedAt) s.startedAt = live.startedAt;
          if (live.endedAt) s.endedAt = live.endedAt;
          if (live.error) s.error = live.error;
        }
      } catch {
        // The child just ended: the parent's next answer has its results.
      }
    }),
  );
  st.serverCounts = countByState(st.servers);
  return st;
}

/** What a running workflow's status takes from the ledger (store/server-states.ts liveLedger). */
export interface LedgerView {
  /** Servers by latest state. */
  counts(workflowId: string): Promise<Partial<Record<ServerState, number>>>;
  /** The first `limit` servers (inventory order) whose latest state is one of `states`, and how many there are. */
  inStates(
    workflowId: string,
    states: readonly ServerState[],
    limit: number,
  ): Promise<{ total: number; servers: (Omit<ServerStatus, 'role'> & { role: Role | null })[] }>;
  /** The latest state of each of these servers (those with a row). */
  of(workflowId: string, names: readonly string[]): Promise<(Omit<ServerStatus, 'role'> & { role: Role | null })[]>;
}

/**
 * Above FULL_SERVER_LIST_MAX a running workflow's own counts and servers
 * needing attention move only when a batch child ends (its parent learns the
 * results then): a child of 500 servers would leave them still for most of a
 * rollout. Its children write each server's start and end to the ledger every
 * few servers (workflows/batches.ts), and ledger rows carry their own time,
 * so the ledger's latest state per server is at least as fresh: its counts
 * and failed servers are shown while the workflow runs. The ledger's answer is
 * used only when it has every server (the server list is written at the
 * start, in the background); unreachable or incomplete, the workflow's own
 * answer stays.
 */
export async function withLedgerView(st: RolloutStatus, ledger?: LedgerView): Promise<RolloutStatus> {
  if (!ledger || st.servers || isFinalPhase(st.phase) || st.serverCount === 0) return st;
  try {
    const [counts, failing] = await Promise.all([
      ledger.counts(st.id),
      ledger.inStates(st.id, ATTENTION_STATES, ATTENTION_LIST_MAX),
    ]);
    const total = Object.values(counts).reduce((a, b) => a + (b ?? 0), 0);
    if (total !== st.serverCount) return st;
    return {
      ...st,
      serverCounts: counts,
      attention: failing.servers.map((s) => boundedServer({ ...s, role: s.role ?? 'both' })),
      attentionMore: Math.max(0, failing.total - failing.servers.length),
    };
  } catch {
    return st;
  }
}
