// Message definitions shared by the workflows and the CLI.
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { ApproveRequest, RejectRequest, RolloutStatus, ServerState, SteerRequest } from '../domain/rollout';

export const statusQuery = defineQuery<RolloutStatus>('status');
/** The verification gate: Updates with validators, so a refused answer changes nothing and the caller hears why. */
export const approveUpdate = defineUpdate<RolloutStatus, [ApproveRequest]>('approve');
export const rejectUpdate = defineUpdate<RolloutStatus, [RejectRequest]>('reject');
export const pauseSignal = defineSignal<[SteerRequest]>('pause');
export const resumeSignal = defineSignal<[SteerRequest]>('resume');
export const abortSignal = defineSignal<[SteerRequest]>('abort');

/** A batch workflow (child of a rollout or removal) reports its servers' live states. */
export const batchStatusQuery = defineQuery<BatchProgress>('batchStatus');
/** The parent stops a batch workflow from starting new batches (abort, or too many failures elsewhere). */
export const stopBatchesSignal = defineSignal('stopBatches');
export const pauseBatchesSignal = defineSignal<[boolean]>('pauseBatches');

export interface BatchProgress {
  servers: { name: string; state: ServerState; startedAt?: string; endedAt?: string; error?: string }[];
  paused: boolean;
}

export const WORKFLOW_TYPES = { upload: 'hotfixUpload', rollout: 'hotfixRollout', removal: 'hotfixRemoval', batches: 'serverBatches' } as const;
