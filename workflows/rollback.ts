// The rollback of a rollout, in the saga style: each forward step has its
// compensation, run in reverse once the happy path ends (a failure, a
// rejection, the approval timeout, an abort, a cancel). Which compensations
// are owed is read from the truth, never from a list kept in memory:
//   - the drain's: Maximum Processes back as read before it (RolloutState.restore);
//   - the canary's and the fan-out's: quiesce (every batch child has ended, and
//     after a lost one the rollout has waited until none of its activities can
//     send a command), ask the Key Manager database which targets list the
//     hotfix, unapply exactly those in reverse plan order in the same window,
//     ask again and visit what is still listed or was lost, up to
//     ROLLBACK_PASSES passes.
// The outcome is a last read of the Key Manager database and of Maximum
// Processes. A rollback cannot be paused, stopped or cancelled.
import { log, sleep } from '@temporalio/workflow';
import type { RolloutStatus } from '../domain/messages/rollout';
import { ATTENTION_LIST_MAX, someNames } from '../domain/rollout';
import { NO_FAILURE_LIMIT } from '../domain/messages/batches';
import type { FanoutControl } from './fanout';
import { failureMessage, NAMES_IN_AN_ERROR } from './errors';
import { QUIESCE_MS } from './lost';
import type { RolloutPlan } from './rollout-plan';
import type { RolloutState } from './rollout-state';
import type { ServerStateRow } from '../domain/messages/ledger';

/** Passes of a rollback: the first over what is listed; the next over what is still listed or was lost. */
const ROLLBACK_PASSES = 3;

export async function rollBack(s: RolloutState, p: RolloutPlan): Promise<RolloutStatus> {
  const { r, input } = s;
  log.warn(`rolling back ${input.hotfix}: ${p.scope.length} target(s)`, {
    reason: r.status.error,
    servers: p.scope.length,
  });
  r.status.paused = false;
  void r.phase('rolling_back', r.status.error ?? undefined);
  let restoreError: string | undefined;
  const restoring = s.restore().catch((e: unknown) => {
    restoreError = failureMessage(e);
  });
  const failedForGood = await unapplyWhereListed(s, p);
  await restoring;
  const stuck = await readOutcome(s, p, failedForGood);
  if (restoreError) r.status.error = `${r.status.error}; restoring Maximum Processes failed: ${restoreError}`;
  return recordOutcome(s, stuck);
}

/** The passes over what the Key Manager database lists; returns the servers whose unapply failed for good, with why. */
async function unapplyWhereListed(s: RolloutState, p: RolloutPlan): Promise<Map<string, string>> {
  const { r, fanout } = s;
  const failedForGood = new Map<string, string>();
  const ctl: FanoutControl = {
    ...s.control(
      () => false,
      () => false,
    ),
    onResult: (b) => {
      r.batchResult(b);
      if (b.state === 'rollback_failed') failedForGood.set(b.name, b.error ?? 'rollback failed');
      else failedForGood.delete(b.name);
    },
  };
  let visit = await s.differing(p.scope, false);
  for (let pass = 1; visit.length > 0; pass++) {
    const res = await fanout.run('rollback', visit, p.window, NO_FAILURE_LIMIT, ctl);
    if (pass >= ROLLBACK_PASSES) break;
    if (res.lost.length > 0) await sleep(QUIESCE_MS);
    const listed = new Set(await s.differing(p.scope, false));
    const lost = new Set(res.lost);
    visit = p.scope.filter((x) => lost.has(x) || (listed.has(x) && !failedForGood.has(x)));
  }
  return failedForGood;
}

/** The outcome, read: where the hotfix is, and Maximum Processes of every drained backend. Each line names a server that differs. */
async function readOutcome(s: RolloutState, p: RolloutPlan, failedForGood: Map<string, string>): Promise<string[]> {
  const { input, drained } = s;
  const still = await s.differing(p.scope, false);
  const now =
    drained.length > 0 ? await s.steps.keyManagerDb.readMaxProcesses({ servers: drained.map((d) => d.server) }) : [];
  const stillSet = new Set(still);
  return [
    ...still.map((x) => `${x} (${input.hotfix} still applied)`),
    ...[...failedForGood].filter(([x]) => !stillSet.has(x)).map(([x, e]) => `${x} (${e})`),
    ...drained
      .filter((d) => now.find((x) => x.server === d.server)?.maxProcesses !== d.maxProcesses)
      .map(
        (d) =>
          `${d.server} (Maximum Processes ${now.find((x) => x.server === d.server)?.maxProcesses ?? 'unknown'}, was ${d.maxProcesses})`,
      ),
  ];
}

/** The ledger's per-server end states from the same read, the final phase, and the team told. */
async function recordOutcome(s: RolloutState, stuck: string[]): Promise<RolloutStatus> {
  const { r, input } = s;
  const named = new Set(stuck.map((x) => x.split(' ')[0]));
  const changed: ServerStateRow[] = [];
  for (const x of r.status.servers) {
    if (x.state === 'skipped') continue;
    const state = named.has(x.name) ? 'rollback_failed' : x.state === 'pending' ? 'untouched' : 'rolled_back';
    if (state !== x.state) {
      r.updateServer(x.name, state);
      changed.push(...r.rows([x]));
    }
  }
  r.recordServers(changed);
  r.status.needsAttention = stuck;
  if (stuck.length > 0)
    log.error(`rollback of ${input.hotfix} ended: needs a person for ${someNames(stuck, NAMES_IN_AN_ERROR)}`, {
      needsAttention: stuck.length,
    });
  else log.info(`rollback of ${input.hotfix} ended: no target lists it and Maximum Processes are back`);
  await r.phase(
    stuck.length > 0 ? 'rollback_failed' : 'rolled_back',
    stuck.length > 0 ? `needs a person: ${someNames(stuck, NAMES_IN_AN_ERROR)}` : undefined,
  );
  s.notifier.send({
    event: stuck.length > 0 ? 'rollback_failed' : 'rolled_back',
    rolloutId: s.id,
    hotfix: input.hotfix,
    requestedBy: r.status.requestedBy,
    ...(r.status.error ? { error: r.status.error } : {}),
    needsAttention: stuck.slice(0, ATTENTION_LIST_MAX),
  });
  return r.report();
}
