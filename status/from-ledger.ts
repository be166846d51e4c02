// A rollout's status rebuilt from the ledger alone: for when Temporal no
// longer has the workflow (retention), or does not answer in time.
import type { Sql } from 'postgres';
import { ServerState } from '../domain/rollout';
import { Approval, DecisionRecord, DrainedBackend, RolloutStatus, ServerStatus } from '../domain/messages/rollout';
import { boundedStatus } from '../domain/status';
import { parseDecisionMessage } from '../domain/decision';
import type { Role } from '../domain/fleet';
import {
  decisionActionOf,
  decisionsOf,
  detailText,
  rolloutEvents,
  rolloutRow,
  StoredEvent,
} from '../store/ledger-reads';
import { serverStates } from '../store/server-states';
import { listInventory } from '../store/inventory';

/** The ledger's status of a rollout, roles from today's inventory; undefined if the ledger has no such rollout. */
export async function statusFromLedger(sql: Sql, id: string): Promise<RolloutStatus | undefined> {
  return ledgerStatus(sql, id, new Map((await listInventory(sql)).map((s) => [s.name, s.role])));
}

/**
 * Per-server states come from the per-server ledger, or for older rollouts
 * from the steps recorded; roles from `roles` where the server is in it.
 */
export async function ledgerStatus(
  sql: Sql,
  id: string,
  roles: ReadonlyMap<string, Role>,
): Promise<RolloutStatus | undefined> {
  const r = await rolloutRow(sql, id);
  if (!r) return undefined;
  const events = await rolloutEvents(sql, id);
  const { requestedKey, decisions } = decisionRecords(r.kind, events);
  const last = events.filter((e) => e.kind === 'phase' && e.detail.phase === r.phase).at(-1);
  const needsAttention = (last?.detail.needsAttention as string[] | undefined) ?? [];
  const steps = fromSteps(r.kind, events);
  if (r.kind === 'rollout')
    for (const n of needsAttention) if (steps.states.has(n)) steps.states.set(n, 'rollback_failed');
  // The per-server ledger, where the workflow wrote it; older rollouts have only their step events.
  const written = await serverStates(sql, id, { page: 1, pageSize: 1_000_000 });
  const servers: ServerStatus[] =
    written.total > 0
      ? written.servers.map((s) => ({ ...s, role: s.role ?? roles.get(s.name) ?? 'both' }))
      : [...steps.states].map(([name, state]) => ({ name, role: roles.get(name) ?? 'both', state }));
  return boundedStatus({
    id: r.id,
    kind: r.kind,
    hotfix: r.hotfix,
    phase: r.phase,
    requestedBy: r.requestedBy,
    requestedKey,
    sha256: null,
    canary: steps.canary,
    drained: steps.drained,
    approvals: steps.approvals,
    decisions,
    servers,
    serverCount: 0,
    serverCounts: {},
    attention: [],
    attentionMore: 0,
    error: r.error,
    paused: false,
    gate: null,
    needsAttention,
    needsAttentionMore: Number(last?.detail.needsAttentionMore ?? 0),
    startedAt: r.startedAt.toISOString(),
    updatedAt: r.updatedAt.toISOString(),
    endedAt: r.endedAt?.toISOString() ?? null,
    activeBatchWorkflows: [],
  });
}

/** What the step events say: the canary, the drained backends, the answers at the gate, each server's last step. */
function fromSteps(kind: RolloutStatus['kind'], events: readonly StoredEvent[]) {
  const states = new Map<string, ServerState>();
  const undone: ServerState = kind === 'removal' ? 'removed' : 'rolled_back';
  let canary: string | null = null;
  let drained: DrainedBackend[] = [];
  const approvals: Approval[] = [];
  for (const e of events) {
    if (e.kind === 'canary' && e.server) canary = e.server;
    if (e.kind === 'drain') drained = (e.detail.drained as DrainedBackend[] | undefined) ?? [];
    if (e.kind === 'approve' || e.kind === 'reject') {
      approvals.push({
        by: e.actor ?? '',
        decision: e.kind,
        at: e.at.toISOString(),
        comment: detailText(e.detail.comment),
        key: detailText(e.detail.key),
        message: detailText(e.detail.message),
        signature: detailText(e.detail.signature),
      });
    }
    if (!e.server) continue;
    if (e.kind === 'apply') states.set(e.server, 'patched');
    if (e.kind === 'unapply') states.set(e.server, undone);
  }
  return { states, canary, drained, approvals };
}

/** The signed decisions as a status shows them, and the requester's key. */
function decisionRecords(
  kind: RolloutStatus['kind'],
  events: readonly StoredEvent[],
): { requestedKey: string | null; decisions: DecisionRecord[] } {
  const decisions: DecisionRecord[] = [];
  let requestedKey: string | null = null;
  for (const d of decisionsOf(events)) {
    const action = decisionActionOf(kind, d.kind);
    if (!action) continue;
    if (d.kind === 'started') requestedKey = d.key;
    let signedAt = d.at.toISOString();
    let comment = '';
    try {
      ({ at: signedAt, comment } = parseDecisionMessage(d.message));
    } catch {
      // An unreadable message is shown as recorded; 'km-hotfix audit' says what is wrong with it.
    }
    decisions.push({
      action,
      by: d.actor,
      key: d.key,
      ...(d.via ? { via: d.via } : {}),
      at: signedAt,
      comment,
      message: d.message,
      signature: d.signature,
    });
  }
  return { requestedKey, decisions };
}
