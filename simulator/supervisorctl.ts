// `supervisorctl status|restart`: the Key Manager's supervisor programs, as
// root only, with supervisorctl's output and exit codes.
import { err, out, type Command } from './command-helpers';

const PRIVILEGED_SUPERVISOR =
  "error: <class 'PermissionError'>, [Errno 13] Permission denied: file: /usr/lib/python3/dist-packages/supervisor/xmlrpc.py line: 560\n";

export const supervisorctl: Command = async (ctx, args) => {
  if (ctx.user !== 'root') return err(PRIVILEGED_SUPERVISOR);
  const sup = ctx.server.supervisor;
  const [action, ...names] = args;
  const programs = sup.programs();
  const unknown = names.filter((n) => n !== 'all' && !programs.includes(n));
  if (action === 'status') {
    if (unknown.length)
      return { stdout: unknown.map((n) => `${n}: ERROR (no such process)\n`).join(''), stderr: '', code: 4 };
    const chosen = names.length === 0 || names.includes('all') ? programs : names;
    const now = Date.now();
    const stdout = chosen.map((p) => sup.statusLine(p, now) + '\n').join('');
    return out(stdout, chosen.every((p) => sup.state(p, now) === 'RUNNING') ? 0 : 3);
  }
  if (action === 'restart') {
    if (names.length === 0)
      return err(
        'Error: restart requires a process name\nrestart <name>\t\tRestart a process\nrestart all\t\tRestart all processes\n',
        2,
      );
    if (unknown.length)
      return { stdout: unknown.map((n) => `${n}: ERROR (no such process)\n`).join(''), stderr: '', code: 1 };
    // Everything is restarted (programs share one Key Manager instance here).
    const restartMs = ctx.server.restartMs();
    const fatal = ctx.server.faults.fatalService;
    sup.restart(restartMs, fatal);
    let stdout = programs.map((p) => `${p}: stopped\n`).join('');
    // Like the real supervisorctl, wait until the programs are up (startsecs). A timer may fire
    // a millisecond early by the wall clock: a `status` right after must already see RUNNING.
    const upAt = Date.now() + restartMs;
    while (Date.now() < upAt) await new Promise((r) => setTimeout(r, upAt - Date.now()));
    stdout += programs.map((p) => (p === fatal ? `${p}: ERROR (spawn error)\n` : `${p}: started\n`)).join('');
    return out(stdout, fatal && programs.includes(fatal) ? 1 : 0);
  }
  if (action === undefined) return err('supervisorctl: interactive mode is not available without a terminal\n', 2);
  return out(`*** Unknown syntax: ${args.join(' ')}\n`, 1);
};
