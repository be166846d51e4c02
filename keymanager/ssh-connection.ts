// One SSH connection of the pool (keymanager/ssh.ts): opening it over our own
// TCP socket, verifying the server's host key against the pin, and
// classifying why it could not open or why it ended.
import * as net from 'node:net';
import { Client, ConnectConfig } from 'ssh2';
import { KmError, connectFailure } from './errors';
import { hostKeyFingerprint, normalizeFingerprint, SshCredentials, SshTarget } from './ssh-target';

/** A call waiting for a channel slot on a busy connection. */
export type Waiter = { resolve: () => void; reject: (e: Error) => void };

/** One SSH connection to one server, shared by concurrent calls. */
export class Connection {
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
export class StaleConnection extends Error {}

/** The connection was lost under a call: what the call was doing, and the transport's words for why. */
export function lostError(conn: Connection, what: string): KmError {
  const t = conn.target;
  const why = conn.lastCause ?? 'connection closed';
  return new KmError('connection', `${t.name}: SSH connection to ${t.host}:${t.port} lost (${why}); ${what}`, {
    server: t.name,
    cause: conn.lastError,
  });
}

/**
 * Start opening a connection; its `ready` settles when the SSH handshake and
 * authentication are done (or failed, classified). `forget` is called when
 * the connection must no longer be handed out (it failed to open, or it
 * ended); it may be called more than once.
 */
export function openConnection(
  target: SshTarget,
  identity: string,
  creds: SshCredentials,
  limits: { connectTimeoutMs: number; readyTimeoutMs: number },
  forget: (conn: Connection) => void,
): Connection {
  const conn = new Connection(target, identity);
  const { connectTimeoutMs, readyTimeoutMs } = limits;
  const name = target.name;
  let mismatch: string | undefined;
  conn.ready = new Promise<void>((resolve, reject) => {
    if (creds.privateKey === undefined && creds.agent === undefined) {
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
        forget(conn);
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
      forget(conn);
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
    if (creds.privateKey !== undefined) config.privateKey = creds.privateKey;
    if (creds.passphrase !== undefined) config.passphrase = creds.passphrase;
    if (creds.agent !== undefined) config.agent = creds.agent;
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
  conn.ready.catch(() => undefined); // callers get it through the pool; never unhandled
  return conn;
}
