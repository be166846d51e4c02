// Errors of the Key Manager modules, classified once here so the activity
// layer can map them to Temporal failures without reading messages
// (SPEC §5 "Retries"). No Temporal import: a site may reuse these modules.

export type KmErrorKind =
  | 'auth'
  | 'host-key'
  | 'checksum-mismatch'
  | 'unknown-hotfix'
  | 'command-failed'
  | 'connection'
  | 'timeout'
  | 'invalid-argument';

/** Lost connections and timeouts heal by themselves; a non-zero exit might (the caller caps those retries). */
const RETRYABLE: Record<KmErrorKind, boolean> = {
  connection: true,
  timeout: true,
  'command-failed': true,
  auth: false,
  'host-key': false,
  'checksum-mismatch': false,
  'unknown-hotfix': false,
  'invalid-argument': false,
};

export interface KmErrorDetails {
  /** Inventory name of the server the error is about. */
  server?: string;
  /** The command line as sent (quoted), when a command was involved. */
  command?: string;
  exitCode?: number;
  stdout?: string;
  stderr?: string;
  /** Host-key errors: the pinned and the presented fingerprints. */
  expectedHostKey?: string;
  actualHostKey?: string;
  cause?: unknown;
}

export class KmError extends Error {
  override name = 'KmError';
  readonly kind: KmErrorKind;
  readonly retryable: boolean;
  readonly server?: string;
  readonly command?: string;
  readonly exitCode?: number;
  readonly stdout?: string;
  readonly stderr?: string;
  readonly expectedHostKey?: string;
  readonly actualHostKey?: string;

  constructor(kind: KmErrorKind, message: string, details: KmErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.kind = kind;
    this.retryable = RETRYABLE[kind];
    this.server = details.server;
    this.command = details.command;
    this.exitCode = details.exitCode;
    this.stdout = details.stdout;
    this.stderr = details.stderr;
    this.expectedHostKey = details.expectedHostKey;
    this.actualHostKey = details.actualHostKey;
  }
}

export function isKmError(err: unknown, kind?: KmErrorKind): err is KmError {
  return err instanceof KmError && (kind === undefined || err.kind === kind);
}

// ssh-mgr-controller's message when a hotfix was built for another version
// (the vendor's troubleshooting section); it may be wrapped over lines.
const CHECKSUM =
  /Exception:\s+File\s+(\S+?)'s\s+SHA\s+checksum\s+on\s+disk\s+([0-9A-Fa-f]+)\s+does\s+not\s+match\s+what\s+we\s+expected\s+to\s+override:\s+([0-9A-Fa-f]+)/;

// The vendor does not document its wording for a Name it does not know;
// these cover the usual phrasings (and what the simulator prints).
const UNKNOWN_HOTFIX = [
  /\bunknown hotfix\b/i,
  /\bno such hotfix\b/i,
  /\bhotfix\b[^\n]*\b(?:not found|does not exist|is not registered|not registered)\b/i,
  /\b(?:not found|does not exist)\b[^\n]*\bhotfix\b/i,
];

/** The vendor's checksum-mismatch line, normalised to one line, or undefined. */
export function findChecksumMismatch(
  output: string,
): { line: string; file: string; onDisk: string; expected: string } | undefined {
  const m = CHECKSUM.exec(output);
  if (!m) return undefined;
  return { line: m[0].replace(/\s+/g, ' '), file: m[1], onDisk: m[2], expected: m[3] };
}

function lastLines(text: string, n = 5, max = 2000): string {
  const lines = text
    .trim()
    .split('\n')
    .filter((l) => l.trim() !== '');
  const tail = lines.slice(-n).join(' | ');
  return tail.length > max ? `…${tail.slice(-max)}` : tail;
}

/**
 * Classify a Key Manager command that ran and exited non-zero.
 * `hotfix` is the Name involved (for apply/unapply), so the messages can name it.
 */
export function commandFailure(p: {
  server: string;
  command: string;
  result: { code: number; stdout: string; stderr: string; signal?: string };
  hotfix?: string;
  what?: string;
}): KmError {
  const { server, command, result, hotfix } = p;
  const output = `${result.stderr}\n${result.stdout}`;
  const details: KmErrorDetails = {
    server,
    command,
    exitCode: result.code,
    stdout: result.stdout,
    stderr: result.stderr,
  };
  const checksum = findChecksumMismatch(output);
  if (checksum) {
    return new KmError(
      'checksum-mismatch',
      `${server}: ${hotfix ?? 'the hotfix'} was built for another Key Manager version than the one installed on this server ` +
        `(a file it replaces has a different checksum), so it cannot be applied and retrying will not help. ` +
        `Get the hotfix built for the installed Key Manager version from SSH Communications Security support, upload that file, and start again. ` +
        `Key Manager said: ${checksum.line}`,
      details,
    );
  }
  if (hotfix && UNKNOWN_HOTFIX.some((re) => re.test(output))) {
    return new KmError(
      'unknown-hotfix',
      `${server}: Key Manager does not know the hotfix ${hotfix}: upload it first (km-hotfix upload FILE) and check the Name under System → Hotfixes. Key Manager said: ${lastLines(output, 3)}`,
      details,
    );
  }
  const how = result.signal ? `was killed by signal ${result.signal}` : `exited ${result.code}`;
  const said = lastLines(output);
  return new KmError(
    'command-failed',
    `${server}: ${p.what ?? `'${command}'`} ${how}${said ? `: ${said}` : ' without output'}`,
    details,
  );
}

/** What connectFailure needs of an SSH target (keymanager/ssh.ts). */
export interface ConnectTarget {
  name: string;
  host: string;
  port: number;
  user: string;
  hostKey: string;
}

/** Why an SSH connection could not be opened, classified from ssh2's error (and a host key that did not match the pin). */
export function connectFailure(
  target: ConnectTarget,
  err: Error & { level?: string; code?: string },
  mismatch: string | undefined,
): KmError {
  const name = target.name;
  const where = `${target.host}:${target.port}`;
  const d = { server: name, cause: err };
  if (mismatch) {
    return new KmError(
      'host-key',
      `${name}: host key mismatch at ${where}: the inventory pins ${target.hostKey} but the server presented ${mismatch}; refused before any command. ` +
        `If the server was legitimately re-keyed, put its new fingerprint in the inventory and import it again (km-hotfix fleet import FILE); otherwise treat this as a possible man-in-the-middle`,
      { ...d, expectedHostKey: target.hostKey, actualHostKey: mismatch },
    );
  }
  switch (err.level) {
    case 'client-authentication':
      return new KmError(
        'auth',
        `${name}: SSH authentication as '${target.user}' at ${where} failed: the server does not accept the key from KM_SSH_KEY or the ssh-agent; add its public key to ${target.user}'s authorized_keys there`,
        d,
      );
    case 'agent':
      return new KmError(
        'auth',
        `${name}: the ssh-agent could not be used (${err.message}): check SSH_AUTH_SOCK or set KM_SSH_KEY`,
        d,
      );
    case 'client-timeout':
      return new KmError('timeout', `${name}: SSH to ${where} timed out (${err.message})`, d);
  }
  if (err.code === 'ETIMEDOUT') return new KmError('timeout', `${name}: connecting to ${where} timed out`, d);
  const code = err.code ? `${err.code}: ` : '';
  return new KmError(
    'connection',
    `${name}: SSH connection to ${where} failed (${code}${err.message}); it will be retried`,
    d,
  );
}
