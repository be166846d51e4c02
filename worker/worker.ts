// The km-hotfix worker: the project's workflows and activities on one task
// queue. Used in-process by `km-hotfix dev` and as `km-hotfix worker`.
import { promises as fs } from 'node:fs';
import { NativeConnection, Worker, WorkerDeploymentOptions, WorkflowBundleOption } from '@temporalio/worker';
import { createActivities, ActivityDeps } from '../activities';
import { MAX_HEARTBEAT_THROTTLE_MS } from '../domain/rollout';
import type { Config } from '../platform/config';
import { UserError } from '../platform/errors';
import { openDatabases } from '../store/database';
import { readAllowedSigners, AllowedSignersError } from '../signing/allowed-signers';

export interface KmHotfixWorkerOptions {
  connection: NativeConnection;
  namespace: string;
  taskQueue: string;
  activityDeps: ActivityDeps;
  /** A prebuilt bundle (tests, images); otherwise workflows/ is bundled at start. */
  workflowBundle?: WorkflowBundleOption;
  identity?: string;
}

export interface KmHotfixWorker {
  worker: Worker;
  /** Closes what the activities hold (SSH pool); call after the worker has stopped. */
  closeActivities: () => Promise<void>;
}

/** KM_HOTFIX_ACTIVITY_SLOTS, default 250. */
export function activitySlots(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.KM_HOTFIX_ACTIVITY_SLOTS;
  if (raw === undefined || raw === '') return 250;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 10_000)
    throw new UserError(`KM_HOTFIX_ACTIVITY_SLOTS must be a whole number from 1 to 10000 (got '${raw}')`, 'refused');
  return n;
}

/**
 * Worker Versioning (README, "Changing a workflow safely"): with
 * KM_HOTFIX_BUILD_ID set, the worker is version KM_HOTFIX_DEPLOYMENT
 * (default km-hotfix) / that build id, and every workflow it starts is pinned
 * to it: a rollout finishes on the code it started with, whatever is deployed
 * meanwhile. Unset (dev, tests): an unversioned worker.
 */
export function deploymentOptions(env: NodeJS.ProcessEnv = process.env): WorkerDeploymentOptions | undefined {
  const buildId = env.KM_HOTFIX_BUILD_ID?.trim();
  if (!buildId) return undefined;
  const deploymentName = env.KM_HOTFIX_DEPLOYMENT?.trim() || 'km-hotfix';
  const valid = /^[A-Za-z0-9][A-Za-z0-9._:+-]{0,254}$/;
  if (!valid.test(buildId))
    throw new UserError(
      `KM_HOTFIX_BUILD_ID must be letters, digits and . _ : + - (at most 255), e.g. the release or the commit (got '${buildId}')`,
      'refused',
    );
  if (!valid.test(deploymentName))
    throw new UserError(
      `KM_HOTFIX_DEPLOYMENT must be letters, digits and . _ : + - (at most 255) (got '${deploymentName}')`,
      'refused',
    );
  return { version: { deploymentName, buildId }, useWorkerVersioning: true, defaultVersioningBehavior: 'PINNED' };
}

/** Activity pollers: enough that a window of 50 servers starts without queueing behind a few polls. */
const ACTIVITY_POLLS = 50;

export async function createKmHotfixWorker(opts: KmHotfixWorkerOptions): Promise<KmHotfixWorker> {
  const slots = activitySlots();
  const versioning = deploymentOptions();
  const { activities, close } = createActivities(opts.activityDeps);
  const code = opts.workflowBundle
    ? { workflowBundle: opts.workflowBundle }
    : { workflowsPath: require.resolve('../workflows') };
  const worker = await Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: opts.taskQueue,
    ...code,
    activities,
    ...(opts.identity ? { identity: opts.identity } : {}),
    ...(versioning ? { workerDeploymentOptions: versioning } : {}),
    // Each server step holds a slot for its whole SSH command: the widest batch
    // in use needs as many (bench/results/rollout-scale.md: 100 → 250 cut a
    // 2,000-server fan-out from 45 s to 27 s).
    maxConcurrentActivityTaskExecutions: slots,
    // A window's servers start together: with the default 5-10 pollers the
    // last of 50 waited ~100 ms for a poll (schedule-to-start p90, 200/50).
    maxConcurrentActivityTaskPolls: Math.min(slots, ACTIVITY_POLLS),
    // The activities a workflow task schedules (a window's next servers) come
    // back with its completion when the server allows eager execution.
    maxEagerActivityReservationsPerWorkflowTask: Math.min(slots, ACTIVITY_POLLS),
    // The workflow's next task goes first to the worker that ran its last one
    // (its "sticky" cache). When that worker is dead, Temporal moves the task
    // to the shared queue after this long (default 10 s, measured 10-11 s of
    // stall in test/production/). A live worker picks its sticky tasks up in
    // milliseconds; one slower than 3 s only costs another worker a replay of
    // the history (at most ~1,800 events, workflows/steps.ts).
    stickyQueueScheduleToStartTimeout: '3s',
    // Heartbeats go out at most every 2 s: well inside the 5 s heartbeat
    // timeout of server steps (workflows/steps.ts HEARTBEAT_TIMEOUT).
    maxHeartbeatThrottleInterval: MAX_HEARTBEAT_THROTTLE_MS,
    // Running activities get this long to finish on shutdown, then are cancelled.
    shutdownGraceTime: '10s',
    shutdownForceTime: '20s',
  });
  return { worker, closeActivities: close };
}

