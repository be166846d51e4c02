// The fleet inventory in the orchestrator database (table fleet_server):
// replaced as a whole on import, listed in the file's order.
import type { Sql, TransactionSql } from 'postgres';
import type { FleetServer, Role } from '../domain/fleet';

interface FleetServerRow {
  name: string;
  role: Role;
  host: string;
  port: number;
  ssh_user: string;
  sudo: boolean;
  host_key: string;
  url: string | null;
}

/** Replace the whole inventory in one transaction; `position` keeps the file's order. */
export async function replaceInventory(sql: Sql, servers: FleetServer[]): Promise<void> {
  await sql.begin(async (tx: TransactionSql) => {
    await tx`DELETE FROM fleet_server`;
    // Chunks keep each statement's parameter count well under PostgreSQL's 65,535.
    for (let i = 0; i < servers.length; i += 1000) {
      const rows = servers.slice(i, i + 1000).map((s, j) => ({
        position: i + j,
        name: s.name,
        role: s.role,
        host: s.host,
        port: s.port,
        ssh_user: s.user,
        sudo: s.sudo,
        host_key: s.hostKey,
        url: s.url ?? null,
      }));
      await tx`INSERT INTO fleet_server ${tx(rows)}`;
    }
  });
}

/** Every server, in inventory order. */
export async function listInventory(sql: Sql): Promise<FleetServer[]> {
  const rows = await sql<FleetServerRow[]>`
    SELECT name, role, host, port, ssh_user, sudo, host_key, url FROM fleet_server ORDER BY position, name`;
  return rows.map(toServer);
}

/** One server by name, if it is in the inventory. */
export async function inventoryServer(sql: Sql, name: string): Promise<FleetServer | undefined> {
  const rows = await sql<FleetServerRow[]>`
    SELECT name, role, host, port, ssh_user, sudo, host_key, url FROM fleet_server WHERE name = ${name}`;
  return rows[0] ? toServer(rows[0]) : undefined;
}

function toServer(r: FleetServerRow): FleetServer {
  return {
    name: r.name,
    role: r.role,
    host: r.host,
    port: r.port,
    user: r.ssh_user,
    sudo: r.sudo,
    hostKey: r.host_key,
    ...(r.url ? { url: r.url } : {}),
  };
}
