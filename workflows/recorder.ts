// The status every workflow reports (SPEC §4) and its mirror in the ledger:
// phase changes, server states, approvals and notes. Shared by the rollout,
// removal and upload workflows.
import { ApplicationFailure, CancellationScope, isCancellation, log } from '@temporalio/workflow';
import type { Phase, RolloutStatus, ServerState, WorkflowKind } from '../domain/rollout';
import { isFinalPhase } from '../domain/rollout';
import type { ServerSummary } from '../activities/preflight';
import { LedgerBacklog, Steps } from './steps';
import { failureMessage } from './errors';

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
  readonly status: RolloutStatus;
  /** Ledger events the SSH activities could not write themselves. */
  readonly backlog: LedgerBacklog;
  private notes = 0;
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly steps: Steps, id: string, kind: WorkflowKind, hotfix: string, requestedBy: string) {
    this.backlog = new LedgerBacklog(steps);
    const now = new Date().toISOString();
    this.status = {
      id, kind, hotfix, phase: 'preflight', requestedBy, canary: null, drained: [], approvals: [], servers: [],
      error: null, paused: false, gate: null, needsAttention: [], startedAt: now, updatedAt: now, endedAt: null,
      activeBatchWorkflows: [],
    };
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
    if (this.final()) this.status.endedAt = this.status.updatedAt;
    // Replay-aware: logged once, when the workflow really reaches the phase.
    if (phase === 'failed' || phase === 'rollback_failed') log.warn(`${this.status.kind} of ${this.status.hotfix}: ${phase}`, { phase, error });
    else log.info(`${this.status.kind} of ${this.status.hotfix}: ${phase}`, { phase, ...(error ? { error } : {}) });
    const attention = this.final() && this.status.needsAttention.length > 0 ? { needsAttention: this.status.needsAttention } : {};
    const write = { rolloutId: this.status.id, phase, ...(error ? { error } : {}), ...attention };
    if (!this.final()) {
      this.enqueue(() => this.steps.record.recordPhase(write));
      return;
    }
    await CancellationScope.nonCancellable(async () => {
      await this.backlog.drain();
      this.enqueue(() => this.steps.record.recordPhase(write));
      await this.chain;
    });
  }

  /** Everything written so far has reached the ledger. */
  async flushed(): Promise<void> {
    await CancellationScope.nonCancellable(() => this.chain);
  }

  private enqueue(write: () => Promise<void>): void {
    this.chain = this.chain.then(() => CancellationScope.nonCancellable(write)).catch((err: unknown) => {
      log.warn(`a ledger write failed: ${failureMessage(err)}`);
    });
  }

  /**
   * Run the preflight: record the start, then fn. Any failure ends the
   * workflow in `failed` with nothing changed; returns undefined then.
   */
  async preflight<T>(fn: () => Promise<T>, record: { hotfix: string; servers: string[]; options: Record<string, unknown> }): Promise<T | undefined> {
    this.enqueue(() => this.steps.record.recordRolloutStart({ id: this.status.id, kind: this.status.kind, hotfix: record.hotfix, requestedBy: this.status.requestedBy, servers: record.servers, options: stripUndefined(record.options) }));
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
    if (servers.length === 0) return;
    const problems = await this.steps.health.checkServers({ servers });
    if (problems.length > 0) {
      const shown = problems.slice(0, 5).map((p) => p.message).join('; ');
      throw ApplicationFailure.nonRetryable(`preflight: ${problems.length} server(s) not ready, nothing was changed: ${shown}${problems.length > 5 ? `; and ${problems.length - 5} more` : ''}`, problems[0].type);
    }
  }

  setServers(servers: ServerSummary[], skipped: string[]): void {
    const skip = new Set(skipped);
    this.status.servers = servers.map((s) => ({ name: s.name, role: s.role, state: skip.has(s.name) ? 'skipped' : 'pending' }));
    this.touch();
  }

  updateServer(name: string, state: ServerState, error?: string, startedAt?: string, endedAt?: string): void {
    const s = this.status.servers.find((x) => x.name === name);
    if (!s) return;
    s.state = state;
    if (startedAt && !s.startedAt) s.startedAt = startedAt;
    if (endedAt) s.endedAt = endedAt;
    if (error) s.error = error;
    if (state === 'failed' || state === 'rollback_failed') log.warn(`${name}: ${state}${error ? `: ${error}` : ''}`, { server: name, state });
    this.touch();
  }

  /** One step on one server in this workflow (the canary): state before, after, and on failure. */
  async serverStep<T>(name: string, running: ServerState, fn: () => Promise<T>, done: ServerState, failed: ServerState): Promise<T> {
    this.updateServer(name, running, undefined, new Date().toISOString());
    try {
      const v = await fn();
      this.updateServer(name, done, undefined, undefined, new Date().toISOString());
      return v;
    } catch (err) {
      this.updateServer(name, failed, failureMessage(err), undefined, new Date().toISOString());
      throw err;
    }
  }

  failedServers(): string[] {
    return this.status.servers.filter((s) => s.state === 'failed').map((s) => s.name);
  }

  /** After a rollback, servers never reached are reported as untouched. */
  untouchedRest(): void {
    for (const s of this.status.servers) if (s.state === 'pending') s.state = 'untouched';
    this.touch();
  }

  approval(by: string, decision: 'approve' | 'reject', comment: string): void {
    this.status.approvals.push({ by, decision, at: new Date().toISOString(), comment });
    this.touch();
  }

  /** A steering note (pause, resume, abort) in the ledger; not awaited by signal handlers. */
  note(kind: string, actor: string, reason?: string): void {
    void this.record({ key: `${kind}:${++this.notes}`, kind, actor, detail: reason ? { reason } : {} });
  }

  /** Written in the background (see the class comment). */
  record(e: { key: string; kind: string; server?: string; actor?: string; detail?: Record<string, unknown> }): Promise<void> {
    this.enqueue(() => this.steps.record.recordEvent({ rolloutId: this.status.id, ...e }));
    return Promise.resolve();
  }

  private touch(): void {
    this.status.updatedAt = new Date().toISOString();
  }
}

function stripUndefined(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}
