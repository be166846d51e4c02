// How activity errors reach the workflow: an ApplicationFailure whose `type`
// is stable (workflows and the CLI match on it) and whose retryability
// follows SPEC §5 "Retries".
import { ApplicationFailure } from '@temporalio/activity';
import { activityContext } from './context';
import { KmError } from '../keymanager/errors';
import { FAILURE } from '../domain/failures';

/** A command that ran and exited non-zero is retried this many times in all, then the server has failed. */
export const COMMAND_ATTEMPTS = 3;

const BY_KIND: Record<KmError['kind'], string> = {
  'host-key': FAILURE.hostKey,
  auth: FAILURE.auth,
  'checksum-mismatch': FAILURE.checksum,
  'unknown-hotfix': FAILURE.unknownHotfix,
  'command-failed': FAILURE.commandFailed,
  connection: FAILURE.connection,
  timeout: FAILURE.timeout,
  'invalid-argument': FAILURE.invalid,
};

function attempt(): number {
  return activityContext()?.info.attempt ?? 1; // 1 outside an activity (unit tests)
}

/** Turn anything thrown by a Key Manager module into the failure the workflow should see. */
export function toFailure(err: unknown, server?: string, attemptNo: number = attempt()): ApplicationFailure {
  if (err instanceof ApplicationFailure) return err;
  if (err instanceof KmError) {
    const type = BY_KIND[err.kind];
    const where = server && !err.message.includes(server) ? `${server}: ` : '';
    // Lost connections and timeouts retry for minutes; a non-zero exit only a few times.
    const nonRetryable = !err.retryable || (err.kind === 'command-failed' && attemptNo >= COMMAND_ATTEMPTS);
    return ApplicationFailure.create({ type, message: `${where}${err.message}`, nonRetryable, cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  return ApplicationFailure.create({
    type: 'Error',
    message: server ? `${server}: ${message}` : message,
    nonRetryable: false,
  });
}

/** Run fn, translating its errors; `attemptNo` is this server's attempt when it is not the activity's (a run of servers). */
export async function classified<T>(server: string | undefined, fn: () => Promise<T>, attemptNo?: number): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw toFailure(err, server, attemptNo);
  }
}

export function nonRetryable(type: string, message: string): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true });
}
