// A whole rollout on a large simulated fleet: its own Temporal dev server and
// embedded PostgreSQL, N simulated Key Manager servers (in a child process, so
// the worker's memory is measured alone), the real worker, a backend hotfix
// approved automatically at the gate. Measures wall time per phase, history
// events of every execution, worker RSS and open files, and checks the Key
// Manager database says every server is patched. Prints one JSON line.
//   node dist/bench/rollout-scale.js [--servers 2000] [--batch 10%] [--fast]
//     [--apply-ms 500] [--restart-ms 1000] [--frontends N] [--activity-slots 100]
//     [--slice N] [--timeout-min 20]
// Everything listens on 127.0.0.1 only.
import { fork, type ChildProcess } from 'node:child_process';
import { promises as fs, readdirSync, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import postgres, { type Sql } from 'postgres';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { tsToMs } from '@temporalio/common';
import { bundleWorkflowCode, DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { ensureTemporal, startDevServer, type RunningDevServer } from '../stack/temporal';
import { startEmbeddedPostgres, type RunningPostgres } from '../stack/postgres';
import { freePort } from '../stack/process';
import { migrate } from '../store/migrations';
import { replaceInventory } from '../store/inventory';
import { storeHotfixFile } from '../store/hotfix-files';
import { createActivities } from '../activities';
import { makeHotfix, startSimFleet } from '../simulator';
import { generateEd25519KeyPair } from '../keymanager/keygen';
import type { FleetServer } from '../domain/fleet';
import { parseBatch } from '../domain/plan';
import type { RolloutInput, RolloutStatus } from '../domain/messages/rollout';
import { approveUpdate, statusQuery, WORKFLOW_TYPES } from '../domain/messages/rollout';
import { DEFAULT_TIMING } from '../workflows/steps';
import { ensurePeople } from '../stack/people';
import { decisionMessage, Decision, drainedFacts } from '../domain/decision';
import { keyFileSigner } from '../signing/signer';
import { signMessage } from '../signing/sshsig';

/** A decision made now, signed with a key file (the bench's people are made under its data folder). */
async function signed(keyFile: string, d: Omit<Decision, 'at' | 'comment'> & { comment?: string }) {
  const message = decisionMessage({ ...d, comment: d.comment ?? '', at: new Date().toISOString() });
  return { message, signature: await signMessage(await keyFileSigner(keyFile), message) };
}

const HISTORY_WARN = 10_240;
const FLEET_CHILD = '--fleet-child';

interface Options {
  servers: number;
  frontends: number;
  batch: string;
  applyMs: number;
  restartMs: number;
  fast: boolean;
  activitySlots: number;
  slice: number;
  timeoutMs: number;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      servers: { type: 'string', default: '2000' },
      frontends: { type: 'string' },
      batch: { type: 'string', default: '10%' },
      fast: { type: 'boolean', default: false },
      'apply-ms': { type: 'string' },
      'restart-ms': { type: 'string' },
      'activity-slots': { type: 'string', default: '100' },
      slice: { type: 'string', default: String(DEFAULT_TIMING.sliceServers) },
      'timeout-min': { type: 'string', default: '20' },
    },
    strict: true,
  });
  const int = (name: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be a whole number >= ${min} (got ${v})`);
    return n;
  };
  const servers = int('servers', values.servers, 2);
  const fast = values.fast ?? false;
  parseBatch(values.batch ?? '10%'); // fail early on a bad --batch
  return {
    servers,
    // Mostly backends (a backend hotfix drains them all), a few frontends.
    frontends:
      values.frontends !== undefined ? int('frontends', values.frontends, 0) : Math.max(1, Math.round(servers / 20)),
    batch: values.batch ?? '10%',
    fast,
    // Realistic defaults (issue 4): an apply takes ~0.5 s, services ~1 s to come back.
    applyMs: values['apply-ms'] !== undefined ? int('apply-ms', values['apply-ms'], 0) : fast ? 0 : 500,
    restartMs: values['restart-ms'] !== undefined ? int('restart-ms', values['restart-ms'], 0) : fast ? 50 : 1000,
    activitySlots: int('activity-slots', values['activity-slots'], 1),
    slice: int('slice', values.slice, 1),
    timeoutMs: int('timeout-min', values['timeout-min'], 1) * 60_000,
  };
}

// ---- the fleet, in its own process ------------------------------------------------

interface FleetRequest {
  kmDatabaseUrl: string;
  authorizedKey: string;
  frontends: number;
  backends: number;
  applyMs: number;
  restartMs: number;
}
type FleetReply = { type: 'ready'; inventory: FleetServer[]; startMs: number } | { type: 'error'; message: string };

async function fleetChild(): Promise<void> {
  const req = await new Promise<FleetRequest>((resolve) => process.once('message', (m) => resolve(m as FleetRequest)));
  const send = (r: FleetReply) => process.send?.(r);
  try {
    const t0 = performance.now();
    const fleet = await startSimFleet({
      frontends: req.frontends,
      backends: req.backends,
      kmDatabaseUrl: req.kmDatabaseUrl,
      authorizedKey: req.authorizedKey,
      applyMs: req.applyMs,
      restartMs: req.restartMs,
    });
    send({ type: 'ready', inventory: fleet.inventory(), startMs: Math.round(performance.now() - t0) });
    // Stop on request, or when the parent is gone (IPC closed): never outlive the bench.
    await new Promise<void>((resolve) => {
      process.once('message', () => resolve());
      process.once('disconnect', () => resolve());
    });
    await fleet.stop();
  } catch (err) {
    send({ type: 'error', message: (err as Error).stack ?? String(err) });
  }
  process.exit(0);
}

async function startFleetProcess(
  req: FleetRequest,
): Promise<{ child: ChildProcess; inventory: FleetServer[]; startMs: number; stop(): Promise<void> }> {
  const child = fork(__filename, [FLEET_CHILD], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const reply = await new Promise<FleetReply>((resolve, reject) => {
    child.once('message', (m) => resolve(m as FleetReply));
    child.once('exit', (code) => reject(new Error(`the fleet process exited (${code}) before it was ready`)));
    child.send(req);
  });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    if (child.connected) child.send('stop');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  };
  if (reply.type === 'error') {
    await stop();
    throw new Error(`the simulated fleet did not start: ${reply.message}`);
  }
  return { child, inventory: reply.inventory, startMs: reply.startMs, stop };
}

// ---- process sampling (Linux /proc) -------------------------------------------------

function rssMiB(pid: number | 'self'): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? +(Number(m[1]) / 1024).toFixed(1) : 0;
  } catch {
    return 0;
  }
}

function openFiles(pid: number | 'self'): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

/** Soft limit on open files (`ulimit -n`). */
function openFileLimit(): number {
  try {
    const m = /Max open files\s+(\d+|unlimited)/.exec(readFileSync('/proc/self/limits', 'utf8'));
    return !m || m[1] === 'unlimited' ? Infinity : Number(m[1]);
  } catch {
    return Infinity;
  }
}

class Sampler {
  readonly peak = {
    workerRssMiB: 0,
    workerOpenFiles: 0,
    fleetRssMiB: 0,
    fleetOpenFiles: 0,
    temporalRssMiB: 0,
    inFlightActivities: 0,
  };
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly pids: { fleet?: number; temporal?: number },
    private readonly worker: Worker,
  ) {}

  start(everyMs = 500): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), everyMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.sample();
  }

  private sample(): void {
    const p = this.peak;
    p.workerRssMiB = Math.max(p.workerRssMiB, rssMiB('self'));
    p.workerOpenFiles = Math.max(p.workerOpenFiles, openFiles('self'));
    if (this.pids.fleet) {
      p.fleetRssMiB = Math.max(p.fleetRssMiB, rssMiB(this.pids.fleet));
      p.fleetOpenFiles = Math.max(p.fleetOpenFiles, openFiles(this.pids.fleet));
    }
    if (this.pids.temporal) p.temporalRssMiB = Math.max(p.temporalRssMiB, rssMiB(this.pids.temporal));
    if (this.worker.getState() === 'RUNNING')
      p.inFlightActivities = Math.max(p.inFlightActivities, this.worker.getStatus().numInFlightActivities);
  }
}

// ---- histories -----------------------------------------------------------------------

interface HistoryStats {
  id: string;
  events: number;
  payloadBytes: number;
  largestEventBytes: number;
  /** Which event that is (its attributes' name, and the activity or update name when there is one). */
  largestEvent: string;
  children: string[];
  /** recordPhase calls: the phase and when it was scheduled (ms since epoch). */
  phases: { phase: string; at: number }[];
  startedAt: number;
  closedAt: number;
}

function bytesIn(v: unknown, depth = 0): number {
  if (v instanceof Uint8Array) return v.byteLength;
  if (depth > 12 || v === null || typeof v !== 'object') return 0;
  let n = 0;
  for (const x of Object.values(v as Record<string, unknown>)) n += bytesIn(x, depth + 1);
  return n;
}

type HistoryEvent = NonNullable<Awaited<ReturnType<WorkflowHandle['fetchHistory']>>['events']>[number];

/** "activityTaskCompletedEventAttributes (prepareRollout)": enough to tell which payload is large. */
function describeEvent(e: HistoryEvent, activityNames: Map<string, string>): string {
  const attrs = Object.entries(e).find(([k, v]) => k.endsWith('EventAttributes') && v)?.[0] ?? 'event';
  const scheduledId = e.activityTaskCompletedEventAttributes?.scheduledEventId;
  const what = scheduledId
    ? activityNames.get(String(scheduledId))
    : (e.activityTaskScheduledEventAttributes?.activityType?.name ?? undefined);
  return what ? `${attrs} (${what})` : attrs;
}

async function historyStats(client: Client, id: string): Promise<HistoryStats> {
  const events = (await client.workflow.getHandle(id).fetchHistory()).events ?? [];
  const activityNames = new Map<string, string>();
  const s: HistoryStats = {
    id,
    events: events.length,
    payloadBytes: 0,
    largestEventBytes: 0,
    largestEvent: '',
    children: [],
    phases: [],
    startedAt: 0,
    closedAt: 0,
  };
  for (const e of events) {
    const b = bytesIn(e);
    s.payloadBytes += b;
    if (b > s.largestEventBytes) {
      s.largestEventBytes = b;
      s.largestEvent = describeEvent(e, activityNames);
    }
    const at = tsToMs(e.eventTime);
    if (!s.startedAt) s.startedAt = at;
    s.closedAt = at;
    const child = e.startChildWorkflowExecutionInitiatedEventAttributes?.workflowId;
    if (child) s.children.push(child);
    const a = e.activityTaskScheduledEventAttributes;
    if (a?.activityType?.name && e.eventId) activityNames.set(String(e.eventId), a.activityType.name);
    if (a?.activityType?.name === 'recordPhase') {
      const data = a.input?.payloads?.[0]?.data;
      if (data)
        s.phases.push({ phase: (JSON.parse(Buffer.from(data).toString('utf8')) as { phase: string }).phase, at });
    }
  }
  return s;
}

// ---- the run -------------------------------------------------------------------------

interface Stack {
  dir?: string;
  temporal?: RunningDevServer;
  pg?: RunningPostgres;
  sql: Sql[];
  fleet?: { stop(): Promise<void> };
  worker?: Worker;
  workerRun?: Promise<void>;
  closeActivities?: () => Promise<void>;
  connections: { close(): Promise<void> }[];
  rollout?: WorkflowHandle;
  sampler?: Sampler;
}

async function run(o: Options, st: Stack): Promise<Record<string, unknown>> {
  const t = { start: performance.now() };
  const limit = openFileLimit();
  // The fleet process holds a listening socket per server plus one per connection; the worker one per pooled connection.
  const needed = 2 * o.servers + 200;
  if (limit < needed)
    throw new Error(
      `ulimit -n is ${limit}; ${o.servers} simulated servers need about ${needed} open files in the fleet process: raise it (ulimit -n ${needed}) and run again`,
    );

  st.dir = await fs.mkdtemp(path.join(os.tmpdir(), 'km-rollout-bench-'));
  await fs.chmod(st.dir, 0o755); // PostgreSQL runs as its own user when we are root
  const binary = await ensureTemporal((l) => console.error(l));
  const [tPort, pPort] = [await freePort(), await freePort()];
  const [temporal, pg] = await Promise.all([
    startDevServer({ binary, port: tPort, headless: true, logFile: path.join(st.dir, 'temporal.log') }),
    startEmbeddedPostgres({ dataDir: path.join(st.dir, 'pg', 'data'), port: pPort }),
  ]);
  st.temporal = temporal;
  st.pg = pg;
  await pg.ensureDatabase('orch');
  await pg.ensureDatabase('km');
  const orchestrator = postgres(pg.url('orch'), { max: 10, onnotice: () => undefined });
  const km = postgres(pg.url('km'), { max: 10, onnotice: () => undefined });
  st.sql.push(orchestrator, km);
  await migrate(orchestrator);

  const keys = generateEd25519KeyPair();
  const fleet = await startFleetProcess({
    kmDatabaseUrl: pg.url('km'),
    authorizedKey: keys.public,
    frontends: o.frontends,
    backends: o.servers - o.frontends,
    applyMs: o.applyMs,
    restartMs: o.restartMs,
  });
  st.fleet = fleet;
  await replaceInventory(orchestrator, fleet.inventory);

  Runtime.install({ logger: new DefaultLogger('WARN') });
  const people = await ensurePeople(path.join(st.dir, 'people'), ['bench', 'bench-approver']);
  const built = createActivities({
    orchestrator,
    km,
    ssh: { privateKey: Buffer.from(keys.private) },
    allowedSigners: people.allowedSigners,
  });
  st.closeActivities = built.close;
  const noop = () => undefined;
  const workflowBundle = await bundleWorkflowCode({
    workflowsPath: require.resolve('../workflows'),
    logger: { log: noop, trace: noop, debug: noop, info: noop, warn: noop, error: noop },
  });
  const nativeConnection = await NativeConnection.connect({ address: temporal.address });
  st.connections.push(nativeConnection);
  const taskQueue = 'km-hotfix-bench';
  const worker = await Worker.create({
    connection: nativeConnection,
    taskQueue,
    workflowBundle,
    activities: built.activities,
    // The SDK default is 100; one server step holds a slot for its whole SSH command.
    maxConcurrentActivityTaskExecutions: o.activitySlots,
    shutdownGraceTime: '5s',
  });
  st.worker = worker;
  st.workerRun = worker.run();
  const connection = await Connection.connect({ address: temporal.address });
  st.connections.push(connection);
  const client = new Client({ connection });

  // A backend hotfix, registered through the real upload workflow.
  const made = await makeHotfix({
    component: 'backend',
    version: '3.0.0',
    description: 'bench_scale',
    issueId: 'UKM-2000',
  });
  const stored = await storeHotfixFile(orchestrator, made.fileName, made.bytes, 'bench');
  const uploadSigned = await signed(people.keys.bench, {
    action: 'upload',
    rollout: 'bench-upload',
    hotfix: stored.name,
    sha256: stored.sha256,
  });
  const upload = await client.workflow.start(WORKFLOW_TYPES.upload, {
    taskQueue,
    workflowId: 'bench-upload',
    args: [{ signed: uploadSigned, sha256: stored.sha256, fileName: stored.fileName }],
  });
  const uploaded = (await upload.result()) as RolloutStatus;
  if (uploaded.phase !== 'completed') throw new Error(`upload failed: ${uploaded.error}`);
  const setupMs = performance.now() - t.start;

  st.sampler = new Sampler({ fleet: fleet.child.pid, temporal: temporal.pid }, worker);
  st.sampler.start();
  const rolloutId = `bench-rollout-${o.servers}`;
  const input: RolloutInput = {
    hotfix: stored.name,
    signed: await signed(people.keys.bench, {
      action: 'rollout',
      rollout: rolloutId,
      hotfix: stored.name,
      sha256: stored.sha256,
    }),
    servers: [],
    batch: o.batch,
    maxFailures: 0,
    approvers: [],
    approvalTimeoutMs: o.timeoutMs,
    ...(o.slice !== DEFAULT_TIMING.sliceServers ? { timing: { sliceServers: o.slice } } : {}),
  };
  const t0 = Date.now();
  const h = await client.workflow.start(WORKFLOW_TYPES.rollout, { taskQueue, workflowId: rolloutId, args: [input] });
  st.rollout = h;
  // The gate: approve as soon as it opens (a person would check the canary here).
  let approvedAt: number | undefined;
  for (;;) {
    const s = await h.query(statusQuery).catch(() => undefined);
    if (s?.phase === 'verifying') {
      const approval = await signed(people.keys['bench-approver'], {
        action: 'approve',
        rollout: rolloutId,
        hotfix: stored.name,
        sha256: stored.sha256,
        canary: s.canary ?? '',
        drained: s.gate?.drained ?? drainedFacts([]),
        comment: 'automatic',
      });
      await h.executeUpdate(approveUpdate, { args: [approval] });
      approvedAt = Date.now();
      break;
    }
    if (s && ['completed', 'failed', 'rolled_back', 'rollback_failed'].includes(s.phase)) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  const result = (await h.result()) as RolloutStatus;
  const totalMs = Date.now() - t0;
  st.sampler.stop();

  // Every execution's history: the parent and the children it started.
  const parent = await historyStats(client, h.workflowId);
  const children: HistoryStats[] = [];
  for (let i = 0; i < parent.children.length; i += 8) {
    children.push(...(await Promise.all(parent.children.slice(i, i + 8).map((id) => historyStats(client, id)))));
  }
  const all = [parent, ...children];
  const biggest = all.reduce((a, b) => (b.events > a.events ? b : a));
  const largest = all.reduce((a, b) => (b.largestEventBytes > a.largestEventBytes ? b : a));

  // Wall time per phase, from the parent's own phase records.
  const phaseMs: Record<string, number> = {};
  const marks = [{ phase: 'preflight', at: parent.startedAt }, ...parent.phases];
  for (let i = 0; i < marks.length - 1; i++)
    phaseMs[marks[i].phase] = (phaseMs[marks[i].phase] ?? 0) + (marks[i + 1].at - marks[i].at);

  // The outcome from the Key Manager database, not the workflow's word.
  const applied = new Set(
    (
      await km<{ server_name: string }[]>`SELECT server_name FROM km_hotfix_applied WHERE hotfix_name = ${stored.name}`
    ).map((r) => r.server_name),
  );
  const missing = fleet.inventory.filter((s) => !applied.has(s.name)).map((s) => s.name);
  const ok =
    result.phase === 'completed' && missing.length === 0 && applied.size === o.servers && biggest.events < HISTORY_WARN;

  return {
    bench: 'rollout-scale',
    ok,
    servers: o.servers,
    frontends: o.frontends,
    backends: o.servers - o.frontends,
    batch: o.batch,
    applyMs: o.applyMs,
    restartMs: o.restartMs,
    sliceServers: o.slice,
    activitySlots: o.activitySlots,
    phase: result.phase,
    error: result.error,
    setupMs: Math.round(setupMs),
    totalMs,
    phaseMs,
    approvalLatencyMs:
      approvedAt !== undefined
        ? approvedAt - (parent.phases.find((p) => p.phase === 'verifying')?.at ?? approvedAt)
        : null,
    patchedInKmDb: applied.size,
    missing: missing.slice(0, 10),
    executions: all.length,
    children: children.length,
    parentEvents: parent.events,
    maxChildEvents: Math.max(0, ...children.map((c) => c.events)),
    maxEvents: biggest.events,
    maxEventsExecution: biggest.id,
    historyWarn: HISTORY_WARN,
    totalEvents: all.reduce((s, x) => s + x.events, 0),
    parentPayloadKiB: +(parent.payloadBytes / 1024).toFixed(1),
    largestEventKiB: +(largest.largestEventBytes / 1024).toFixed(1),
    largestEvent: `${largest.largestEvent} in ${largest.id}`,
    peak: st.sampler.peak,
    openFileLimit: limit === Infinity ? 'unlimited' : limit,
    fleetStartMs: fleet.startMs,
    node: process.version,
    nproc: os.availableParallelism(),
  };
}

async function cleanup(st: Stack): Promise<void> {
  const quietly = async (p: Promise<unknown> | undefined) => {
    try {
      await p;
    } catch {
      /* best effort */
    }
  };
  st.sampler?.stop();
  // A rollout still running (timeout, error) is ended so that nothing keeps working on the fleet.
  if (st.rollout) {
    const d = await st.rollout.describe().catch(() => undefined);
    if (d?.status.name === 'RUNNING') await quietly(st.rollout.terminate('benchmark ended'));
  }
  if (st.worker && st.worker.getState() === 'RUNNING') st.worker.shutdown();
  await quietly(st.workerRun);
  await quietly(st.closeActivities?.());
  for (const c of st.connections) await quietly(c.close());
  await Promise.all(st.sql.map((s) => quietly(s.end({ timeout: 2 }))));
  await quietly(st.fleet?.stop());
  await Promise.all([quietly(st.temporal?.stop()), quietly(st.pg?.stop())]);
  if (st.dir && !process.env.KM_HOTFIX_KEEP_BENCH_DIR) await quietly(fs.rm(st.dir, { recursive: true, force: true }));
}

async function main(): Promise<void> {
  const o = options();
  const st: Stack = { sql: [], connections: [] };
  // Bounded: the overall deadline ends the run; a second, hard one ends the process if cleanup hangs.
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${o.timeoutMs / 60_000} min (--timeout-min)`)),
      o.timeoutMs,
    );
  });
  setTimeout(() => {
    console.error('cleanup did not finish: exiting');
    process.exit(3);
  }, o.timeoutMs + 120_000).unref();
  let code = 0;
  try {
    const out = await Promise.race([run(o, st), deadline]);
    console.log(JSON.stringify(out));
    if (!out.ok) code = 1;
  } catch (err) {
    console.log(
      JSON.stringify({
        bench: 'rollout-scale',
        ok: false,
        servers: o.servers,
        error: (err as Error).message,
        peak: st.sampler?.peak,
      }),
    );
    console.error(err);
    code = 1;
  } finally {
    clearTimeout(timer);
    await cleanup(st);
  }
  process.exit(code);
}

if (process.argv[2] === FLEET_CHILD) void fleetChild();
else void main();
