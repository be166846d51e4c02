// Property test of steering and faults together (issue 22): random fleets
// (1-12 servers of a 12-server fleet), hotfix types, windows, budgets, gate
// answers and server faults, and, timed after the gate, pause, resume,
// abort, a cancel from Temporal and the termination of a batch child. Every
// rollout must end by the invariant of test/helpers/invariant.ts (restarts
// and the window included). Two layers, both seeded and printed on failure:
//   (a) KM_HOTFIX_PROPERTY_STEERING_RUNS cases (default 200) with an
//       in-process worker: the engine meets many interleavings cheaply;
//   (b) KM_HOTFIX_PROPERTY_REAL_RUNS cases (default 20) with a real
//       `km-hotfix worker` process, which the schedule may also SIGKILL,
//       on a Temporal server of its own, which the schedule may restart.
// KM_HOTFIX_PROPERTY_SEED (and KM_HOTFIX_PROPERTY_PATH, one lane) replays a failure. `npm run property` runs 2,000 of (a).
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { rolloutEnv, RolloutEnv, FAST_TIMING } from './helpers/rollout-env';
import { assertRolloutInvariant } from './helpers/invariant';
import { scratchDir, testStack } from './helpers/stack';
import { startWorkerProcess, WorkerProcess } from './helpers/worker-process';
import type { FaultSpec } from '../simulator';
import { isFinalPhase } from '../domain/rollout';
import { RolloutStatus } from '../domain/messages/rollout';
import type { Component } from '../domain/hotfix';
import { batchWidth, parseBatch } from '../domain/plan';
import { startDevServer, type DevServerOptions, type RunningDevServer } from '../stack/temporal';
import { freePort } from '../stack/process';

const STEERING_RUNS = Number(process.env.KM_HOTFIX_PROPERTY_STEERING_RUNS ?? 200);
const REAL_RUNS = Number(process.env.KM_HOTFIX_PROPERTY_REAL_RUNS ?? 20);
const SEED = process.env.KM_HOTFIX_PROPERTY_SEED ? Number(process.env.KM_HOTFIX_PROPERTY_SEED) : undefined;
/** fast-check's `path` of a failure (printed with its seed): replays that one case at once. */
const PATH = process.env.KM_HOTFIX_PROPERTY_PATH;
const TIMING = {
  ...FAST_TIMING,
  servicesTimeoutMs: 4_000,
  commandTimeoutMs: 1_000,
  maxRetryIntervalMs: 300,
  sliceServers: 3,
};
const FLEET = { frontends: 4, backends: 8 };

/** Faults placed before the rollout starts (a status fault would hit the preflight instead). */
const FAULTS: Record<string, FaultSpec> = {
  'apply fails once': { failApplies: 1 },
  'apply fails always': { failApplies: 10 },
  'apply answer lost': { dropConnection: 1, dropOn: 'apply' },
  'dropped before apply': { dropConnection: 1, dropOn: 'apply', dropWhen: 'before' },
  'dropped before restart': { dropConnection: 1, dropOn: 'restart', dropWhen: 'before' },
  'restart answer lost': { dropConnection: 1, dropOn: 'restart' },
  'restart hangs past its timeout': { hangMs: 1_300, hangOn: 'restart' },
  'apply hangs past its timeout': { hangMs: 1_300, hangOn: 'apply' },
  'unreachable at apply': { unreachableOn: 'apply', unreachableMs: 1_200 },
  'unreachable at restart': { unreachableOn: 'restart', unreachableMs: 1_200 },
  'unapply answer lost': { dropConnection: 1, dropOn: 'unapply' },
  'unapply fails once': { failUnapplies: 1 },
  'FATAL after restart': { fatalService: 'sshmgr-api' },
  'checksum mismatch': { kmVersion: '3.0.1' },
};

type Steer =
  'pause' | 'resume' | 'abort' | 'cancel' | 'terminate a batch child' | 'kill the worker' | 'restart Temporal';

/** Pause and resume most often; the events that end a rollout or lose a child (a 7 s wait for its activities) less. */
const WEIGHTS: Record<Steer, number> = {
  pause: 4,
  resume: 4,
  abort: 2,
  cancel: 1,
  'terminate a batch child': 1,
  'kill the worker': 2,
  'restart Temporal': 2,
};
const steerArb = (steers: Steer[]) =>
  fc.oneof(...steers.map((s) => ({ arbitrary: fc.constant(s), weight: WEIGHTS[s] })));

const scenario = (steers: Steer[]) =>
  fc.record({
    size: fc.integer({ min: 1, max: FLEET.frontends + FLEET.backends }),
    offset: fc.nat(),
    component: fc.constantFrom<Component>('frontend', 'backend', 'common'),
    batch: fc.constantFrom('1', '2', '3', '50%', '100%'),
    maxFailures: fc.integer({ min: 0, max: 2 }),
    approve: fc.boolean(),
    faults: fc.array(fc.record({ server: fc.nat(), fault: fc.constantFrom(...Object.keys(FAULTS)) }), { maxLength: 3 }),
    steering: fc.array(fc.record({ atMs: fc.integer({ min: 0, max: 1_500 }), steer: steerArb(steers) }), {
      maxLength: 4,
    }),
  });
