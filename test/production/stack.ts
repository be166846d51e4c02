// The production topology of docker-compose.yml, without Docker: one
// embedded PostgreSQL (Temporal's two databases and, per test, the
// orchestrator's and the Key Manager's), Temporal's schema set up by
// deploy/temporal/setup-schema.sh with the Go-built temporal-sql-tool, and the
// Go-built Temporal server of the pinned version on it. Started once per run
// by the root hooks in test/production/setup.ts.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { startEmbeddedPostgres, RunningPostgres } from '../../stack/postgres';
import { ensureTemporal } from '../../stack/temporal';
import { freePort } from '../../stack/process';
import {
  ensureTemporalServer,
  setupTemporalSchema,
  startTemporalServer,
  RunningTemporalServer,
  SqlEndpoint,
  TemporalServerTools,
} from '../../stack/temporal-server';

export interface ProductionStack {
  postgres: RunningPostgres;
  /** Where Temporal's databases live (the user compose uses). */
  sql: SqlEndpoint;
  tools: TemporalServerTools;
  temporal: RunningTemporalServer;
  temporalCli: string;
  dir: string;
  /** What setup-schema.sh printed on its first run. */
  schemaLog: string;
}

let current: ProductionStack | undefined;

export function productionStack(): ProductionStack {
  if (!current) throw new Error('the production stack is not started: run through `npm run test:production`');
  return current;
}

const log = (line: string) => console.error(`  [production] ${line}`);

export async function startProductionStack(): Promise<ProductionStack> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'km-hotfix-prod-'));
  await fs.chmod(dir, 0o755);
  let t = Date.now();
  const tools = await ensureTemporalServer(log);
  log(`temporal server ${tools.version} ready (${((Date.now() - t) / 1000).toFixed(1)} s)`);
  const temporalCli = await ensureTemporal(log);
  const sql: SqlEndpoint = { host: '127.0.0.1', port: await freePort(), user: 'temporal', password: 'temporal' };
  const pg = await startEmbeddedPostgres({
    dataDir: path.join(dir, 'pg', 'data'),
    port: sql.port,
    user: sql.user,
    password: sql.password,
  });
  try {
    t = Date.now();
    const schemaLog = await setupTemporalSchema(tools, sql);
    log(`setup-schema.sh: ${((Date.now() - t) / 1000).toFixed(1)} s`);
    t = Date.now();
    const temporal = await startTemporalServer({ tools, db: sql, dir: path.join(dir, 'temporal'), temporalCli });
    log(
      `temporal server on ${temporal.address} answered and has its namespace after ${((Date.now() - t) / 1000).toFixed(1)} s`,
    );
    current = { postgres: pg, sql, tools, temporal, temporalCli, dir, schemaLog };
    return current;
  } catch (err) {
    await pg.stop();
    throw err;
  }
}

export async function stopProductionStack(): Promise<void> {
  if (!current) return;
  const { temporal, postgres, dir } = current;
  current = undefined;
  await temporal.stop();
  await postgres.stop();
  if (!process.env.KM_HOTFIX_KEEP_TEST_DIR) await fs.rm(dir, { recursive: true, force: true });
  else log(`kept ${dir}`);
}

/** A fresh database in the stack's PostgreSQL; returns its URL. */
export async function freshDatabase(prefix: string): Promise<string> {
  const name = `${prefix}_${randomBytes(4).toString('hex')}`;
  await productionStack().postgres.ensureDatabase(name);
  return productionStack().postgres.url(name);
}

export async function scratchDir(name: string): Promise<string> {
  const d = path.join(productionStack().dir, `${name}-${randomBytes(3).toString('hex')}`);
  await fs.mkdir(d, { recursive: true, mode: 0o755 });
  return d;
}
