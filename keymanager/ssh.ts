// SSH to Key Manager servers (SPEC §2): a connection pool with pinned host
// keys, session channels, exec and SFTP. The vendor procedure's commands on
// top of it are keymanager/key-manager-ssh.ts. It does not know Temporal
// (the activity layer turns KmError into ApplicationFailure).
//
// Commands reach the remote login shell as one string, so every argv element
// is quoted (keymanager/quote.ts) and every Name or file name is validated
// against the vendor grammar (domain/hotfix.ts) first. The login shell must
// be a POSIX shell (sh, bash, dash), as on Key Manager's Linux servers.
import * as net from 'node:net';
import { Client, ClientChannel, ConnectConfig, SFTPWrapper } from 'ssh2';
import { KmError, connectFailure } from './errors';
import { OutputBuffer, raceAbort } from './streams';
import { QuoteError } from './quote';
import {
  commandLine,
  HOST_KEY,
  hostKeyFingerprint,
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
type Waiter = { resolve: () => void; reject: (e: Error) => void };

/** One SSH connection to one server, shared by concurrent calls. */
class Connection {
  readonly client = new Client();
  sock?: net.Socket;
  ready!: Promise<void>;
  closed = false;
  active = 0;
  readonly waiters: Waiter[] = [];
  idleTimer?: NodeJS.Timeout;
  /** Why the connection ended, classified, and the transport's own words. */
  lastError?: KmError;
  lastCause?: string;
  constructor(
    readonly target: SshTarget,
    readonly identity: string,
  ) {}
}

/** Raised inside the pool when a channel could not be opened on a connection that turned out dead: nothing ran, so reconnecting is safe. */
class StaleConnection extends Error {}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new Error('aborted');
}

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
    } as Required<SshPoolOptions>;
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
      this.withSftp(
        conn,
        cancel,
        (sftp) =>
          new Promise<void>((resolve, reject) => {
            sftp.writeFile(remotePath, content, { mode: opts.mode ?? 0o640 }, (err) =>
              err ? reject(this.sftpError(conn, `writing ${remotePath}`, err)) : resolve(),
            );
          }),
      ),
    );
  }

  /** The login user's home directory as the SFTP server resolves '.'. */
  homeDir(target: SshTarget, opts: ExecOptions = {}): Promise<string> {
    return this.withCall(target, opts, 'sftp realpath .', (conn, cancel) =>
      this.withSftp(
        conn,
        cancel,
        (sftp) =>
          new Promise<string>((resolve, reject) => {
            sftp.realpath('.', (err, p) =>
              err ? reject(this.sftpError(conn, 'resolving the home directory', err)) : resolve(p),
            );
          }),
      ),
    );
  }

  /** Connect (or reuse the open connection, which was verified when it opened) and so prove the server holds the pinned host key. */
  async checkHostKey(target: SshTarget, opts: ExecOptions = {}): Promise<void> {
    await this.withCall<void>(target, opts, 'host key check', async () => undefined, { channel: false });
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
    return this.withCall(target, opts, command, (conn, cancel) => this.execOn(conn, command, cancel));
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
          throw this.lostError(conn, `could not open a channel: ${err.message}`);
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
      conn = this.open(target, identity);
      this.conns.set(target.name, conn);
    }
    const c = conn;
    return c.ready.then(() => c);
  }

  private open(target: SshTarget, identity: string): Connection {
    const conn = new Connection(target, identity);
    const { connectTimeoutMs, readyTimeoutMs } = this.opts;
    const name = target.name;
    let mismatch: string | undefined;
    conn.ready = new Promise<void>((resolve, reject) => {
      if (this.creds.privateKey === undefined && this.creds.agent === undefined) {
        conn.closed = true;
        reject(
          new KmError(
            'auth',
            `${name}: no SSH credentials: set KM_SSH_KEY to a private key file or run an ssh-agent (SSH_AUTH_SOCK)`,
            { server: name },
          ),
        );
        return;
      }
      let settled = false;
      const settle = (err?: KmError) => {
        if (settled) return;
        settled = true;
        clearTimeout(connectTimer);
        if (err) {
          conn.closed = true;
          conn.lastError = err;
          if (this.conns.get(name) === conn) this.conns.delete(name);
          conn.client.end();
          conn.sock?.destroy();
          reject(err);
        } else {
          resolve();
        }
      };
      const connectTimer = setTimeout(
        () =>
          settle(
            new KmError(
              'timeout',
              `${name}: no TCP connection to ${target.host}:${target.port} within ${connectTimeoutMs} ms: check that the server is up and that the network allows SSH to it`,
              { server: name },
            ),
          ),
        connectTimeoutMs,
      );
      // Our own socket, so Nagle can be turned off: ssh2 leaves it on and each round trip would wait ~40 ms.
      const sock = net.connect({ host: target.host, port: target.port });
      conn.sock = sock;
      sock.setNoDelay(true);
      sock.setKeepAlive(true, 15_000);
      sock.once('connect', () => clearTimeout(connectTimer));
      conn.client.on('ready', () => settle());
      conn.client.on('error', (err: Error & { level?: string; code?: string }) => {
        const classified = connectFailure(target, err, mismatch);
        conn.lastError = classified;
        conn.lastCause = err.code ? `${err.code}: ${err.message}` : err.message;
        settle(classified);
      });
      const onGone = () => {
        conn.closed = true;
        clearTimeout(conn.idleTimer);
        this.idle.delete(conn);
        if (this.conns.get(name) === conn) this.conns.delete(name);
        for (const w of conn.waiters.splice(0)) w.reject(new StaleConnection('connection closed'));
        settle(
          conn.lastError ??
            new KmError(
              'connection',
              `${name}: the connection to ${target.host}:${target.port} closed during the SSH handshake: check sshd on the server (MaxStartups, its log)`,
              { server: name },
            ),
        );
      };
      conn.client.on('end', onGone);
      conn.client.on('close', onGone);
      const config: ConnectConfig = {
        sock,
        username: target.user,
        readyTimeout: readyTimeoutMs,
        keepaliveInterval: 0, // TCP keepalive instead: ssh2's timer would keep an idle process alive
        hostVerifier: (key: Buffer): boolean => {
          const actual = hostKeyFingerprint(key);
          if (actual === normalizeFingerprint(target.hostKey)) return true;
          mismatch = actual;
          return false;
        },
      };
      if (this.creds.privateKey !== undefined) config.privateKey = this.creds.privateKey;
      if (this.creds.passphrase !== undefined) config.passphrase = this.creds.passphrase;
      if (this.creds.agent !== undefined) config.agent = this.creds.agent;
      try {
        conn.client.connect(config);
      } catch (err) {
        // ssh2 parses the key synchronously.
        settle(
          new KmError('auth', `${name}: the SSH private key cannot be used: ${(err as Error).message}`, {
            server: name,
            cause: err,
          }),
        );
      }
    });
    conn.ready.catch(() => undefined); // callers get it through connection(); never unhandled
    return conn;
  }

  private lostError(conn: Connection, what: string): KmError {
    const t = conn.target;
    const why = conn.lastCause ?? 'connection closed';
    return new KmError('connection', `${t.name}: SSH connection to ${t.host}:${t.port} lost (${why}); ${what}`, {
      server: t.name,
      cause: conn.lastError,
    });
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
        reject(cancel.reason);
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

  /** Forget a connection that turned out dead, so the next call opens a new one. */
  private discard(conn: Connection): void {
    conn.closed = true;
    clearTimeout(conn.idleTimer);
    this.idle.delete(conn);
    if (this.conns.get(conn.target.name) === conn) this.conns.delete(conn.target.name);
    conn.sock?.destroy();
  }

  private async closeConnection(conn: Connection): Promise<void> {
    clearTimeout(conn.idleTimer);
    this.idle.delete(conn);
    if (this.conns.get(conn.target.name) === conn) this.conns.delete(conn.target.name);
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

  private openExec(conn: Connection, command: string, cancel: AbortSignal): Promise<ClientChannel> {
    return this.openChannel(
      conn,
      cancel,
      'run a command',
      (cb) => conn.client.exec(command, cb),
      (s) => s.close(),
    );
  }

  /**
   * Open a session channel. A refusal by the server (CHANNEL_OPEN_FAILURE,
   * e.g. sshd's MaxSessions reached, or a session not yet freed after the
   * previous one closed) ran nothing: wait and try again, up to ~5 s or the
   * call's deadline. A connection found dead is StaleConnection (reconnect).
   */
  private async openChannel<C>(
    conn: Connection,
    cancel: AbortSignal,
    what: string,
    open: (cb: (err: (Error & { reason?: unknown }) | undefined, channel: C) => void) => void,
    discard: (c: C) => void,
  ): Promise<C> {
    for (let attempt = 1; ; attempt++) {
      const once = new Promise<C>((resolve, reject) => {
        try {
          open((err, channel) => {
            if (!err) return resolve(channel);
            if (conn.closed) return reject(new StaleConnection(err.message));
            const refused = err.reason !== undefined && err.reason !== '';
            reject(
              Object.assign(
                new KmError(
                  'connection',
                  `${conn.target.name}: the server refused to ${what} (${err.message}); it will be retried`,
                  { server: conn.target.name, cause: err },
                ),
                { refused },
              ),
            );
          });
        } catch (err) {
          reject(new StaleConnection((err as Error).message)); // ssh2: 'Not connected'
        }
      });
      try {
        return await raceAbort(once, cancel, discard);
      } catch (err) {
        const refused = (err as { refused?: boolean }).refused === true;
        if (!refused || attempt >= 8 || cancel.aborted) throw err;
        await raceAbort(new Promise((r) => setTimeout(r, Math.min(50 * 2 ** (attempt - 1), 1500))), cancel);
      }
    }
  }

  private async execOn(conn: Connection, command: string, cancel: AbortSignal): Promise<ExecResult> {
    const stream = await this.openExec(conn, command, cancel);
    const max = this.opts.maxOutputBytes;
    return new Promise<ExecResult>((resolve, reject) => {
      const out = new OutputBuffer(max);
      const err = new OutputBuffer(max);
      let closed = false;
      stream.on('data', (d: Buffer) => out.push(d));
      stream.stderr.on('data', (d: Buffer) => err.push(d));
      stream.on('error', () => undefined); // reported through 'close'
      const onCancel = () => {
        // Ask the remote command to stop, then close the channel. OpenSSH only
        // delivers the signal for sessions with post-auth privilege separation
        // (not root logins, nor through sudo), and it keeps a session whose
        // command still runs: so do not wait for the close confirmation.
        try {
          stream.signal('TERM');
        } catch {
          /* the channel may already be closing */
        }
        try {
          stream.close();
        } catch {
          /* same */
        }
        closed = true;
        reject(cancel.reason);
      };
      if (cancel.aborted) onCancel();
      else cancel.addEventListener('abort', onCancel, { once: true });
      // ssh2 keeps the exit status on the channel and hands it to 'close'; an
      // 'exit' listener added here could miss a status that arrived in the same
      // packet as the channel's confirmation (a fast server).
      stream.on('close', (code: number | null, signalName?: string) => {
        if (closed) return;
        closed = true;
        cancel.removeEventListener('abort', onCancel);
        if (typeof code !== 'number' && !signalName) {
          // No exit status: the connection died under the command (OpenSSH always sends one).
          return reject(this.lostError(conn, `while running '${command}': it may or may not have completed`));
        }
        resolve({
          code: typeof code === 'number' ? code : -1,
          stdout: out.text(),
          stderr: err.text(),
          ...(signalName ? { signal: signalName } : {}),
        });
      });
    });
  }

  private withSftp<T>(conn: Connection, cancel: AbortSignal, fn: (sftp: SFTPWrapper) => Promise<T>): Promise<T> {
    const opened = this.openChannel<SFTPWrapper>(
      conn,
      cancel,
      "open an SFTP session (check its sshd 'Subsystem sftp' setting)",
      (cb) => conn.client.sftp(cb),
      (s) => s.end(),
    );
    return opened.then(async (sftp) => {
      let closed = false;
      const gone = new Promise<never>((_, reject) => {
        sftp.once('close', () => {
          closed = true;
          reject(
            conn.closed
              ? this.lostError(conn, 'during an SFTP transfer')
              : new KmError('connection', `${conn.target.name}: the SFTP session closed unexpectedly`, {
                  server: conn.target.name,
                }),
          );
        });
      });
      gone.catch(() => undefined);
      try {
        return await raceAbort(Promise.race([fn(sftp), gone]), cancel);
      } finally {
        if (!closed) {
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, 2000);
            t.unref();
            sftp.once('close', () => {
              clearTimeout(t);
              resolve();
            });
            sftp.end();
          });
        }
      }
    });
  }

  private sftpError(conn: Connection, what: string, err: Error & { code?: number | string }): KmError {
    if (conn.closed) return this.lostError(conn, `SFTP failed ${what}`);
    const t = conn.target;
    return new KmError('command-failed', `${t.name}: SFTP failed ${what}: ${err.message}`, {
      server: t.name,
      cause: err,
    });
  }
}
