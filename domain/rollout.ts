// What a rollout, an upload and a removal take and report: the messages that
// the CLI, the workflows and the activities exchange (SPEC §4, §5).
import type { Role } from './fleet';
import type { DecisionAction, DrainedFacts } from './decision';
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

export interface UploadSource {
  /** sha256 of the file stored in the orchestrator database (key material never; bytes never in history). */
  sha256: string;
  /** The file's name: the same bytes may be stored under several names (one of them wrong). */
  fileName?: string;
  /** Server to upload through; default the first server of the rollout. */
  via?: string;
}

/** A decision as it travels: the canonical message (domain/decision) and its armored SSHSIG. Never a private key. */
export interface SignedDecision {
  message: string;
  signature: string;
}

/** A decision the workflow accepted: who (the signers file's name for the key), with which key, and the proof. */
export interface DecisionRecord {
  action: DecisionAction;
  by: string;
  /** SHA256 fingerprint of the key that signed. */
  key: string;
  /** The delegate that signed for `by` (the web server), when one did. */
  via?: string;
  /** The signed `at`. */
  at: string;
  comment: string;
  message: string;
  signature: string;
}

export interface RolloutInput {
  hotfix: string;
  /** The requester's signed 'rollout' decision; preflight checks it, and it names the requester. */
  signed: SignedDecision;
  /** Explicit target names; empty = the whole inventory. */
  servers: string[];
  canary?: string;
  /** '1', '5', '20%'. */
  batch: string;
  maxFailures: number;
  /** Empty = anyone but the requester may answer the gate. */
  approvers: string[];
  approvalTimeoutMs: number;
  /** Given when the rollout starts from a file: it is uploaded first. */
  upload?: UploadSource;
  /** Tuning for tests and sites with slow restarts; defaults in workflows/steps.ts (DEFAULT_TIMING). */
  timing?: Partial<RolloutTiming>;
}

export interface RolloutTiming {
  /** How long services may take to come back RUNNING after a restart. */
  servicesTimeoutMs: number;
  /** Backoff ceiling for retried steps. */
  maxRetryIntervalMs: number;
  /** Servers per child workflow in fan-out; bounds each execution's history (see workflows/batches.ts). */
  sliceServers: number;
  /** Caps every SSH command's own timeout (0 = the vendor-sized defaults); fault drills use short ones. */
  commandTimeoutMs: number;
  /** Above this many servers a status has no per-server list (default FULL_SERVER_LIST_MAX; tests lower it to see a large fleet's status with a few servers). */
  fullServerListMax: number;
}

export interface UploadInput {
  /** The signed 'upload' decision. */
  signed: SignedDecision;
  sha256: string;
  via?: string;
}

export interface RemovalInput {
  hotfix: string;
  /** The signed 'remove' decision. */
  signed: SignedDecision;
  servers: string[];
  keepRegistered: boolean;
  timing?: Partial<RolloutTiming>;
}

export interface Approval {
  by: string;
  decision: 'approve' | 'reject';
  at: string;
  comment: string;
  /** SHA256 fingerprint of the key that signed, the signed message and its SSHSIG (SPEC §7). */
  key: string;
  /** The delegate that signed for `by`, when one did. */
  via?: string;
  message: string;
  signature: string;
}

export interface ServerStatus {
  name: string;
  role: Role;
  state: ServerState;
  startedAt?: string;
  endedAt?: string;
  error?: string;
}

export interface DrainedBackend {
  server: string;
  maxProcesses: number;
}

export interface GateRequest {
  /** What the approver is asked to check. */
  message: string;
  canary: string;
  url?: string;
  /** The drained backends as an answer states them (count and digest; the list is in the ledger): bounded whatever the fleet. */
  drained: DrainedFacts;
  approvers: string[];
  waitingSince: string;
  deadline: string;
}

