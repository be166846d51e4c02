// The verification gate (vendor procedure: a person checks the canary before
// the fleet gets the hotfix), as one object in the style of samples-typescript
// message-passing/safe-message-handlers' ClusterManager: the Update validator
// refuses what the workflow can judge alone, the handler answers one decision
// at a time (OneAtATime) and judges again after the signature check, and the
// rules (who may answer) are here. The accepted answer is kept once: in the
// status (workflows/status.ts `answered`), read back by `verdict()`.
import { condition, setHandler } from '@temporalio/workflow';
import type { Approval, DrainedBackend, RolloutInput, RolloutStatus, SignedDecision } from '../domain/messages/rollout';
import { NAMES_IN_A_LINE, someNames } from '../domain/rollout';
import { drainedFacts, type DecisionFacts, type DrainedFacts } from '../domain/decision';
import { gateAnswerRefusal } from '../domain/people';
import { approveUpdate, rejectUpdate } from '../domain/messages/rollout';
import { checkFacts, refused, verifySigned } from './decisions';
import { StopRollout } from './errors';
import { formatDuration } from '../domain/plan';
import type { RolloutPlan } from './rollout-plan';
import type { WorkflowRecorder } from './recorder';
import type { Steps } from './steps';
import type { OneAtATime } from './decisions';
import type { Notifier } from './notify';

/** What the gate needs of a rollout (workflows/rollout-state.ts RolloutState has it). */
export interface GateHost {
  readonly id: string;
  readonly input: RolloutInput;
  readonly r: WorkflowRecorder;
  readonly steps: Steps;
  readonly lock: OneAtATime;
  readonly notifier: Notifier;
  readonly drained: DrainedBackend[];
  stopRequested(): boolean;
}

type Answer = 'approve' | 'reject';

export class VerificationGate {
  /** The drained backends by count and digest (the gate's facts that grow with the fleet, issue 31), computed once per list. */
  private drainedDigest: { of: unknown; facts: DrainedFacts } | undefined;

  constructor(private readonly s: GateHost) {}

  /** The approve and reject Updates. */
  register(): void {
    setHandler(approveUpdate, this.answer('approve'), {
      validator: (req: SignedDecision) => this.validate('approve', req),
    });
    setHandler(rejectUpdate, this.answer('reject'), {
      validator: (req: SignedDecision) => this.validate('reject', req),
    });
  }

  /** The accepted answer, if any. */
  verdict(): Approval | undefined {
    return this.s.r.status.approvals.at(-1);
  }

  /**
   * Open the gate: its details are filled in before the phase shows (a status
   * query never sees `verifying` without its gate), then tell the team.
   */
  async open(p: RolloutPlan): Promise<void> {
    const { r, input, id } = this.s;
    const since = new Date();
    r.status.gate = {
      message: gateMessage(
        input.hotfix,
        p.canary,
        p.canaryUrl,
        this.s.drained.map((d) => d.server),
        id,
      ),
      canary: p.canary,
      ...(p.canaryUrl ? { url: p.canaryUrl } : {}),
      drained: this.drainedNow(),
      approvers: input.approvers,
      waitingSince: since.toISOString(),
      deadline: new Date(since.getTime() + input.approvalTimeoutMs).toISOString(),
    };
    await r.phase('verifying');
    this.s.notifier.send({
      event: 'waiting',
      rolloutId: id,
      hotfix: input.hotfix,
      requestedBy: r.status.requestedBy,
      canary: p.canary,
      ...(p.canaryUrl ? { canaryUrl: p.canaryUrl } : {}),
      // A few names and the count: the notification's input is in the history, and it grows with the fleet otherwise.
      drained: this.s.drained.slice(0, NAMES_IN_A_LINE).map((d) => d.server),
      drainedCount: this.s.drained.length,
    });
  }

