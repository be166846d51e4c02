// The messages a client exchanges with the rollout, removal and upload
// workflows: their inputs, the status they answer, their type names, the
// status query, and the signed Updates of the gate and of steering (SPEC §4, §5).
import { defineQuery, defineUpdate } from '@temporalio/workflow';
import type { Phase, ServerState, WorkflowKind } from '../rollout';
import type { Role } from '../fleet';
import type { DecisionAction, DrainedFacts } from '../decision';

export const statusQuery = defineQuery<RolloutStatus>('status');
/**
 * The verification gate and steering: Updates carrying a signed decision, with
 * validators, so a refused decision changes nothing and the caller hears why
 * (workflows/decisions.ts).
 */
export const approveUpdate = defineUpdate<RolloutStatus, [ApproveRequest]>('approve');
export const rejectUpdate = defineUpdate<RolloutStatus, [RejectRequest]>('reject');
export const pauseUpdate = defineUpdate<RolloutStatus, [SteerRequest]>('pause');
export const resumeUpdate = defineUpdate<RolloutStatus, [SteerRequest]>('resume');
export const abortUpdate = defineUpdate<RolloutStatus, [SteerRequest]>('abort');

export const WORKFLOW_TYPES = {
  upload: 'hotfixUpload',
  rollout: 'hotfixRollout',
  removal: 'hotfixRemoval',
  batches: 'serverBatches',
} as const;

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

/** The status as a workflow holds it: every server, in memory (the rollback needs them). Never sent as is. */
export type FullRolloutStatus = RolloutStatus & { servers: ServerStatus[] };

/** approve, reject, pause, resume and abort all carry one signed decision; the person is who signed it. */
export type ApproveRequest = SignedDecision;
export type RejectRequest = SignedDecision;
export type SteerRequest = SignedDecision;
