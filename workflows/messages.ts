// Signal payloads inside a workflow: a bad one is ignored with a warning in
// the worker's log, never a failed workflow task (domain/messages checks them).
import { log } from '@temporalio/workflow';
import type { SteerRequest } from '../domain/rollout';
import { acceptSignal, steerRequest } from '../domain/messages';

export function steering(raw: unknown, what: 'pause' | 'resume' | 'abort'): SteerRequest | undefined {
  const got = acceptSignal(() => steerRequest(raw, what));
  if (got.ok) return got.value;
  log.warn(`ignored a ${what} signal: ${got.reason}`, { signal: what });
  return undefined;
}

/** pauseBatches carries one boolean. */
export function pauseFlag(raw: unknown): boolean | undefined {
  if (typeof raw === 'boolean') return raw;
  log.warn(`ignored a pauseBatches signal: it takes true or false (got ${raw === null ? 'null' : typeof raw})`, { signal: 'pauseBatches' });
  return undefined;
}