export interface RolloutStatus {
  id: string;
  kind: WorkflowKind;
  hotfix: string;
  phase: Phase;
  /** Empty until preflight has verified the start signature. */
  requestedBy: string;
  /** The requester's key (SHA256 fingerprint), once verified. */
  requestedKey: string | null;
  /** sha256 of the hotfix file the decisions are about (null until preflight knows it; 'none' for a removal of an unregistered hotfix). */
  sha256: string | null;
  canary: string | null;
  /** The drained backends, the first FULL_SERVER_LIST_MAX of them (the ledger has all: `status ID --drained`) ... */
  drained: DrainedBackend[];
  /** ... and how many there are (absent in a status from before it was counted: as many as listed). */
  drainedCount?: number;
  approvals: Approval[];
  /** Every signed decision accepted, in order: the start, pauses, resumes, aborts, the answer. */
  decisions: DecisionRecord[];
  /**
   * Every server, only while the rollout has at most FULL_SERVER_LIST_MAX of
   * them (absent above): the full list is paged from the ledger
   * (`km-hotfix status ID --servers`).
   */
  servers?: ServerStatus[];
  /** How many servers the rollout covers (targets, skipped and drained backends). */
  serverCount: number;
  /** Servers per state; states with none are left out. */
  serverCounts: Partial<Record<ServerState, number>>;
  /** Failed and rollback_failed servers, at most ATTENTION_LIST_MAX of them ... */
  attention: ServerStatus[];
  /** ... and how many more there are. */
  attentionMore: number;
  error: string | null;
  paused: boolean;
  gate: GateRequest | null;
  /** Servers that need a person (rollback_failed), at most ATTENTION_LIST_MAX ... */
  needsAttention: string[];
  /** ... and how many more. */
  needsAttentionMore: number;
  startedAt: string;
  updatedAt: string;
  endedAt: string | null;
  batch?: string;
  maxFailures?: number;
  /** The batch workflows running now; their live per-server states are in their batchStatus query. */
  activeBatchWorkflows: string[];
}

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

/** Servers per state, states with none left out. */
export function countByState(servers: readonly ServerStatus[]): Partial<Record<ServerState, number>> {
  const counts: Partial<Record<ServerState, number>> = {};
  for (const s of servers) counts[s.state] = (counts[s.state] ?? 0) + 1;
  return counts;
}

/** A server as a bounded status carries it: its error cut to STATUS_ERROR_MAX. */
export function boundedServer(s: ServerStatus): ServerStatus {
  return s.error && s.error.length > STATUS_ERROR_MAX
    ? { ...s, error: `${s.error.slice(0, STATUS_ERROR_MAX)}…` }
    : { ...s };
}

/**
 * What leaves a workflow (query, result, Update answer): counts by state,
 * the servers needing attention (capped), and the full list only up to
 * `limit` servers. Its size does not grow with the fleet above the limit.
 * `full.servers` is the workflow's complete list (kept in its memory).
 */
export function boundedStatus(full: FullRolloutStatus, limit = FULL_SERVER_LIST_MAX): RolloutStatus {
  const { servers, ...rest } = full;
  const failing = servers.filter((s) => ATTENTION_STATES.includes(s.state));
  const allAttention = full.needsAttention;
  const more = full.needsAttentionMore ?? 0;
  return {
    ...rest,
    ...(servers.length <= limit ? { servers: servers.map(boundedServer) } : {}),
    serverCount: servers.length,
    serverCounts: countByState(servers),
    attention: failing.slice(0, ATTENTION_LIST_MAX).map(boundedServer),
    attentionMore: Math.max(0, failing.length - ATTENTION_LIST_MAX),
    needsAttention: allAttention.slice(0, ATTENTION_LIST_MAX),
    needsAttentionMore: more + Math.max(0, allAttention.length - ATTENTION_LIST_MAX),
    // Backends drained for a backend canary grow with the fleet too: the first `limit` (the ledger has all).
    drained: full.drained.slice(0, limit),
    drainedCount: full.drained.length,
  };
}

/** The status as a workflow holds it: every server, in memory (the rollback needs them). Never sent as is. */
export type FullRolloutStatus = RolloutStatus & { servers: ServerStatus[] };

/** approve, reject, pause, resume and abort all carry one signed decision; the person is who signed it. */
export type ApproveRequest = SignedDecision;
export type RejectRequest = SignedDecision;
export type SteerRequest = SignedDecision;

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
