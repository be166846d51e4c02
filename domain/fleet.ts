// The fleet inventory (SPEC §3): which servers exist, their roles, and how to
// reach them over SSH with a pinned host key.

export const ROLES = ['frontend', 'backend', 'both'] as const;
export type Role = (typeof ROLES)[number];

export interface FleetServer {
  /** Same name as km_server.name in the Key Manager database. */
  name: string;
  role: Role;
  host: string;
  port: number;
  user: string;
  sudo: boolean;
  /** Pinned host key fingerprint, OpenSSH format: SHA256:<base64 without padding>. */
  hostKey: string;
  /** Direct address of this server, for verifying a canary past the load balancer. */
  url?: string;
}

export class InventoryError extends Error {
  override name = 'InventoryError';
}

export const SERVER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const HOST_KEY = /^SHA256:[A-Za-z0-9+/]{43}=?$/;
const USER = /^[a-z_][a-z0-9_.-]{0,31}$/i;
// No leading '-': ssh and URLs would read "-p" or "-oProxyCommand=..." as an option.
const HOST = /^[A-Za-z0-9.:_][A-Za-z0-9.:_-]{0,252}$/;

/** A value for a message: quoted, escaped, short. */
function shown(v: unknown): string {
  const j = JSON.stringify(v) ?? String(v);
  return j.length > 60 ? `${j.slice(0, 59)}…` : j;
}

/** http(s), no whitespace or control characters, a host that is not an option. */
export function checkServerUrl(url: string): boolean {
  if (!/^https?:\/\/[^\s\u0000-\u001f\u007f-\u009f]+$/.test(url) || url.length > 2048) return false;
  try {
    const u = new URL(url);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '' && !u.hostname.startsWith('-');
  } catch {
    return false;
  }
}

export function servesFrontend(role: Role): boolean {
  return role === 'frontend' || role === 'both';
}
export function servesBackend(role: Role): boolean {
  return role === 'backend' || role === 'both';
}

/**
 * Validate a parsed inventory document ({servers: [...]}). Throws
 * InventoryError naming the entry and field. Parsing the file's text is
 * domain/inventory-file.ts, which keeps the YAML parser out of workflow code.
 */
export function validateInventory(doc: unknown, source = 'inventory'): FleetServer[] {
  const list = (doc as { servers?: unknown } | null)?.servers;
  if (!Array.isArray(list))
    throw new InventoryError(`${source} must have a 'servers:' list (see the README, "Fleet inventory")`);
  if (list.length === 0) throw new InventoryError(`${source} lists no servers: add at least one under 'servers:'`);
  const seen = new Set<string>();
  return list.map((raw: unknown, i: number) => {
    const at = `${source}: servers[${i}]`;
    if (typeof raw !== 'object' || raw === null)
      throw new InventoryError(`${at} must be a mapping with name, role, host and hostKey`);
    const e = raw as Record<string, unknown>;
    const known = new Set(['name', 'role', 'host', 'port', 'user', 'sudo', 'hostKey', 'url']);
    for (const k of Object.keys(e))
      if (!known.has(k))
        throw new InventoryError(
          `${at} has an unknown field '${JSON.stringify(k).slice(1, -1).slice(0, 40)}' (known: ${[...known].join(', ')})`,
        );
    const name = e.name;
    if (typeof name !== 'string' || !SERVER_NAME.test(name))
      throw new InventoryError(`${at}: 'name' must be letters, digits, '.', '_' or '-' (got ${shown(name)})`);
    const where = `${source}: server '${name}'`;
    if (seen.has(name)) throw new InventoryError(`${where} is listed twice: server names must be unique`);
    seen.add(name);
    if (typeof e.role !== 'string' || !(ROLES as readonly string[]).includes(e.role))
      throw new InventoryError(`${where}: 'role' must be frontend, backend or both (got ${shown(e.role)})`);
    if (typeof e.host !== 'string' || !HOST.test(e.host))
      throw new InventoryError(
        `${where}: 'host' must be a host name or IP address, not starting with '-' (got ${shown(e.host)})`,
      );
    const port = e.port ?? 22;
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535)
      throw new InventoryError(`${where}: 'port' must be a number from 1 to 65535`);
    const user = e.user ?? 'root';
    if (typeof user !== 'string' || !USER.test(user))
      throw new InventoryError(`${where}: 'user' must be a login name, not starting with '-' (got ${shown(user)})`);
    const sudo = e.sudo ?? false;
    if (typeof sudo !== 'boolean') throw new InventoryError(`${where}: 'sudo' must be true or false`);
    if (e.hostKey === undefined)
      throw new InventoryError(
        `${where} has no 'hostKey': pin its host key fingerprint (ssh-keyscan -p PORT HOST | ssh-keygen -lf -)`,
      );
    if (typeof e.hostKey !== 'string' || !HOST_KEY.test(e.hostKey))
      throw new InventoryError(
        `${where}: 'hostKey' must be an OpenSSH SHA256 fingerprint such as SHA256:${'A'.repeat(43)}`,
      );
    let url: string | undefined;
    if (e.url !== undefined) {
      if (typeof e.url !== 'string' || !checkServerUrl(e.url))
        throw new InventoryError(
          `${where}: 'url' must be an http(s) address without spaces or control characters (got ${shown(e.url)})`,
        );
      url = e.url;
    }
    return { name, role: e.role as Role, host: e.host, port, user, sudo, hostKey: e.hostKey, ...(url ? { url } : {}) };
  });
}
