// Inventory look-ups for activities: a server's SSH address and pinned key,
// read from the orchestrator database (never from workflow input, so the
// history carries names only).
import type { Sql } from 'postgres';
import type { FleetServer } from '../domain/fleet';
import { inventoryServer } from '../store/inventory';
import { nonRetryable } from './failures';
import { FAILURE } from '../domain/failures';

export async function fleetServer(sql: Sql, name: string): Promise<FleetServer> {
  const s = await inventoryServer(sql, name);
  if (!s)
    throw nonRetryable(
      FAILURE.invalid,
      `server ${name} is no longer in the inventory: re-import it with 'km-hotfix fleet import FILE'`,
    );
  return s;
}

/**
 * Inventory entries as SSH steps need them, remembered per worker: a step
 * that already knows a server goes on when the orchestrator database is down
 * (a rollback must never wait on bookkeeping). A fresh read always wins.
 */
export function inventoryCache(sql: Sql): { get(name: string): Promise<FleetServer> } {
  const known = new Map<string, FleetServer>();
  return {
    async get(name) {
      try {
        const s = await fleetServer(sql, name);
        known.set(name, s);
        return s;
      } catch (err) {
        const cached = known.get(name);
        if (cached && !(err instanceof Error && err.name === 'ApplicationFailure')) return cached;
        throw err;
      }
    },
  };
}