type Scenario = ReturnType<typeof scenario> extends fc.Arbitrary<infer T> ? T : never;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Hands {
  /** SIGKILL the worker and start another (layer b). */
  killWorker?(): Promise<void>;
  /** Stop the Temporal server and start it again on the same SQLite file (layer b). */
  restartTemporal?(): Promise<void>;
}

/** One case: pick the servers, place the faults, start, answer the gate, steer on schedule, then check the invariant. */
async function runCase(env: RolloutEnv, sc: Scenario, hands: Hands): Promise<void> {
  const names = env.fleet.servers.map((s) => s.name);
  const chosen = new Set(Array.from({ length: sc.size }, (_, i) => names[(sc.offset + i) % names.length]));
  // A canary of the hotfix's type among them (preflight refuses the rollout otherwise, before it is recorded).
  const fits = (role: string) => sc.component === 'common' || role === 'both' || role === sc.component;
  if (![...chosen].some((n) => fits(env.fleet.server(n).role)))
    chosen.add(env.fleet.servers.find((s) => fits(s.role))!.name);
  const servers = names.filter((n) => chosen.has(n));
  for (const s of env.fleet.servers) s.clearFaults();
  const hf = await env.hotfix(sc.component);
  const before = await env.maxProcesses();
  for (const f of sc.faults) env.fleet.server(servers[f.server % servers.length]).fault(FAULTS[f.fault]);
  const h = await env.startRollout({
    hotfix: hf.name,
    servers,
    batch: sc.batch,
    maxFailures: sc.maxFailures,
    timing: TIMING,
  });
  const gate = await env.waitForPhase(h, 'verifying', 60_000);
  if (gate.phase === 'verifying') {
    const answer = sc.approve ? env.approve(h, 'bob') : env.reject(h, 'bob', 'property drill');
    await answer.catch(() => undefined); // a refusal (e.g. after a cancel) is an outcome too
  }
  const t0 = Date.now();
  for (const s of [...sc.steering].sort((a, b) => a.atMs - b.atMs)) {
    await sleep(Math.max(0, t0 + s.atMs - Date.now()));
    await steer(env, h, s.steer, hands).catch(() => undefined); // refused steering changes nothing: also an outcome
  }
  const st = await finish(env, h);
  // A hung command the client gave up on settles (it still logs when its hang ends).
  if (sc.faults.some((f) => FAULTS[f.fault].hangMs)) await sleep(1_400);
  try {
    await assertRolloutInvariant(env, st, {
      maxProcessesBefore: before,
      window: batchWidth(parseBatch(sc.batch), Math.max(1, servers.length - 1)),
    });
  } catch (err) {
    // What each server was sent, and what the ledger says, for the person replaying the seed.
    const logs = servers.map(
      (n) =>
        `${n}:\n${env.fleet
          .server(n)
          .log()
          .filter((e) => e.at >= st.startedAt)
          .map((e) => `  ${e.at} ${e.command} → ${e.exitCode}${e.dropped ? ' (dropped)' : ''}`)
          .join('\n')}`,
    );
    const events = await env.orchestrator<
      { kind: string; server: string | null; at: Date }[]
    >`SELECT kind, server, at FROM rollout_event WHERE rollout_id = ${st.id} ORDER BY seq`;
    (err as Error).message +=
      `\n${logs.join('\n')}\nledger: ${events.map((e) => `${e.kind}${e.server ? `:${e.server}` : ''}`).join(' ')}`;
    throw err;
  }
}

async function steer(env: RolloutEnv, h: WorkflowHandle, s: Steer, hands: Hands): Promise<void> {
  switch (s) {
    case 'pause':
      await env.pause(h, 'dana');
      break;
    case 'resume':
      await env.resume(h, 'dana');
      break;
    case 'abort':
      await env.abort(h, 'dana', 'property drill');
      break;
    case 'cancel':
      await h.cancel();
      break;
    case 'terminate a batch child': {
      const child = (await env.status(h)).activeBatchWorkflows[0];
      if (child) await env.client.workflow.getHandle(child).terminate('property drill');
      break;
    }
    case 'kill the worker':
      await hands.killWorker?.();
      break;
    case 'restart Temporal':
      await hands.restartTemporal?.();
      break;
  }
}

