// Preflight of a rollout, a removal or an upload: it changes nothing. The
// start signature is checked first (it names the requester), then the
// workflow's servers are claimed and their health checked. Any failure ends
// the workflow in `failed`.
import { ApplicationFailure, isCancellation } from '@temporalio/workflow';
import type { DecisionRecord, SignedDecision } from '../domain/messages/rollout';
import type { DecisionFacts } from '../domain/decision';
import type { HealthProblem } from '../domain/messages/preflight';
import type { Steps } from './steps';
import type { WorkflowRecorder } from './recorder';
import { failureMessage, StopRollout } from './errors';
import { verifySigned } from './decisions';

/** Servers per health-check activity (its input ~30 KiB); 16 checks run at a time within one. */
const HEALTH_CHECKS_PER_ACTIVITY = 2_000;

/**
 * Run the preflight (fn calls verifyStart() first thing it can). Any failure
 * ends the workflow in `failed` with nothing changed; returns undefined then.
 */
export async function preflight<T>(r: WorkflowRecorder, fn: () => Promise<T>): Promise<T | undefined> {
  try {
    return await fn();
  } catch (err) {
    if (isCancellation(err)) r.status.error = 'cancelled during preflight';
    else r.status.error = err instanceof StopRollout ? err.message : failureMessage(err);
    await r.phase('failed', r.status.error);
    return undefined;
  }
}

/**
 * Check the start signature (it names the requester and fixes their key),
 * then record the start in the ledger with its proof. A refusal throws.
 */
export async function verifyStart(
  steps: Steps,
  r: WorkflowRecorder,
  signed: SignedDecision,
  facts: DecisionFacts,
  record: { servers: string[]; options: Record<string, unknown> },
  rules?: (rec: DecisionRecord) => void,
): Promise<DecisionRecord> {
  r.status.sha256 = facts.sha256;
  const rec = await verifySigned(steps, signed, facts);
  rules?.(rec);
  r.started(rec, record);
  return rec;
}

export async function claim(steps: Steps, r: WorkflowRecorder, servers: string[]): Promise<void> {
  await r.ledger.flushed(); // the rollout's record exists before its claims
  await steps.record.claimServers({ rolloutId: r.status.id, hotfix: r.status.hotfix, servers });
}

/** Every server answers with its pinned host key and runs all services; otherwise preflight fails listing all problems. */
export async function checkHealth(steps: Steps, servers: string[]): Promise<void> {
  const problems: HealthProblem[] = [];
  let count = 0;
  // In chunks: each activity's input and answer stay small whatever the fleet.
  for (let i = 0; i < servers.length; i += HEALTH_CHECKS_PER_ACTIVITY) {
    const report = await steps.health.checkServers({ servers: servers.slice(i, i + HEALTH_CHECKS_PER_ACTIVITY) });
    problems.push(...report.problems);
    count += report.problems.length + report.more;
  }
  if (count > 0) {
    const shown = problems
      .slice(0, 5)
      .map((p) => p.message)
      .join('; ');
    throw ApplicationFailure.nonRetryable(
      `preflight: ${count} server(s) not ready, nothing was changed: ${shown}${count > 5 ? `; and ${count - 5} more` : ''}`,
      problems[0].type,
    );
  }
}
