// Signal payloads inside a workflow: a bad one is ignored with a warning in
// the worker's log, never a failed workflow task. (pause, resume and abort are
// signed Updates now, checked by workflows/decisions.ts; only the internal
// pauseBatches signal between a rollout and its children remains.)
import { log } from '@temporalio/workflow';

/** pauseBatches carries one boolean. */
export function pauseFlag(raw: unknown): boolean | undefined {
  if (typeof raw === 'boolean') return raw;
  log.warn(`ignored a pauseBatches signal: it takes true or false (got ${raw === null ? 'null' : typeof raw})`, {
    signal: 'pauseBatches',
  });
  return undefined;
}
