// Every ledger write a workflow makes (the rollout, removal and upload
// workflows and their batch children): one writer, so that how a workflow's
// bookkeeping reaches the orchestrator database is decided in one place.
//
// The rule for all of it: the workflow never waits on bookkeeping before it
// works on a server. Writes run in the background and retry until the
// orchestrator database is back (workflows/steps.ts `record`); a rollback goes
// on while it is down, and the ledger catches up. Only the end of a workflow
// waits for what it wrote.
//
// Three lanes, each kept as it was measured:
// - in order (phases, the start, the server list, events, per-server rows of
//   a parent): one write after the other, so phases land in order;
// - a batch child's per-server states: batched (see ServerStates);
// - events a run could not write itself: written at once, all together.
import { CancellationScope, log } from '@temporalio/workflow';
import type { ServerStatus } from '../domain/messages/rollout';
import type { LedgerEvent, ServerStateRow } from '../domain/messages/ledger';
import type { Steps } from './steps';
import { failureMessage } from './errors';

/**
 * Per-server rows per ledger write: ~100 B each, so a write of 1,000 is a
 * ~100 KiB activity input, and 20,000 servers take 20 activities.
 */
export const SERVER_ROWS_PER_WRITE = 1_000;

/** Servers of a batch child that end before the ledger is written (the rest at the child's end): a slice of 500 costs at most ~51 writes. */
const SERVERS_PER_LEDGER_WRITE = 10;

type RecordSteps = Steps['record'];

/** A server's state as a ledger row (rollout_server), learned at `at`. */
export function stateRow(
  s: Pick<ServerStatus, 'name' | 'state' | 'startedAt' | 'endedAt' | 'error'>,
  at: string,
): ServerStateRow {
  return {
    server: s.name,
    state: s.state,
    at,
    ...(s.startedAt ? { startedAt: s.startedAt } : {}),
    ...(s.endedAt ? { endedAt: s.endedAt } : {}),
    ...(s.error ? { error: s.error } : {}),
  };
}

function warn(err: unknown): void {
  log.warn(`a ledger write failed: ${failureMessage(err)}`);
}

export class LedgerWriter {
  private chain: Promise<void> = Promise.resolve();
  private readonly states: ServerStates;
  private backlog: Promise<unknown>[] = [];

  constructor(
    private readonly steps: Steps,
    private readonly rolloutId: string,
  ) {
    this.states = new ServerStates(steps.record, rolloutId);
  }

  // ---- in order -------------------------------------------------------------

  /** Written after everything before it, in a non-cancellable scope (a cancelled workflow still records how it ended). */
  inOrder(write: (record: RecordSteps) => Promise<void>): void {
    this.chain = this.chain.then(() => CancellationScope.nonCancellable(() => write(this.steps.record))).catch(warn);
  }

  event(e: Omit<LedgerEvent, 'rolloutId'>): void {
    this.inOrder((record) => record.recordEvent({ rolloutId: this.rolloutId, ...e }));
  }

  /** Per-server rows of a parent ('km-hotfix status ID --servers'), in chunks of SERVER_ROWS_PER_WRITE. */
  serverRows(rows: ServerStateRow[]): void {
    for (let i = 0; i < rows.length; i += SERVER_ROWS_PER_WRITE) {
      const servers = rows.slice(i, i + SERVER_ROWS_PER_WRITE);
      this.inOrder((record) => record.recordServerStates({ rolloutId: this.rolloutId, servers }));
    }
  }

  /** Everything written in order so far has reached the ledger. */
  async flushed(): Promise<void> {
    await CancellationScope.nonCancellable(() => this.chain);
  }

  // ---- a batch child ----------------------------------------------------------

  /** A server this child ended (batched: see ServerStates). */
  serverEnded(row: ServerStateRow): void {
    this.states.ended(row);
  }

  /** Rows a run could not write, written now (with whatever is buffered): before its servers run again. */
  async unwrittenRowsWritten(rows: ServerStateRow[]): Promise<void> {
    this.states.rows(rows);
    await this.states.flushed();
  }

  /** Ledger events a run could not write (the orchestrator database was down): each written at once. */
  unrecorded(events: LedgerEvent[]): void {
    for (const e of events) this.backlog.push(this.steps.record.recordEvent(e).catch(warn));
  }

  /** Before a batch child ends: the events, then the batched states, have been written. */
  async childFlushed(): Promise<void> {
    await this.backlogWritten();
    await this.states.flushed();
  }

  private async backlogWritten(): Promise<void> {
    while (this.backlog.length > 0) await Promise.all(this.backlog.splice(0));
  }
}

/**
 * A batch child's per-server states: 'km-hotfix status ID --servers', and
 * the live counts of a fleet above the status threshold
 * (status/live.ts), whose parent learns a child's results only
 * when the child ends. At most one activity in flight, each writing
 * everything since the last once SERVERS_PER_LEDGER_WRITE servers have ended
 * (starts ride along), and the rest before the child ends. The batching is
 * what the fan-out figures of bench/results/issue-22-engine.md were measured
 * with (2,000/200 in 17.11 s, 1.14×): one write per server would add an
 * activity, ~3 history events and a database round trip to every server, and
 * test/history.test.ts bounds a child's events per server. A small slice's
 * history does not depend on timing (one write at its end).
 */
class ServerStates {
  private buffered: ServerStateRow[] = [];
  /** Servers ended since the last write began. */
  private endedSince = 0;
  private writing: Promise<void> | undefined;

  constructor(
    private readonly record: RecordSteps,
    private readonly rolloutId: string,
  ) {}

  ended(row: ServerStateRow): void {
    this.buffered.push(row);
    this.endedSince++;
    this.kick(SERVERS_PER_LEDGER_WRITE);
  }

  rows(rows: ServerStateRow[]): void {
    this.buffered.push(...rows);
  }

  private kick(atLeast: number): void {
    if (!this.writing && this.endedSince >= atLeast && this.buffered.length > 0) this.writing = this.write();
  }

  private async write(): Promise<void> {
    const servers = this.buffered.splice(0);
    this.endedSince = 0;
    await this.record.recordServerStates({ rolloutId: this.rolloutId, servers }).catch(warn);
    this.writing = undefined;
    this.kick(SERVERS_PER_LEDGER_WRITE);
  }

  async flushed(): Promise<void> {
    for (;;) {
      this.kick(0);
      if (!this.writing) return;
      await this.writing;
    }
  }
}
