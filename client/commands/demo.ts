// `km-hotfix demo` (npm run demo): the whole procedure on embedded defaults.
// Starts its own stack (free ports, a temp folder) with a simulated fleet of
// 2 frontends and 3 backends; uploads a backend hotfix, rolls it out as alice;
// alice's own approval is refused, a second person (dana) approves the canary,
// each decision signed with that person's SSH key; then rolls out a hotfix built
// for another Key Manager version, which fails on the canary with the
// checksum mismatch and rolls back on its own; stops everything it started.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Command } from 'commander';
import type { LogLevel } from '@temporalio/worker';
import type { Sql } from 'postgres';
import { loadConfig, Config } from '../../platform/config';
import { CliError, EXIT } from '../errors';
import type { RolloutStatus, RolloutTiming } from '../../domain/messages/rollout';
import type { DevStack } from '../../stack/dev-stack';
import type { SimFleet } from '../../simulator';
import { watch } from '../render/watch';
import { formatTable } from './fleet';
import { withTemporal } from './common';
import { startRollout } from './rollout';
import { startUpload } from './upload';
import { answerGate } from './gate';
import { signer } from '../render/status';
import { statusReader } from './status';

/** Short timings: the simulator restarts in ~300 ms, so nothing needs minutes here. */
const DEMO_TIMING: Partial<RolloutTiming> = { servicesTimeoutMs: 20_000, maxRetryIntervalMs: 1_000 };
const REQUESTER = 'alice';
const APPROVER = 'dana';

interface Step {
  say(line?: string): void;
  title(text: string): void;
}

function printer(out: NodeJS.WriteStream): Step {
  const bold = out.isTTY ? (s: string) => `\x1b[1m${s}\x1b[0m` : (s: string) => s;
  return {
    say: (line = '') => out.write(line + '\n'),
    title: (text) => out.write(`\n${bold(`== ${text}`)}\n`),
  };
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .summary('see the whole procedure in under two minutes on a simulated fleet (nothing to set up)')
    .description(
      `Start an embedded Temporal, PostgreSQL and a simulated Key Manager fleet (2 frontends, 3 backends) in a temporary folder, on free ports; upload a backend hotfix and roll it out (canary, drained backends, approval by a second person, fan-out); then roll out a hotfix built for another Key Manager version, which fails on the canary with the checksum mismatch and rolls back on its own. Everything it started is stopped at the end.`,
    )
    .option('--keep', 'keep the temporary folder (Temporal history, PostgreSQL data, logs) for a look afterwards')
    .action(async (o: { keep?: boolean }) => {
      process.exitCode = await runDemo(o);
    });
}

