// `km-hotfix dev`'s stack, in the foreground: the Temporal dev server (SQLite
// file under DIR, so workflows survive a restart), embedded PostgreSQL under
// DIR (orchestrator + Key Manager databases), optionally a simulated fleet,
// and an in-process worker. stop() undoes it in reverse order.
import { promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { NativeConnection } from '@temporalio/worker';
import type { Sql } from 'postgres';
import { loadConfig } from '../platform/config';
import { UserError } from '../platform/errors';
import { connectDatabase } from '../store/database';
import { migrate } from '../store/migrations';
import { replaceInventory } from '../store/inventory';
import type { SimFleet } from '../simulator';
import { createKmHotfixWorker, openActivityDeps, KmHotfixWorker, OpenedDeps } from '../worker/worker';
import { ensureTemporal, startDevServer, RunningDevServer } from './temporal';
import { startEmbeddedPostgres, RunningPostgres } from './postgres';
import { freePort, portInUse } from './process';
import { generateEd25519KeyPair } from '../keymanager/keygen';
import { ensurePeople, DEMO_PEOPLE, WEB_DELEGATE } from './people';
import { NameMatchingError, parseNameMatching } from '../domain/people';
import { connectClient } from '../platform/temporal';

export const DEFAULT_WEB_PORT = 8080;

export const DEFAULT_TEMPORAL_PORT = 7233;
export const DEFAULT_POSTGRES_PORT = 5433;
export const ORCHESTRATOR_DB = 'km_hotfix';
export const KM_DB = 'key_manager';

export interface DevStackOptions {
  dataDir: string;
  sim?: { frontends: number; backends: number };
  /** Temporal gRPC port (default 7233). */
  temporalPort?: number;
  /** Temporal Web UI port (default gRPC port + 1000). */
  uiPort?: number;
  /** PostgreSQL port (default 5433, or a free one when 5433 is taken). */
  postgresPort?: number;
  /** The approvers' web page (default 8080, or a free one when 8080 is taken). */
  webPort?: number;
  log: (line: string) => void;
  /** Called when the in-process worker stops on its own (an error). */
  onWorkerError?: (err: Error) => void;
  /**
   * Called just before the worker's first connection to Temporal (where a
   * logger goes on the SDK Runtime): a Runtime installed before that keeps a
   * process whose start failed from exiting.
   */
  beforeWorker?: () => void;
}

/** What dev writes to DIR/pids.json while it runs, so tools and tests can check for leftovers. */
export interface DevPids {
  dev: number;
  temporal?: number;
  postgres?: number;
  ports: { temporal: number; ui: number; postgres: number; web?: number; sim?: number[] };
}

export interface DevStack {
  /** The environment lines printed by `km-hotfix dev` (SPEC §4). */
  env: Record<string, string>;
  uiUrl?: string;
  /** The approvers' web page. */
  webUrl?: string;
  pids: DevPids;
  stop(): Promise<void>;
}

/** DIR/ssh/id_ed25519(.pub): generated once, reused by every later start. */
export async function ensureDevSshKey(dataDir: string): Promise<{ privateKeyPath: string; publicKey: string }> {
  const dir = path.join(dataDir, 'ssh');
  const privateKeyPath = path.join(dir, 'id_ed25519');
  const publicKeyPath = `${privateKeyPath}.pub`;
  try {
    const publicKey = (await fs.readFile(publicKeyPath, 'utf8')).trim();
    await fs.access(privateKeyPath);
    return { privateKeyPath, publicKey };
  } catch {
    // not there yet: generate below
  }
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const pair = generateEd25519KeyPair('km-hotfix dev');
  await fs.writeFile(privateKeyPath, pair.private, { mode: 0o600 });
  await fs.writeFile(publicKeyPath, pair.public + '\n', { mode: 0o644 });
  return { privateKeyPath, publicKey: pair.public.trim() };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  return !zombie(pid);
}

/** An exited process not yet reaped by its (adoptive) parent counts as gone. */
function zombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return false;
  }
}

