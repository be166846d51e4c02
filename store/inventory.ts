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
    for (const [position, s] of servers.entries()) {
      await tx`
        INSERT INTO fleet_server (position, name, role, host, port, ssh_user, sudo, host_key, url)
        VALUES (${position}, ${s.name}, ${s.role}, ${s.host}, ${s.port}, ${s.user}, ${s.sudo}, ${s.hostKey}, ${s.url ?? null})`;
    }
  });
}

/** Every server, in inventory order. */
export async function listInventory(sql: Sql): Promise<FleetServer[]> {
  const rows = await sql<FleetServerRow[]>`
    SELECT name, role, host, port, ssh_user, sudo, host_key, url FROM fleet_server ORDER BY position, name`;
  return rows.map((r) => ({
    name: r.name,
    role: r.role,
    host: r.host,
    port: r.port,
    user: r.ssh_user,
    sudo: r.sudo,
    hostKey: r.host_key,
    ...(r.url ? { url: r.url } : {}),
  }));
}
