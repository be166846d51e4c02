// The Key Manager database (SPEC §2): one of the two modules a site adapts
// to its Key Manager. Key Manager owns these tables (km_server, km_hotfix,
// km_hotfix_applied) and creates them; the orchestrator only reads them,
// writes km_server.max_processes, and deletes a km_hotfix row applied nowhere.
import type { Sql } from 'postgres';
import { KmError } from './errors';
import { Coalescer } from '../platform/coalesce';

export type KmRole = 'frontend' | 'backend' | 'both';

export interface KmServerRow {
  name: string;
  role: KmRole;
  maxProcesses: number;
}

export interface KmHotfixRow {
  name: string;
  fileName: string;
  version: string;
  sha256: string;
  uploadedAt: Date;
}

interface HotfixDbRow {
  name: string;
  file_name: string;
  version: string;
  sha256: string;
  uploaded_at: Date;
}

function hotfixRow(r: HotfixDbRow): KmHotfixRow {
  return { name: r.name, fileName: r.file_name, version: r.version, sha256: r.sha256, uploadedAt: r.uploaded_at };
}

// Errors that mean "the database was not reachable right now": worth retrying.
const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  'CONNECT_TIMEOUT',
  '57P01',
  '57P02',
  '57P03', // admin/crash shutdown, cannot connect now
]);

/** Run a query; unreachable-database errors become retryable KmError('connection'), the rest pass through unchanged. */
async function q<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && (CONNECTION_CODES.has(code) || code.startsWith('08'))) {
      throw new KmError(
        'connection',
        `the Key Manager database is unreachable while ${what} (${code}: ${(err as Error).message}): check KM_DATABASE_URL and that PostgreSQL is up; it will be retried`,
        { cause: err },
      );
    }
    throw err;
  }
}

export class KeyManagerDatabase {
  constructor(private readonly sql: Sql) {}

  /** Every Key Manager server, by name. */
  servers(): Promise<KmServerRow[]> {
    return q('listing servers', async () => {
      const rows = await this.sql<{ name: string; role: KmRole; max_processes: number }[]>`
        SELECT name, role, max_processes FROM km_server ORDER BY name`;
      return rows.map((r) => ({ name: r.name, role: r.role, maxProcesses: r.max_processes }));
    });
  }

  /** A registered hotfix (System → Hotfixes), or undefined. */
  hotfix(name: string): Promise<KmHotfixRow | undefined> {
    return q(`reading hotfix ${name}`, async () => {
      const rows = await this.sql<HotfixDbRow[]>`
        SELECT name, file_name, version, sha256, uploaded_at FROM km_hotfix WHERE name = ${name}`;
      return rows.length ? hotfixRow(rows[0]) : undefined;
    });
  }

  /** Every registered hotfix with the servers it is applied on. */
  hotfixes(): Promise<(KmHotfixRow & { appliedOn: string[] })[]> {
    return q('listing hotfixes', async () => {
      const rows = await this.sql<(HotfixDbRow & { applied_on: string[] })[]>`
        SELECT h.name, h.file_name, h.version, h.sha256, h.uploaded_at,
               coalesce(array_agg(a.server_name ORDER BY a.server_name) FILTER (WHERE a.server_name IS NOT NULL), '{}') AS applied_on
          FROM km_hotfix h LEFT JOIN km_hotfix_applied a ON a.hotfix_name = h.name
         GROUP BY h.name ORDER BY h.uploaded_at, h.name`;
      return rows.map((r) => ({ ...hotfixRow(r), appliedOn: r.applied_on }));
    });
  }

  /** Names of the servers whose Hotfixes Applied lists this hotfix. */
  appliedOn(hotfix: string): Promise<string[]> {
    return q(`reading where ${hotfix} is applied`, async () => {
      const rows = await this.sql<{ server_name: string }[]>`
        SELECT server_name FROM km_hotfix_applied WHERE hotfix_name = ${hotfix} ORDER BY server_name`;
      return rows.map((r) => r.server_name);
    });
  }

