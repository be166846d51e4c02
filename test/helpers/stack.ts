// The shared test stack: one real Temporal dev server and one embedded
// PostgreSQL per mocha run (random free ports, fresh folders), started by the
// root hooks in test/setup.ts. Tests create their own databases in it.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import postgres, { Sql } from 'postgres';
import { startEmbeddedPostgres, RunningPostgres } from '../../stack/postgres';
import { ensureTemporal, startDevServer, RunningDevServer } from '../../stack/temporal';
import { freePort } from '../../stack/process';

export interface TestStack {
  temporal: RunningDevServer;
  postgres: RunningPostgres;
  /** Root folder of this run's scratch files (removed at the end). */
  dir: string;
  temporalBinary: string;
}

let current: TestStack | undefined;
const openSql: Sql[] = [];

export function testStack(): TestStack {
  if (!current) throw new Error('the test stack is not started: run tests through mocha with test/setup');
  return current;
}

export async function startTestStack(): Promise<TestStack> {
  // Readable parents: PostgreSQL runs as its own user when we are root.
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'km-hotfix-test-'));
  await fs.chmod(dir, 0o755);
  const temporalBinary = await ensureTemporal((l) => console.error(l));
  const [tPort, pPort] = [await freePort(), await freePort()];
  const [temporal, pg] = await Promise.all([
    startDevServer({ binary: temporalBinary, port: tPort, headless: true, logFile: path.join(dir, 'temporal.log') }),
    startEmbeddedPostgres({ dataDir: path.join(dir, 'pg', 'data'), port: pPort }),
  ]);
  current = { temporal, postgres: pg, dir, temporalBinary };
  return current;
}

export async function stopTestStack(): Promise<void> {
  await Promise.all(openSql.splice(0).map((s) => s.end({ timeout: 2 }).catch(() => undefined)));
  if (!current) return;
  const { temporal, postgres: pg, dir } = current;
  current = undefined;
  await Promise.all([temporal.stop(), pg.stop()]);
  if (!process.env.KM_HOTFIX_KEEP_TEST_DIR) await fs.rm(dir, { recursive: true, force: true });
}

/** A fresh, empty database in the shared cluster; returns its URL. */
export async function freshDatabase(prefix: string): Promise<string> {
  const name = `${prefix}_${randomBytes(4).toString('hex')}`.toLowerCase().replace(/[^a-z0-9_]/g, '_');
  await testStack().postgres.ensureDatabase(name);
  return testStack().postgres.url(name);
}

/** A postgres client closed automatically after the run. */
export function sqlFor(url: string): Sql {
  const sql = postgres(url, { max: 4, onnotice: () => undefined });
  openSql.push(sql);
  return sql;
}

/** A scratch folder under the run's folder. */
export async function scratchDir(name: string): Promise<string> {
  const d = path.join(testStack().dir, `${name}-${randomBytes(3).toString('hex')}`);
  await fs.mkdir(d, { recursive: true, mode: 0o755 });
  return d;
}
