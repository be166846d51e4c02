// A scenario's accepted endings, then the issue-9 invariant (invariant.ts).
import assert from 'node:assert/strict';
import { assertRolloutInvariant, InvariantEnv } from './invariant';
import type { Phase } from '../../domain/rollout';
import type { RolloutStatus } from '../../domain/messages/rollout';

/** The issue-9 invariant (test/helpers/invariant.ts), and the endings this scenario accepts; returns the ending. */
export async function endsBy(
  env: InvariantEnv,
  st: RolloutStatus,
  maxProcessesBefore: Record<string, number>,
  allowed: Phase[] = ['completed', 'rolled_back', 'rollback_failed'],
): Promise<Phase> {
  assert.ok(
    allowed.includes(st.phase),
    `${st.id} ended ${st.phase} (${st.error ?? 'no error'}); expected ${allowed.join(' or ')}`,
  );
  await assertRolloutInvariant(env, st, { maxProcessesBefore });
  return st.phase;
}