/** Refuse to share a data folder with a `km-hotfix dev` that is still running; clean up after one that was killed. */
async function checkNotRunning(pidsFile: string, dataDir: string, log: (line: string) => void): Promise<void> {
  let previous: DevPids;
  try {
    previous = JSON.parse(await fs.readFile(pidsFile, 'utf8')) as DevPids;
  } catch {
    return;
  }
  if (previous.dev !== process.pid && alive(previous.dev)) {
    throw new UserError(
      `another 'km-hotfix dev' (pid ${previous.dev}) is running on ${dataDir}: stop it (Ctrl-C) or pass another --data folder`,
      'unreachable',
    );
  }
  // The previous dev was killed without stopping its children: stop them now.
  await reapOrphan(previous.temporal, 'the Temporal dev server', path.join(dataDir, 'temporal.db'), 'SIGTERM', log);
  await reapOrphan(previous.postgres, 'PostgreSQL', path.join(dataDir, 'postgres'), 'SIGINT', log);
}

/** Stop a process left by a dead dev, but only if its command line names our data folder (pids get reused). */
async function reapOrphan(
  pid: number | undefined,
  what: string,
  marker: string,
  signal: NodeJS.Signals,
  log: (line: string) => void,
): Promise<void> {
  if (!pid || !alive(pid)) return;
  let cmdline: string;
  try {
    cmdline = (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').join(' ');
  } catch {
    return;
  }
  if (!cmdline.includes(marker)) return;
  log(`stopping ${what} (pid ${pid}) left running by a 'km-hotfix dev' that did not exit cleanly`);
  process.kill(pid, signal);
  for (let i = 0; i < 100 && alive(pid); i++) await new Promise((r) => setTimeout(r, 100));
  if (alive(pid)) process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 50 && alive(pid); i++) await new Promise((r) => setTimeout(r, 100));
}

async function assertPortFree(port: number, what: string, flag: string): Promise<void> {
  if (await portInUse(port)) {
    throw new UserError(
      `port ${port} (${what}) is already in use: stop the process that listens on it, or pass ${flag} with a free port`,
      'unreachable',
    );
  }
}

/** A failure while starting: one line, exit 3 (the stack could not be brought up). */
/** KM_HOTFIX_WEB_NAMES, or a refusal in one line. */
function webNames(value: string | undefined): ReturnType<typeof parseNameMatching> {
  try {
    return parseNameMatching(value);
  } catch (err) {
    if (err instanceof NameMatchingError) throw new UserError(err.message, 'refused');
    throw err;
  }
}

function startFailure(err: unknown): UserError {
  if (err instanceof UserError) return err;
  const message = (err instanceof Error ? err.message : String(err)).split('\n')[0];
  return new UserError(message, 'unreachable');
}

