// The status a workflow answers (SPEC §4): the one model behind the status
// query, the workflow's result and every Update's answer. In memory only;
// workflows/recorder.ts mirrors what changes into the ledger.
import { log } from '@temporalio/workflow';
import type { Phase, ServerState, WorkflowKind } from '../domain/rollout';
import type {
  Approval,
  DecisionRecord,
  FullRolloutStatus,
  RolloutStatus,
  ServerStatus,
} from '../domain/messages/rollout';
import { FULL_SERVER_LIST_MAX, isFinalPhase } from '../domain/rollout';
import { boundedStatus } from '../domain/status';
import type { ServerSummary } from '../domain/messages/preflight';

export class StatusModel {
  /** Everything, every server included: stays in the workflow; report() is what leaves it. */
  readonly status: FullRolloutStatus;
  private readonly byName = new Map<string, ServerStatus>();

  constructor(
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

  /** Enter a phase: visible at once to status queries. */
  enter(phase: Phase, error?: string): void {
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
  }

  server(name: string): ServerStatus | undefined {
    return this.byName.get(name);
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

  /** Servers never reached become untouched; returns them. */
  untouchedRest(): ServerStatus[] {
    this.touch();
    const changed: ServerStatus[] = [];
    for (const s of this.status.servers) {
      if (s.state !== 'pending') continue;
      s.state = 'untouched';
      changed.push(s);
    }
    return changed;
  }

  /** An accepted signed decision (the start, a pause, a resume, an abort, the gate's answer), in order. */
  decided(rec: DecisionRecord): void {
    this.status.decisions.push(rec);
    this.touch();
  }

  /** The gate's accepted answer: the one place the workflow keeps it (workflows/gate.ts reads it back). */
  answered(rec: DecisionRecord): Approval {
    const approval: Approval = {
      by: rec.by,
      decision: rec.action === 'approve' ? 'approve' : 'reject',
      at: new Date().toISOString(),
      comment: rec.comment,
      key: rec.key,
      ...(rec.via ? { via: rec.via } : {}),
      message: rec.message,
      signature: rec.signature,
    };
    this.status.approvals.push(approval);
    this.decided(rec);
    return approval;
  }

  touch(): void {
    this.status.updatedAt = new Date().toISOString();
  }
}
