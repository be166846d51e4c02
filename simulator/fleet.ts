// Start a simulated Key Manager fleet: tables and km_server rows in the KM
// database, one SSH server per KM server, and optionally the control API.
import { utils, type ParsedKey } from 'ssh2';
import type { FleetServer, Role } from '../domain/fleet';
import { startControlApi, type ControlApi } from './control-api';
import type { SimFleet, SimFleetOptions } from './types';
import { KmDatabase } from './km-database';
import { SimServerImpl } from './ssh-server';

export class SimConfigError extends Error {
  override name = 'SimConfigError';
}

function defaultMaxProcesses(_name: string, role: Role, index: number): number {
  // Distinct per backend (4, 5, 6, ...) so a wrong restore after draining shows.
  if (role === 'frontend') return 2;
  return 3 + index;
}

function parseAuthorizedKey(line: string): ParsedKey {
  const parsed = utils.parseKey(line.trim());
  const key: ParsedKey | Error | undefined = Array.isArray(parsed) ? (parsed as ParsedKey[])[0] : parsed;
  if (key instanceof Error || !key)
    throw new SimConfigError(
      `authorizedKey is not an OpenSSH public key line (${key instanceof Error ? key.message : 'empty'})`,
    );
  return key;
}

export async function startSimFleet(opts: SimFleetOptions): Promise<SimFleet> {
  for (const k of ['frontends', 'backends', 'both'] as const) {
    const v = opts[k] ?? 0;
    if (!Number.isInteger(v) || v < 0) throw new SimConfigError(`${k} must be a whole number >= 0`);
  }
  const authorizedKey = parseAuthorizedKey(opts.authorizedKey);
  const host = opts.host ?? '127.0.0.1';
  const prefix = opts.namePrefix ?? 'km';
  const plan: { name: string; role: Role; index: number }[] = [];
  const add = (n: number, role: Role, tag: string) => {
    for (let i = 1; i <= n; i++) plan.push({ name: `${prefix}-${tag}-${i}`, role, index: i });
  };
  add(opts.frontends, 'frontend', 'fe');
  add(opts.backends, 'backend', 'be');
  add(opts.both ?? 0, 'both', 'both');
  if (plan.length === 0) throw new SimConfigError('a fleet needs at least one server');
  const sudo = new Set(opts.sudoServers ?? []);
  for (const s of sudo)
    if (!plan.some((p) => p.name === s))
      throw new SimConfigError(`sudoServers names '${s}', which is not in this fleet`);

  const db = new KmDatabase(opts.kmDatabaseUrl);
  let control: ControlApi | undefined;
  const servers: SimServerImpl[] = [];
  try {
    await db.ensureSchema();
    // Role 'both' continues the backend numbering so its default max_processes stays distinct.
    const maxProcesses = opts.maxProcesses ?? defaultMaxProcesses;
    await db.registerServers(
      plan.map((p) => ({
        name: p.name,
        role: p.role,
        maxProcesses: maxProcesses(p.name, p.role, p.role === 'both' ? opts.backends + p.index : p.index),
      })),
    );
    const byName = new Map<string, SimServerImpl>();
    if (opts.controlPort !== undefined) {
      control = await startControlApi(
        opts.controlPort,
        host,
        (n) => byName.get(n),
        () => servers,
      );
    }
    for (const p of plan) {
      const s = new SimServerImpl({
        name: p.name,
        role: p.role,
        index: servers.length,
        host,
        sudo: sudo.has(p.name),
        kmVersion: opts.kmVersion ?? '3.0.0',
        restartMs: opts.restartMs ?? 200,
        applyMs: opts.applyMs ?? 0,
        db,
        authorizedKey,
        urlBase: control?.url,
        andLists: opts.andLists ?? false,
      });
      servers.push(s);
      byName.set(p.name, s);
    }
    // Listen in slices: thousands of simultaneous binds gain nothing.
    for (let i = 0; i < servers.length; i += 200) await Promise.all(servers.slice(i, i + 200).map((s) => s.listen()));

    let stopped = false;
    const fleet: SimFleet & { servers: SimServerImpl[]; server(name: string): SimServerImpl } = {
      servers,
      controlUrl: control?.url,
      server(name: string) {
        const s = byName.get(name);
        if (!s)
          throw new SimConfigError(
            `no simulated server '${name}' (have ${servers
              .slice(0, 5)
              .map((x) => x.name)
              .join(', ')}${servers.length > 5 ? ', ...' : ''})`,
          );
        return s;
      },
      inventory(): FleetServer[] {
        return servers.map((s) => s.inventoryEntry());
      },
      async stop() {
        if (stopped) return;
        stopped = true;
        await Promise.all(servers.map((s) => s.stop()));
        await control?.close();
        await db.close();
      },
    };
    return fleet;
  } catch (err) {
    await Promise.all(servers.map((s) => s.stop()));
    await control?.close();
    await db.close().catch(() => undefined);
    throw err;
  }
}
