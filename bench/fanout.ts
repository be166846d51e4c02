// `npm run bench`: fan-out at the speed of the servers (issue 11). One stack
// (Temporal dev server, embedded PostgreSQL), then per scenario a simulated
// fleet (real SSH, fixed latencies, in child processes), and on that fleet,
// one after the other, the same hotfix applied by:
//   km-hotfix  — `km-hotfix rollout` (canary on an extra server, approved at once), worker in a child process
//   parallel-ssh — `parallel-ssh -p WINDOW` with `apply && restart all && status`
//   Ansible    — `ansible -m raw -f WINDOW` with the same command
// all with strict host-key checking against the simulator's host keys. The Key
// Manager database is reset between runs so each applies fresh. Writes
// bench/results/<date>-fanout.json (appends this run) and docs/BENCHMARKS.md.
//   node dist/bench/fanout.js [--quick] [--scenarios 20x5,200x50,...] [--systems km,pssh,ansible]
//     [--apply-ms 500] [--restart-ms 1000] [--fleet-processes K] [--timeout-min 20] [--no-doc] [--no-record]
// Nothing here blocks the event loop on a child (the fleet lives in children anyway).
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, readFileSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import postgres, { type Sql } from 'postgres';
import { Client, Connection } from '@temporalio/client';
import { ensureTemporal, startDevServer, type RunningDevServer } from '../stack/temporal';
import { startEmbeddedPostgres, type RunningPostgres } from '../stack/postgres';
import { freePort } from '../stack/process';
import { migrate } from '../store/migrations';
import { replaceInventory } from '../store/inventory';
import { makeHotfix, startSimFleet, type FaultSpec, type SimFleet } from '../simulator';
import { generateEd25519KeyPair } from '../keymanager/keygen';
import type { FleetServer } from '../domain/fleet';
import type { RolloutStatus } from '../domain/messages/rollout';
import { statusQuery } from '../domain/messages/rollout';
import { ensurePeople } from '../stack/people';
import {
  idealMs,
  lineChartSvg,
  maxInFlight,
  percentile,
  perServerOverheadMs,
  spanMs,
  type ChartSeries,
  type ServerSpan,
} from './fanout-stats';

const ROOT = path.resolve(__dirname, '..', '..');
const FLEET_CHILD = '--fleet-child';
const HISTORY_WARN = 10_240;
const SYSTEMS = ['km', 'pssh', 'ansible'] as const;
type System = (typeof SYSTEMS)[number];
const QUICK = ['20x5', '200x50', '200x50-nolat'];
const FULL = ['20x5', '200x50', '200x50-nolat', '2000x200', 'rollback-2000x200'];

// ---- options and scenarios -----------------------------------------------------------

interface Scenario {
  name: string;
  servers: number;
  window: number;
  applyMs: number;
  restartMs: number;
  /** km-hotfix only: the last server fails its applies, everything patched rolls back. */
  rollback: boolean;
  /**
   * km-hotfix only: a backend hotfix on a fleet of a quarter frontends and three quarters
   * backends; the canary is the first backend and every other backend is drained while it
   * is verified (the approval names them by count and digest, issue 31). The fan-out is
   * every server but the canary.
   */
  backend: boolean;
}

