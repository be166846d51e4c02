// Exit codes and one-line errors (SPEC §4).
export const EXIT = {
  ok: 0,
  /** The operation failed or was rolled back. */
  failed: 1,
  /** Bad input or refused: validation, unauthorized, conflict. */
  refused: 2,
  /** Temporal or a database unreachable. */
  unreachable: 3,
} as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** An error meant for the user: one line that says what to do, and an exit code. */
export class CliError extends Error {
  override name = 'CliError';
  constructor(message: string, readonly exitCode: ExitCode = EXIT.refused) {
    super(message);
  }
}
