// The run of servers as it crosses the workflow boundary: what the workflow
// asks of a window place (ServerRun, activities/key-manager-ssh.ts
// runServers) and what the run hands back, including the ledger rows it could
// not write and where a retried server's attempts are.
import type { BatchAction, ServerState } from '../rollout';
import type { LedgerEvent, ServerStateRow } from './ledger';

/** A server's attempts so far, as the workflow hands them from one run to the next. */
export interface ServerResume {
  /** This server's attempt, from 1: a command that exits non-zero fails the server at COMMAND_ATTEMPTS (activities/failures.ts). */
  attempt: number;
  /** When the server's first attempt started: lost connections are retried for `serverRetryMs` from then. */
  startedAt: string;
  /** Absolute time (ms) by which services must be RUNNING: one deadline for all attempts. */
  verifyDeadline?: number;
  /** An earlier attempt sent a change (or found one in effect with this rollout's record). */
  touched?: boolean;
}

/** A run of servers, as the workflow asks for it: one window place runs them in turn, in one activity. */
export interface ServerRun {
  rolloutId: string;
  hotfix: string;
  action: BatchAction;
  servers: string[];
  servicesTimeoutMs: number;
  commandTimeoutMs?: number;
  /** End the run at its first failed server (a failure budget is set): the workflow applies the budget as results arrive. */
  stopAtFailure: boolean;
  /** How long one server's lost connections and timeouts are retried before that server has failed (ms). */
  serverRetryMs: number;
  /** The first server's earlier attempts (it is being retried). */
  resume?: ServerResume;
  /** Send no apply or unapply: only finish a change already in effect (its restart, its verify). */
  finishOnly?: boolean;
}

/** One server of a run, as it ended. */
export interface RunServerResult {
  name: string;
  state: ServerState;
  startedAt: string;
  endedAt: string;
  error?: string;
}

/** A server the run stopped at to be tried again: where its attempts are, and whether a change may have been sent. */
export interface RunRetry extends ServerResume {
  name: string;
  error: string;
  /** A change was sent to it (or found in effect with this rollout's record), now or by an earlier attempt: it is under way and must be finished. */
  touched: boolean;
}

/**
 * What a run did: its first servers, in order, as they ended; the server it
 * stopped at for a retry, if any; servers a finish-only run found nothing to
 * finish on. The rest were not started. Also ledger writes it could not make.
 */
export interface RunResult {
  servers: RunServerResult[];
  retry?: RunRetry;
  untouched?: string[];
  unrecorded: LedgerEvent[];
  /** Server states the run could not write to the ledger (orchestrator database down): the workflow writes them. */
  unwritten?: ServerStateRow[];
}
