// The fault matrix (issue 9): every step of a rollout × every fault the
// simulator can inject, against the real stack. Each row ends by the
// invariant (test/helpers/invariant.ts) and by the outcome a user would
// expect: a fault that heals is retried and the rollout completes; one that
// does not is rolled back, or named in rollback_failed.
//
// Fleet: km-fe-1, km-be-1, km-be-2; a backend hotfix: canary km-be-1 (the
// upload goes through it), km-be-2 drained while it is verified, fan-out
// km-be-2 then km-fe-1. Faults on "fan-out" steps hit km-fe-1; on unapply,
// the canary after a rejection. Short command timeouts (1 s) make "a hang
// past the timeout" cheap.
import assert from 'node:assert/strict';
import { rolloutEnv, RolloutEnv, FAST_TIMING } from './helpers/rollout-env';
import { assertRolloutInvariant } from './helpers/invariant';
import { clearKmDbFaults, installKmDbFaults, kmDbFault, KmDbFault, kmDbFaultFired } from './helpers/km-faults';
import type { FaultSpec, FaultCommand } from '../simulator';
import type { Phase } from '../domain/rollout';
import type { RolloutStatus } from '../domain/messages/rollout';

/** Past the 1 s command timeout. */
const HANG_MS = 1_500;

export const MATRIX_TIMING = { ...FAST_TIMING, servicesTimeoutMs: 5_000, commandTimeoutMs: 1_000 };

type Step = 'upload' | 'drain' | 'apply' | 'restart' | 'verify' | 'restore' | 'unapply';
type Fault = 'transient' | 'drop-before' | 'drop-after' | 'hang' | 'fatal' | 'unreachable' | 'checksum';

export interface Row {
  step: Step;
  fault: Fault;
  expect: Phase;
  /** rollback_failed: the servers named. */
  attention?: string[];
}

const COMMAND: Record<Exclude<Step, 'drain' | 'restore'>, FaultCommand> = {
  upload: 'upload',
  apply: 'apply',
  restart: 'restart',
  verify: 'status',
  unapply: 'unapply',
};
const TARGET: Record<Exclude<Step, 'drain' | 'restore'>, string> = {
  upload: 'km-be-1',
  apply: 'km-fe-1',
  restart: 'km-fe-1',
  verify: 'km-fe-1',
  unapply: 'km-be-1',
};

/** The simulator fault for an SSH step. */
function sshFault(step: Exclude<Step, 'drain' | 'restore'>, fault: Fault): FaultSpec {
  const on = COMMAND[step];
  switch (fault) {
    case 'transient':
      return { failNext: 1, failOn: on };
    case 'drop-before':
      return { dropConnection: 1, dropOn: on, dropWhen: 'before' };
    case 'drop-after':
      return { dropConnection: 1, dropOn: on, dropWhen: 'after' };
    case 'hang':
      return { hangMs: HANG_MS, hangOn: on };
    case 'fatal':
      return { fatalService: 'sshmgr-api' };
    case 'unreachable':
      return { unreachableOn: on, unreachableMs: 1_500 };
    case 'checksum':
      return { kmVersion: '3.0.1' };
  }
}

const ROWS: Row[] = [];
for (const step of ['upload', 'apply', 'restart', 'verify', 'unapply'] as const) {
  for (const fault of ['transient', 'drop-before', 'drop-after', 'hang', 'unreachable'] as const) {
    ROWS.push({ step, fault, expect: step === 'unapply' ? 'rolled_back' : 'completed' });
  }
}
// A service FATAL after restart does not heal: the server fails, the rollback's own restart is FATAL too.
ROWS.push({ step: 'restart', fault: 'fatal', expect: 'rollback_failed', attention: ['km-fe-1'] });
ROWS.push({ step: 'unapply', fault: 'fatal', expect: 'rollback_failed', attention: ['km-be-1'] });
ROWS.push({ step: 'unapply', fault: 'checksum', expect: 'rolled_back' }); // unapply runs no checksum check
// A checksum mismatch is never retried: the server fails at once, everything is rolled back.
ROWS.push({ step: 'apply', fault: 'checksum', expect: 'rolled_back' });
// The Key Manager database under drain and restore.
for (const step of ['drain', 'restore'] as const) {
  for (const fault of ['transient', 'unreachable'] as const) ROWS.push({ step, fault, expect: 'completed' });
}

