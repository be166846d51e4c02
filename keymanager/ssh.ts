// SSH to Key Manager servers (SPEC §2): a connection pool with pinned host
// keys, session channels, exec and SFTP. This file is the pool and the frame
// of every call; one connection and its host-key check are
// ssh-connection.ts, channels (exec, SFTP) ssh-channel.ts. The vendor
// procedure's commands on top of it are keymanager/key-manager-ssh.ts. It
// does not know Temporal (the activity layer turns KmError into
// ApplicationFailure).
//
// Commands reach the remote login shell as one string, so every argv element
// is quoted (keymanager/quote.ts) and every Name or file name is validated
// against the vendor grammar (domain/hotfix.ts) first. The login shell must
// be a POSIX shell (sh, bash, dash), as on Key Manager's Linux servers.
import { KmError } from './errors';
import { abortReason, raceAbort } from './streams';
import { QuoteError } from './quote';
import { Connection, lostError, openConnection, StaleConnection, Waiter } from './ssh-connection';
import { execOn, sftpError, withSftp } from './ssh-channel';
import {
  commandLine,
  HOST_KEY,
  normalizeFingerprint,
  ExecOptions,
  ExecResult,
  SshCredentials,
  SshPoolOptions,
  SshTarget,
} from './ssh-target';

export type { ExecOptions, ExecResult, SshCredentials, SshPoolOptions, SshTarget } from './ssh-target';
export { commandLine, hostKeyFingerprint } from './ssh-target';

/**
 * Idle connections a pool keeps open. A preflight connects to every server
 * and the fan-out reuses those connections (no second handshake), but a
 * worker must not hold one connection, one open file, per server of a
 * 20,000-server fleet (the hard open-files limit can be 20,000): past this
 * many idle ones the least recently used is closed. 2,048 keeps a
 * 2,000-server fleet's preflight connections for its fan-out; busy
 * connections (servers in flight) are never closed for it.
 */
export const MAX_IDLE_CONNECTIONS = 2048;

const DEFAULTS = {
  connectTimeoutMs: 10_000,
  readyTimeoutMs: 20_000,
  idleMs: 60_000,
  maxIdle: MAX_IDLE_CONNECTIONS,
  maxChannels: 8,
  maxOutputBytes: 4 << 20,
};

export class SshPool {
  private readonly conns = new Map<string, Connection>();
  /** Connections with no call on them, least recently used first. */
  private readonly idle = new Set<Connection>();
  private readonly opts: Required<SshPoolOptions>;