interface Options {
  scenarios: Scenario[];
  systems: System[];
  fleetProcesses?: number;
  timeoutMs: number;
  doc: boolean;
  /** Append this run to bench/results/ (off for experiments: print only). */
  record: boolean;
  /** Rewrite docs/BENCHMARKS.md from the recorded results, run nothing. */
  docOnly: boolean;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      scenarios: { type: 'string' },
      systems: { type: 'string', default: SYSTEMS.join(',') },
      'apply-ms': { type: 'string', default: '500' },
      'restart-ms': { type: 'string', default: '1000' },
      'fleet-processes': { type: 'string' },
      'timeout-min': { type: 'string', default: '20' },
      'no-doc': { type: 'boolean', default: false },
      'no-record': { type: 'boolean', default: false },
      'doc-only': { type: 'boolean', default: false },
    },
    strict: true,
  });
  const int = (name: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be a whole number >= ${min} (got ${v})`);
    return n;
  };
  const applyMs = int('apply-ms', values['apply-ms'], 0);
  const restartMs = int('restart-ms', values['restart-ms'], 0);
  const names = values.scenarios ? values.scenarios.split(',') : values.quick ? QUICK : FULL;
  const scenarios = names.map((raw) => {
    // [rollback-|backend-]NxW[-nolat]
    const m = /^(rollback-|backend-)?(\d+)x(\d+)(-nolat)?$/.exec(raw.trim());
    if (!m)
      throw new Error(
        `--scenarios: '${raw}' is not [rollback-|backend-]SERVERSxWINDOW[-nolat], e.g. 200x50, 200x50-nolat, rollback-2000x200, backend-1000x100`,
      );
    const nolat = Boolean(m[4]);
    const servers = int('scenarios', m[2], 1);
    if (m[1] === 'backend-' && servers < 4)
      throw new Error(`--scenarios: '${raw}': a backend scenario needs at least 4 servers (a quarter are frontends)`);
    return {
      name: raw.trim(),
      servers,
      window: int('scenarios', m[3], 1),
      applyMs: nolat ? 0 : applyMs,
      restartMs: nolat ? 0 : restartMs,
      rollback: m[1] === 'rollback-',
      backend: m[1] === 'backend-',
    };
  });
  const systems = (values.systems ?? '').split(',').map((s) => s.trim());
  for (const s of systems)
    if (!(SYSTEMS as readonly string[]).includes(s))
      throw new Error(`--systems: '${s}' is not one of ${SYSTEMS.join(', ')}`);
  return {
    scenarios,
    systems: systems as System[],
    fleetProcesses:
      values['fleet-processes'] !== undefined ? int('fleet-processes', values['fleet-processes'], 1) : undefined,
    timeoutMs: int('timeout-min', values['timeout-min'], 1) * 60_000,
    // An unrecorded run cannot be in the document either.
    doc: !values['no-doc'] && !values['no-record'],
    record: !values['no-record'],
    docOnly: values['doc-only'] ?? false,
  };
}

// ---- child processes, never blocking ---------------------------------------------------

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
  startedAt: number;
  endedAt: number;
}

/** Run a program to its end, asynchronously; killed (its process group) after timeoutMs. */
function run(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs: number; cwd?: string },
): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const startedAt = Date.now();
    const child = spawn(cmd, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd ?? ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, opts.timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      const endedAt = Date.now();
      resolve({ code, stdout, stderr, ms: endedAt - startedAt, startedAt, endedAt });
    });
  });
}

/** High-water mark of a process's resident memory (VmHWM), MiB; 0 when unreadable. */
function peakRssMiB(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : 0;
  } catch {
    return 0;
  }
}

// ---- the fleet, in child processes -----------------------------------------------------

interface FleetStart {
  kmDatabaseUrl: string;
  authorizedKey: string;
  frontends: number;
  backends: number;
  applyMs: number;
  restartMs: number;
  namePrefix: string;
}
type FleetCall =
  | { type: 'spans'; kind: 'apply' | 'unapply'; names: string[] }
  | { type: 'clear' }
  | { type: 'fault'; name: string; spec: FaultSpec };
type FleetAnswer =
  | { type: 'ready'; inventory: FleetServer[]; knownHosts: string[] }
  | { type: 'spans'; spans: ServerSpan[] }
  | { type: 'ok' }
  | { type: 'error'; message: string };

/** One server's span for `kind` from its log: the last apply (or unapply) start → the end of the supervisorctl commands after it. */
function spanOf(fleet: SimFleet, name: string, kind: 'apply' | 'unapply'): ServerSpan | undefined {
  const log = fleet
    .server(name)
    .log()
    .filter((e) => e.channel === 'exec');
  const flag = `--${kind}-hotfix`;
  let i = -1;
  for (let k = log.length - 1; k >= 0; k--)
    if (log[k].command.includes(flag) && log[k].exitCode === 0) {
      i = k;
      break;
    }
  if (i < 0) return undefined;
  const start = Date.parse(log[i].at);
  let end = start + (log[i].durationMs ?? 0);
  for (const e of log.slice(i + 1)) {
    if (e.command.includes('ssh-mgr-controller')) break; // a later unapply (rollback) starts another span
    if (!e.command.includes('supervisorctl')) continue;
    end = Math.max(end, Date.parse(e.at) + (e.durationMs ?? 0));
  }
  return { name, start, end };
}

async function fleetChild(): Promise<void> {
  const req = await new Promise<FleetStart>((resolve) => process.once('message', (m) => resolve(m as FleetStart)));
  const send = (a: FleetAnswer) => process.send?.(a);
  let fleet: SimFleet;
  try {
    fleet = await startSimFleet({ ...req, andLists: true });
  } catch (err) {
    send({ type: 'error', message: (err as Error).stack ?? String(err) });
    process.exit(1);
  }
  send({ type: 'ready', inventory: fleet.inventory(), knownHosts: fleet.servers.map((s) => s.knownHostsLine) });
  const mine = new Set(fleet.servers.map((s) => s.name));
  process.on('message', (m: FleetCall | 'stop') => {
    if (m === 'stop') {
      void fleet.stop().then(() => process.exit(0));
      return;
    }
    if (m.type === 'clear') {
      for (const s of fleet.servers) s.clearLog();
      send({ type: 'ok' });
    }
    if (m.type === 'fault') {
      fleet.server(m.name).fault(m.spec);
      send({ type: 'ok' });
    }
    // KM_HOTFIX_BENCH_DUMP=DIR: the servers' raw command logs, to study the gaps between a server's commands.
    if (m.type === 'spans' && process.env.KM_HOTFIX_BENCH_DUMP) {
      const logs = Object.fromEntries(m.names.filter((n) => mine.has(n)).map((n) => [n, fleet.server(n).log()]));
      writeFileSync(
        path.join(process.env.KM_HOTFIX_BENCH_DUMP, `logs-${m.kind}-${process.pid}-${Date.now()}.json`),
        JSON.stringify(logs),
      );
    }
    if (m.type === 'spans')
      send({
        type: 'spans',
        spans: m.names
          .filter((n) => mine.has(n))
          .map((n) => spanOf(fleet, n, m.kind))
          .filter((s): s is ServerSpan => s !== undefined),
      });
  });
  process.once('disconnect', () => {
    void fleet.stop().then(() => process.exit(0));
  });
}

class FleetProcess {
  private queue: Promise<unknown> = Promise.resolve();
  inventory: FleetServer[] = [];
  knownHosts: string[] = [];
  private readonly exited: Promise<void>;

  private constructor(readonly child: ChildProcess) {
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
  }

  static async start(req: FleetStart): Promise<FleetProcess> {
    const child = fork(__filename, [FLEET_CHILD], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      execArgv: ['--max-old-space-size=4096'],
    });
    const f = new FleetProcess(child);
    const a = await f.next(req);
    if (a.type !== 'ready')
      throw new Error(`the simulated fleet did not start: ${a.type === 'error' ? a.message : a.type}`);
    f.inventory = a.inventory;
    f.knownHosts = a.knownHosts;
    return f;
  }

  private next(msg: unknown): Promise<FleetAnswer> {
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`a fleet process exited (${code})`));
      this.child.once('exit', onExit);
      this.child.once('message', (m) => {
        this.child.off('exit', onExit);
        resolve(m as FleetAnswer);
      });
      this.child.send(msg as FleetCall);
    });
  }

  /** One call at a time per process: answers come back in order. */
  call(msg: FleetCall): Promise<FleetAnswer> {
    const p = this.queue.then(() => this.next(msg));
    this.queue = p.catch(() => undefined);
    return p;
  }

  peakRssMiB(): number {
    return peakRssMiB(this.child.pid);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    if (this.child.connected) this.child.send('stop');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 15_000);
    await this.exited;
    clearTimeout(timer);
  }
}

class Fleet {
  constructor(readonly processes: FleetProcess[]) {}
  get inventory(): FleetServer[] {
    return this.processes.flatMap((p) => p.inventory);
  }
  get knownHosts(): string[] {
    return this.processes.flatMap((p) => p.knownHosts);
  }
  async clearLogs(): Promise<void> {
    await Promise.all(this.processes.map((p) => p.call({ type: 'clear' })));
  }
  async spans(kind: 'apply' | 'unapply', names: string[]): Promise<ServerSpan[]> {
    const answers = await Promise.all(this.processes.map((p) => p.call({ type: 'spans', kind, names })));
    return answers.flatMap((a) => (a.type === 'spans' ? a.spans : []));
  }
  async fault(name: string, spec: FaultSpec): Promise<void> {
    for (const p of this.processes)
      if (p.inventory.some((s) => s.name === name)) await p.call({ type: 'fault', name, spec });
  }
  peakRssMiB(): number[] {
    return this.processes.map((p) => p.peakRssMiB());
  }
  async stop(): Promise<void> {
    await Promise.all(this.processes.map((p) => p.stop()));
  }
}

/**
 * N backends (the fan-out) and one frontend (the canary) split over K processes; a backend
 * scenario: N servers, a quarter of them frontends (in the first process), the rest backends.
 */
async function startFleet(kmDatabaseUrl: string, authorizedKey: string, s: Scenario, k: number): Promise<Fleet> {
  const frontends = s.backend ? Math.round(s.servers / 4) : 1;
  const backends = s.backend ? s.servers - frontends : s.servers;
  const per = Math.ceil(backends / k);
  const req = (i: number): FleetStart => ({
    kmDatabaseUrl,
    authorizedKey,
    applyMs: s.applyMs,
    restartMs: s.restartMs,
    frontends: i === 0 ? frontends : 0,
    backends: Math.max(0, Math.min(per, backends - i * per)),
    namePrefix: i === 0 ? 'km' : `km${i}`,
  });
  // The first creates the tables; the rest start together.
  const first = await FleetProcess.start(req(0));
  const rest = await Promise.all(Array.from({ length: k - 1 }, (_, i) => FleetProcess.start(req(i + 1))));
  return new Fleet([first, ...rest]);
}

// ---- one system's run ------------------------------------------------------------------

interface SystemResult {
  ok: boolean;
  /** Client-observed wall time: km-hotfix from the approval to the workflow's end; a peer from spawn to exit. */
  wallMs: number;
  /** From the servers' logs: first apply start to last status end over the fan-out servers. */
  spanMs: number;
  ratio: number | null;
  overheadP50Ms: number;
  overheadP95Ms: number;
  maxInFlight: number;
  patched: number;
  error?: string;
  historyMaxEvents?: number;
  historyExecutions?: number;
  workerPeakRssMiB?: number;
  /** rollback scenarios */
  rollbackMs?: number;
  rollbackSpanMs?: number;
  rollbackIdealMs?: number;
  rollbackRatio?: number | null;
  rolledBack?: number;
  rollbackOverheadP50Ms?: number;
  rollbackOverheadP95Ms?: number;
  phase?: string;
  /** The largest history of any execution, in bytes (Temporal warns at 10 MiB). */
  historyMaxBytes?: number;
  /** The workflow's result (its bounded status), in bytes. */
  resultBytes?: number;
  /** Lines of the Temporal server's log warning of a payload or history size during the run. */
  temporalWarnings?: number;
  temporalWarningLines?: string[];
}

interface Ctx {
  dir: string;
  temporal: RunningDevServer;
  pg: RunningPostgres;
  client: Client;
  keyFile: string;
  publicKey: string;
  o: Options;
}

interface ScenarioCtx {
  s: Scenario;
  fleet: Fleet;
  km: Sql;
  hotfix: string;
  hotfixFile: string;
  targets: string[];
  canary: string;
  env: NodeJS.ProcessEnv;
  /** The approver's environment: the same, signing as bob. */
  approverEnv: NodeJS.ProcessEnv;
  knownHostsFile: string;
}

function summarize(
  spans: ServerSpan[],
  s: Scenario,
  wallMs: number,
): Pick<SystemResult, 'spanMs' | 'ratio' | 'overheadP50Ms' | 'overheadP95Ms' | 'maxInFlight'> {
  const ideal = idealMs(s.servers, s.window, s.applyMs + s.restartMs);
  const over = perServerOverheadMs(spans, s.window, s.applyMs + s.restartMs);
  return {
    spanMs: spanMs(spans),
    ratio: ideal > 0 ? +(wallMs / ideal).toFixed(2) : null,
    overheadP50Ms: Math.round(percentile(over, 50) || 0),
    overheadP95Ms: Math.round(percentile(over, 95) || 0),
    maxInFlight: maxInFlight(spans),
  };
}

async function appliedCount(km: Sql, hotfix: string, targets: string[]): Promise<number> {
  const rows = await km<
    { n: string }[]
  >`SELECT count(*) AS n FROM km_hotfix_applied WHERE hotfix_name = ${hotfix} AND server_name = ANY(${targets})`;
  return Number(rows[0].n);
}

/** The Key Manager database is the truth: nobody has the hotfix, so the next run applies fresh. */
async function resetKm(sc: ScenarioCtx): Promise<void> {
  await sc.km`DELETE FROM km_hotfix_applied WHERE hotfix_name = ${sc.hotfix}`;
  await sc.fleet.clearLogs();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function historyEvents(
  client: Client,
  id: string,
  dumpDir?: string,
): Promise<{ events: number; bytes: number; children: string[] }> {
  const handle = client.workflow.getHandle(id);
  const [history, described] = await Promise.all([handle.fetchHistory(), handle.describe()]);
  const events = history.events ?? [];
  if (dumpDir)
    await fs.writeFile(path.join(dumpDir, `history-${id.replace(/[^a-z0-9-]/gi, '_')}.json`), JSON.stringify(history));
  const children = events
    .map((e) => e.startChildWorkflowExecutionInitiatedEventAttributes?.workflowId)
    .filter((x): x is string => Boolean(x));
  return { events: events.length, bytes: described.historySize ?? 0, children };
}

/** Every execution of a rollout (the parent, its children, theirs): the largest history. */
async function maxHistory(
  client: Client,
  id: string,
  dumpDir?: string,
): Promise<{ max: number; maxBytes: number; executions: number }> {
  let max = 0;
  let maxBytes = 0;
  let executions = 0;
  let ids = [id];
  while (ids.length) {
    const next: string[] = [];
    for (let i = 0; i < ids.length; i += 8) {
      for (const h of await Promise.all(ids.slice(i, i + 8).map((x) => historyEvents(client, x, dumpDir)))) {
        max = Math.max(max, h.events);
        maxBytes = Math.max(maxBytes, h.bytes);
        executions++;
        next.push(...h.children);
      }
    }
    ids = [...new Set(next)];
  }
  return { max, maxBytes, executions };
}

/** The worker as production runs it (`km-hotfix worker`), in a child process so its memory is its own. */
async function startWorker(env: NodeJS.ProcessEnv): Promise<{ child: ChildProcess; stop(): Promise<number> }> {
  // KM_HOTFIX_BENCH_WORKER_ARGS: extra node flags for the worker only, e.g. '--cpu-prof --cpu-prof-dir=/tmp/prof'.
  const nodeArgs = (process.env.KM_HOTFIX_BENCH_WORKER_ARGS ?? '').split(' ').filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, path.join(ROOT, 'bin', 'km-hotfix.js'), 'worker'], {
    env,
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let err = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`the worker did not start within 120 s: ${err.slice(-500)}`)),
      120_000,
    );
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('polling task queue')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the worker exited (${code}): ${err.slice(-500)}`));
    });
  });
  return {
    child,
    async stop() {
      const rss = peakRssMiB(child.pid);
      if (child.exitCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(t);
      return rss;
    },
  };
}