  /**
   * Whether a server's Hotfixes Applied lists the hotfix. Asks made in the
   * same turn of the event loop (a window's server steps) share one query.
   */
  isApplied(server: string, hotfix: string): Promise<boolean> {
    return this.appliedAsks.call({ server, hotfix });
  }

  private readonly appliedAsks = new Coalescer<{ server: string; hotfix: string }, boolean>((asks) =>
    this.appliedAmong(asks),
  );

  private async appliedAmong(asks: { server: string; hotfix: string }[]): Promise<boolean[]> {
    const byHotfix = new Map<string, Set<string>>();
    for (const a of asks) {
      const servers = byHotfix.get(a.hotfix) ?? new Set<string>();
      servers.add(a.server);
      byHotfix.set(a.hotfix, servers);
    }
    const listed = new Set<string>();
    const key = (server: string, hotfix: string) => `${hotfix}\u0000${server}`;
    // Nearly always one hotfix per batch: one query.
    await Promise.all(
      [...byHotfix].map(async ([hotfix, set]) => {
        const servers = [...set];
        const rows = await q(
          `reading whether ${hotfix} is applied on ${servers.length === 1 ? servers[0] : `${servers.length} servers`}`,
          () => this.sql<{ server_name: string }[]>`
        SELECT server_name FROM km_hotfix_applied WHERE hotfix_name = ${hotfix} AND server_name = ANY(${servers}::text[])`,
        );
        for (const r of rows) listed.add(key(r.server_name, hotfix));
      }),
    );
    return asks.map((a) => listed.has(key(a.server, a.hotfix)));
  }

  /** Maximum Processes of the given servers; servers unknown to Key Manager are absent from the map. */
  maxProcesses(servers: string[]): Promise<Map<string, number>> {
    if (servers.length === 0) return Promise.resolve(new Map<string, number>());
    return q('reading Maximum Processes', async () => {
      const rows = await this.sql<{ name: string; max_processes: number }[]>`
        SELECT name, max_processes FROM km_server WHERE name = ANY(${servers}::text[])`;
      return new Map<string, number>(rows.map((r) => [r.name, r.max_processes]));
    });
  }

  /** Set a server's Maximum Processes (0 drains it). */
  async setMaxProcesses(server: string, value: number): Promise<void> {
    if (!Number.isInteger(value) || value < 0 || value > 2_147_483_647) {
      throw new KmError('invalid-argument', `${server}: Maximum Processes must be a whole number ≥ 0 (got ${value})`, {
        server,
      });
    }
    const rows = await q(
      `setting Maximum Processes of ${server}`,
      () => this.sql`
      UPDATE km_server SET max_processes = ${value} WHERE name = ${server} RETURNING name`,
    );
    if (rows.length === 0) {
      throw new KmError(
        'invalid-argument',
        `${server}: no such server in the Key Manager database (km_server); the inventory name must match Key Manager's server name`,
        { server },
      );
    }
  }

  /**
   * Delete a hotfix from the Key Manager database if no server has it
   * applied, in one transaction. The row lock (FOR UPDATE) conflicts with the
   * key-share lock that inserting into km_hotfix_applied takes on the
   * referenced row, so a concurrent apply either finishes first (and we see
   * it) or waits and then fails its foreign key: never an applied hotfix
   * without a registration.
   */
  deleteHotfixIfUnapplied(name: string): Promise<'deleted' | 'still-applied' | 'absent'> {
    return q(`deleting hotfix ${name}`, () =>
      this.sql.begin(async (tx) => {
        const found = await tx`SELECT name FROM km_hotfix WHERE name = ${name} FOR UPDATE`;
        if (found.length === 0) return 'absent' as const;
        const applied = await tx`SELECT 1 FROM km_hotfix_applied WHERE hotfix_name = ${name} LIMIT 1`;
        if (applied.length > 0) return 'still-applied' as const;
        await tx`DELETE FROM km_hotfix WHERE name = ${name}`;
        return 'deleted' as const;
      }),
    );
  }
}
