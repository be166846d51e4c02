// The status a workflow answers, bounded: what leaves a workflow does not grow
// with the fleet (counts by state, the servers needing attention, the full
// list only up to a limit).
import type { ServerState } from './rollout';
import { ATTENTION_LIST_MAX, ATTENTION_STATES, FULL_SERVER_LIST_MAX, STATUS_ERROR_MAX } from './rollout';
import type { FullRolloutStatus, RolloutStatus, ServerStatus } from './messages/rollout';

/** Servers per state, states with none left out. */
export function countByState(servers: readonly ServerStatus[]): Partial<Record<ServerState, number>> {
  const counts: Partial<Record<ServerState, number>> = {};
  for (const s of servers) counts[s.state] = (counts[s.state] ?? 0) + 1;
  return counts;
}

/** A server as a bounded status carries it: its error cut to STATUS_ERROR_MAX. */
export function boundedServer(s: ServerStatus): ServerStatus {
  return s.error && s.error.length > STATUS_ERROR_MAX
    ? { ...s, error: `${s.error.slice(0, STATUS_ERROR_MAX)}…` }
    : { ...s };
}

/**
 * What leaves a workflow (query, result, Update answer): counts by state,
 * the servers needing attention (capped), and the full list only up to
 * `limit` servers. Its size does not grow with the fleet above the limit.
 * `full.servers` is the workflow's complete list (kept in its memory).
 */
export function boundedStatus(full: FullRolloutStatus, limit = FULL_SERVER_LIST_MAX): RolloutStatus {
  const { servers, ...rest } = full;
  const failing = servers.filter((s) => ATTENTION_STATES.includes(s.state));
  const allAttention = full.needsAttention;
  const more = full.needsAttentionMore ?? 0;
  return {
    ...rest,
    ...(servers.length <= limit ? { servers: servers.map(boundedServer) } : {}),
    serverCount: servers.length,
    serverCounts: countByState(servers),
    attention: failing.slice(0, ATTENTION_LIST_MAX).map(boundedServer),
    attentionMore: Math.max(0, failing.length - ATTENTION_LIST_MAX),
    needsAttention: allAttention.slice(0, ATTENTION_LIST_MAX),
    needsAttentionMore: more + Math.max(0, allAttention.length - ATTENTION_LIST_MAX),
    // Backends drained for a backend canary grow with the fleet too: the first `limit` (the ledger has all).
    drained: full.drained.slice(0, limit),
    drainedCount: full.drained.length,
  };
}
