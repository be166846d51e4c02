// What both the status and the ledger show, kept in step: phases, servers and
// accepted decisions. The status (workflows/status.ts) changes at once; the
// ledger (workflows/ledger-writer.ts) follows in the background. Shared by the
// rollout, removal and upload workflows.
import { CancellationScope } from '@temporalio/workflow';
import type { Phase, ServerState, WorkflowKind } from '../domain/rollout';
import type {
  Approval,
  DecisionRecord,
  FullRolloutStatus,
  RolloutStatus,
  ServerStatus,
} from '../domain/messages/rollout';
import { ATTENTION_LIST_MAX, FULL_SERVER_LIST_MAX } from '../domain/rollout';
import { packServers } from '../domain/plan';
import type { BatchServerResult } from '../domain/messages/batches';
import type { ServerSummary } from '../domain/messages/preflight';
import type { ServerStateRow } from '../domain/messages/ledger';
import type { Steps } from './steps';
import { StatusModel } from './status';
import { LedgerWriter, stateRow } from './ledger-writer';

/** Servers per initial-list write (compact: ~80 KiB). */
const SERVER_LIST_PER_WRITE = 5_000;

export class WorkflowRecorder {
  readonly model: StatusModel;
  readonly ledger: LedgerWriter;
  /** The ledger has this workflow only once its start signature verified: nothing is written for a refused start. */
  private recorded = false;
  private notes = 0;

  constructor(steps: Steps, id: string, kind: WorkflowKind, hotfix: string, listMax = FULL_SERVER_LIST_MAX) {
    this.model = new StatusModel(id, kind, hotfix, listMax);
    this.ledger = new LedgerWriter(steps, id);
  }

  /** The status in memory, every server included (see StatusModel). */
  get status(): FullRolloutStatus {
    return this.model.status;
  }

  report(): RolloutStatus {
    return this.model.report();
  }

  final(): boolean {
    return this.model.final();
  }

  /**
   * Enter a phase: visible at once to status queries, written to the ledger
   * in the background. A final phase is recorded in a non-cancellable scope
   * (a cancelled workflow still records how it ended and releases its
   * claims) and waits until the ledger has everything.
   */
  async phase(phase: Phase, error?: string): Promise<void> {
    this.model.enter(phase, error);
    if (!this.recorded) return; // a refused start leaves no trace in the ledger
    const all = this.status.needsAttention;
    const attention =
      this.final() && all.length > 0
        ? {
            needsAttention: all.slice(0, ATTENTION_LIST_MAX),
            ...(all.length > ATTENTION_LIST_MAX ? { needsAttentionMore: all.length - ATTENTION_LIST_MAX } : {}),
          }
        : {};
    const write = { rolloutId: this.status.id, phase, ...(error ? { error } : {}), ...attention };
    if (!this.final()) {
      this.ledger.inOrder((record) => record.recordPhase(write));
      return;
    }
    await CancellationScope.nonCancellable(async () => {
      this.ledger.inOrder((record) => record.recordPhase(write));
      await this.ledger.flushed();
    });
  }

  /** The verified start: it names the requester and fixes their key; from now on the ledger has this workflow. */
  started(rec: DecisionRecord, record: { servers: string[]; options: Record<string, unknown> }): void {
    this.status.requestedBy = rec.by;
    this.status.requestedKey = rec.key;
    this.model.decided(rec);
    this.recorded = true;
    const s = this.status;
    this.ledger.inOrder((steps) =>
      steps.recordRolloutStart({
        id: s.id,
        kind: s.kind,
        hotfix: s.hotfix,
        requestedBy: rec.by,
        servers: record.servers,
        options: stripUndefined(record.options),
        signed: { key: rec.key, message: rec.message, signature: rec.signature },
      }),
    );
  }

  /** An accepted steering decision (pause, resume, abort), with its proof, in the status and the ledger. */
  steered(rec: DecisionRecord): void {
    this.model.decided(rec);
    void this.record({
      key: `${rec.action}:${++this.notes}`,
      kind: rec.action,
      actor: rec.by,
      detail: { ...(rec.comment ? { reason: rec.comment } : {}), ...proof(rec) },
    });
  }

  /** The gate's accepted answer, in the status now; its ledger event once the gate closes (answerRecorded). */
  answered(rec: DecisionRecord): void {
    this.model.answered(rec);
  }

  answerRecorded(verdict: Approval): void {
    void this.record({
      key: 'decision',
      kind: verdict.decision,
      actor: verdict.by,
      detail: {
        comment: verdict.comment,
        key: verdict.key,
        ...(verdict.via ? { via: verdict.via } : {}),
        message: verdict.message,
        signature: verdict.signature,
      },
    });
  }

  setServers(servers: ServerSummary[], skipped: string[]): void {
    this.model.setServers(servers, skipped);
    // The initial list, compact (names and one letter per role): 20,000 servers are ~320 KiB of history, not ~2 MiB of rows.
    if (!this.recorded) return;
    const at = this.status.updatedAt;
    for (let first = 0; first < this.status.servers.length; first += SERVER_LIST_PER_WRITE) {
      const chunk = this.status.servers.slice(first, first + SERVER_LIST_PER_WRITE);
      const write = {
        rolloutId: this.status.id,
        at,
        first,
        servers: packServers(chunk),
        skipped: chunk.flatMap((s, i) => (s.state === 'skipped' ? [i] : [])),
      };
      this.ledger.inOrder((record) => record.recordServerList(write));
    }
  }

  updateServer(name: string, state: ServerState, error?: string, startedAt?: string, endedAt?: string): void {
    this.model.updateServer(name, state, error, startedAt, endedAt);
  }

  /** Per-server states for the ledger ('km-hotfix status ID --servers'); the batch children write their own. */
  recordServers(rows: ServerStateRow[]): void {
    if (!this.recorded) return;
    this.ledger.serverRows(rows);
  }

  /** Servers as they are now, as ledger rows. */
  rows(servers: ServerStatus[]): ServerStateRow[] {
    return servers.map((s) => stateRow(s, this.status.updatedAt));
  }

  /**
   * A result from a batch child. A child writes what it learns itself; a
   * result without an end time is from a child that ended without a result
   * (workflows/lost.ts lostSlice), which only the parent can write.
   */
  batchResult(b: BatchServerResult): void {
    this.updateServer(b.name, b.state, b.error, b.startedAt, b.endedAt);
    const s = this.model.server(b.name);
    if (s && !b.endedAt) this.recordServers(this.rows([s]));
  }

  /** After a removal stops, servers never reached are reported as untouched. */
  untouchedRest(): void {
    this.recordServers(this.rows(this.model.untouchedRest()));
  }

  /**
   * An event for the ledger, written in order in the background. Resolved at
   * once: a caller that awaits it lets the write be scheduled before its next
   * step (the drain's recorded histories have that order).
   */
  record(e: {
    key: string;
    kind: string;
    server?: string;
    actor?: string;
    detail?: Record<string, unknown>;
  }): Promise<void> {
    this.ledger.event(e);
    return Promise.resolve();
  }
}

/** What anyone needs to re-check a decision: the key's fingerprint, the message, the signature. */
export function proof(rec: DecisionRecord): { key: string; via?: string; message: string; signature: string } {
  return { key: rec.key, ...(rec.via ? { via: rec.via } : {}), message: rec.message, signature: rec.signature };
}

function stripUndefined(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}
