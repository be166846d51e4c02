// Database connections for the CLI and the worker: checked at once with
// SELECT 1, so an unreachable database is one clear line and exit 3.
import postgres, { Sql } from 'postgres';
import { UserError } from '../platform/errors';
import type { Config } from '../platform/config';
import { migrate } from './migrations';

export type DatabaseLabel = 'orchestrator' | 'Key Manager';

const VARIABLE: Record<DatabaseLabel, string> = { orchestrator: 'DATABASE_URL', 'Key Manager': 'KM_DATABASE_URL' };

/** host:port/db of a URL, without credentials, for messages. */
export function describeUrl(url: string): string {
  // Without '//' URL parsing takes 'user:password@host' for a path: never echo such a URL.
  if (!/^postgres(ql)?:\/\//i.test(url)) return '(a malformed URL, not shown)';
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || '5432'}${u.pathname}`;
  } catch {
    return '(unparsable URL)';
  }
}

/** Open a pool and prove it with SELECT 1; failures name the database and its variable (exit 3). */
export async function connectDatabase(url: string, label: DatabaseLabel, opts: { max?: number } = {}): Promise<Sql> {
  let sql: Sql;
  if (!/^postgres(ql)?:\/\//i.test(url))
    throw new UserError(
      `${VARIABLE[label]} is not a PostgreSQL URL (not shown: it may hold a password): use postgres://USER:PASSWORD@HOST:PORT/DATABASE`,
      'refused',
    );
  try {
    sql = postgres(url, { max: opts.max ?? 5, connect_timeout: 5, onnotice: () => undefined });
  } catch (err) {
    throw new UserError(
      `${VARIABLE[label]} is not a valid PostgreSQL URL (${(err as Error).message.split('\n')[0]}): use postgres://USER:PASSWORD@HOST:PORT/DATABASE`,
      'refused',
    );
  }
  try {
    await sql`SELECT 1`;
  } catch (err) {
    await sql.end({ timeout: 1 }).catch(() => undefined);
    const reason = ((err as Error).message || (err as NodeJS.ErrnoException).code || String(err)).split('\n')[0];
    throw new UserError(
      `cannot reach the ${label} database at ${describeUrl(url)} (${reason}): start PostgreSQL or fix ${VARIABLE[label]}`,
      'unreachable',
    );
  }
  return sql;
}

/** The URL of a database from the configuration, or exit 2 naming the variable. */
export function requireDatabaseUrl(config: Config, label: DatabaseLabel): string {
  const url = label === 'orchestrator' ? config.databaseUrl : config.kmDatabaseUrl;
  if (!url) {
    throw new UserError(
      `${VARIABLE[label]} is not set: export the lines that 'km-hotfix dev' prints, or set it to your ${label} database (postgres://USER:PASSWORD@HOST:PORT/DATABASE)`,
      'refused',
    );
  }
  return url;
}

/** The orchestrator database from DATABASE_URL, connected and migrated. */
export async function connectOrchestrator(config: Config, opts: { max?: number } = {}): Promise<Sql> {
  const sql = await connectDatabase(requireDatabaseUrl(config, 'orchestrator'), 'orchestrator', opts);
  try {
    await migrate(sql);
  } catch (err) {
    await sql.end({ timeout: 1 }).catch(() => undefined);
    throw err;
  }
  return sql;
}

export interface OpenDatabases {
  orchestrator: Sql;
  km: Sql;
  close: () => Promise<void>;
}

/**
 * Both databases, the orchestrator's migrated. Both variables are checked
 * before connecting, so a missing one is reported before a slow timeout; on
 * failure nothing stays open.
 */
export async function openDatabases(
  config: Config,
  opts: { kmMax?: number; orchestratorMax?: number } = {},
): Promise<OpenDatabases> {
  requireDatabaseUrl(config, 'orchestrator');
  const kmUrl = requireDatabaseUrl(config, 'Key Manager');
  const opened: Sql[] = [];
  const close = () =>
    Promise.all(opened.map((s) => s.end({ timeout: 5 }).catch(() => undefined))).then(() => undefined);
  try {
    opened.push(
      await connectOrchestrator(config, opts.orchestratorMax === undefined ? {} : { max: opts.orchestratorMax }),
    );
    opened.push(await connectDatabase(kmUrl, 'Key Manager', opts.kmMax === undefined ? {} : { max: opts.kmMax }));
  } catch (err) {
    await close();
    throw err;
  }
  const [orchestrator, km] = opened as [Sql, Sql];
  return { orchestrator, km, close };
}
