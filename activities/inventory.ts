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
  if (!s) throw nonRetryable(FAILURE.invalid, `server ${name} is no longer in the inventory: re-import it with 'km-hotfix fleet import FILE'`);
  return s;
}
