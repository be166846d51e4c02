// The vocabulary of rollouts, uploads and removals: phases, server states,
// the batch actions, workflow ids and the limits a status keeps to. What
// crosses the workflow boundary is domain/messages/ (SPEC §4, §5).
import { HOTFIX_NAME_MAX } from './hotfix';

export const PHASES = [
  'preflight',
  'upload',
  'drain',
  'canary',
  'verifying',
  'restore',
  'fanout',
  'removing',
  'deleting',
  'completed',
  'rolling_back',
  'rolled_back',
  'rollback_failed',
  'failed',
] as const;
export type Phase = (typeof PHASES)[number];
export const FINAL_PHASES: readonly Phase[] = ['completed', 'rolled_back', 'rollback_failed', 'failed'];

/** A workflow in a final phase has ended: nothing more changes, its claims are released. */
export function isFinalPhase(phase: Phase): boolean {
  return FINAL_PHASES.includes(phase);
}

export const SERVER_STATES = [
  'pending',
  'patching',
  'patched',
  'skipped',
  'failed',
  'rolling_back',
  'rolled_back',
  'rollback_failed',
  'untouched',
  // removal workflow
  'removing',
  'removed',
] as const;
export type ServerState = (typeof SERVER_STATES)[number];

/** What a window of servers does to each: patch (apply), roll back (unapply) or remove (unapply). */
export type BatchAction = 'apply' | 'rollback' | 'remove';

/** The state of a server while its step runs, once it succeeded, once it failed. */
export const ACTION_STATES: Record<BatchAction, { running: ServerState; done: ServerState; failed: ServerState }> = {
  apply: { running: 'patching', done: 'patched', failed: 'failed' },
  rollback: { running: 'rolling_back', done: 'rolled_back', failed: 'rollback_failed' },
  remove: { running: 'removing', done: 'removed', failed: 'failed' },
};

/** The worker sends a heartbeat at most this often (worker/worker.ts maxHeartbeatThrottleInterval). */
export const MAX_HEARTBEAT_THROTTLE_MS = 2000;

/** The most servers one activity runs in turn: its timeouts scale with the run, and a lost run loses this many results. */
export const RUN_SERVERS_MAX = 20;

/**
 * How many servers one window place runs in turn in one activity (a "run"):
 * each place's share of the servers, so that a window takes them in about one
 * round of runs, and at most RUN_SERVERS_MAX. Each server in a run saves an
 * activity's round trip through Temporal; a slow server holds only its own
 * place, and a run stops at the first failure when a failure budget is set.
 */
export function runLength(window: number, servers: number): number {
  if (!Number.isInteger(window) || window < 1 || !Number.isInteger(servers) || servers < 1) return 1;
  return Math.max(1, Math.min(RUN_SERVERS_MAX, Math.ceil(servers / window)));
}

export type WorkflowKind = 'upload' | 'rollout' | 'removal';

/**
 * Above this many servers a status leaves out the full per-server list. A
 * status travels as one Temporal payload (query answer, workflow result,
 * Update answer): Temporal warns at 512 KiB and fails the workflow task at
 * 2 MiB. An entry is ~170 B, up to ~700 B with an error cut to
 * STATUS_ERROR_MAX, so 500 servers stay under ~350 KiB even when every one
 * failed; and 500 lines of `--json` are still something a person greps.
 */
export const FULL_SERVER_LIST_MAX = 500;
/** Names a line of text lists before it says "and N more" (gate message, webhook, status): it fits a terminal line. */
export const NAMES_IN_A_LINE = 5;

/** "a, b, c and 746 more": at most `max` names of a list that grows with the fleet. */
export function someNames(names: readonly string[], max = NAMES_IN_A_LINE): string {
  return names.slice(0, max).join(', ') + (names.length > max ? ` and ${names.length - max} more` : '');
}

/** The failed / needs-a-person servers a status names; the rest are counted (and paged from the ledger). */
export const ATTENTION_LIST_MAX = 50;
/** An error carried in a bounded status is cut to this many characters (the ledger keeps it whole). */
export const STATUS_ERROR_MAX = 500;

/** The states of servers a status names under "needing attention". */
export const ATTENTION_STATES: readonly ServerState[] = ['failed', 'rollback_failed'];

/** Workflow ids: readable, and unique per start. */
export function workflowId(kind: WorkflowKind, hotfix: string, now: Date, suffix: string): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\..*$/, '');
  return `${kind}-${hotfix}-${stamp}-${suffix}`;
}

/** Random bytes of a workflow id's suffix (hex: twice as many characters). */
export const WORKFLOW_ID_SUFFIX_BYTES = 3;
/** The longest id km-hotfix makes: the longest kind with the longest Name (the web page's routes accept it). */
export const WORKFLOW_ID_MAX = Math.max(
  ...(['upload', 'rollout', 'removal'] as const).map(
    (k) => workflowId(k, 'x'.repeat(HOTFIX_NAME_MAX), new Date(0), '0'.repeat(2 * WORKFLOW_ID_SUFFIX_BYTES)).length,
  ),
);
