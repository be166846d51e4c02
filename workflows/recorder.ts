// The status every workflow reports (SPEC §4) and its mirror in the ledger:
// phase changes, server states, approvals and notes. Shared by the rollout,
// removal and upload workflows.
import { ApplicationFailure, CancellationScope, isCancellation, log } from '@temporalio/workflow';
import type {
  DecisionRecord,
  FullRolloutStatus,
  Phase,
  RolloutStatus,
  ServerState,
  ServerStatus,
  SignedDecision,
  WorkflowKind,
} from '../domain/rollout';
import type { DecisionFacts } from '../domain/decision';
import { ATTENTION_LIST_MAX, boundedStatus, FULL_SERVER_LIST_MAX, isFinalPhase } from '../domain/rollout';
import type { ServerStateRow } from '../store/ledger';
import { packServers } from '../domain/plan';
import type { BatchServerResult } from './batches';
import type { HealthProblem, ServerSummary } from '../activities/preflight';
import type { Steps } from './steps';
import { failureMessage } from './errors';
import { verifySigned } from './decisions';

/**
 * Per-server rows per ledger write: ~100 B each, so a write of 1,000 is a
 * ~100 KiB activity input, and 20,000 servers take 20 activities.
 */
export const SERVER_ROWS_PER_WRITE = 1_000;
/** Servers per initial-list write (compact: ~80 KiB). */
export const SERVER_LIST_PER_WRITE = 5_000;
/** Servers per health-check activity (its input ~30 KiB); 16 checks run at a time within one. */
export const HEALTH_CHECKS_PER_ACTIVITY = 2_000;

/** "a, b, c and 7 more": names in a message without letting it grow with the fleet. */
export function someOf(names: readonly string[], max = 10): string {
  return names.slice(0, max).join(', ') + (names.length > max ? ` and ${names.length - max} more` : '');
}

/** Ends the happy path on purpose (rejection, abort, too many failures): a rollback follows. */
export class StopRollout extends Error {
  override name = 'StopRollout';
}

/**
 * Ledger writes run in the background, one after the other (so phases land in
 * order), and cannot be cancelled: the workflow never waits on bookkeeping
 * before it works on a server — a rollback goes on while the orchestrator
 * database is down, and the ledger catches up. Only a final phase waits for
 * everything before it, so a finished workflow's ledger is complete.
 */
