// The ledger's rows as they cross the workflow boundary: workflows build
// them, activities hand them to store/ (which writes them). Pure types, so
// workflow code can import them.
import type { Role } from '../fleet';
import type { ServerState, WorkflowKind } from '../rollout';

/** A rollout, removal or upload as the ledger records its start. */
export interface RolloutRecord {
  id: string;
  kind: WorkflowKind;
  hotfix: string;
  requestedBy: string;
  servers: string[];
  options: Record<string, unknown>;
  /** The requester's signed decision: fingerprint, message, signature (SPEC §7). */
  signed?: { key: string; message: string; signature: string };
}

/** One event of a rollout's append-only log (rollout_event). */
export interface LedgerEvent {
  rolloutId: string;
  /** Unique per rollout: makes the write idempotent. */
  key: string;
  kind: string;
  server?: string;
  actor?: string;
  detail?: Record<string, unknown>;
}

/** One server's state as a workflow learned it, for the per-server ledger (rollout_server). */
export interface ServerStateRow {
  server: string;
  state: ServerState;
  /** When the writer learned it (ISO), for display: the order is the database's (store/server-states.ts). */
  at: string;
  /** Inventory order, given with the first row of each server (the initial list). */
  position?: number;
  role?: Role;
  startedAt?: string;
  endedAt?: string;
  error?: string;
}