/**
 * What the Temporal server warned about since `from` (a byte offset in its
 * log): payloads over the blob-size warning (512 KiB) and histories over the
 * event-count or size warnings. The 20,000-server target is "no warning".
 */
async function temporalWarnings(logFile: string, from: number): Promise<string[]> {
  const text = await fs.readFile(logFile, 'utf8').catch(() => '');
  return text
    .slice(from)
    .split('\n')
    .filter((l) => /blob (data )?size|history (size|count)|exceeds.*limit|limit.*exceed/i.test(l))
    .map((l) => l.slice(0, 300));
}

async function logSize(logFile: string): Promise<number> {
  return (await fs.stat(logFile).catch(() => ({ size: 0 }))).size;
}

async function runKm(ctx: Ctx, sc: ScenarioCtx): Promise<SystemResult> {
  const { s } = sc;
  await resetKm(sc);
  const temporalLog = path.join(ctx.dir, 'temporal.log');
  const logFrom = await logSize(temporalLog);
  {
    if (s.rollback) {
      // The last server in fan-out order fails every apply: the rollout rolls back everything it patched.
      await sc.fleet.fault(sc.targets[sc.targets.length - 1], { failApplies: 1000 });
    }
    const started = await run(
      process.execPath,
      [
        path.join(ROOT, 'bin', 'km-hotfix.js'),
        'rollout',
        sc.hotfix,
        '--canary',
        sc.canary,
        '--batch',
        String(s.window),
        '--approvers',
        'bob',
        '--json',
      ],
      { env: sc.env, timeoutMs: 300_000 },
    );
    if (started.code !== 0) throw new Error(`km-hotfix rollout exited ${started.code}: ${started.stderr.trim()}`);
    const id = (JSON.parse(started.stdout.trim()) as { id: string }).id;
    const h = ctx.client.workflow.getHandle(id);
    const deadline = Date.now() + ctx.o.timeoutMs;
    for (;;) {
      const st = await h.query(statusQuery).catch(() => undefined);
      if (st?.phase === 'verifying') break;
      if (st && ['completed', 'failed', 'rolled_back', 'rollback_failed'].includes(st.phase))
        throw new Error(`the rollout ended ${st.phase} before the gate: ${st.error ?? ''}`);
      if (Date.now() > deadline) throw new Error('no gate within the timeout');
      await sleep(100);
    }
    const approved = await run(
      process.execPath,
      [path.join(ROOT, 'bin', 'km-hotfix.js'), 'approve', id, '--comment', 'benchmark'],
      { env: sc.approverEnv, timeoutMs: 120_000 },
    );
    if (approved.code !== 0) throw new Error(`km-hotfix approve exited ${approved.code}: ${approved.stderr.trim()}`);
    const approvedAt = Date.now();
    let rollbackAt: number | undefined;
    const result = h.result() as Promise<RolloutStatus>;
    let done: RolloutStatus | undefined;
    void result.then(
      (r) => {
        done = r;
      },
      () => undefined,
    );
    if (s.rollback) {
      while (!done && rollbackAt === undefined) {
        const st = await h.query(statusQuery).catch(() => undefined);
        if (st?.phase === 'rolling_back') rollbackAt = Date.now();
        else await sleep(100);
      }
    }
    const timeout = sleep(ctx.o.timeoutMs).then(() => {
      throw new Error('the rollout did not end within the timeout');
    });
    const final = await Promise.race([result, timeout]);
    const endedAt = Date.now();
    const wallMs = (rollbackAt ?? endedAt) - approvedAt;
    const spans = await sc.fleet.spans('apply', sc.targets);
    const hist = await maxHistory(ctx.client, id, process.env.KM_HOTFIX_BENCH_DUMP);
    const patched = await appliedCount(sc.km, sc.hotfix, sc.targets);
    const warnings = await temporalWarnings(temporalLog, logFrom);
    const resultBytes = Buffer.byteLength(JSON.stringify(final));
    const r: SystemResult = {
      ok:
        (s.rollback
          ? final.phase === 'rolled_back' && patched === 0
          : final.phase === 'completed' && patched === sc.targets.length) && warnings.length === 0,
      wallMs,
      ...summarize(spans, s, wallMs),
      patched: spans.length,
      historyMaxEvents: hist.max,
      historyMaxBytes: hist.maxBytes,
      historyExecutions: hist.executions,
      phase: final.phase,
      resultBytes,
      temporalWarnings: warnings.length,
      ...(warnings.length > 0 ? { temporalWarningLines: warnings.slice(0, 5) } : {}),
      ...(final.error ? { error: final.error } : {}),
    };
    if (s.rollback) {
      // Everything patched by the rollout is unapplied: the canary and the fan-out's successes.
      const unapplied = await sc.fleet.spans('unapply', [sc.canary, ...sc.targets]);
      const ideal = idealMs(unapplied.length, s.window, s.applyMs + s.restartMs);
      const over = perServerOverheadMs(unapplied, s.window, s.applyMs + s.restartMs);
      Object.assign(r, {
        rollbackMs: endedAt - (rollbackAt ?? endedAt),
        rollbackSpanMs: spanMs(unapplied),
        rollbackIdealMs: ideal,
        rollbackRatio: ideal > 0 ? +((endedAt - (rollbackAt ?? endedAt)) / ideal).toFixed(2) : null,
        rolledBack: unapplied.length,
        rollbackOverheadP50Ms: Math.round(percentile(over, 50) || 0),
        rollbackOverheadP95Ms: Math.round(percentile(over, 95) || 0),
      });
    }
    return r;
  }
}

