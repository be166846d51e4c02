// Activities on the Key Manager database: Maximum Processes (drain and
// restore), where a hotfix is applied, and deleting an unapplied hotfix.
import type { Sql } from 'postgres';
import type { KeyManagerDatabase } from '../keymanager/database';
import type { DrainedBackend } from '../domain/rollout';
import { appendEvent, eventDetail } from '../store/ledger';

export function keyManagerDatabaseActivities(deps: { orchestrator: Sql; kmDb: KeyManagerDatabase }) {
  const { orchestrator, kmDb } = deps;
  return {
    /**
     * Record Maximum Processes of these backends, then set it to 0. The
     * originals are written to the ledger before anything changes, and a
     * retry reads them back from there: a second attempt must not record the
     * 0s that the first one already wrote.
     */
    async drainBackends(d: { rolloutId: string; servers: string[] }): Promise<DrainedBackend[]> {
      const key = 'drain:recorded';
      let recorded = (await eventDetail(orchestrator, d.rolloutId, key))?.drained as DrainedBackend[] | undefined;
      if (!recorded) {
        const now = await kmDb.maxProcesses(d.servers);
        recorded = d.servers.map((server) => {
          const v = now.get(server);
          if (v === undefined) throw new Error(`backend ${server} is not in the Key Manager database's km_server table: check the inventory names`);
          return { server, maxProcesses: v };
        });
        await appendEvent(orchestrator, { rolloutId: d.rolloutId, key, kind: 'drain', detail: { drained: recorded } });
        recorded = (await eventDetail(orchestrator, d.rolloutId, key))?.drained as DrainedBackend[];
      }
      for (const b of recorded) await kmDb.setMaxProcesses(b.server, 0);
      return recorded;
    },

    /** Put back exactly the recorded values. */
    async restoreMaxProcesses(r: { rolloutId: string; drained: DrainedBackend[] }): Promise<void> {
      for (const b of r.drained) await kmDb.setMaxProcesses(b.server, b.maxProcesses);
      await appendEvent(orchestrator, { rolloutId: r.rolloutId, key: 'drain:restored', kind: 'restore', detail: { restored: r.drained } });
    },

    /** Servers whose Hotfixes Applied lists this hotfix. */
    async serversWithHotfix(hotfix: string): Promise<string[]> {
      return kmDb.appliedOn(hotfix);
    },

    async deleteHotfix(d: { rolloutId: string; hotfix: string }): Promise<'deleted' | 'still-applied' | 'absent'> {
      const result = await kmDb.deleteHotfixIfUnapplied(d.hotfix);
      await appendEvent(orchestrator, { rolloutId: d.rolloutId, key: 'delete', kind: 'delete', detail: { hotfix: d.hotfix, result } });
      return result;
    },
  };
}
