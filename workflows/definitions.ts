// Message definitions shared by the workflows and the CLI.
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { ApproveRequest, RejectRequest, RolloutStatus, SteerRequest } from '../domain/rollout';

export const statusQuery = defineQuery<RolloutStatus>('status');
/** The verification gate: Updates with validators, so a refused answer changes nothing and the caller hears why. */
export const approveUpdate = defineUpdate<RolloutStatus, [ApproveRequest]>('approve');
export const rejectUpdate = defineUpdate<RolloutStatus, [RejectRequest]>('reject');
export const pauseSignal = defineSignal<[SteerRequest]>('pause');
export const resumeSignal = defineSignal<[SteerRequest]>('resume');
export const abortSignal = defineSignal<[SteerRequest]>('abort');

export const WORKFLOW_TYPES = { upload: 'uploadHotfix', rollout: 'rolloutHotfix', removal: 'removeHotfix' } as const;
