// The batch child (workflows/batches.ts serverBatches) and its parent (a
// rollout or a removal, workflows/fanout.ts): the child's input and result,
// its live status query, and the signals between the two.
import { defineQuery, defineSignal } from '@temporalio/workflow';
import type { BatchAction, ServerState } from '../rollout';
import type { RolloutTiming } from './rollout';

export type { BatchAction };

/** A failure budget that never runs out: the window goes on whatever fails (a rollback visits every server). */
export const NO_FAILURE_LIMIT = -1;

export interface BatchesInput {
  rolloutId: string;
  hotfix: string;
  action: BatchAction;
  /** In order; at most `window` of them at once. */
  servers: string[];
  window: number;
  /** Failures this child may absorb before it starts no new server; NO_FAILURE_LIMIT = never stop. */
  maxFailures: number;
  timing?: Partial<RolloutTiming>;
  /** Start paused (the parent was paused when it started this child). */
  paused?: boolean;
  /** The window this child may grow to (widenBatchesSignal); it starts at `window`. Default: `window`. */
  fullWindow?: number;
  /** Tell the parent, once, when its last server has started and half its full window is free for good (batchFreedSignal). */
  handOff?: boolean;
  /** Send no apply or unapply: only finish changes already in effect (servers of a batch child that was lost). */
  finishOnly?: boolean;
}

export interface BatchServerResult {
  name: string;
  state: ServerState;
  startedAt?: string;
  endedAt?: string;
  error?: string;
}

export interface BatchesResult {
  /** The servers this child ended, in the order it started them. */
  servers: BatchServerResult[];
  failures: number;
  /** Servers were left unstarted (stop signal or too many failures). */
  stopped: boolean;
}

export interface BatchProgress {
  servers: BatchServerResult[];
  paused: boolean;
  /** Servers handed to runs still in flight: which of them has started is in the ledger (the run writes it), not here. */
  inRun?: string[];
}

/** A batch workflow (child of a rollout or removal) reports its servers' live states. */
export const batchStatusQuery = defineQuery<BatchProgress>('batchStatus');
/** The parent stops a batch workflow from starting new batches (abort, or too many failures elsewhere). */
export const stopBatchesSignal = defineSignal('stopBatches');
export const pauseBatchesSignal = defineSignal<[boolean]>('pauseBatches');
/** Batch child → its parent, at most once: it has started its last server and `freed` places of its window are free for good. */
export const batchFreedSignal = defineSignal<[{ workflowId: string; freed: number }]>('batchFreed');
/** Parent → a batch child started with part of its lane's window: the whole share (the number) is free now. */
export const widenBatchesSignal = defineSignal<[number]>('widenBatches');