const COMMAND = (hotfix: string) =>
  `ssh-mgr-controller --apply-hotfix=${hotfix} && supervisorctl restart all && supervisorctl status`;

async function runPeer(ctx: Ctx, sc: ScenarioCtx, which: 'pssh' | 'ansible'): Promise<SystemResult> {
  const { s } = sc;
  await resetKm(sc);
  const servers = sc.fleet.inventory.filter((x) => sc.targets.includes(x.name));
  let ran: Ran;
  if (which === 'pssh') {
    const hosts = path.join(ctx.dir, `pssh-hosts-${s.name}`);
    await fs.writeFile(hosts, servers.map((x) => `${x.host}:${x.port} root`).join('\n') + '\n');
    ran = await run(
      'parallel-ssh',
      [
        '-h',
        hosts,
        '-p',
        String(s.window),
        '-t',
        '0',
        '-O',
        'StrictHostKeyChecking=yes',
        '-O',
        `UserKnownHostsFile=${sc.knownHostsFile}`,
        '-O',
        'GlobalKnownHostsFile=/dev/null',
        '-O',
        `IdentityFile=${ctx.keyFile}`,
        '-O',
        'IdentitiesOnly=yes',
        '-O',
        'BatchMode=yes',
        COMMAND(sc.hotfix),
      ],
      { timeoutMs: ctx.o.timeoutMs },
    );
  } else {
    const inv = path.join(ctx.dir, `ansible-inventory-${s.name}.ini`);
    await fs.writeFile(
      inv,
      [
        '[fleet]',
        ...servers.map((x) => `${x.name} ansible_host=${x.host} ansible_port=${x.port}`),
        '',
        '[fleet:vars]',
        'ansible_user=root',
        `ansible_ssh_private_key_file=${ctx.keyFile}`,
        '',
      ].join('\n'),
    );
    const home = path.join(ctx.dir, 'ansible');
    ran = await run(
      'ansible',
      ['fleet', '-i', inv, '-m', 'raw', '-a', COMMAND(sc.hotfix), '-f', String(s.window), '-o'],
      {
        timeoutMs: ctx.o.timeoutMs,
        env: {
          ...process.env,
          ANSIBLE_HOME: home,
          ANSIBLE_LOCAL_TEMP: path.join(home, 'tmp'),
          ANSIBLE_NOCOLOR: '1',
          ANSIBLE_HOST_KEY_CHECKING: 'True',
          ANSIBLE_SSH_CONTROL_PATH_DIR: path.join(home, `cp-${s.name}`),
          // Ansible's own default ssh_args, plus the pinned host keys.
          ANSIBLE_SSH_ARGS: `-C -o ControlMaster=auto -o ControlPersist=60s -o StrictHostKeyChecking=yes -o UserKnownHostsFile=${sc.knownHostsFile} -o GlobalKnownHostsFile=/dev/null`,
        },
      },
    );
  }
  const spans = await sc.fleet.spans('apply', sc.targets);
  const patched = await appliedCount(sc.km, sc.hotfix, sc.targets);
  const ok = ran.code === 0 && patched === s.servers;
  return {
    ok,
    wallMs: ran.ms,
    ...summarize(spans, s, ran.ms),
    patched: spans.length,
    ...(ok
      ? {}
      : {
          error: `exit ${ran.code}, ${patched}/${s.servers} patched: ${(ran.stderr || ran.stdout).trim().split('\n').slice(-3).join(' | ').slice(0, 400)}`,
        }),
  };
}