export async function startDevStack(opts: DevStackOptions): Promise<DevStack> {
  const log = opts.log;
  const dataDir = path.resolve(opts.dataDir);
  // 0755: PostgreSQL runs as its own user when we are root and must traverse it.
  await fs.mkdir(dataDir, { recursive: true, mode: 0o755 });
  const pidsFile = path.join(dataDir, 'pids.json');
  await checkNotRunning(pidsFile, dataDir, log);

  const temporalPort = opts.temporalPort ?? DEFAULT_TEMPORAL_PORT;
  const uiPort = opts.uiPort ?? temporalPort + 1000;
  const pids: DevPids = { dev: process.pid, ports: { temporal: temporalPort, ui: uiPort, postgres: 0 } };
  const writePids = () => fs.writeFile(pidsFile, JSON.stringify(pids, null, 2) + '\n');

  // Everything started so far, stopped in reverse order (also when start fails midway).
  const undo: { what: string; fn: () => Promise<void> }[] = [];
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      for (const step of undo.splice(0).reverse()) {
        try {
          await step.fn();
        } catch (err) {
          log(`while stopping ${step.what}: ${(err as Error).message.split('\n')[0]}`);
        }
      }
      await fs.unlink(pidsFile).catch(() => undefined);
    })();
    return stopping;
  };

  try {
    const binary = await ensureTemporal(log).catch((err: Error) => {
      throw new UserError(err.message, 'unreachable');
    });
    await assertPortFree(temporalPort, 'Temporal gRPC', '--temporal-port');
    await assertPortFree(uiPort, 'Temporal Web UI', '--ui-port');
    if (opts.postgresPort !== undefined) await assertPortFree(opts.postgresPort, 'PostgreSQL', '--postgres-port');
    if (opts.webPort !== undefined) await assertPortFree(opts.webPort, 'the web page', '--web-port');
    await writePids();

    // 1. Temporal dev server.
    const t0 = Date.now();
    const temporal: RunningDevServer = await startDevServer({
      binary,
      port: temporalPort,
      uiPort,
      dbFile: path.join(dataDir, 'temporal.db'),
      logFile: path.join(dataDir, 'temporal.log'),
    });
    undo.push({ what: 'the Temporal dev server', fn: () => temporal.stop() });
    pids.temporal = temporal.pid;
    await writePids();
    log(`Temporal dev server on ${temporal.address}, Web UI ${temporal.uiUrl ?? '(none)'} (${Date.now() - t0} ms)`);

    // 2. Embedded PostgreSQL, persistent under DIR/postgres.
    const t1 = Date.now();
    const pgPort =
      opts.postgresPort ?? ((await portInUse(DEFAULT_POSTGRES_PORT)) ? await freePort() : DEFAULT_POSTGRES_PORT);
    const pg: RunningPostgres = await startEmbeddedPostgres({ dataDir: path.join(dataDir, 'postgres'), port: pgPort });
    undo.push({ what: 'PostgreSQL', fn: () => pg.stop() });
    pids.postgres = pg.pid;
    pids.ports.postgres = pgPort;
    await writePids();
    await pg.ensureDatabase(ORCHESTRATOR_DB);
    await pg.ensureDatabase(KM_DB);
    const env: Record<string, string> = {
      TEMPORAL_ADDRESS: temporal.address,
      TEMPORAL_NAMESPACE: 'default',
      DATABASE_URL: pg.url(ORCHESTRATOR_DB),
      KM_DATABASE_URL: pg.url(KM_DB),
    };
    const orchestrator: Sql = await connectDatabase(env.DATABASE_URL, 'orchestrator', { max: 2 });
    undo.push({ what: 'the orchestrator database client', fn: () => orchestrator.end({ timeout: 5 }) });
    await migrate(orchestrator);
    log(
      `PostgreSQL on 127.0.0.1:${pgPort}: databases ${ORCHESTRATOR_DB} (migrated) and ${KM_DB} (${Date.now() - t1} ms)`,
    );

    // 3. The simulated fleet, imported as the inventory.
    if (opts.sim) {
      const t2 = Date.now();
      const key = await ensureDevSshKey(dataDir);
      let simulator: typeof import('../simulator');
      try {
        simulator = await import('../simulator');
      } catch (err) {
        throw new UserError(
          `the Key Manager simulator is not available in this build (${(err as Error).message.split('\n')[0]}): run 'npm run build', or start without --sim`,
          'failed',
        );
      }
      const fleet: SimFleet = await simulator.startSimFleet({
        frontends: opts.sim.frontends,
        backends: opts.sim.backends,
        kmDatabaseUrl: env.KM_DATABASE_URL,
        authorizedKey: key.publicKey,
        // The control API lets `km-hotfix sim fault` break a server while you watch.
        controlPort: 0,
      });
      undo.push({ what: 'the simulated fleet', fn: () => fleet.stop() });
      const inventory = fleet.inventory();
      await replaceInventory(orchestrator, inventory);
      pids.ports.sim = inventory.map((s) => s.port);
      await writePids();
      env.KM_SSH_KEY = key.privateKeyPath;
      if (fleet.controlUrl) env.KM_SIM_CONTROL = fleet.controlUrl;
      log(
        `simulated fleet: ${inventory.map((s) => `${s.name}@${s.host}:${s.port}`).join(', ')} (imported; ${Date.now() - t2} ms)`,
      );
    }

    // 4. Who may sign decisions: the given signers file, or demo people (alice signs by default).
    let webKey = process.env.KM_HOTFIX_WEB_SIGNING_KEY || undefined;
    if (!process.env.KM_HOTFIX_ALLOWED_SIGNERS) {
      const people = await ensurePeople(dataDir, DEMO_PEOPLE, [WEB_DELEGATE]);
      env.KM_HOTFIX_ALLOWED_SIGNERS = people.allowedSigners;
      env.KM_HOTFIX_SIGNING_KEY = people.keys.alice!;
      webKey ??= people.keys[WEB_DELEGATE];
      log(
        `demo people ${DEMO_PEOPLE.join(', ')}: keys under ${path.join(dataDir, 'keys')}, listed in ${people.allowedSigners}; you sign as alice (KM_HOTFIX_SIGNING_KEY)`,
      );
    }

    // 5. The approvers' web page; on dev, the proxy is anything on this machine (set X-Forwarded-User yourself).
    const webConfig = loadConfig({ ...process.env, ...env });
    const webPort = opts.webPort ?? ((await portInUse(DEFAULT_WEB_PORT)) ? 0 : DEFAULT_WEB_PORT);
    const webClient = await connectClient(webConfig);
    undo.push({ what: "the web page's Temporal client", fn: () => webClient.close() });
    const { startWebServer } = await import('../web/server');
    const web = await startWebServer({
      client: webClient.client,
      orchestrator,
      port: webPort,
      identityHeader: webConfig.web.identityHeader,
      trustedProxies: webConfig.web.trustedProxies.length > 0 ? webConfig.web.trustedProxies : ['127.0.0.1', '::1'],
      ...(webKey ? { signingKey: webKey } : {}),
      ...(webConfig.allowedSigners ? { allowedSigners: webConfig.allowedSigners } : {}),
      names: webNames(webConfig.web.names),
    });
    undo.push({ what: 'the web page', fn: () => web.close() });
    pids.ports.web = web.port;
    await writePids();
    env.KM_HOTFIX_WEB_URL = web.url;
    log(
      `approvers' web page on ${web.url} (a person is named by the ${webConfig.web.identityHeader} header from this machine)`,
    );

    // 6. The worker, in this process; it inherits our environment (KM_SSH_KEY, task queue, signers).
    const t3 = Date.now();
    const config = loadConfig({ ...process.env, ...env });
    const opened: OpenedDeps = await openActivityDeps(config, { requireSsh: false });
    undo.push({ what: 'the worker database clients', fn: () => opened.close() });
    opts.beforeWorker?.();
    const connection = await NativeConnection.connect({ address: temporal.address });
    undo.push({ what: 'the worker connection', fn: () => connection.close() });
    const w: KmHotfixWorker = await createKmHotfixWorker({
      connection,
      namespace: config.temporalNamespace,
      taskQueue: config.taskQueue,
      activityDeps: opened.deps,
    });
    undo.push({ what: 'the activities', fn: () => w.closeActivities() });
    let stoppingWorker = false;
    const running = w.worker.run().catch((err: Error) => {
      if (!stoppingWorker) opts.onWorkerError?.(err);
    });
    undo.push({
      what: 'the worker',
      fn: async () => {
        stoppingWorker = true;
        if (w.worker.getState() === 'RUNNING') w.worker.shutdown();
        await running;
      },
    });
    log(
      `worker polling task queue '${config.taskQueue}' in namespace '${config.temporalNamespace}' (${Date.now() - t3} ms)`,
    );
    return { env, uiUrl: temporal.uiUrl, webUrl: env.KM_HOTFIX_WEB_URL, pids, stop };
  } catch (err) {
    await stop();
    throw startFailure(err);
  }
}