  /** Until an answer, an abort or a cancel from Temporal, or the approval timeout; false when it timed out. */
  wait(): Promise<boolean> {
    return condition(() => this.verdict() !== undefined || this.s.stopRequested(), this.s.input.approvalTimeoutMs);
  }

  /** The answer's ledger event, written once the gate has closed (the gate stays filled in until the next phase). */
  recordVerdict(): void {
    const verdict = this.verdict();
    if (verdict) this.s.r.answerRecorded(verdict);
  }

  /** No answer within the approval timeout counts as a rejection; a rejection ends the happy path. */
  judge(answered: boolean): void {
    if (!answered)
      throw new StopRollout(
        `no approval within ${formatDuration(this.s.input.approvalTimeoutMs)}: the approval timeout counts as a rejection`,
      );
    const verdict = this.verdict();
    if (verdict && verdict.decision !== 'approve')
      throw new StopRollout(`rejected by ${verdict.by}: ${verdict.comment}`);
  }

  /** Answers to the gate: only while verifying, only once, signed for exactly this canary. */
  private validate(action: Answer, req: SignedDecision): void {
    const { r, id } = this.s;
    if (r.status.phase !== 'verifying')
      throw refused(
        `rollout ${id} is not waiting for verification (phase ${r.status.phase}): there is nothing to answer`,
      );
    if (this.verdict() || this.s.stopRequested()) throw refused(`rollout ${id} has already been answered`);
    const d = checkFacts(req, this.facts(action));
    if (action === 'reject' && !d.comment) throw refused('a rejection needs a reason: --reason "what is wrong"');
  }

  /** The signer must not be the requester (by name or by key) and must be a listed approver when there is a list. */
  private answer(action: Answer) {
    return (req: SignedDecision): Promise<RolloutStatus> =>
      this.s.lock.run(async () => {
        const { r, steps, input } = this.s;
        this.validate(action, req);
        const { personKeys, ...rec } = await verifySigned(steps, req, this.facts(action));
        this.validate(action, req);
        // Principals and keys, the file's (domain/people.ts): through a delegate the key that signed is the delegate's, so the person's own keys count.
        const why = gateAnswerRefusal(
          { by: rec.by, ...(rec.via ? {} : { key: rec.key }), keys: [rec.key, ...(personKeys ?? [])] },
          { requestedBy: r.status.requestedBy, requestedKey: r.status.requestedKey, approvers: input.approvers },
        );
        if (why) throw refused(why);
        r.answered(rec);
        return r.report();
      });
  }

  /** What an answer at the gate must state: this rollout, file, canary and drained backends, as they are now. */
  private facts(action: Answer): DecisionFacts {
    const { r, input, id } = this.s;
    return {
      action,
      rollout: id,
      hotfix: input.hotfix,
      sha256: r.status.sha256 ?? '',
      canary: r.status.canary ?? '',
      drained: this.drainedNow(),
    };
  }

  /** Recomputed from the workflow's own list only when the list changes (once: it does not change after the drain). */
  private drainedNow(): DrainedFacts {
    const drained = this.s.drained;
    if (this.drainedDigest?.of !== drained)
      this.drainedDigest = { of: drained, facts: drainedFacts(drained.map((d) => d.server)) };
    return this.drainedDigest.facts;
  }
}

function gateMessage(hotfix: string, canary: string, url: string | undefined, drained: string[], id: string): string {
  const where = url
    ? `connect directly to ${url} (not through the load balancer)`
    : `connect directly to ${canary} (not through the load balancer)`;
  // A few names and the count: the whole list is on the rollout's page and in 'km-hotfix status ID --drained'.
  const drain =
    drained.length > 0
      ? ` Backends ${someNames(drained)} have Maximum Processes 0, so only ${canary} runs operations.`
      : '';
  return `Verify ${hotfix} on canary ${canary}: ${where}.${drain} Then: km-hotfix approve ${id} or km-hotfix reject ${id} --reason "..."`;
}
