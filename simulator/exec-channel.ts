// Running an exec request on a simulated server: parse the command line, apply
// the command faults (hang, unreachable, drop before/after, fail), run it, log it
// and answer on the channel; and `a && b` lists for the benchmarks.
import type * as net from 'node:net';
import type { ServerChannel } from 'ssh2';
import { classify, runCommand } from './commands';
import type { ExecResult, ServerRuntime } from './exec-context';
import type { Faults } from './faults';
import type { CommandLogEntry } from './types';
import { parseWords, ShellSyntaxError } from './shell';
import { splitAndList } from './and-list';
import { USERS } from './vfs';

/** What an exec request needs of the server it runs on. */
export interface ExecHost {
  /** What the commands run against. */
  server: ServerRuntime;
  /** The login user. */
  user: string;
  faults: Faults;
  /** Accept `a && b` lists (benchmarks). */
  andLists?: boolean;
  /** Its open connections: an unreachable fault cuts them all. */
  sockets: ReadonlySet<net.Socket>;
  record(entry: CommandLogEntry): void;
  /** Close the listening socket for this many ms. */
  refuse(ms: number): void;
}

export async function runExec(
  host: ExecHost,
  command: string,
  stream: ServerChannel,
  aborted: () => boolean,
  socket: net.Socket | undefined,
): Promise<void> {
  const list = host.andLists ? splitAndList(command) : undefined;
  if (list) return runAndList(host, list, stream, aborted);
  const started = Date.now();
  let words: string[] | undefined;
  let result: ExecResult;
  let dropped = false;
  let ran = false;
  try {
    words = parseWords(command);
  } catch (err) {
    if (!(err instanceof ShellSyntaxError)) throw err;
    result = { stdout: '', stderr: `sh: 1: ${err.message}\n`, code: 2 };
  }
  if (words) {
    const kind = classify(words);
    const hang = host.faults.takeHang(kind);
    if (hang > 0) await new Promise((r) => setTimeout(r, hang));
    if (aborted()) {
      // The client gave up during the hang: sshd would SIGHUP the command before it ran.
      recordExec(host, command, started, 129);
      return;
    }
    const unreachable = host.faults.takeUnreachable(kind);
    if (unreachable > 0) {
      // The server drops off the network as the command arrives: it does not run.
      recordExec(host, command, started, 255);
      host.refuse(unreachable);
      for (const s of host.sockets) s.destroy();
      return;
    }
    if (host.faults.takeDrop(kind, 'before')) {
      // The connection dies before the command runs: nothing happened on the server.
      recordExec(host, command, started, 255);
      socket?.destroy();
      return;
    }
    if (host.faults.takeFail(kind)) {
      result = { stdout: '', stderr: `${words[0]}: temporary failure (simulated); try again\n`, code: 1 };
    } else {
      try {
        ran = true;
        result = await runCommand({ server: host.server, user: host.user, cwd: USERS[host.user].home, aborted }, words);
      } catch (err) {
        result = { stdout: '', stderr: `${words[0]}: internal error: ${(err as Error).message}\n`, code: 1 };
      }
      // Drop AFTER the command took effect: the client sees a lost connection
      // although e.g. the hotfix IS applied — the hard case for idempotent retries.
      dropped = host.faults.takeDrop(kind, 'after');
    }
  }
  result ??= { stdout: '', stderr: '', code: 1 };
  recordExec(host, command, started, result.code, { dropped, ran });
  if (dropped) {
    socket?.destroy();
    return;
  }
  if (aborted()) return;
  if (result.stdout) stream.write(result.stdout);
  if (result.stderr) stream.stderr.write(result.stderr);
  stream.exit(result.code);
  stream.end();
}

/** `a && b && c`: each part runs (and is logged) as its own command while the previous one exits 0. Faults do not apply. */
async function runAndList(
  host: ExecHost,
  parts: string[],
  stream: ServerChannel,
  aborted: () => boolean,
): Promise<void> {
  let stdout = '';
  let stderr = '';
  let code = 0;
  for (const part of parts) {
    const started = Date.now();
    let result: ExecResult;
    try {
      result = await runCommand(
        { server: host.server, user: host.user, cwd: USERS[host.user].home, aborted },
        parseWords(part),
      );
    } catch (err) {
      result = {
        stdout: '',
        stderr:
          err instanceof ShellSyntaxError ? `sh: 1: ${err.message}\n` : `internal error: ${(err as Error).message}\n`,
        code: err instanceof ShellSyntaxError ? 2 : 1,
      };
    }
    recordExec(host, part, started, result.code);
    stdout += result.stdout;
    stderr += result.stderr;
    code = result.code;
    if (code !== 0 || aborted()) break;
  }
  if (aborted()) return;
  if (stdout) stream.write(stdout);
  if (stderr) stream.stderr.write(stderr);
  stream.exit(code);
  stream.end();
}

/** One line of the server's command log for an exec request that started at `started`. */
function recordExec(
  host: ExecHost,
  command: string,
  started: number,
  exitCode: number,
  { dropped = false, ran = false } = {},
): void {
  host.record({
    at: new Date(started).toISOString(),
    command,
    exitCode,
    channel: 'exec',
    durationMs: Date.now() - started,
    // Absent unless true: the log's readers (tests, bench) look for the flag.
    ...(dropped ? { dropped } : {}),
    ...(ran ? { ran } : {}),
  });
}
