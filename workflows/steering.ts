// pause, resume and abort of a rollout or a removal: signed decisions, any
// registered signer may make them; checked as workflows/decisions.ts explains.
import { CancellationScope, setHandler } from '@temporalio/workflow';
import type { DecisionAction } from '../domain/decision';
import type { DecisionRecord, RolloutStatus, SteerRequest } from '../domain/messages/rollout';
import { abortUpdate, pauseUpdate, resumeUpdate } from '../domain/messages/rollout';
import { checkFacts, OneAtATime, refused, verifySigned } from './decisions';
import type { WorkflowRecorder } from './recorder';
import type { Steps } from './steps';

export interface Steering {
  steps: Steps;
  recorder: WorkflowRecorder;
  lock: OneAtATime;
  /** True once an abort was accepted (or the workflow rolls back for another reason). */
  stopping(): boolean;
  setPaused(paused: boolean): void;
  abort(rec: DecisionRecord): void;
}

type SteerAction = Extract<DecisionAction, 'pause' | 'resume' | 'abort'>;

export function setSteeringHandlers(s: Steering): void {
  const r = s.recorder;
  const { id, hotfix } = r.status;

  function validate(action: SteerAction, req: SteerRequest): void {
    if (r.final()) throw refused(`${id} has ended (${r.status.phase}): there is nothing to ${action}`);
    if (r.status.sha256 === null)
      throw refused(`${id} is still in preflight and does not know its file yet: try again in a moment`);
    if (s.stopping()) {
      // A rollback cannot be paused or held: it runs to its end (SPEC §5).
      const what = r.status.phase === 'rolling_back' ? 'rolling back' : 'stopping';
      throw refused(
        `${id} is already ${what} (${r.status.phase}): it cannot be ${action === 'abort' ? 'aborted again' : `${action}d`}; follow it with 'km-hotfix status ${id} --watch'`,
      );
    }
    if (action === 'pause' && r.status.paused) throw refused(`${id} is already paused`);
    if (action === 'resume' && !r.status.paused) throw refused(`${id} is not paused: nothing to resume`);
    const d = checkFacts(req, { action, rollout: id, hotfix, sha256: r.status.sha256 });
    if (action === 'abort' && !d.comment) throw refused('an abort needs a reason: --reason "why"');
  }

  function handler(action: SteerAction) {
    return (req: SteerRequest): Promise<RolloutStatus> =>
      s.lock.run(async () => {
        validate(action, req); // again: another decision may have been accepted while this one waited
        const rec = await verifySigned(s.steps, req, { action, rollout: id, hotfix, sha256: r.status.sha256 ?? '' });
        validate(action, req); // and while its signature was checked
        if (action === 'abort') s.abort(rec);
        else {
          r.status.paused = action === 'pause';
          s.setPaused(r.status.paused);
        }
        r.steered(rec);
        return r.report();
      });
  }

  setHandler(pauseUpdate, handler('pause'), { validator: (req: SteerRequest) => validate('pause', req) });
  setHandler(resumeUpdate, handler('resume'), { validator: (req: SteerRequest) => validate('resume', req) });
  setHandler(abortUpdate, handler('abort'), { validator: (req: SteerRequest) => validate('abort', req) });
}

/**
 * A cancel of the workflow from Temporal (its Web UI, `temporal workflow
 * cancel`), as a flag and a callback. The workflow runs its steps in a
 * non-cancellable scope and treats the cancel as an abort or a stop: a step
 * is never cut off halfway.
 */
export class TemporalCancel {
  requested = false;
  private readonly listeners: (() => void)[] = [];

  constructor() {
    CancellationScope.current().cancelRequested.catch(() => {
      this.requested = true;
      for (const f of this.listeners) run(f);
    });
  }

  onRequest(f: () => void): void {
    this.listeners.push(f);
    if (this.requested) run(f);
  }
}

/** Outside the cancelled scope: what a listener starts (a signal to stop the children) must not be cancelled with it. */
function run(f: () => void): void {
  void CancellationScope.nonCancellable(
    () =>
      new Promise<void>((resolve) => {
        f();
        resolve();
      }),
  );
}
