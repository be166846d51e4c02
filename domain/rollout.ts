// What a rollout, an upload and a removal take and report: the messages that
// the CLI, the workflows and the activities exchange (SPEC §4, §5).
import type { Role } from './fleet';

export const PHASES = [
  'preflight', 'upload', 'drain', 'canary', 'verifying', 'restore', 'fanout',
  'removing', 'deleting', 'completed', 'rolling_back', 'rolled_back', 'rollback_failed', 'failed',
] as const;
export type Phase = (typeof PHASES)[number];
export const FINAL_PHASES: readonly Phase[] = ['completed', 'rolled_back', 'rollback_failed', 'failed'];

/** A workflow in a final phase has ended: nothing more changes, its claims are released. */
export function isFinalPhase(phase: Phase): boolean {
  return FINAL_PHASES.includes(phase);
}

export const SERVER_STATES = [
  'pending', 'patching', 'patched', 'skipped', 'failed', 'rolling_back', 'rolled_back', 'rollback_failed', 'untouched',
  // removal workflow
  'removing', 'removed',
] as const;
export type ServerState = (typeof SERVER_STATES)[number];

export type WorkflowKind = 'upload' | 'rollout' | 'removal';

export interface UploadSource {
  /** sha256 of the file stored in the orchestrator database (key material never; bytes never in history). */
  sha256: string;
  /** Server to upload through; default the first server of the rollout. */
  via?: string;
}

export interface RolloutInput {
  hotfix: string;
  requestedBy: string;
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
}

export interface UploadInput {
  requestedBy: string;
  sha256: string;
  via?: string;
}

export interface RemovalInput {
  hotfix: string;
  requestedBy: string;
  servers: string[];
  keepRegistered: boolean;
  timing?: Partial<RolloutTiming>;
}

export interface Approval {
  by: string;
  decision: 'approve' | 'reject';
  at: string;
  comment: string;
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
  drained: string[];
  approvers: string[];
  waitingSince: string;
  deadline: string;
}

export interface RolloutStatus {
  id: string;
  kind: WorkflowKind;
  hotfix: string;
  phase: Phase;
  requestedBy: string;
  canary: string | null;
  drained: DrainedBackend[];
  approvals: Approval[];
  servers: ServerStatus[];
  error: string | null;
  paused: boolean;
  gate: GateRequest | null;
  /** Servers that need a person (rollback_failed). */
  needsAttention: string[];
  startedAt: string;
  updatedAt: string;
  endedAt: string | null;
  batch?: string;
  maxFailures?: number;
  /** The batch workflows running now; their live per-server states are in their batchStatus query. */
  activeBatchWorkflows: string[];
}

export interface ApproveRequest {
  by: string;
  comment?: string;
}
export interface RejectRequest {
  by: string;
  reason: string;
}
export interface SteerRequest {
  by: string;
  reason?: string;
}

/** Workflow ids: readable, and unique per start. */
export function workflowId(kind: WorkflowKind, hotfix: string, now: Date, suffix: string): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\..*$/, '');
  return `${kind}-${hotfix}-${stamp}-${suffix}`;
}