async function runDemo(o: { keep?: boolean }): Promise<number> {
  const out = process.stdout;
  const p = printer(out);
  const t0 = Date.now();
  const { DefaultLogger, Runtime } = await import('@temporalio/worker');
  try {
    // Activity failures are the point of the second rollout: keep the worker quiet.
    Runtime.install({
      logger: new DefaultLogger((process.env.KM_HOTFIX_LOG_LEVEL?.toUpperCase() ?? 'ERROR') as LogLevel),
    });
  } catch {
    // already installed
  }
  const { startDevStack, ensureDevSshKey } = await import('../../stack/dev-stack');
  const { freePort } = await import('../../stack/process');
  const { startSimFleet, makeHotfix } = await import('../../simulator');
  const { connectDatabase } = await import('../../store/database');
  const { replaceInventory } = await import('../../store/inventory');
  const { KeyManagerDatabase } = await import('../../keymanager/database');

  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'km-hotfix-demo-'));
  await fs.chmod(dataDir, 0o755); // PostgreSQL runs as its own user when we are root
  const undo: (() => Promise<unknown>)[] = [];
  let interrupted = false;
  const cleanup = async () => {
    for (const fn of undo.splice(0).reverse()) await fn().catch(() => undefined);
    if (!o.keep) await fs.rm(dataDir, { recursive: true, force: true }).catch(() => undefined);
  };
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    p.say('\ninterrupted: stopping everything the demo started');
    void cleanup().then(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    p.title('Starting the embedded stack (Temporal dev server, PostgreSQL, worker) and a simulated fleet');
    const key = await ensureDevSshKey(dataDir);
    // The in-process worker reads these from the environment: our key, our own queue.
    process.env.KM_SSH_KEY = key.privateKeyPath;
    process.env.KM_HOTFIX_TASK_QUEUE = 'km-hotfix-demo';
    // The demo's own people (alice, bob, dana under DIR/keys), whatever this shell has set.
    delete process.env.KM_HOTFIX_ALLOWED_SIGNERS;
    delete process.env.KM_HOTFIX_SIGNING_KEY;
    const temporalPort = await freePort();
    const stack: DevStack = await startDevStack({
      dataDir,
      temporalPort,
      uiPort: await freePort(),
      postgresPort: await freePort(),
      log: (line) => p.say(`  ${line}`),
    });
    undo.push(() => stack.stop());
    const fleet: SimFleet = await startSimFleet({
      frontends: 2,
      backends: 3,
      kmDatabaseUrl: stack.env.KM_DATABASE_URL,
      authorizedKey: key.publicKey,
      restartMs: 300,
    });
    undo.push(() => fleet.stop());
    const orchestrator: Sql = await connectDatabase(stack.env.DATABASE_URL, 'orchestrator', { max: 2 });
    undo.push(() => orchestrator.end({ timeout: 5 }));
    const kmSql: Sql = await connectDatabase(stack.env.KM_DATABASE_URL, 'Key Manager', { max: 2 });
    undo.push(() => kmSql.end({ timeout: 5 }));
    const km = new KeyManagerDatabase(kmSql);
    await replaceInventory(orchestrator, fleet.inventory());
    // alice signs with her key (KM_HOTFIX_SIGNING_KEY from the stack); dana with hers.
    const cfg: Config = loadConfig({
      ...stack.env,
      KM_SSH_KEY: key.privateKeyPath,
      KM_HOTFIX_TASK_QUEUE: 'km-hotfix-demo',
    });
    const danaKey = path.join(dataDir, 'keys', APPROVER);
    const danaCfg: Config = { ...cfg, signingKey: danaKey };
    const fleetMax = async () => new Map((await km.servers()).map((s) => [s.name, s.maxProcesses]));
    const before = await fleetMax();
    p.say(
      `  fleet: ${fleet
        .inventory()
        .map((s) => `${s.name} (${s.role}${s.role === 'frontend' ? '' : `, Maximum Processes ${before.get(s.name)}`})`)
        .join(', ')}`,
    );
    p.say(`  ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    const requester = REQUESTER;
    const hotfixDir = path.join(dataDir, 'hotfixes');
    await fs.mkdir(hotfixDir, { recursive: true });
    const good = await makeHotfix({
      component: 'backend',
      version: '3.0.0',
      description: 'fix_queue_stall',
      issueId: 'UKM-2001',
      outDir: hotfixDir,
    });
    const wrong = await makeHotfix({
      component: 'backend',
      version: '2.9.0',
      description: 'fix_job_retry',
      issueId: 'UKM-1987',
      outDir: hotfixDir,
    });
    p.say(
      `  sample hotfixes: ${good.fileName} (for Key Manager 3.0.0, what the fleet runs) and ${wrong.fileName} (for 2.9.0)`,
    );

    // ---- 1. upload -------------------------------------------------------------------
    p.title(`1. Upload ${good.fileName} (signed by ${requester})`);
    p.say(
      `  $ km-hotfix upload ${path.basename(good.path!)} --wait        # KM_HOTFIX_SIGNING_KEY=.../keys/${requester}`,
    );
    const up = await startUpload(cfg, { file: good.path! });
    const uploaded = await follow(cfg, up.id, out);
    if (uploaded.phase !== 'completed') throw new CliError(`the upload failed: ${uploaded.error}`, EXIT.failed);

    // ---- 2. the rollout, approved by dana ---------------------------------------------
    p.title(
      `2. Roll out ${up.name}: backend canary, other backends drained, ${APPROVER} verifies, then the rest two at a time (a window of 2)`,
    );
    p.say(`  $ km-hotfix rollout ${up.name} --approvers ${APPROVER} --batch 2 --wait`);
    const first = await startRollout(cfg, {
      hotfix: up.name,
      batch: '2',
      maxFailures: 0,
      approvers: [APPROVER],
      approvalTimeoutMs: 10 * 60_000,
      timing: DEMO_TIMING,
    });
    p.say(`  started ${first.id}, signed by ${first.requestedBy}`);
    let answered = false;
    const done = await follow(cfg, first.id, out, async (st) => {
      if (answered || st.phase !== 'verifying' || !st.gate) return;
      answered = true;
      await new Promise((r) => setTimeout(r, 1500)); // let the gate be seen
      const lines = [
        `  >> the gate asks ${APPROVER} to verify canary ${st.gate.canary}${st.gate.url ? ` (${st.gate.url})` : ''}; drained while verifying: ${st.drained.map((d) => `${d.server} (Maximum Processes ${d.maxProcesses} -> 0)`).join(', ')}`,
        `  >> ${requester} tries to approve her own rollout: km-hotfix approve ${st.id}`,
      ];
      try {
        await answerGate(cfg, st.id, { decision: 'approve', comment: 'looks fine to me' });
        lines.push('  >> ... and it was accepted: that is a bug');
      } catch (err) {
        lines.push(`  >> refused by the workflow, nothing changed: ${(err as Error).message}`);
      }
      lines.push(
        `  >> ${APPROVER} checks the canary and answers with her key: KM_HOTFIX_SIGNING_KEY=${danaKey} km-hotfix approve ${st.id} --comment "queue drains on km-be-1"`,
      );
      const ok = await answerGate(danaCfg, st.id, { decision: 'approve', comment: 'queue drains on km-be-1' });
      const a = ok.status.approvals.at(-1);
      lines.push(
        `  >> approved by ${a ? signer(a.by, a.key, a.via) : APPROVER}; the signed message and signature are in the status, the ledger and the history ('km-hotfix audit ${st.id}')`,
      );
      return lines;
    });
    if (done.phase !== 'completed')
      throw new CliError(`the first rollout did not complete: ${done.phase}: ${done.error}`, EXIT.failed);
    const restored = await fleetMax();
    const same = [...before].every(([n, v]) => restored.get(n) === v);
    p.say(
      `  Key Manager now lists ${up.name} on: ${(await km.appliedOn(up.name)).join(', ')}; Maximum Processes ${same ? 'restored exactly' : 'NOT restored'}`,
    );

    // ---- 3. the wrong version: checksum mismatch, automatic rollback -----------------
    const wrongName = `hotfix_backend_fix_job_retry`;
    p.title(`3. Roll out ${wrong.fileName} — built for Key Manager 2.9.0, the fleet runs 3.0.0`);
    p.say(`  $ km-hotfix rollout ${path.basename(wrong.path!)} --approvers ${APPROVER} --wait`);
    const second = await startRollout(cfg, {
      hotfix: wrong.path!,
      batch: '2',
      maxFailures: 0,
      approvers: [APPROVER],
      approvalTimeoutMs: 10 * 60_000,
      timing: DEMO_TIMING,
    });
    p.say(`  started ${second.id}`);
    const failed = await follow(cfg, second.id, out);
    if (failed.phase !== 'rolled_back')
      throw new CliError(
        `the second rollout should have rolled back, but ended ${failed.phase}: ${failed.error}`,
        EXIT.failed,
      );
    const after = await fleetMax();
    const sameAgain = [...before].every(([n, v]) => after.get(n) === v);

    // ---- summary ----------------------------------------------------------------------
    p.title('Summary');
    const hotfixes = await km.hotfixes();
    p.say(
      formatTable(
        ['HOTFIX (System → Hotfixes)', 'VERSION', 'APPLIED ON (Hotfixes Applied)'],
        hotfixes.map((h) => [h.name, h.version, h.appliedOn.join(', ') || '(nowhere)']),
      )
        .split('\n')
        .map((l) => `  ${l}`)
        .join('\n'),
    );
    p.say('');
    p.say(`  - ${up.name} was uploaded, verified on canary km-be-1 while km-be-2 and km-be-3 had Maximum Processes 0,`);
    p.say(
      `    approved by ${APPROVER} with her SSH key (${requester}, who started it, was refused), then applied on the other 4 servers two at a time.`,
    );
    p.say(`  - ${wrongName} failed on its canary: ${firstErrorLine(failed)}`);
    p.say(
      `    It was not retried (a checksum mismatch means another Key Manager version); the rollout rolled back on its own,`,
    );
    p.say(
      `    and Maximum Processes are ${sameAgain ? 'back to their values' : 'NOT back to their values'} (${[...after]
        .filter(([n]) => n.includes('-be-'))
        .map(([n, v]) => `${n} ${v}`)
        .join(', ')}).`,
    );
    p.say(
      `  - Every step, approval and outcome is in the ledger ('km-hotfix list') and in Temporal's history; every decision`,
    );
    p.say(
      `    carries its signer's key, message and SSH signature, which 'km-hotfix audit ID' (or ssh-keygen -Y verify) re-checks.`,
    );
    p.say('');
    p.say(`  Temporal Web UI while it ran: ${stack.uiUrl ?? '(none)'} (stopped with the demo).`);
    p.say('  Try it by hand, with the UI kept open:');
    p.say(
      '    npx km-hotfix dev --sim 2:3              # in one terminal; then paste the export lines it prints into another',
    );
    p.say(
      '    npx km-hotfix sim make-hotfix --component backend --version 3.0.0 --description fix_queue_stall --issue UKM-2001',
    );
    p.say('    npx km-hotfix plan ./sshmgr-3.0.0-hotfix_backend_fix_queue_stall_UKM-2001.gz');
    p.say(
      '    npx km-hotfix rollout ./sshmgr-3.0.0-hotfix_backend_fix_queue_stall_UKM-2001.gz --wait   # signed as alice',
    );
    p.say(
      '    KM_HOTFIX_SIGNING_KEY=.km-hotfix/keys/dana npx km-hotfix approve last                   # in a third: dana approves',
    );
    p.say(`  demo finished in ${((Date.now() - t0) / 1000).toFixed(1)} s; stopping everything it started`);
    return same && sameAgain ? EXIT.ok : EXIT.failed;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (!interrupted) await cleanup();
    if (o.keep) p.say(`  kept ${dataDir}`);
  }
}

/** What Key Manager said on the canary (the vendor's message), else the first line of the error. */
function firstErrorLine(st: RolloutStatus): string {
  const canary = (st.servers ?? st.attention).find((s) => s.name === st.canary);
  const text = (canary?.error ?? st.error ?? '').split('\n')[0];
  const said = /Key Manager said: (.*)$/.exec(text);
  return said ? said[1] : text;
}

/** The same live view as `status --watch`, indented under the demo's steps. */
async function follow(
  cfg: Config,
  id: string,
  out: NodeJS.WriteStream,
  onStatus?: (st: RolloutStatus) => Promise<string[] | void>,
): Promise<RolloutStatus> {
  // Polled often: the simulated fleet is fast and each phase should be seen.
  return withTemporal(cfg, (client) => watch({ read: statusReader(client, id), out, onStatus, intervalMs: 150 }));
}
