// Activities on the orchestrator's ledger: rollout records, phases, events,
// and the claims that keep two rollouts off the same server.
import { Context } from '@temporalio/activity';
import type { Sql } from 'postgres';
import type { Phase } from '../domain/rollout';
import { appendEvent, claim, ClaimConflict, LedgerEvent, recordPhase, recordRolloutStart, releaseClaims, releaseStaleClaims, RolloutRecord } from '../store/ledger';
import { FAILURE, nonRetryable } from './failures';
import { workflowRunning } from '../platform/temporal';

export function ledgerActivities(sql: Sql) {
  return {
    async recordRolloutStart(r: RolloutRecord): Promise<void> {
      await recordRolloutStart(sql, r);
    },
    async recordPhase(p: { rolloutId: string; phase: Phase; error?: string }): Promise<void> {
      await recordPhase(sql, p.rolloutId, p.phase, p.error);
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
          const released = attempt === 1 ? await releaseStaleClaims(sql, err.activeRollouts, (id) => workflowRunning(Context.current().client, id)) : [];
          if (released.length === 0) throw nonRetryable(FAILURE.conflict, err.message);
        }
      }
    },
    async releaseClaims(rolloutId: string): Promise<void> {
      await releaseClaims(sql, rolloutId);
    },
  };
}
