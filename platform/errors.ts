// The project's error type below the command line: one line that says what
// to do, and what sort of problem it is. Only client/cli.ts turns the sort
// into an exit code (SPEC §4), so lower layers never know about processes.

/** refused: bad input or settings; unreachable: Temporal or a database does not answer; failed: anything else. */
export type ProblemKind = 'refused' | 'unreachable' | 'failed';

/** An error meant for the user: its message is the one line to print. */
export class UserError extends Error {
  override name = 'UserError';
  constructor(
    message: string,
    readonly kind: ProblemKind = 'refused',
  ) {
    super(message);
  }
}
