// Session channels on one pooled connection (keymanager/ssh-connection.ts):
// opening them (retrying a server's refusal), running a command to its exit
// status, and an SFTP session around a transfer.
import { ClientChannel, SFTPWrapper } from 'ssh2';
import { KmError } from './errors';
import { abortReason, OutputBuffer, raceAbort } from './streams';
import { Connection, lostError, StaleConnection } from './ssh-connection';
import type { ExecResult } from './ssh-target';

/**
 * Open a session channel. A refusal by the server (CHANNEL_OPEN_FAILURE,
 * e.g. sshd's MaxSessions reached, or a session not yet freed after the
 * previous one closed) ran nothing: wait and try again, up to ~5 s or the
 * call's deadline. A connection found dead is StaleConnection (reconnect).
 */
async function openChannel<C>(
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

function openExec(conn: Connection, command: string, cancel: AbortSignal): Promise<ClientChannel> {
  return openChannel(
    conn,
    cancel,
    'run a command',
    (cb) => conn.client.exec(command, cb),
    (s) => s.close(),
  );
}

/** Run one command line on a channel of conn; resolves with its exit status and output (each kept up to maxOutputBytes). */
export async function execOn(
  conn: Connection,
  command: string,
  cancel: AbortSignal,
  maxOutputBytes: number,
): Promise<ExecResult> {
  const stream = await openExec(conn, command, cancel);
  return new Promise<ExecResult>((resolve, reject) => {
    const out = new OutputBuffer(maxOutputBytes);
    const err = new OutputBuffer(maxOutputBytes);
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
      reject(abortReason(cancel));
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
        return reject(lostError(conn, `while running '${command}': it may or may not have completed`));
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

/** Run fn in an SFTP session on conn, which is closed afterwards (waiting up to 2 s for the server's close). */
export function withSftp<T>(conn: Connection, cancel: AbortSignal, fn: (sftp: SFTPWrapper) => Promise<T>): Promise<T> {
  const opened = openChannel<SFTPWrapper>(
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
            ? lostError(conn, 'during an SFTP transfer')
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

/** An SFTP request that failed: the connection lost, or the server's answer. */
export function sftpError(conn: Connection, what: string, err: Error & { code?: number | string }): KmError {
  if (conn.closed) return lostError(conn, `SFTP failed ${what}`);
  const t = conn.target;
  return new KmError('command-failed', `${t.name}: SFTP failed ${what}: ${err.message}`, {
    server: t.name,
    cause: err,
  });
}