async function runSystem(ctx: Ctx, sc: ScenarioCtx, sys: System, result: ScenarioResult): Promise<void> {
  const t0 = Date.now();
  try {
    result.systems[sys] = sys === 'km' ? await runKm(ctx, sc) : await runPeer(ctx, sc, sys);
  } catch (err) {
    result.systems[sys] = {
      ok: false,
      wallMs: Date.now() - t0,
      spanMs: 0,
      ratio: null,
      overheadP50Ms: 0,
      overheadP95Ms: 0,
      maxInFlight: 0,
      patched: 0,
      error: (err as Error).message.slice(0, 500),
    };
  }
  process.stderr.write(`  ${sc.s.name} ${sys}: ${JSON.stringify(result.systems[sys])}\n`);
}

// ---- a scenario ------------------------------------------------------------------------

interface ScenarioResult extends Scenario {
  idealMs: number;
  fleetProcesses: number;
  fleetPeakRssMiB: number[];
  systems: Partial<Record<System, SystemResult>>;
}

async function runScenario(ctx: Ctx, s: Scenario, index: number): Promise<ScenarioResult> {
  const tag = `s${index}_${s.name.replace(/[^a-z0-9]/gi, '_')}`;
  await ctx.pg.ensureDatabase(`km_${tag}`);
  await ctx.pg.ensureDatabase(`orch_${tag}`);
  const km = postgres(ctx.pg.url(`km_${tag}`), { max: 4, onnotice: () => undefined });
  const orch = postgres(ctx.pg.url(`orch_${tag}`), { max: 4, onnotice: () => undefined });
  const k = ctx.o.fleetProcesses ?? Math.max(1, Math.ceil(s.servers / 5000));
  const result: ScenarioResult = {
    ...s,
    idealMs: idealMs(s.servers, s.window, s.applyMs + s.restartMs),
    fleetProcesses: k,
    fleetPeakRssMiB: [],
    systems: {},
  };
  let fleet: Fleet | undefined;
  try {
    fleet = await startFleet(ctx.pg.url(`km_${tag}`), ctx.publicKey, s, k);
    await migrate(orch);
    await replaceInventory(orch, fleet.inventory);
    const knownHostsFile = path.join(ctx.dir, `known_hosts-${tag}`);
    await fs.writeFile(knownHostsFile, fleet.knownHosts.join('\n') + '\n');
    const canary = fleet.inventory.find((x) => x.role === (s.backend ? 'backend' : 'frontend'))!.name;
    const targets = fleet.inventory.filter((x) => x.name !== canary).map((x) => x.name);
    // Decisions are signed (SPEC §7): alice starts, bob approves.
    const people = await ensurePeople(ctx.dir, ['alice', 'bob']);
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      TEMPORAL_ADDRESS: ctx.temporal.address,
      TEMPORAL_NAMESPACE: 'default',
      DATABASE_URL: ctx.pg.url(`orch_${tag}`),
      KM_DATABASE_URL: ctx.pg.url(`km_${tag}`),
      KM_SSH_KEY: ctx.keyFile,
      KM_HOTFIX_TASK_QUEUE: `km-hotfix-bench-${tag}`,
      KM_HOTFIX_ACTIVITY_SLOTS: String(Math.max(250, s.window + 50)),
      KM_HOTFIX_ALLOWED_SIGNERS: people.allowedSigners,
      KM_HOTFIX_SIGNING_KEY: people.keys.alice,
    };
    // One hotfix for everyone: a common hotfix (no drain), uploaded through km-hotfix once; a backend one for backend scenarios.
    const made = await makeHotfix({
      component: s.backend ? 'backend' : 'common',
      version: '3.0.0',
      description: 'bench_fanout',
      issueId: 'UKM-1100',
    });
    const hotfixFile = path.join(ctx.dir, made.fileName);
    await fs.writeFile(hotfixFile, made.bytes);
    const sc: ScenarioCtx = {
      s,
      fleet,
      km,
      hotfix: made.manifest.name,
      hotfixFile,
      targets,
      canary,
      env,
      approverEnv: { ...env, KM_HOTFIX_SIGNING_KEY: people.keys.bob },
      knownHostsFile,
    };
    // The worker (production's `km-hotfix worker`) registers the hotfix through the upload workflow, then runs the rollout.
    const worker = await startWorker(env);
    try {
      const up = await run(process.execPath, [path.join(ROOT, 'bin', 'km-hotfix.js'), 'upload', hotfixFile, '--wait'], {
        env,
        timeoutMs: 300_000,
      });
      if (up.code !== 0) throw new Error(`km-hotfix upload exited ${up.code}: ${up.stderr.trim()}`);
      if (ctx.o.systems.includes('km')) await runSystem(ctx, sc, 'km', result);
    } finally {
      const rss = await worker.stop();
      if (result.systems.km) result.systems.km.workerPeakRssMiB = rss;
    }
    if (!s.rollback && !s.backend)
      for (const sys of ctx.o.systems.filter((x) => x !== 'km')) await runSystem(ctx, sc, sys, result);
    result.fleetPeakRssMiB = fleet.peakRssMiB();
    return result;
  } finally {
    await fleet?.stop();
    await km.end({ timeout: 2 }).catch(() => undefined);
    await orch.end({ timeout: 2 }).catch(() => undefined);
  }
}

// ---- machine, results, the document ----------------------------------------------------

interface Machine {
  nproc: number;
  memoryGiB: number;
  cpu: string;
  node: string;
  loadAvg: number[];
  os: string;
}

