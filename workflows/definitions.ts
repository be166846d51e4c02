// Message definitions shared by the workflows and the CLI.
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { ApproveRequest, RejectRequest, RolloutStatus, ServerState, SteerRequest } from '../domain/rollout';

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

/** A batch workflow (child of a rollout or removal) reports its servers' live states. */
export const batchStatusQuery = defineQuery<BatchProgress>('batchStatus');
/** The parent stops a batch workflow from starting new batches (abort, or too many failures elsewhere). */
export const stopBatchesSignal = defineSignal('stopBatches');
export const pauseBatchesSignal = defineSignal<[boolean]>('pauseBatches');
/** Batch child → its parent, at most once: it has started its last server and `freed` places of its window are free for good. */
export const batchFreedSignal = defineSignal<[{ workflowId: string; freed: number }]>('batchFreed');
/** Parent → a batch child started with part of its lane's window: the whole share (the number) is free now. */
export const widenBatchesSignal = defineSignal<[number]>('widenBatches');

export interface BatchProgress {
  servers: { name: string; state: ServerState; startedAt?: string; endedAt?: string; error?: string }[];
  paused: boolean;
  /** Servers handed to runs still in flight: which of them has started is in the ledger (the run writes it), not here. */
  inRun?: string[];
}

export const WORKFLOW_TYPES = {
  upload: 'hotfixUpload',
  rollout: 'hotfixRollout',
  removal: 'hotfixRemoval',
  batches: 'serverBatches',
} as const;
