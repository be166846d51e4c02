// Reading failures inside workflow code.
import { ActivityFailure, ApplicationFailure, ChildWorkflowFailure, TemporalFailure } from '@temporalio/workflow';

/** The innermost, most specific message of a failure chain. */
export function failureMessage(err: unknown): string {
  let e: unknown = err;
  while ((e instanceof ActivityFailure || e instanceof ChildWorkflowFailure) && e.cause) e = e.cause;
  if (e instanceof TemporalFailure || e instanceof Error) return e.message;
  return String(e);
}

/** A workflow input that can never work: the workflow fails at once instead of retrying its task forever. */
export function invalidInput(message: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(message, 'InvalidArgument');
}

/** Ends the happy path on purpose (rejection, abort, too many failures): a rollback follows. */
export class StopRollout extends Error {
  override name = 'StopRollout';
}

/** Server names an error message lists before "and N more" (someNames). */
export const NAMES_IN_AN_ERROR = 10;
