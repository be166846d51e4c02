// Activities on the Key Manager database: Maximum Processes (drain and
// restore), where a hotfix is applied, and deleting an unapplied hotfix.
import type { Sql } from 'postgres';
import type { KeyManagerDatabase } from '../keymanager/database';
import type { DrainedBackend } from '../domain/messages/rollout';
import { Context } from '@temporalio/activity';
import { appendEvent } from '../store/ledger-writes';
import { nonRetryable } from './failures';
import { activityLog } from './log';
import { FAILURE } from '../domain/failures';

function heartbeat(server: string): void {
  try {
    Context.current().heartbeat(server);
  } catch {
    /* outside an activity */
  }
}

export function keyManagerDatabaseActivities(deps: { orchestrator: Sql; kmDb: KeyManagerDatabase }) {
  const { orchestrator, kmDb } = deps;
  return {
    /**
     * Maximum Processes of these backends, before anything changes. The
     * workflow keeps the values (in its history) and the ledger gets a copy:
     * whatever happens to the drain afterwards, restore has them.
     */
    async readMaxProcesses(d: { servers: string[] }): Promise<DrainedBackend[]> {
      const now = await kmDb.maxProcesses(d.servers);
      return d.servers.map((server) => {
        const v = now.get(server);
        if (v === undefined)
          throw nonRetryable(
            FAILURE.invalid,
            `backend ${server} is not in the Key Manager database's km_server table: check the inventory names`,
          );
        return { server, maxProcesses: v };
      });
    },

    /** Set Maximum Processes 0 on each backend (a retry sets the same 0s again), heartbeating per server. */
    async drainBackends(d: { rolloutId: string; drained: DrainedBackend[] }): Promise<void> {
      for (const b of d.drained) {
        await kmDb.setMaxProcesses(b.server, 0);
        heartbeat(b.server);
      }
    },

    /**
     * Put back exactly the values read before the drain (the workflow holds
     * them from readMaxProcesses, before anything changed). The ledger write
     * is bookkeeping: it never fails the restore.
     */
    async restoreMaxProcesses(r: { rolloutId: string; drained: DrainedBackend[] }): Promise<void> {
      for (const b of r.drained) {
        await kmDb.setMaxProcesses(b.server, b.maxProcesses);
        heartbeat(b.server);
      }
      await appendEvent(orchestrator, {
        rolloutId: r.rolloutId,
        key: 'drain:restored',
        kind: 'restore',
        detail: { restored: r.drained },
      }).catch((err: unknown) =>
        activityLog(
          'warn',
          `ledger unreachable: the restore of Maximum Processes is not recorded there: ${(err as Error).message}`,
          { rolloutId: r.rolloutId },
        ),
      );
    },

    /** Servers whose Hotfixes Applied lists this hotfix. */
    async serversWithHotfix(hotfix: string): Promise<string[]> {
      return kmDb.appliedOn(hotfix);
    },

    /**
     * Of these servers, those whose Hotfixes Applied differs from `applied`
     * (listing the hotfix when it should not, or not listing it when it
     * should): one query, however many servers. How a rollout learns where its
     * hotfix really is, for its rollback and its outcome.
     */
    async serversDiffering(d: { hotfix: string; servers: string[]; applied: boolean }): Promise<string[]> {
      const on = new Set(await kmDb.appliedOn(d.hotfix));
      return d.servers.filter((s) => on.has(s) !== d.applied);
    },

    async deleteHotfix(d: { rolloutId: string; hotfix: string }): Promise<'deleted' | 'still-applied' | 'absent'> {
      const result = await kmDb.deleteHotfixIfUnapplied(d.hotfix);
      await appendEvent(orchestrator, {
        rolloutId: d.rolloutId,
        key: 'delete',
        kind: 'delete',
        detail: { hotfix: d.hotfix, result },
      });
      return result;
    },
  };
}