export class WorkflowRecorder {
  /** Everything, every server included: stays in the workflow; report() is what leaves it. */
  readonly status: FullRolloutStatus;
  private readonly byName = new Map<string, ServerStatus>();
  private notes = 0;
  /** The ledger has this workflow only once its start signature verified: nothing is written for a refused start. */
  private recorded = false;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly steps: Steps,
    id: string,
    kind: WorkflowKind,
    hotfix: string,
    private readonly listMax = FULL_SERVER_LIST_MAX,
  ) {
    const now = new Date().toISOString();
    this.status = {
      id,
      kind,
      hotfix,
      phase: 'preflight',
      requestedBy: '',
      requestedKey: null,
      sha256: null,
      canary: null,
      drained: [],
      approvals: [],
      decisions: [],
      servers: [],
      serverCount: 0,
      serverCounts: {},
      attention: [],
      attentionMore: 0,
      error: null,
      paused: false,
      gate: null,
      needsAttention: [],
      needsAttentionMore: 0,
      startedAt: now,
      updatedAt: now,
      endedAt: null,
      activeBatchWorkflows: [],
    };
  }

  /** The status as it leaves the workflow (query, result, Update answers): bounded whatever the fleet. */
  report(): RolloutStatus {
    return boundedStatus(this.status, this.listMax);
  }

  final(): boolean {
    return isFinalPhase(this.status.phase);
  }

  /**
   * Enter a phase: visible at once to status queries, written to the ledger
   * in the background. A final phase is recorded in a non-cancellable scope
   * (a cancelled workflow still records how it ended and releases its
   * claims) and waits until the ledger has everything.
   */
  async phase(phase: Phase, error?: string): Promise<void> {
    this.status.phase = phase;
    // The gate exists only while verifying: it is set before that phase begins, cleared when it ends.
    if (phase !== 'verifying') this.status.gate = null;
    this.touch();
    if (this.final()) {
      this.status.endedAt = this.status.updatedAt;
      this.status.paused = false; // a finished workflow is not paused (pause then abort)
    }
    // Replay-aware: logged once, when the workflow really reaches the phase.
    if (phase === 'failed' || phase === 'rollback_failed')
      log.warn(`${this.status.kind} of ${this.status.hotfix}: ${phase}`, { phase, error });
    else log.info(`${this.status.kind} of ${this.status.hotfix}: ${phase}`, { phase, ...(error ? { error } : {}) });
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
      this.enqueue(() => this.steps.record.recordPhase(write));
      return;
    }
    await CancellationScope.nonCancellable(async () => {
      this.enqueue(() => this.steps.record.recordPhase(write));
      await this.chain;
    });
  }

  /** Everything written so far has reached the ledger. */
  async flushed(): Promise<void> {
    await CancellationScope.nonCancellable(() => this.chain);
  }

  private enqueue(write: () => Promise<void>): void {
    this.chain = this.chain
      .then(() => CancellationScope.nonCancellable(write))
      .catch((err: unknown) => {
        log.warn(`a ledger write failed: ${failureMessage(err)}`);
      });
  }

  /**
   * Check the start signature (it names the requester and fixes their key),
   * then record the start in the ledger with its proof. A refusal throws.
   */
  async start(
    signed: SignedDecision,
    facts: DecisionFacts,
    record: { servers: string[]; options: Record<string, unknown> },
    rules?: (rec: DecisionRecord) => void,
  ): Promise<DecisionRecord> {
    this.status.sha256 = facts.sha256;
    const rec = await verifySigned(this.steps, signed, facts);
    rules?.(rec);
    this.status.requestedBy = rec.by;
    this.status.requestedKey = rec.key;
    this.status.decisions.push(rec);
    this.touch();
    this.recorded = true;
    this.enqueue(() =>
      this.steps.record.recordRolloutStart({
        id: this.status.id,
        kind: this.status.kind,
        hotfix: this.status.hotfix,
        requestedBy: rec.by,
        servers: record.servers,
        options: stripUndefined(record.options),
        signed: { key: rec.key, message: rec.message, signature: rec.signature },
      }),
    );
    return rec;
  }

  /**
   * Run the preflight (fn calls start() first thing it can). Any failure ends
   * the workflow in `failed` with nothing changed; returns undefined then.
   */
  async preflight<T>(fn: () => Promise<T>): Promise<T | undefined> {
    try {
      return await fn();
    } catch (err) {
      if (isCancellation(err)) this.status.error = 'cancelled during preflight';
      else this.status.error = err instanceof StopRollout ? err.message : failureMessage(err);
      await this.phase('failed', this.status.error);
      return undefined;
    }
  }

  async claim(servers: string[]): Promise<void> {
    await this.flushed(); // the rollout's record exists before its claims
    await this.steps.record.claimServers({ rolloutId: this.status.id, hotfix: this.status.hotfix, servers });
  }

  /** Every server answers with its pinned host key and runs all services; otherwise preflight fails listing all problems. */
  async checkHealth(servers: string[]): Promise<void> {
    const problems: HealthProblem[] = [];
    let count = 0;
    // In chunks: each activity's input and answer stay small whatever the fleet.
    for (let i = 0; i < servers.length; i += HEALTH_CHECKS_PER_ACTIVITY) {
      const report = await this.steps.health.checkServers({
        servers: servers.slice(i, i + HEALTH_CHECKS_PER_ACTIVITY),
      });
      problems.push(...report.problems);
      count += report.problems.length + report.more;
    }
    if (count > 0) {
      const shown = problems
        .slice(0, 5)
        .map((p) => p.message)
        .join('; ');
      throw ApplicationFailure.nonRetryable(
        `preflight: ${count} server(s) not ready, nothing was changed: ${shown}${count > 5 ? `; and ${count - 5} more` : ''}`,
        problems[0].type,
      );
    }
  }

  setServers(servers: ServerSummary[], skipped: string[]): void {
    const skip = new Set(skipped);
    this.status.servers = servers.map((s) => ({
      name: s.name,
      role: s.role,
      state: skip.has(s.name) ? 'skipped' : 'pending',
    }));
    this.byName.clear();
    for (const s of this.status.servers) this.byName.set(s.name, s);
    this.touch();
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
      this.enqueue(() => this.steps.record.recordServerList(write));
    }
  }

  /**
   * Per-server states for the ledger ('km-hotfix status ID --servers'), in
   * chunks, in the background like every ledger write. The batch children
   * write their own servers' results (workflows/batches.ts).
   */
  recordServers(rows: ServerStateRow[]): void {
    if (!this.recorded) return;
    for (let i = 0; i < rows.length; i += SERVER_ROWS_PER_WRITE) {
      const chunk = rows.slice(i, i + SERVER_ROWS_PER_WRITE);
      this.enqueue(() => this.steps.record.recordServerStates({ rolloutId: this.status.id, servers: chunk }));
    }
  }

  /**
   * A result from a batch child. A child writes what it learns itself; a
   * result without an end time is from a child that ended without a result
   * (workflows/fanout.ts lostSlice), which only the parent can write.
   */
  batchResult(b: BatchServerResult): void {
    this.updateServer(b.name, b.state, b.error, b.startedAt, b.endedAt);
    const s = this.byName.get(b.name);
    if (s && !b.endedAt) this.recordServers([stateRow(s, this.status.updatedAt)]);
  }

  updateServer(name: string, state: ServerState, error?: string, startedAt?: string, endedAt?: string): void {
    const s = this.byName.get(name);
    if (!s) return;
    s.state = state;
    if (startedAt && !s.startedAt) s.startedAt = startedAt;
    if (endedAt) s.endedAt = endedAt;
    if (error) s.error = error;
    if (state === 'failed' || state === 'rollback_failed')
      log.warn(`${name}: ${state}${error ? `: ${error}` : ''}`, { server: name, state });
    this.touch();
  }

  failedServers(): string[] {
    return this.status.servers.filter((s) => s.state === 'failed').map((s) => s.name);
  }

  /** After a rollback, servers never reached are reported as untouched. */
  untouchedRest(): void {
    const rows: ServerStateRow[] = [];
    this.touch();
    for (const s of this.status.servers) {
      if (s.state !== 'pending') continue;
      s.state = 'untouched';
      rows.push(stateRow(s, this.status.updatedAt));
    }
    this.recordServers(rows);
  }

  /** An accepted answer at the gate (its ledger event is written by the workflow once the gate closes). */
  approval(rec: DecisionRecord): void {
    const decision = rec.action === 'approve' ? 'approve' : 'reject';
    this.status.approvals.push({
      by: rec.by,
      decision,
      at: new Date().toISOString(),
      comment: rec.comment,
      key: rec.key,
      ...(rec.via ? { via: rec.via } : {}),
      message: rec.message,
      signature: rec.signature,
    });
    this.status.decisions.push(rec);
    this.touch();
  }

  /** An accepted steering decision (pause, resume, abort), with its proof, in the status and the ledger (written in the background). */
  steering(rec: DecisionRecord): void {
    this.status.decisions.push(rec);
    this.touch();
    void this.record({
      key: `${rec.action}:${++this.notes}`,
      kind: rec.action,
      actor: rec.by,
      detail: { ...(rec.comment ? { reason: rec.comment } : {}), ...proof(rec) },
    });
  }

  /** Written in the background (see the class comment). */
  record(e: {
    key: string;
    kind: string;
    server?: string;
    actor?: string;
    detail?: Record<string, unknown>;
  }): Promise<void> {
    this.enqueue(() => this.steps.record.recordEvent({ rolloutId: this.status.id, ...e }));
    return Promise.resolve();
  }

  private touch(): void {
    this.status.updatedAt = new Date().toISOString();
  }
}

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

/** What anyone needs to re-check a decision: the key's fingerprint, the message, the signature. */
export function proof(rec: DecisionRecord): { key: string; via?: string; message: string; signature: string } {
  return { key: rec.key, ...(rec.via ? { via: rec.via } : {}), message: rec.message, signature: rec.signature };
}

function stripUndefined(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}
