// Database connections for the CLI and the worker: checked at once with
// SELECT 1, so an unreachable database is one clear line and exit 3.
import postgres, { Sql } from 'postgres';
import { CliError, EXIT } from '../client/errors';
import type { Config } from '../client/config';
import { migrate } from './migrations';

export type DatabaseLabel = 'orchestrator' | 'Key Manager';

const VARIABLE: Record<DatabaseLabel, string> = { orchestrator: 'DATABASE_URL', 'Key Manager': 'KM_DATABASE_URL' };

/** host:port/db of a URL, without credentials, for messages. */
export function describeUrl(url: string): string {
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
  try {
    sql = postgres(url, { max: opts.max ?? 5, connect_timeout: 5, onnotice: () => undefined });
  } catch (err) {
    throw new CliError(`${VARIABLE[label]} is not a valid PostgreSQL URL (${(err as Error).message.split('\n')[0]}): use postgres://USER:PASSWORD@HOST:PORT/DATABASE`, EXIT.refused);
  }
  try {
    await sql`SELECT 1`;
  } catch (err) {
    await sql.end({ timeout: 1 }).catch(() => undefined);
    const reason = ((err as Error).message || (err as NodeJS.ErrnoException).code || String(err)).split('\n')[0];
    throw new CliError(`cannot reach the ${label} database at ${describeUrl(url)} (${reason}): start PostgreSQL or fix ${VARIABLE[label]}`, EXIT.unreachable);
  }
  return sql;
}

/** The URL of a database from the configuration, or exit 2 naming the variable. */
export function requireDatabaseUrl(config: Config, label: DatabaseLabel): string {
  const url = label === 'orchestrator' ? config.databaseUrl : config.kmDatabaseUrl;
  if (!url) {
    throw new CliError(`${VARIABLE[label]} is not set: export the lines that 'km-hotfix dev' prints, or set it to your ${label} database (postgres://USER:PASSWORD@HOST:PORT/DATABASE)`, EXIT.refused);
  }
  return url;
}

/** The orchestrator database from DATABASE_URL, connected and migrated. */
export async function connectOrchestrator(config: Config): Promise<Sql> {
  const sql = await connectDatabase(requireDatabaseUrl(config, 'orchestrator'), 'orchestrator');
  try {
    await migrate(sql);
  } catch (err) {
    await sql.end({ timeout: 1 }).catch(() => undefined);
    throw err;
  }
  return sql;
}