/** Faults no row here can place (kept in the report so the table in docs/RELIABILITY.md stays honest). */
export const NOT_APPLICABLE: Record<string, string> = {
  'upload×fatal': 'an upload restarts nothing',
  'verify×fatal': 'the same as restart×fatal (FATAL appears after a restart)',
  'upload×checksum': 'the checksum is checked by --apply-hotfix, not by --upload-hotfix',
  'restart×checksum': 'idem',
  'verify×checksum': 'idem',
  'drain×drop-before|drop-after|hang|fatal|checksum, restore×idem':
    'database writes: a lost connection is the "unreachable" row; no SSH',
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function servicesSettled(env: RolloutEnv): Promise<void> {
  for (let i = 0; i < 60 && env.fleet.servers.some((s) => s.services().some((x) => x.state !== 'RUNNING')); i++)
    await sleep(50);
}

describe('fault matrix: every step × every fault ends by the invariant', function () {
  this.timeout(120_000);
  let env: RolloutEnv;
  let started = 0;
  before(async () => {
    env = await rolloutEnv({ frontends: 1, backends: 2, restartMs: 100 });
    await installKmDbFaults(env.km);
    started = Date.now();
  });
  after(async () => {
    if (started)
      console.log(`    fault matrix: ${ROWS.length} rows in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    await env?.close();
  });
  afterEach(async () => {
    await env?.endAll();
    for (const s of env.fleet.servers) s.clearFaults();
    await clearKmDbFaults(env.km);
    await servicesSettled(env);
    await env.km`DELETE FROM km_hotfix_applied`;
    for (const s of env.fleet.servers) s.clearLog();
  });

  for (const row of ROWS) {
    it(`${row.step} × ${row.fault} → ${row.expect}${row.attention ? ` (${row.attention.join(', ')})` : ''}`, async () => {
      const viaUpload = row.step === 'upload';
      const hf = await env.hotfix('backend', { register: !viaUpload });
      const before = await env.maxProcesses();
      // Where the fault goes, and when: verify faults wait for the server's apply (preflight runs status checks too).
      let armed: Promise<void> = Promise.resolve();
      if (row.step === 'drain' || row.step === 'restore') {
        await kmDbFault(env.km, row.step, row.fault as KmDbFault, row.fault === 'unreachable' ? 3 : 1);
      } else {
        const server = env.fleet.server(TARGET[row.step]);
        const spec = sshFault(row.step, row.fault);
        if (row.step === 'verify') {
          armed = (async () => {
            for (let i = 0; i < 600 && !server.log().some((e) => /--apply-hotfix=/.test(e.command)); i++)
              await sleep(10);
            server.fault(spec);
          })();
        } else if (row.step !== 'unapply') {
          server.fault(spec);
        }
      }
      const h = await env.startRollout({
        hotfix: hf.name,
        batch: '1',
        timing: MATRIX_TIMING,
        ...(viaUpload ? { upload: { sha256: hf.sha256 } } : {}),
      });
      const gate = await env.waitForPhase(h, 'verifying');
      if (gate.phase === 'verifying') {
        // Unapply faults are placed at the gate: the canary's apply went well, its rollback meets the fault.
        if (row.step === 'unapply') env.fleet.server(TARGET.unapply).fault(sshFault('unapply', row.fault));
        if (row.step === 'unapply') await env.reject(h, 'bob', 'fault drill');
        else await env.approve(h, 'bob');
      }
      const st = (await h.result()) as RolloutStatus;
      await armed;
      await servicesSettled(env);
      // The fault really happened (a drill that misses its step proves nothing).
      if (row.step === 'drain' || row.step === 'restore')
        assert.ok(await kmDbFaultFired(env.km, row.step), 'the database fault fired');
      else if (!['fatal', 'checksum'].includes(row.fault)) {
        const left = env.fleet.server(TARGET[row.step]).pendingFaults();
        for (const k of ['failNext', 'dropConnection', 'hangMs', 'unreachableOn'] as const)
          assert.equal(left[k], undefined, `the ${k} fault fired`);
      }
      assert.equal(st.phase, row.expect, `${row.step} × ${row.fault}: ${st.error ?? ''}`);
      if (row.attention)
        assert.deepEqual(
          st.needsAttention.map((n) => n.split(' ')[0]),
          row.attention,
        );
      await assertRolloutInvariant(env, st, { maxProcessesBefore: before });
      // The command the client gave up on is still hanging on the server: let it end before the next row.
      if (row.fault === 'hang') await sleep(HANG_MS);
    });
  }
});
