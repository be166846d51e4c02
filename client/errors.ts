// Exit codes and one-line errors (SPEC §4): the CLI's side of platform/errors.
import { ProblemKind, UserError } from '../platform/errors';

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

const KIND_BY_EXIT: Record<ExitCode, ProblemKind> = { 0: 'failed', 1: 'failed', 2: 'refused', 3: 'unreachable' };

/** A UserError raised by a command, with the exit code it asks for (and lines printed under it, e.g. candidates). */
export class CliError extends UserError {
  override name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: ExitCode = EXIT.refused,
    readonly details: readonly string[] = [],
  ) {
    super(message, KIND_BY_EXIT[exitCode]);
  }
}

/** The exit code of a UserError from any layer. */
export function exitCodeOf(err: UserError): ExitCode {
  if (err instanceof CliError) return err.exitCode;
  return EXIT[err.kind];
}
