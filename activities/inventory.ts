// Inventory look-ups for activities: a server's SSH address and pinned key,
// read from the orchestrator database (never from workflow input, so the
// history carries names only).
import type { Sql } from 'postgres';
import type { FleetServer, Role } from '../domain/fleet';
import { FAILURE, nonRetryable } from './failures';

type Row = { name: string; role: Role; host: string; port: number; ssh_user: string; sudo: boolean; host_key: string; url: string | null };

function toServer(r: Row): FleetServer {
  return { name: r.name, role: r.role, host: r.host, port: r.port, user: r.ssh_user, sudo: r.sudo, hostKey: r.host_key, ...(r.url ? { url: r.url } : {}) };
}

export async function fleetInOrder(sql: Sql): Promise<FleetServer[]> {
  const rows = await sql<Row[]>`SELECT name, role, host, port, ssh_user, sudo, host_key, url FROM fleet_server ORDER BY position`;
  return rows.map(toServer);
}

export async function fleetServer(sql: Sql, name: string): Promise<FleetServer> {
  const rows = await sql<Row[]>`SELECT name, role, host, port, ssh_user, sudo, host_key, url FROM fleet_server WHERE name = ${name}`;
  if (!rows[0]) throw nonRetryable(FAILURE.invalid, `server ${name} is no longer in the inventory: re-import it with 'km-hotfix fleet import FILE'`);
  return toServer(rows[0]);
}
