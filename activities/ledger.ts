// Activities on the orchestrator's ledger: rollout records, phases, events,
// and the claims that keep two rollouts off the same server.
import { Context } from '@temporalio/activity';
import type { Sql } from 'postgres';
import type { Phase } from '../domain/rollout';
import { appendEvent, appendServerStates, recordPhase, recordRolloutStart } from '../store/ledger-writes';
import { claim, ClaimConflict, stillActiveConflicts } from '../store/claims';
import type { LedgerEvent, RolloutRecord, ServerStateRow } from '../domain/messages/ledger';
import { nonRetryable } from './failures';
import { PackedServers, unpackServers } from '../domain/plan';
import { FAILURE } from '../domain/failures';
import { activityLog } from './log';
import { workflowRunning } from '../platform/temporal';

export function ledgerActivities(sql: Sql) {
  return {
    async recordRolloutStart(r: RolloutRecord): Promise<void> {
      await recordRolloutStart(sql, r);
    },
    async recordPhase(p: {
      rolloutId: string;
      phase: Phase;
      error?: string;
      needsAttention?: string[];
      needsAttentionMore?: number;
    }): Promise<void> {
      await recordPhase(sql, p.rolloutId, p.phase, p.error, p.needsAttention, p.needsAttentionMore);
    },
    /** A workflow's initial list (pending, or skipped: had it already), compact: one chunk of its servers from position `first`. */
    async recordServerList(w: {
      rolloutId: string;
      at: string;
      first: number;
      servers: PackedServers;
      skipped: number[];
    }): Promise<void> {
      const skipped = new Set(w.skipped);
      await appendServerStates(
        sql,
        w.rolloutId,
        unpackServers(w.servers).map((s, i) => ({
          server: s.name,
          role: s.role,
          position: w.first + i,
          at: w.at,
          state: skipped.has(i) ? 'skipped' : 'pending',
        })),
      );
    },
    /** Per-server states the workflows learned (a chunk of at most a few thousand: see workflows/recorder.ts). */
    async recordServerStates(w: { rolloutId: string; servers: ServerStateRow[] }): Promise<void> {
      await appendServerStates(sql, w.rolloutId, w.servers);
    },
    async recordEvent(e: LedgerEvent): Promise<void> {
      await appendEvent(sql, e);
    },
    /** Refused (not retried) when another active rollout holds a server or the hotfix Name. */
    async claimServers(c: { rolloutId: string; hotfix: string; servers: string[] }): Promise<void> {
      for (let attempt = 1; ; attempt++) {
        try {
          await claim(sql, c.rolloutId, c.hotfix, c.servers);
          return;
        } catch (err) {
          if (!(err instanceof ClaimConflict)) throw err;
          // A holder whose workflow no longer runs (terminated) leaves a stale claim: release it once, then retry.
          const blocking =
            attempt === 1
              ? await stillActiveConflicts(sql, err.conflicts, (id) => workflowRunning(Context.current().client, id))
              : err.conflicts;
          if (blocking.length === err.conflicts.length) throw nonRetryable(FAILURE.conflict, err.message);
          activityLog(
            'warn',
            `released stale claims of ended workflows: ${err.conflicts
              .filter((c) => !blocking.includes(c))
              .map((c) => c.id)
              .join(', ')}`,
            { rolloutId: c.rolloutId },
          );
        }
      }
    },
  };
}
