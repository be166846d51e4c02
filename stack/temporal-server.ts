// The Temporal server that docker-compose.yml runs (not the dev server), on
// this machine: the pinned version (deploy/temporal/VERSION, the one place
// that records it) built from Go source by deploy/temporal/build.sh, its
// schema set up by deploy/temporal/setup-schema.sh, and the server started on
// PostgreSQL with free ports. Used by the production topology tests.
import { spawn, ChildProcess } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import YAML from 'yaml';
import { Connection } from '@temporalio/client';
import { freePort, runChild } from './process';
import { PROJECT_ROOT } from './temporal';

const DEPLOY_DIR = path.join(PROJECT_ROOT, 'deploy', 'temporal');

/** The pinned Temporal server version, read from deploy/temporal/VERSION. */
export function temporalServerVersion(): string {
  const v = readFileSync(path.join(DEPLOY_DIR, 'VERSION'), 'utf8').trim();
  if (!/^\d+\.\d+\.\d+$/.test(v))
    throw new Error(`deploy/temporal/VERSION must hold a version such as 1.31.0 (got '${v}')`);
  return v;
}

export interface TemporalServerTools {
  version: string;
  server: string;
  sqlTool: string;
  /** The module's schema/ folder (what admin-tools has as /etc/temporal/schema). */
  schemaDir: string;
  /** The module's config/ folder (development-postgres12.yaml and friends). */
  configDir: string;
}

export function temporalServerTools(version = temporalServerVersion()): TemporalServerTools {
  const dir = path.join(PROJECT_ROOT, '.tools', `temporal-server-${version}`);
  return {
    version,
    server: path.join(dir, 'temporal-server'),
    sqlTool: path.join(dir, 'temporal-sql-tool'),
    schemaDir: path.join(dir, 'schema'),
    configDir: path.join(dir, 'config'),
  };
}

/** Build the pinned server and SQL tool unless built (deploy/temporal/build.sh); its output goes to `log`. */
export async function ensureTemporalServer(
  log: (line: string) => void = () => undefined,
): Promise<TemporalServerTools> {
  const script = path.join(DEPLOY_DIR, 'build.sh');
  await new Promise<void>((resolve, reject) => {
    const child = spawn('bash', [script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let tail = '';
    const onData = (d: Buffer) => {
      for (const line of d.toString().split('\n').filter(Boolean)) {
        log(line);
        tail = line;
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`${script} exited ${code}: ${tail}`))));
  });
  return temporalServerTools();
}

export interface SqlEndpoint {
  host: string;
  port: number;
  user: string;
  password: string;
}

/** deploy/temporal/setup-schema.sh, as compose runs it, with this tool and schema folder. */
export async function setupTemporalSchema(tools: TemporalServerTools, db: SqlEndpoint): Promise<string> {
  const r = await runChild('sh', [path.join(DEPLOY_DIR, 'setup-schema.sh')], {
    env: {
      PATH: process.env.PATH,
      SQL_TOOL: tools.sqlTool,
      SCHEMA_DIR: tools.schemaDir,
      SQL_HOST: db.host,
      SQL_PORT: String(db.port),
      SQL_USER: db.user,
      SQL_PASSWORD: db.password,
    },
  });
  return r.stdout + r.stderr;
}

export interface TemporalServerOptions {
  tools: TemporalServerTools;
  db: SqlEndpoint;
  /** Folder for the generated config and the log. */
  dir: string;
  namespace?: string;
  /** The `temporal` CLI, to create the namespace as compose's temporal-create-namespace does. */
  temporalCli: string;
}

export interface RunningTemporalServer {
  address: string;
  pid(): number | undefined;
  logFile: string;
  /** SIGTERM (then SIGKILL after 15 s) and wait for the exit. */
  stop(): Promise<void>;
  /** Start it again with the same config and ports (after stop). */
  start(): Promise<void>;
}

/** The parts of the server's config file that are changed here. */
interface ServerConfig {
  persistence: { datastores: Record<string, { sql: Record<string, unknown> }> };
  global: { pprof?: { port: number }; metrics?: unknown };
  services: Record<string, { rpc: { grpcPort: number; membershipPort: number; httpPort?: number } }>;
  clusterMetadata: { clusterInformation: { active: { rpcAddress: string } } };
  dynamicConfigClient: { filepath: string };
  log: { stdout: boolean; level: string };
}

/**
 * The module's development-postgres12 config pointed at `db`, with free
 * ports, compose's dynamic config (absolute path) and no metrics listener.
 */