/**
 * Run until SIGINT/SIGTERM: then `worker.shutdown()`, wait for it to drain,
 * and run `cleanup` (close clients). Resolves when everything is closed.
 */
export async function runWorkerUntilSignal(
  worker: Worker,
  cleanup: () => Promise<void>,
  log: (line: string) => void = () => undefined,
  onStopping: () => void = () => undefined,
): Promise<void> {
  const onSignal = (signal: NodeJS.Signals) => {
    log(`${signal}: stopping the worker (running activities get 10 s to finish)`);
    onStopping();
    if (worker.getState() === 'RUNNING') worker.shutdown();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await worker.run();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
  }
}

/** SSH credentials for the activities: KM_SSH_KEY (a file) or the ssh-agent. Exit 2 when neither. */
export async function loadSshCredentials(config: Config, required: boolean): Promise<ActivityDeps['ssh']> {
  if (config.sshKeyPath) {
    try {
      return {
        privateKey: await fs.readFile(config.sshKeyPath),
        ...(config.sshAgent ? { agent: config.sshAgent } : {}),
      };
    } catch (err) {
      throw new UserError(
        `KM_SSH_KEY=${config.sshKeyPath} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): point it at the SSH private key for the Key Manager servers`,
        'refused',
      );
    }
  }
  if (config.sshAgent) return { agent: config.sshAgent };
  if (required)
    throw new UserError(
      'KM_SSH_KEY is not set and no ssh-agent (SSH_AUTH_SOCK): set KM_SSH_KEY to the SSH private key file for the Key Manager servers, or start ssh-agent',
      'refused',
    );
  return {};
}

/**
 * Connections per database in a worker: every server step in flight reads the
 * Key Manager database and writes the ledger, and with the default 5 a window
 * of 50 queued for them (p90 17 ms per query against <1 ms, 200/50).
 */
const WORKER_DB_CONNECTIONS = 20;

export interface OpenedDeps {
  deps: ActivityDeps;
  close: () => Promise<void>;
}

/**
 * Everything the activities need, from the configuration: the orchestrator
 * database (migrated), the Key Manager database and SSH credentials. Missing
 * settings are checked before anything is opened.
 */
export async function openActivityDeps(config: Config, opts: { requireSsh: boolean }): Promise<OpenedDeps> {
  const missing: string[] = [];
  if (!config.databaseUrl) missing.push('DATABASE_URL');
  if (!config.kmDatabaseUrl) missing.push('KM_DATABASE_URL');
  if (opts.requireSsh && !config.sshKeyPath && !config.sshAgent) missing.push('KM_SSH_KEY (or SSH_AUTH_SOCK)');
  if (!config.allowedSigners) missing.push('KM_HOTFIX_ALLOWED_SIGNERS');
  if (missing.length === 1 && !config.allowedSigners) await checkAllowedSigners(config); // its own, more helpful line
  if (missing.length > 0) {
    const names = missing.length === 1 ? missing[0] : `${missing.slice(0, -1).join(', ')} and ${missing.at(-1)}`;
    throw new UserError(
      `${names} ${missing.length === 1 ? 'is' : 'are'} not set: set ${missing.length === 1 ? 'it' : 'them'} (see the README, "Configuration"; 'km-hotfix dev' prints values for a local stack)`,
      'refused',
    );
  }
  const allowedSigners = await checkAllowedSigners(config);
  const ssh = await loadSshCredentials(config, opts.requireSsh);
  const db = await openDatabases(config, { kmMax: WORKER_DB_CONNECTIONS, orchestratorMax: WORKER_DB_CONNECTIONS });
  // Open the connections now: opened on demand, a window's first servers
  // waited on 40 password handshakes at once (first apply 76-254 ms after the start, 200/50).
  const warm = (sql: typeof db.km) => Promise.all(Array.from({ length: WORKER_DB_CONNECTIONS }, () => sql`SELECT 1`));
  await Promise.all([warm(db.orchestrator), warm(db.km)]).catch(() => undefined);
  const notify = {
    ...(config.webhookUrl ? { webhookUrl: config.webhookUrl } : {}),
    ...(config.web.url ? { webUrl: config.web.url } : {}),
  };
  return { deps: { orchestrator: db.orchestrator, km: db.km, ssh, allowedSigners, notify }, close: db.close };
}

/**
 * A worker without a trust root could not check a single decision: refuse to
 * start (one line), and refuse a file that does not parse or names nobody.
 * The activities read it again for every check (a deleted line revokes at once).
 */
export async function checkAllowedSigners(config: Config): Promise<string> {
  const file = config.allowedSigners;
  if (!file) {
    throw new UserError(
      'KM_HOTFIX_ALLOWED_SIGNERS is not set: point it at an OpenSSH allowed_signers file that lists who may sign decisions, one \'NAME ssh-ed25519 AAAA...\' line per person (README, "Signed decisions")',
      'refused',
    );
  }
  try {
    const signers = await readAllowedSigners(file);
    if (!signers.some((s) => s.name !== null))
      throw new AllowedSignersError(`${file} lists nobody: add one 'NAME ssh-ed25519 AAAA...' line per person`);
  } catch (err) {
    if (err instanceof AllowedSignersError) throw new UserError(`KM_HOTFIX_ALLOWED_SIGNERS: ${err.message}`, 'refused');
    throw err;
  }
  return file;
}