function machine(): Machine {
  let cpu = 'unknown';
  try {
    cpu = /model name\s*:\s*(.+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? cpu;
  } catch {
    /* not Linux */
  }
  return {
    nproc: os.availableParallelism(),
    memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    cpu,
    node: process.version,
    loadAvg: os.loadavg().map((x) => +x.toFixed(2)),
    os: `${os.type()} ${os.release()}`,
  };
}

interface BenchRun {
  bench: 'fanout';
  date: string;
  engine: {
    commit: string;
    subject: string;
    dirty: boolean;
    branch: string;
    engineCommit: string;
    engineSubject: string;
  };
  machine: Machine;
  tools: { parallelSsh: string; ansible: string };
  argv: string[];
  totalMs: number;
  scenarios: ScenarioResult[];
}

async function gitInfo(): Promise<BenchRun['engine']> {
  const g = async (args: string[]) => (await run('git', args, { timeoutMs: 10_000 })).stdout.trim();
  // Only the engine's code counts as dirty: results and docs change during a run.
  const dirty =
    (await g(['status', '--porcelain', '--', 'workflows', 'activities', 'domain', 'keymanager', 'worker', 'simulator']))
      .length > 0;
  // The engine: the last commit that changed what runs a rollout (HEAD may be a bench-only commit).
  const engineDirs = ['workflows', 'activities', 'domain', 'keymanager', 'worker', 'store'];
  return {
    commit: await g(['rev-parse', 'HEAD']),
    subject: await g(['log', '-1', '--format=%s']),
    dirty,
    branch: await g(['rev-parse', '--abbrev-ref', 'HEAD']),
    engineCommit: await g(['log', '-1', '--format=%H', '--', ...engineDirs]),
    engineSubject: await g(['log', '-1', '--format=%s', '--', ...engineDirs]),
  };
}

async function toolVersions(): Promise<BenchRun['tools']> {
  const v = async (cmd: string, args: string[]) => {
    try {
      const r = await run(cmd, args, { timeoutMs: 30_000 });
      return (r.stdout + r.stderr).trim().split('\n')[0];
    } catch {
      return 'not installed';
    }
  };
  return {
    parallelSsh: await v('dpkg-query', ['-W', '-f=pssh ${Version}', 'pssh']),
    ansible: await v('ansible', ['--version']),
  };
}

const sec = (ms: number | undefined) => (ms === undefined ? '–' : (ms / 1000).toFixed(2) + ' s');
const kib = (bytes: number) =>
  bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MiB` : `${Math.round(bytes / 1024)} KiB`;
const NAMES: Record<System, string> = { km: 'km-hotfix', pssh: 'parallel-ssh', ansible: 'Ansible (`raw`)' };

function runTable(r: BenchRun): string {
  const lines = [
    '| scenario | ideal | system | fan-out (wall) | × ideal | span in server logs | overhead/server p50 / p95 | max in flight | patched | history events (max/exec) | largest history · result · Temporal warnings | worker peak RSS |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const s of r.scenarios) {
    for (const sys of SYSTEMS) {
      const x = s.systems[sys];
      if (!x) continue;
      const label = s.rollback
        ? `${s.name} (fan-out until the last server fails)`
        : `${s.name}${s.applyMs + s.restartMs === 0 ? ' (no latency)' : ''}`;
      lines.push(
        `| ${label} | ${sec(s.idealMs)} | ${NAMES[sys]}${x.ok ? '' : ' **FAILED**'} | ${sec(x.wallMs)} | ${x.ratio ?? '–'} | ${sec(x.spanMs)} | ${x.overheadP50Ms} / ${x.overheadP95Ms} ms | ${x.maxInFlight} | ${x.patched}/${s.servers} | ${x.historyMaxEvents !== undefined ? `${x.historyMaxEvents}${x.historyMaxEvents >= HISTORY_WARN ? ' ⚠' : ''} (${x.historyExecutions} executions)` : '–'} | ${x.historyMaxBytes !== undefined ? `${kib(x.historyMaxBytes)} · ${kib(x.resultBytes ?? 0)} · ${x.temporalWarnings ?? 0}` : '–'} | ${x.workerPeakRssMiB !== undefined ? `${x.workerPeakRssMiB} MiB` : '–'} |`,
      );
      if (s.rollback && x.rollbackMs !== undefined) {
        lines.push(
          `| ${s.name}: **rollback** of ${x.rolledBack} servers | ${sec(x.rollbackIdealMs)} | km-hotfix | ${sec(x.rollbackMs)} | ${x.rollbackRatio ?? '–'} | ${sec(x.rollbackSpanMs)} | ${x.rollbackOverheadP50Ms} / ${x.rollbackOverheadP95Ms} ms | | | | | |`,
        );
      }
    }
  }
  return lines.join('\n');
}

/** The newest result of each scenario over these runs (in run order). */
function latestPerScenario(runs: readonly BenchRun[]): ScenarioResult[] {
  const by = new Map<string, ScenarioResult>();
  for (const r of runs) for (const s of r.scenarios) by.set(s.name, s);
  return [...by.values()].sort((a, b) => a.servers - b.servers || a.name.localeCompare(b.name));
}

function chartFor(scenarios: readonly ScenarioResult[]): string | undefined {
  const fixed = scenarios.filter((s) => !s.rollback && !s.backend && s.applyMs + s.restartMs > 0);
  if (fixed.length === 0) return undefined;
  const series: ChartSeries[] = [
    { name: 'ideal', color: '#444', dashed: true, points: fixed.map((s) => ({ x: s.servers, y: s.idealMs / 1000 })) },
    {
      name: 'km-hotfix',
      color: '#c62828',
      points: fixed.filter((s) => s.systems.km?.ok).map((s) => ({ x: s.servers, y: s.systems.km!.wallMs / 1000 })),
    },
    {
      name: 'parallel-ssh',
      color: '#1565c0',
      points: fixed.filter((s) => s.systems.pssh?.ok).map((s) => ({ x: s.servers, y: s.systems.pssh!.wallMs / 1000 })),
    },
    {
      name: 'Ansible (raw)',
      color: '#2e7d32',
      points: fixed
        .filter((s) => s.systems.ansible?.ok)
        .map((s) => ({ x: s.servers, y: s.systems.ansible!.wallMs / 1000 })),
    },
  ];
  const w = fixed.map((s) => `${s.servers}/${s.window}`).join(', ');
  return lineChartSvg(series, {
    title: `Fan-out time, apply ${fixed[0].applyMs} ms + restart ${fixed[0].restartMs} ms (${w})`,
    xLabel: 'servers (window: see table)',
    yLabel: 'seconds',
  });
}

async function loadRuns(dir: string): Promise<BenchRun[]> {
  const files = (await fs.readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('-fanout.json')).sort();
  const runs: BenchRun[] = [];
  for (const f of files)
    runs.push(...(JSON.parse(await fs.readFile(path.join(dir, f), 'utf8')) as { runs: BenchRun[] }).runs);
  return runs;
}

async function writeDoc(runs: BenchRun[]): Promise<void> {
  const docs = path.join(ROOT, 'docs');
  await fs.mkdir(path.join(docs, 'benchmarks'), { recursive: true });
  for (const f of await fs.readdir(path.join(docs, 'benchmarks')))
    if (/^fanout-.*\.svg$/.test(f)) await fs.rm(path.join(docs, 'benchmarks', f));
  const parts: string[] = [
    '# Benchmarks: fan-out at the speed of the servers',
    '',
    '_Written by `npm run bench` (bench/fanout.ts) from `bench/results/*-fanout.json`; edit the bench, not this file._',
    '',
    'Issue 11 asks that km-hotfix, with its canary, gate, rollback and durability, cost no time on top of what release',
    "engineers use today. Each scenario starts a simulated Key Manager fleet (the repo's simulator: real SSH servers,",
    'ssh2, fixed latencies: `--apply-hotfix` sleeps `apply`, `supervisorctl restart all` keeps services STOPPED for',
    '`restart`), then, on that same fleet and one after the other, applies the same common hotfix to the same N servers with:',
    '',
    '- **km-hotfix**: `km-hotfix rollout NAME --canary km-fe-1 --batch WINDOW`, approved as soon as the gate opens; the',
    '  fleet has one extra server (the canary), so the fan-out covers exactly the N servers the peers patch. The worker is',
    "  `km-hotfix worker` in its own process. Time: from the approval (the Update returned) to the workflow's end.",
    '- **parallel-ssh** (Debian `pssh`): `parallel-ssh -p WINDOW -t 0` with `ssh-mgr-controller --apply-hotfix=NAME && supervisorctl restart all && supervisorctl status`. Time: spawn to exit.',
    "- **Ansible** (`ansible-core`): `ansible fleet -m raw -f WINDOW -a '<the same command>'`, Ansible's default ssh_args. Time: spawn to exit.",
    '',
    "All three use strict host-key checking (a known_hosts written from the simulator's host keys; km-hotfix pins the same",
    "keys from its inventory) and the fleet's one authorized key. The Key Manager database is reset between runs",
    '(nobody has the hotfix), so each run applies fresh; every run is checked in that database (`patched`).',
    '',
    'Columns: **ideal** = ceil(N / window) × (apply + restart). **× ideal** = wall time / ideal. **span in server logs** =',
    "first apply start to last `supervisorctl` end, from the simulated servers' own command logs. **overhead/server** =",
    'for each server, the time its window slot stood idle before it started (its apply start minus the end that freed',
    'the slot: the (i − window)-th end in time order; for the first `window` servers, the first apply of the fan-out)',
    'plus its own wall time beyond apply + restart (round trips between its commands); p50 and p95 over the N servers.',
    '**max in flight** = most servers between apply start and status end at one instant (≤ window). **history events** =',
    'the largest history of any workflow execution of the rollout (parent and children), fetched with the Temporal',
    'client; Temporal warns at 10,240. **largest history · result · Temporal warnings** = the largest history in bytes',
    "(`describe()`; Temporal warns at 10 MiB), the size of the workflow's result (its bounded status), and the lines of the",
    "Temporal server's own log during the run that warn of a payload (512 KiB) or history size or count; a run with any",
    'such warning is marked FAILED. **worker peak RSS** = VmHWM of the worker process (/proc/PID/status).',
    '**Rollback** (`rollback-…` scenarios, km-hotfix only): the last server of the fan-out fails every apply (a simulator',
    'fault), so the rollout rolls back everything it patched (the canary and every other server): timed from the moment',
    "the status says `rolling_back` to the workflow's end, against the same windowed ideal. (Not a removal.)",
    '**Backend** (`backend-…` scenarios, km-hotfix only): a backend hotfix on N servers, a quarter frontends and three',
    'quarters backends; the canary is the first backend, so every other backend is drained (Maximum Processes 0) while it',
    'is verified and the approval names them by count and sha256 (issue 31); timed from the approval (which restores them)',
    'to the end; the fan-out is the N − 1 other servers.',
    '',
    '## The 20,000-server target',
    '',
    '`--scenarios 20000x2000 --systems km --fleet-processes 4` splits the fleet over 4 simulator processes (names',
    '`km-…`, `km1-…`, `km2-…`, `km3-…`, one Key Manager database). Run twice on engine 4c89b01 (2026-11-27 22:22 and',
    '22:31 UTC, 2 shared cores): both rollouts **completed, all 20,000 servers patched, with no payload or history warning**',
    'from the Temporal server (its log scanned for blob-size and history-size/count warnings), at most 2,393 events and',
    "4.2 MiB in any execution's history (201 executions: the parent and 200 children of 100), a final result of 3 KiB",
    "(the bounded status: counts, servers needing attention; the per-server list is paged from the ledger). The worker's",
    'open files stay near 2,048 idle SSH connections plus the window (keymanager/ssh.ts MAX_IDLE_CONNECTIONS), under the',
    'hard limit of 20,000 here. **It is slow on this machine**: 329 s and 314 s against an ideal of 15 s, worker peak RSS',
    '1.7 and 2.0 GiB. Two cores carry the worker, the Temporal dev server and 20,000 simulated servers, and the worker',
    're-opens each connection the preflight opened (20,000 SSH handshakes in the fan-out). With 2,000 steps in flight',
    "the worker's event loop was starved for seconds: in the second run 2,943 of 21,301 server steps missed their 5 s",
    "heartbeat timeout and were retried (up to 9 attempts, with backoff), which is most of the time. The first run's",
    'server logs showed 2,062 servers between apply and status at one instant (2,000 in the second): a timed-out attempt',
    'went on until its next heartbeat learnt of the timeout. Since these runs a server step sends no apply, unapply',
    'or restart once it has gone longer than the heartbeat timeout less the 2 s throttle without a heartbeat',
    '(activities/key-manager-ssh.ts `fence`), so a replaced attempt does not act on the server after its successor; a',
    'third run with it (22:49 UTC) completed in 276 s, at most 2,000 in flight, no warning, 2,424 events and 4.2 MiB at',
    'most per execution, worker peak RSS 1.8 GiB.',
    'With slices of 500 (engine b744311, 2026-11-28 01:43 UTC): completed, all 20,000 patched, no warning, 41 executions',
    "(the parent and 40 children of 500), at most 2,320 events and 3.7 MiB in any execution's history, a final result of",
    '3 KiB, 340 s, worker peak RSS 1.6 GiB.',
    'In runs (engine 676f001, 2026-11-28 12:03 UTC: each window place runs 10 servers in turn in one activity):',
    "completed, all 20,000 patched, no warning, 41 executions, at most 530 events and 3.7 MiB in any execution's history,",
    'a final result of 3 KiB, 154 s, worker peak RSS 1.3 GiB. At most 1,250 servers were in flight at once: the one',
    'worker, not the window, set the pace.',
    'A window this wide needs more workers (or cores) than this machine has.',
    '',
    '## Reproduce',
    '',
    '```sh',
    'apt-get install -y pssh ansible-core      # parallel-ssh and ansible on PATH',
    'npm ci && npm run bench -- --quick         # 20/5, 200/50, 200/50 without latency: a few minutes',
    'npm run bench                              # + 2,000/200 and the rollback of 2,000 (long on the old engine)',
    'npm run bench -- --scenarios 200x50,rollback-200x50 --systems km',
    'npm run bench -- --scenarios 20000x2000 --systems km --fleet-processes 4   # the 20,000-server target',
    '```',
    '',
    'Options: `--scenarios` takes `[rollback-]SERVERSxWINDOW[-nolat]` names; `--systems km,pssh,ansible`; `--apply-ms`,',
    '`--restart-ms` (500 / 1000); `--fleet-processes K` (simulator processes; default one per 5,000 servers);',
    '`--timeout-min` per run (20); `--no-doc`; `--no-record` (print the run, write no file: for experiments on an uncommitted tree); `--doc-only` (rewrite this file from the recorded results). Each run is appended to `bench/results/<date>-fanout.json` with the engine',
    'commit, the machine and the tool versions, and this file is rewritten from all of them. The fleet needs about 2 open',
    'files per server in its processes and the worker one per server up to 2,048 idle ones plus the window (`ulimit -n`).',
    '',
  ];
  // Engines in the order they were first measured; per engine, the newest result of each scenario.
  const engines = [...new Set(runs.map((r) => r.engine.engineCommit))];
  const label = (e: string) => `engine ${e.slice(0, 7)}`;
  const merged = new Map(engines.map((e) => [e, latestPerScenario(runs.filter((r) => r.engine.engineCommit === e))]));
  const names = [...new Set([...merged.values()].flatMap((ss) => ss.map((s) => s.name)))];
  parts.push('## km-hotfix by engine (newest run of each scenario; the range over all runs)', '');
  parts.push(
    `| scenario | ideal | ${engines.map(label).join(' | ')} | parallel-ssh | Ansible |`,
    `|---|---|${engines.map(() => '---|').join('')}---|---|`,
  );
  for (const n of names) {
    const any = [...merged.values()].flatMap((ss) => ss.filter((s) => s.name === n));
    const cell = (x: SystemResult | undefined, rollback = false) => {
      if (!x) return '–';
      const ms = rollback ? x.rollbackMs : x.wallMs;
      const ratio = rollback ? x.rollbackRatio : x.ratio;
      return `${sec(ms)}${ratio ? ` (${ratio}×)` : ''}${x.ok ? '' : ' failed'}`;
    };
    // Every run of this scenario on an engine: the newest, and the range when there are several (a shared machine is noisy).
    const all = (e: string | undefined, sys: System, rollback: boolean) =>
      runs
        .filter((r) => e === undefined || r.engine.engineCommit === e)
        .flatMap((r) => r.scenarios.filter((s) => s.name === n).map((s) => s.systems[sys]))
        .filter((x): x is SystemResult => Boolean(x?.ok))
        .map((x) => (rollback ? x.rollbackMs : x.wallMs) ?? 0);
    const range = (v: number[]) =>
      v.length > 1
        ? `; ${v.length} runs: ${(Math.min(...v) / 1000).toFixed(1)}–${(Math.max(...v) / 1000).toFixed(1)} s`
        : '';
    const peer = (sys: System) =>
      cell([...any].reverse().find((s) => s.systems[sys])?.systems[sys]) + range(all(undefined, sys, false));
    const rollback = any[0].rollback;
    parts.push(
      `| ${n}${rollback ? ' (rollback)' : ''} | ${sec(rollback ? any.find((s) => s.systems.km?.rollbackIdealMs !== undefined)?.systems.km?.rollbackIdealMs : any[0].idealMs)} | ${engines.map((e) => cell(merged.get(e)!.find((s) => s.name === n)?.systems.km, rollback) + range(all(e, 'km', rollback))).join(' | ')} | ${rollback ? '–' : peer('pssh')} | ${rollback ? '–' : peer('ansible')} |`,
    );
  }
  parts.push(
    '',
    'Engines:',
    '',
    ...engines.map((e) => {
      const r = runs.find((x) => x.engine.engineCommit === e)!;
      return `- ${label(e)}: \`${e}\` ${r.engine.engineSubject}`;
    }),
    '',
  );
  // One chart, of the newest engine (the one README quotes); older engines are the data in bench/results/ and the table.
  for (const e of engines.slice(-1)) {
    const svg = chartFor(merged.get(e)!);
    if (!svg) continue;
    const file = `benchmarks/fanout-${e.slice(0, 7)}.svg`;
    await fs.writeFile(path.join(docs, file), svg);
    parts.push(
      `### Fan-out time against fleet size, ${label(e)}`,
      '',
      `![fan-out time against fleet size, ${label(e)}](${file})`,
      '',
    );
  }
  parts.push('## Every run', '');
  for (const r of [...runs].reverse()) {
    const id = r.engine.engineCommit.slice(0, 7);
    parts.push(
      `### ${r.date.slice(0, 16).replace('T', ' ')} UTC — engine ${id}${r.engine.dirty ? ' (+ uncommitted changes)' : ''} (${r.engine.branch})`,
      '',
    );
    parts.push(
      `Engine (last commit to workflows/, activities/, domain/, keymanager/, worker/, store/): \`${r.engine.engineCommit}\` ${r.engine.engineSubject}. Checked out: \`${r.engine.commit.slice(0, 10)}\` ${r.engine.subject}.`,
      '',
    );
    parts.push(
      `Machine: ${r.machine.nproc} cores (${r.machine.cpu}), ${r.machine.memoryGiB} GiB, ${r.machine.os}, Node ${r.machine.node}; load average at start ${r.machine.loadAvg.join(' / ')} (the machine is shared with other engineers' builds and tests). ${r.tools.parallelSsh}; ${r.tools.ansible}. Command: \`${r.argv.join(' ') || '(defaults)'}\`, ${Math.round(r.totalMs / 1000)} s in all.`,
      '',
    );
    parts.push(runTable(r), '');
    const fleets = r.scenarios
      .map(
        (s) =>
          `${s.name}: ${s.fleetProcesses} process${s.fleetProcesses > 1 ? 'es' : ''}, ${s.fleetPeakRssMiB.join(' + ')} MiB`,
      )
      .join('; ');
    parts.push(`Simulator peak RSS: ${fleets}.`, '');
    const failed = r.scenarios.flatMap((s) =>
      SYSTEMS.filter((x) => s.systems[x] && !s.systems[x].ok).map(
        (x) => `- ${s.name} ${NAMES[x]}: ${s.systems[x]!.error ?? s.systems[x]!.phase ?? 'failed'}`,
      ),
    );
    if (failed.length) parts.push('Failures:', '', ...failed, '');
  }
  await fs.writeFile(path.join(docs, 'BENCHMARKS.md'), parts.join('\n'));
}

// ---- main ------------------------------------------------------------------------------

async function main(): Promise<void> {
  const o = options();
  if (o.docOnly) {
    await writeDoc(await loadRuns(path.join(ROOT, 'bench', 'results')));
    process.exit(0);
  }
  const t0 = Date.now();
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'km-fanout-bench-'));
  await fs.chmod(dir, 0o755); // PostgreSQL runs as its own user when we are root
  let temporal: RunningDevServer | undefined;
  let pg: RunningPostgres | undefined;
  let connection: Connection | undefined;
  let code = 0;
  try {
    const m = machine();
    const [engine, tools] = [await gitInfo(), await toolVersions()];
    const binary = await ensureTemporal((l) => process.stderr.write(l + '\n'));
    const [tPort, pPort] = [await freePort(), await freePort()];
    [temporal, pg] = await Promise.all([
      startDevServer({ binary, port: tPort, headless: true, logFile: path.join(dir, 'temporal.log') }),
      startEmbeddedPostgres({ dataDir: path.join(dir, 'pg', 'data'), port: pPort }),
    ]);
    connection = await Connection.connect({ address: temporal.address });
    const keys = generateEd25519KeyPair();
    const keyFile = path.join(dir, 'id_ed25519');
    await fs.writeFile(keyFile, keys.private, { mode: 0o600 });
    const ctx: Ctx = { dir, temporal, pg, client: new Client({ connection }), keyFile, publicKey: keys.public, o };
    const scenarios: ScenarioResult[] = [];
    for (const [i, s] of o.scenarios.entries()) {
      process.stderr.write(
        `scenario ${s.name}: ${s.servers} servers, window ${s.window}, apply ${s.applyMs} ms + restart ${s.restartMs} ms\n`,
      );
      scenarios.push(await runScenario(ctx, s, i));
    }
    const date = new Date().toISOString();
    const runRecord: BenchRun = {
      bench: 'fanout',
      date,
      engine,
      machine: m,
      tools,
      argv: process.argv.slice(2),
      totalMs: Date.now() - t0,
      scenarios,
    };
    const resultsDir = path.join(ROOT, 'bench', 'results');
    if (o.record) {
      const file = path.join(resultsDir, `${date.slice(0, 10)}-fanout.json`);
      const prior = await fs.readFile(file, 'utf8').then(
        (t) => (JSON.parse(t) as { runs: BenchRun[] }).runs,
        () => [] as BenchRun[],
      );
      await fs.writeFile(file, JSON.stringify({ runs: [...prior, runRecord] }, null, 1) + '\n');
    }
    if (o.doc) await writeDoc(await loadRuns(resultsDir));
    console.log(JSON.stringify(runRecord));
    if (scenarios.some((s) => Object.values(s.systems).some((x) => !x.ok))) code = 1;
  } catch (err) {
    console.error(err);
    code = 1;
  } finally {
    await connection?.close().catch(() => undefined);
    await Promise.all([temporal?.stop().catch(() => undefined), pg?.stop().catch(() => undefined)]);
    if (!process.env.KM_HOTFIX_KEEP_BENCH_DIR)
      await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
  process.exit(code);
}

if (process.argv[2] === FLEET_CHILD) void fleetChild();
else void main();