async function writeConfig(o: TemporalServerOptions): Promise<{ configFile: string; frontendPort: number }> {
  const base = YAML.parse(
    await fs.readFile(path.join(o.tools.configDir, 'development-postgres12.yaml'), 'utf8'),
  ) as ServerConfig;
  for (const store of Object.values(base.persistence.datastores)) {
    store.sql.connectAddr = `${o.db.host}:${o.db.port}`;
    store.sql.user = o.db.user;
    store.sql.password = o.db.password;
  }
  const ports = async () => freePort();
  for (const svc of ['frontend', 'history', 'matching', 'worker']) {
    const rpc = base.services[svc].rpc;
    rpc.grpcPort = await ports();
    rpc.membershipPort = await membershipPort();
    if ('httpPort' in rpc) rpc.httpPort = await ports();
  }
  const frontendPort = base.services.frontend.rpc.grpcPort;
  base.global.pprof = { port: await ports() };
  delete base.global.metrics;
  base.clusterMetadata.clusterInformation.active.rpcAddress = `127.0.0.1:${frontendPort}`;
  base.dynamicConfigClient.filepath = path.join(DEPLOY_DIR, 'dynamicconfig', 'development-sql.yaml');
  base.log = { stdout: true, level: 'warn' };
  await fs.mkdir(o.dir, { recursive: true });
  const configFile = path.join(o.dir, 'temporal-server.yaml');
  await fs.writeFile(configFile, YAML.stringify(base));
  return { configFile, frontendPort };
}

export async function startTemporalServer(o: TemporalServerOptions): Promise<RunningTemporalServer> {
  const namespace = o.namespace ?? 'default';
  const { configFile, frontendPort } = await writeConfig(o);
  const address = `127.0.0.1:${frontendPort}`;
  const logFile = path.join(o.dir, 'temporal-server.log');
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const killOnExit = () => {
    child?.kill('SIGKILL');
  };
  process.on('exit', killOnExit);

  async function start(): Promise<void> {
    const log = await fs.open(logFile, 'a');
    const c = spawn(o.tools.server, ['--config-file', configFile, '--allow-no-auth', 'start'], {
      stdio: ['ignore', log.fd, log.fd],
    });
    await log.close();
    child = c;
    exited = new Promise((resolve) => c.once('exit', () => resolve()));
    c.once('error', () => undefined);
    const deadline = Date.now() + 90_000;
    for (;;) {
      if (c.exitCode !== null || c.signalCode !== null) {
        throw new Error(`the Temporal server exited during start (see ${logFile}): ${await lastError(logFile)}`);
      }
      if (await answers(address)) return;
      if (Date.now() > deadline)
        throw new Error(`the Temporal server did not answer on ${address} within 90 s (see ${logFile})`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async function stop(): Promise<void> {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }

  await start();
  try {
    // As compose's temporal-create-namespace: describe, else create.
    const cli = (args: string[]) => runChild(o.temporalCli, [...args, '--address', address]);
    await cli(['operator', 'namespace', 'describe', '-n', namespace]).catch(() =>
      cli(['operator', 'namespace', 'create', '-n', namespace]),
    );
    // A new namespace reaches every service's cache within seconds: wait until a call that needs it succeeds.
    await waitForNamespace(address, namespace);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    address,
    logFile,
    pid: () => child?.pid,
    stop,
    async start() {
      await start();
      await waitForNamespace(address, namespace);
    },
  };
}

/**
 * A free port below 32768: Temporal stores membership ports in a PostgreSQL
 * smallint, and the kernel's ephemeral ports (what port 0 gives) start at 32768.
 */
async function membershipPort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (await canListen(port)) return port;
  }
  throw new Error('no free port between 20000 and 32000');
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** The server logs JSON lines: the last error's message, without its stack trace. */
async function lastError(logFile: string): Promise<string> {
  const text = await fs.readFile(logFile, 'utf8').catch(() => '');
  for (const line of text.trim().split('\n').reverse()) {
    try {
      const e = JSON.parse(line) as { level?: string; msg?: string; error?: string };
      if (e.level === 'error' || e.level === 'fatal') return `${e.msg ?? ''}${e.error ? `: ${e.error}` : ''}`;
    } catch {
      if (line.trim()) return line.slice(0, 300);
    }
  }
  return 'no log';
}

async function answers(address: string): Promise<boolean> {
  try {
    const conn = await Connection.connect({ address, connectTimeout: 1000 });
    try {
      await conn.workflowService.getSystemInfo({});
      return true;
    } finally {
      await conn.close();
    }
  } catch {
    return false;
  }
}

async function waitForNamespace(address: string, namespace: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  const conn = await Connection.connect({ address, connectTimeout: 2000 });
  try {
    for (;;) {
      try {
        await conn.workflowService.listWorkflowExecutions({ namespace, pageSize: 1 });
        await conn.workflowService.describeTaskQueue({
          namespace,
          taskQueue: { name: 'km-hotfix-ready-check' },
          taskQueueType: 1,
        });
        return;
      } catch (err) {
        if (Date.now() > deadline)
          throw new Error(`namespace ${namespace} not usable on ${address} within 60 s: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  } finally {
    await conn.close();
  }
}
