// Property-based test (issue 9): random fleets, --batch windows, failure
// budgets, gate decisions and fault placements; every rollout must end by the
// invariant of test/helpers/invariant.ts. A few runs in CI; more with
// KM_HOTFIX_PROPERTY_RUNS=N (and KM_HOTFIX_PROPERTY_SEED to replay a failure).
import fc from 'fast-check';
import { rolloutEnv, FAST_TIMING } from './helpers/rollout-env';
import { assertRolloutInvariant } from './helpers/invariant';
import type { FaultSpec } from '../simulator';
import type { RolloutStatus } from '../domain/messages/rollout';
import type { Component } from '../domain/hotfix';

const RUNS = Number(process.env.KM_HOTFIX_PROPERTY_RUNS ?? 5);
const SEED = process.env.KM_HOTFIX_PROPERTY_SEED ? Number(process.env.KM_HOTFIX_PROPERTY_SEED) : undefined;
const TIMING = { ...FAST_TIMING, servicesTimeoutMs: 5_000, commandTimeoutMs: 1_000, sliceServers: 2 };

/** Faults that can be placed before the rollout starts (status faults would hit the preflight instead). */
const FAULTS: Record<string, FaultSpec> = {
  'apply fails once': { failApplies: 1 },
  'apply fails always': { failApplies: 10 },
  'apply answer lost': { dropConnection: 1, dropOn: 'apply' },
  'dropped before restart': { dropConnection: 1, dropOn: 'restart', dropWhen: 'before' },
  'restart hangs past its timeout': { hangMs: 1_500, hangOn: 'restart' },
  'unreachable at apply': { unreachableOn: 'apply', unreachableMs: 1_500 },
  'unapply answer lost': { dropConnection: 1, dropOn: 'unapply' },
  'unapply fails once': { failUnapplies: 1 },
  'FATAL after restart': { fatalService: 'sshmgr-api' },
  'checksum mismatch': { kmVersion: '3.0.1' },
};

const scenario = fc.record({
  frontends: fc.integer({ min: 1, max: 3 }),
  backends: fc.integer({ min: 1, max: 3 }),
  component: fc.constantFrom<Component>('frontend', 'backend', 'common'),
  batch: fc.constantFrom('1', '2', '3', '50%', '100%'),
  maxFailures: fc.integer({ min: 0, max: 2 }),
  approve: fc.boolean(),
  faults: fc.array(fc.record({ server: fc.nat(), fault: fc.constantFrom(...Object.keys(FAULTS)) }), { maxLength: 3 }),
});

describe('property: random fleets, windows, budgets and faults all end by the invariant', function () {
  this.timeout(60_000 + RUNS * 60_000);

  it(`${RUNS} random rollouts${SEED !== undefined ? ` (seed ${SEED})` : ''}`, async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async (sc) => {
        const env = await rolloutEnv({ frontends: sc.frontends, backends: sc.backends, restartMs: 50 });
        try {
          const hf = await env.hotfix(sc.component);
          const before = await env.maxProcesses();
          for (const f of sc.faults) env.fleet.servers[f.server % env.fleet.servers.length].fault(FAULTS[f.fault]);
          const h = await env.startRollout({
            hotfix: hf.name,
            batch: sc.batch,
            maxFailures: sc.maxFailures,
            timing: TIMING,
          });
          const gate = await env.waitForPhase(h, 'verifying', 60_000);
          if (gate.phase === 'verifying') {
            if (sc.approve) await env.approve(h, 'bob');
            else await env.reject(h, 'bob', 'property drill');
          }
          const st = (await h.result()) as RolloutStatus;
          // A hung command the client gave up on, or a restart cut off, settles first.
          await new Promise((r) => setTimeout(r, 1_600));
          await assertRolloutInvariant(env, st, { maxProcessesBefore: before });
        } finally {
          await env.close();
        }
      }),
      { numRuns: RUNS, endOnFailure: true, ...(SEED !== undefined ? { seed: SEED } : {}), verbose: 1 },
    );
  });
});
