// A server as the SSH pool (keymanager/ssh.ts) sees it: address, login,
// pinned host key and the command line sent to it; and what one call takes
// and gives.
import { createHash } from 'node:crypto';
import { quoteArgv } from './quote';

export interface SshTarget {
  /** Inventory name (km_server.name); errors and the pool are keyed by it. */
  name: string;
  host: string;
  port: number;
  user: string;
  /** Run every command as `sudo -n <command>`. */
  sudo: boolean;
  /** Pinned host key fingerprint, OpenSSH format: SHA256:<base64 without padding>. */
  hostKey: string;
}

export interface SshCredentials {
  /** Private key material (not a path). */
  privateKey?: Buffer | string;
  passphrase?: string;
  /** ssh-agent socket (SSH_AUTH_SOCK). */
  agent?: string;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Set when the remote command was killed by a signal (code is then -1). */
  signal?: string;
}

export interface ExecOptions {
  /** Limit for the whole call (waiting for a channel, connecting, running). */
  timeoutMs?: number;
  /** Aborting closes the channel (after asking the remote command to terminate); the call rejects with signal.reason. */
  signal?: AbortSignal;
  /** Called about every second while the call runs, for Temporal heartbeats. */
  onTick?: () => void;
}

export interface SshPoolOptions {
  /** TCP connect limit. Default 10 s. */
  connectTimeoutMs?: number;
  /** SSH handshake and authentication limit (from the start of the TCP connect). Default 20 s. */
  readyTimeoutMs?: number;
  /** Close a connection with no open channel after this long. Default 60 s. */
  idleMs?: number;
  /** Idle connections kept (least recently used closed first). Default MAX_IDLE_CONNECTIONS (keymanager/ssh.ts). */
  maxIdle?: number;
  /** Concurrent channels per connection; OpenSSH's MaxSessions default is 10. Default 8. */
  maxChannels?: number;
  /** Output kept per stream of one command. Default 4 MiB. */
  maxOutputBytes?: number;
}

export const HOST_KEY = /^SHA256:[A-Za-z0-9+/]{43}=?$/;

/** OpenSSH's fingerprint of a public key blob: SHA256:<base64 of sha256, no padding>. */
export function hostKeyFingerprint(keyBlob: Buffer): string {
  return `SHA256:${createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '')}`;
}

export function normalizeFingerprint(fp: string): string {
  return fp.replace(/=+$/, '');
}

/** The command line sent for argv on this target: quoted, and behind `sudo -n` when the target says so. */
export function commandLine(target: Pick<SshTarget, 'sudo'>, argv: readonly string[]): string {
  const line = quoteArgv(argv);
  return target.sudo ? `sudo -n ${line}` : line;
}