  constructor(
    private readonly creds: SshCredentials,
    opts: SshPoolOptions = {},
  ) {
    this.opts = {
      ...DEFAULTS,
      ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)),
    };
  }

  /** Number of connections in the pool that are open or opening (for tests and status). */
  get size(): number {
    return [...this.conns.values()].filter((c) => !c.closed).length;
  }

  /** Run argv on the target; resolves with the exit code (non-zero too), rejects with KmError for transport problems. */
  exec(target: SshTarget, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.run(target, argv, target.sudo, opts);
  }

  /** Write content to remotePath over SFTP, as the login user (sudo does not apply to SFTP). */
  writeFile(
    target: SshTarget,
    remotePath: string,
    content: Buffer,
    opts: ExecOptions & { mode?: number } = {},
  ): Promise<void> {
    if (!remotePath || remotePath.includes('\0'))
      throw this.invalid(target, `invalid remote path ${JSON.stringify(remotePath)}`);
    return this.withCall(target, opts, `sftp write ${remotePath}`, (conn, cancel) =>
      withSftp(
        conn,
        cancel,
        (sftp) =>
          new Promise<void>((resolve, reject) => {
            sftp.writeFile(remotePath, content, { mode: opts.mode ?? 0o640 }, (err) =>
              err ? reject(sftpError(conn, `writing ${remotePath}`, err)) : resolve(),
            );
          }),
      ),
    );
  }

  /** The login user's home directory as the SFTP server resolves '.'. */
  homeDir(target: SshTarget, opts: ExecOptions = {}): Promise<string> {
    return this.withCall(target, opts, 'sftp realpath .', (conn, cancel) =>
      withSftp(
        conn,
        cancel,
        (sftp) =>
          new Promise<string>((resolve, reject) => {
            sftp.realpath('.', (err, p) =>
              err ? reject(sftpError(conn, 'resolving the home directory', err)) : resolve(p),
            );
          }),
      ),
    );
  }

  /** Connect (or reuse the open connection, which was verified when it opened) and so prove the server holds the pinned host key. */
  async checkHostKey(target: SshTarget, opts: ExecOptions = {}): Promise<void> {
    await this.withCall<void>(target, opts, 'host key check', () => Promise.resolve(), { channel: false });
  }

  /** Close one server's connection, or all of them. */
  async close(name?: string): Promise<void> {
    const conns = [...this.conns.values()].filter((c) => name === undefined || c.target.name === name);
    await Promise.all(conns.map((c) => this.closeConnection(c)));
  }

  // --- internals -------------------------------------------------------------

  private invalid(target: SshTarget, why: string): KmError {
    return new KmError('invalid-argument', `${target.name}: ${why}`, { server: target.name });
  }

  private validateTarget(t: SshTarget): void {
    if (!t || typeof t.name !== 'string' || !t.name) throw new KmError('invalid-argument', 'SSH target without a name');
    if (typeof t.host !== 'string' || !t.host) throw this.invalid(t, 'no host to connect to');
    if (!Number.isInteger(t.port) || t.port < 1 || t.port > 65535)
      throw this.invalid(t, `port ${t.port} is not a TCP port`);
    if (typeof t.user !== 'string' || !t.user) throw this.invalid(t, 'no login user');
    if (typeof t.hostKey !== 'string' || !HOST_KEY.test(t.hostKey)) {
      throw new KmError(
        'host-key',
        `${t.name}: no valid pinned host key (got ${JSON.stringify(t.hostKey)}); host keys are never trusted on first use: pin it in the inventory (ssh-keyscan -p ${t.port} ${t.host} | ssh-keygen -lf -) and import it again`,
        { server: t.name, expectedHostKey: t.hostKey },
      );
    }
  }

  private async run(target: SshTarget, argv: string[], sudo: boolean, opts: ExecOptions): Promise<ExecResult> {
    let command: string;
    try {
      if (!Array.isArray(argv) || argv.some((a) => typeof a !== 'string'))
        throw new QuoteError('argv must be an array of strings');
      command = commandLine({ sudo }, argv);
    } catch (err) {
      throw this.invalid(target, `cannot send command ${JSON.stringify(argv)}: ${(err as Error).message}`);
    }
    return this.withCall(target, opts, command, (conn, cancel) =>
      execOn(conn, command, cancel, this.opts.maxOutputBytes),
    );
  }

  /**
   * The frame of every call: validation, ticks, the overall deadline and the
   * abort signal, a connection and (unless channel=false) a channel slot on it.
   * `cancel` aborts when the call must stop (timeout or abort).
   */
  private async withCall<T>(
    target: SshTarget,
    opts: ExecOptions,
    what: string,
    body: (conn: Connection, cancel: AbortSignal) => Promise<T>,
    how: { channel: boolean } = { channel: true },
  ): Promise<T> {
    this.validateTarget(target);
    if (opts.signal?.aborted) throw abortReason(opts.signal);
    const cancel = new AbortController();
    const onAbort = () => cancel.abort(abortReason(opts.signal as AbortSignal));
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const timer =
      opts.timeoutMs !== undefined && opts.timeoutMs > 0
        ? setTimeout(
            () =>
              cancel.abort(
                new KmError(
                  'timeout',
                  `${target.name}: '${what}' did not finish within ${opts.timeoutMs} ms; it was stopped`,
                  { server: target.name, command: what },
                ),
              ),
            opts.timeoutMs,
          )
        : undefined;
    const ticker = opts.onTick
      ? setInterval(() => {
          try {
            opts.onTick?.();
          } catch {
            /* a failed heartbeat must not break the command */
          }
        }, 1000)
      : undefined;
    try {
      // A connection found dead when opening a channel ran nothing: retry once on a fresh one.
      for (let attempt = 1; ; attempt++) {
        const conn = await raceAbort(this.connection(target), cancel.signal);
        let acquired = false;
        try {
          await this.acquire(conn, cancel.signal);
          acquired = true;
          if (!how.channel) return undefined as T;
          return await body(conn, cancel.signal);
        } catch (err) {
          if (!(err instanceof StaleConnection)) throw err;
          this.discard(conn);
          if (attempt < 2) continue;
          throw lostError(conn, `could not open a channel: ${err.message}`);
        } finally {
          if (acquired) this.release(conn);
        }
      }
    } finally {
      if (timer) clearTimeout(timer);
      if (ticker) clearInterval(ticker);
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  private connection(target: SshTarget): Promise<Connection> {
    const identity = `${target.user}@${target.host}:${target.port} ${normalizeFingerprint(target.hostKey)}`;
    let conn = this.conns.get(target.name);
    if (conn && (conn.closed || conn.identity !== identity)) {
      // The inventory entry changed (or the connection broke): never reuse it.
      if (!conn.closed) void this.closeConnection(conn);
      this.conns.delete(target.name);
      conn = undefined;
    }
    if (!conn) {
      conn = openConnection(target, identity, this.creds, this.opts, (c) => this.forget(c));
      this.conns.set(target.name, conn);
    }
    const c = conn;
    return c.ready.then(() => c);
  }

  private acquire(conn: Connection, cancel: AbortSignal): Promise<void> {
    if (conn.closed) return Promise.reject(new StaleConnection('connection closed'));
    clearTimeout(conn.idleTimer);
    conn.idleTimer = undefined;
    this.idle.delete(conn);
    conn.sock?.ref();
    if (conn.active < this.opts.maxChannels) {
      conn.active++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        resolve: () => {
          cancel.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (e) => {
          cancel.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      const onAbort = () => {
        const i = conn.waiters.indexOf(w);
        if (i >= 0) conn.waiters.splice(i, 1);
        reject(abortReason(cancel));
      };
      cancel.addEventListener('abort', onAbort, { once: true });
      conn.waiters.push(w);
    }).then(() => {
      // A waiter inherits the slot of the call that released it (active unchanged).
    });
  }

  private release(conn: Connection): void {
    const next = conn.waiters.shift();
    if (next) {
      next.resolve();
      return;
    }
    conn.active = Math.max(0, conn.active - 1);
    if (conn.active === 0 && !conn.closed) {
      // An idle pooled connection must not keep the process alive, and goes away after idleMs.
      conn.sock?.unref();
      conn.idleTimer = setTimeout(() => void this.closeConnection(conn), this.opts.idleMs);
      conn.idleTimer.unref();
      this.idle.add(conn);
      for (const oldest of this.idle) {
        if (this.idle.size <= this.opts.maxIdle) break;
        void this.closeConnection(oldest);
      }
    }
  }

  /**
   * Hand a connection out no more: off the idle list, its idle timer
   * stopped, and (if it is still the server's) out of the pool, so the next
   * call opens a new one. Idempotent: a connection is forgotten when it
   * fails to open, when it ends, when found dead, and when closed.
   */
  private forget(conn: Connection): void {
    clearTimeout(conn.idleTimer);
    this.idle.delete(conn);
    if (this.conns.get(conn.target.name) === conn) this.conns.delete(conn.target.name);
  }

  /** A connection that turned out dead: forgotten, and its socket destroyed. */
  private discard(conn: Connection): void {
    conn.closed = true;
    this.forget(conn);
    conn.sock?.destroy();
  }

  private async closeConnection(conn: Connection): Promise<void> {
    this.forget(conn);
    if (conn.closed && (!conn.sock || conn.sock.destroyed)) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        resolve();
      };
      const t = setTimeout(() => {
        conn.sock?.destroy();
        resolve();
      }, 2000);
      t.unref();
      if (!conn.sock || conn.sock.destroyed) return done();
      conn.sock.once('close', done);
      conn.client.end();
    });
    conn.closed = true;
  }
}