/** The rollout's end; a rollout left paused by the schedule is resumed. */
async function finish(env: RolloutEnv, h: WorkflowHandle): Promise<RolloutStatus> {
  const deadline = Date.now() + 150_000;
  for (;;) {
    const st = await env.status(h).catch(() => undefined);
    if (st && isFinalPhase(st.phase)) return (await h.result()) as RolloutStatus;
    if (st?.paused) await env.resume(h, 'dana').catch(() => undefined);
    if (Date.now() > deadline)
      throw new Error(
        `${h.workflowId} did not end: ${JSON.stringify({ phase: st?.phase, paused: st?.paused, error: st?.error })}`,
      );
    await sleep(200);
  }
}

const params = (runs: number) => ({
  numRuns: runs,
  endOnFailure: true,
  ...(SEED !== undefined ? { seed: SEED } : {}),
  ...(PATH !== undefined ? { path: PATH } : {}),
  verbose: 1 as const,
});

/** Layer (a) runs in lanes at once (KM_HOTFIX_PROPERTY_LANES, default 2), each on a fleet of its own, with seeds `seed`, `seed + 1`, … */
const LANES = Number(process.env.KM_HOTFIX_PROPERTY_LANES ?? 2);

describe('property (a): steering and faults together, in-process worker', function () {
  this.timeout(120_000 + STEERING_RUNS * 60_000);
  const envs: RolloutEnv[] = [];
  before(async () => {
    for (let i = 0; i < LANES; i++) envs.push(await rolloutEnv({ ...FLEET, restartMs: 20 }));
  });
  after(async () => {
    for (const env of envs) await env.close();
  });

  it(`${STEERING_RUNS} random rollouts steered at random moments${SEED !== undefined ? ` (seed ${SEED})` : ''}`, async () => {
    const seed = SEED ?? Math.floor(Math.random() * 2 ** 31);
    await Promise.all(
      envs.map((env, lane) =>
        fc.assert(
          fc.asyncProperty(scenario(['pause', 'resume', 'abort', 'cancel', 'terminate a batch child']), async (sc) => {
            try {
              await runCase(env, sc, {});
            } finally {
              await env.endAll();
            }
          }),
          { ...params(Math.ceil(STEERING_RUNS / LANES)), seed: seed + lane },
        ),
      ),
    );
  });
});

describe('property (b): steering, faults, worker SIGKILLs and Temporal restarts, real worker process', function () {
  this.timeout(120_000 + REAL_RUNS * 120_000);
  let env: RolloutEnv;
  let keyFile: string;
  // A Temporal server of its own, on a SQLite file, so that a case can restart it and every workflow survives.
  let temporal: RunningDevServer;
  let temporalOptions: DevServerOptions;
  let connection: Connection;
  const workers: WorkerProcess[] = [];
  const workerOn = () =>
    startWorkerProcess(
      env.client,
      {
        temporalAddress: temporal.address,
        taskQueue: env.taskQueue,
        orchestratorUrl: env.orchestratorUrl,
        kmUrl: env.kmUrl,
        sshKeyFile: keyFile,
        allowedSigners: env.people.allowedSigners,
      },
      workers,
    );

  before(async () => {
    const dir = await scratchDir('property-temporal');
    temporalOptions = {
      binary: testStack().temporalBinary,
      port: await freePort(),
      headless: true,
      dbFile: path.join(dir, 'temporal.db'),
      logFile: path.join(dir, 'temporal.log'),
    };
    temporal = await startDevServer(temporalOptions);
    connection = await Connection.connect({ address: temporal.address });
    env = await rolloutEnv({ ...FLEET, restartMs: 20, client: new Client({ connection }) });
    // The env's in-process worker stops: a `km-hotfix worker` process serves its task queue instead.
    env.worker.worker.shutdown();
    keyFile = path.join(await scratchDir('property'), 'id_ed25519');
    await fs.writeFile(keyFile, env.sshPrivateKey, { mode: 0o600 });
    await workerOn();
  });
  after(async () => {
    await env?.endAll();
    await Promise.all(workers.splice(0).map((w) => w.kill()));
    await env?.close();
    await connection?.close();
    await temporal?.stop();
  });

  it(`${REAL_RUNS} random rollouts with worker SIGKILLs and Temporal restarts${SEED !== undefined ? ` (seed ${SEED})` : ''}`, async () => {
    const done = { kills: 0, restarts: 0 };
    const hands: Hands = {
      async killWorker() {
        done.kills++;
        const w = workers.shift();
        await w?.kill();
        await workerOn();
      },
      async restartTemporal() {
        done.restarts++;
        await temporal.stop();
        await sleep(1_000);
        temporal = await startDevServer(temporalOptions);
      },
    };
    await fc.assert(
      fc.asyncProperty(
        scenario([
          'pause',
          'resume',
          'abort',
          'cancel',
          'terminate a batch child',
          'kill the worker',
          'restart Temporal',
        ]),
        async (sc) => {
          try {
            await runCase(env, sc, hands);
          } finally {
            await env.endAll();
          }
        },
      ),
      params(REAL_RUNS),
    );
    console.log(`      (${done.kills} worker SIGKILLs, ${done.restarts} Temporal restarts)`);
  });
});
