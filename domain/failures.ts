// The failure types that cross the workflow boundary: activities raise them
// (activities/failures.ts), workflows and the CLI match on them. One list, so
// the retry policy and the activities cannot drift apart (SPEC §5 "Retries").

export const FAILURE = {
  hostKey: 'HostKeyMismatch',
  auth: 'AuthenticationFailed',
  checksum: 'ChecksumMismatch',
  unknownHotfix: 'UnknownHotfix',
  commandFailed: 'CommandFailed',
  connection: 'ConnectionLost',
  timeout: 'Timeout',
  invalid: 'InvalidArgument',
  conflict: 'Conflict',
  servicesDown: 'ServicesNotRunning',
  notApplied: 'NotApplied',
  preflight: 'PreflightFailed',
} as const;
export type FailureType = (typeof FAILURE)[keyof typeof FAILURE];

/** Failures that no retry can fix. The others (a lost connection, a timeout, a non-zero exit) may heal. */
export const NEVER_RETRY: readonly FailureType[] = [
  FAILURE.hostKey,
  FAILURE.auth,
  FAILURE.checksum,
  FAILURE.unknownHotfix,
  FAILURE.invalid,
  FAILURE.conflict,
  FAILURE.servicesDown,
  FAILURE.notApplied,
  FAILURE.preflight,
];
