// The commands a simulated Key Manager server knows, with the output and
// exit codes of GNU coreutils, sudo and supervisorctl. Privileged commands
// (chown, ssh-mgr-controller, supervisorctl) need root: a `sudo: true`
// server's login user must prefix them with `sudo -n`.
import { createHash } from 'node:crypto';
import { sshMgrController } from './controller';
import type { ExecContext, ExecResult } from './exec-context';
import type { CommandKind } from './faults';
import { modeString, USERS, Vfs, VfsError, VNode } from './vfs';

type Command = (ctx: ExecContext, args: string[]) => ExecResult | Promise<ExecResult>;

const out = (stdout: string, code = 0): ExecResult => ({ stdout, stderr: '', code });
const err = (stderr: string, code = 1): ExecResult => ({ stdout: '', stderr, code });

/** Which fault a command line is subject to (after `sudo -n`). */
export function classify(words: string[]): CommandKind {
  const w = unwrapSudo(words).words;
  if (w[0] === 'ssh-mgr-controller') {
    if (w.some((a) => a.startsWith('--apply-hotfix'))) return 'apply';
    if (w.some((a) => a.startsWith('--unapply-hotfix'))) return 'unapply';
    if (w.some((a) => a.startsWith('--upload-hotfix'))) return 'upload';
  }
  if (w[0] === 'supervisorctl') {
    if (w[1] === 'restart') return 'restart';
    if (w[1] === 'status') return 'status';
  }
  return 'other';
}

function unwrapSudo(words: string[]): { words: string[]; sudo: boolean; nonInteractive: boolean } {
  if (words[0] !== 'sudo') return { words, sudo: false, nonInteractive: false };
  let i = 1;
  let nonInteractive = false;
  while (i < words.length && words[i].startsWith('-')) {
    if (words[i] === '--') {
      i++;
      break;
    }
    if (words[i] === '-n' || words[i] === '--non-interactive') nonInteractive = true;
    i++;
  }
  return { words: words.slice(i), sudo: true, nonInteractive };
}

export async function runCommand(ctx: ExecContext, words: string[]): Promise<ExecResult> {
  if (words.length === 0) return out('');
  if (words[0] === 'sudo') {
    const u = unwrapSudo(words);
    if (u.words.length === 0) return err('usage: sudo -n <command>\n');
    // Login users other than root have NOPASSWD sudo here, but only non-interactively: no tty to ask on.
    if (ctx.user !== 'root' && !u.nonInteractive)
      return err(
        'sudo: a terminal is required to read the password; either use the -S option to read from standard input or configure an askpass helper\nsudo: a password is required\n',
      );
    return runCommand({ ...ctx, user: 'root' }, u.words);
  }
  const cmd = COMMANDS[words[0]];
  if (!cmd) return err(`sh: 1: ${words[0]}: not found\n`, 127);
  return cmd(ctx, words.slice(1));
}

const PRIVILEGED_SUPERVISOR =
  "error: <class 'PermissionError'>, [Errno 13] Permission denied: file: /usr/lib/python3/dist-packages/supervisor/xmlrpc.py line: 560\n";

function splitFlags(args: string[], known: string): { flags: Set<string>; rest: string[]; bad?: string } {
  const flags = new Set<string>();
  const rest: string[] = [];
  let done = false;
  for (const a of args) {
    if (!done && a === '--') {
      done = true;
      continue;
    }
    if (!done && a.startsWith('-') && a.length > 1 && !/^-[0-7]+$/.test(a)) {
      for (const f of a.slice(1)) {
        if (!known.includes(f)) return { flags, rest, bad: f };
        flags.add(f);
      }
    } else rest.push(a);
  }
  return { flags, rest };
}

const resolve = (ctx: ExecContext, p: string) => Vfs.normalize(p, ctx.cwd);

const chown: Command = (ctx, args) => {
  const { rest, bad } = splitFlags(args, 'R');
  if (bad) return err(`chown: invalid option -- '${bad}'\n`);
  if (rest.length < 2) return err("chown: missing operand\nTry 'chown --help' for more information.\n");
  const [spec, ...files] = rest;
  const [owner, group] = spec.split(/[:.]/);
  if (owner && !USERS[owner]) return err(`chown: invalid user: '${spec}'\n`);
  if (group !== undefined && group !== '' && !USERS[group]) return err(`chown: invalid group: '${spec}'\n`);
  let code = 0;
  let stderr = '';
  for (const f of files) {
    const p = resolve(ctx, f);
    if (!ctx.server.vfs.get(p)) {
      stderr += `chown: cannot access '${f}': No such file or directory\n`;
      code = 1;
      continue;
    }
    if (ctx.user !== 'root') {
      stderr += `chown: changing ownership of '${f}': Operation not permitted\n`;
      code = 1;
      continue;
    }
    const node = ctx.server.vfs.mutable(p) as VNode;
    if (owner) node.owner = owner;
    if (group) node.group = group;
  }
  return { stdout: '', stderr, code };
};

/** Apply a chmod mode (octal or symbolic, e.g. u+x,g-w) to current permission bits; undefined when invalid. */
export function applyMode(spec: string, current: number): number | undefined {
  if (/^[0-7]{1,4}$/.test(spec)) return parseInt(spec, 8);
  let mode = current;
  for (const clause of spec.split(',')) {
    const m = /^([ugoa]*)([+\-=])([rwxt]*)$/.exec(clause);
    if (!m) return undefined;
    const who = m[1] === '' || m[1].includes('a') ? 'ugo' : m[1];
    let bits = 0;
    for (const w of who) {
      const shift = w === 'u' ? 6 : w === 'g' ? 3 : 0;
      for (const p of m[3]) if (p !== 't') bits |= (p === 'r' ? 4 : p === 'w' ? 2 : 1) << shift;
    }
    if (m[3].includes('t')) bits |= 0o1000;
    let mask = 0;
    for (const w of who) mask |= 7 << (w === 'u' ? 6 : w === 'g' ? 3 : 0);
    if (m[2] === '+') mode |= bits;
    else if (m[2] === '-') mode &= ~bits;
    else mode = (mode & ~mask) | bits;
  }
  return mode;
}

const chmod: Command = (ctx, args) => {
  const { rest, bad } = splitFlags(args, 'R');
  if (bad) return err(`chmod: invalid option -- '${bad}'\n`);
  if (rest.length < 2) return err("chmod: missing operand\nTry 'chmod --help' for more information.\n");
  const [spec, ...files] = rest;
  if (applyMode(spec, 0) === undefined)
    return err(`chmod: invalid mode: '${spec}'\nTry 'chmod --help' for more information.\n`);
  let code = 0;
  let stderr = '';
  for (const f of files) {
    const p = resolve(ctx, f);
    const node = ctx.server.vfs.get(p);
    if (!node) {
      stderr += `chmod: cannot access '${f}': No such file or directory\n`;
      code = 1;
      continue;
    }
    if (ctx.user !== 'root' && node.owner !== ctx.user) {
      stderr += `chmod: changing permissions of '${f}': Operation not permitted\n`;
      code = 1;
      continue;
    }
    const m = ctx.server.vfs.mutable(p) as VNode;
    m.mode = applyMode(spec, m.mode) as number;
  }
  return { stdout: '', stderr, code };
};

const mkdir: Command = (ctx, args) => {
  let parents = false;
  let mode: number | undefined;
  const dirs: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '-p' || a === '--parents') parents = true;
    else if (a === '-m' || a.startsWith('--mode=')) {
      const v = a === '-m' ? args[++i] : a.slice(7);
      mode = v === undefined ? undefined : applyMode(v, 0o755);
      if (mode === undefined) return err(`mkdir: invalid mode '${v ?? ''}'\n`);
    } else if (a.startsWith('-')) return err(`mkdir: invalid option -- '${a.slice(1)}'\n`);
    else dirs.push(a);
  }
  if (dirs.length === 0) return err("mkdir: missing operand\nTry 'mkdir --help' for more information.\n");
  let stderr = '';
  for (const d of dirs) {
    try {
      ctx.server.vfs.mkdir(resolve(ctx, d), ctx.user, { parents, mode });
    } catch (e) {
      if (!(e instanceof VfsError)) throw e;
      stderr += `mkdir: cannot create directory '${d}': ${e.message}\n`;
    }
  }
  return { stdout: '', stderr, code: stderr ? 1 : 0 };
};

const sha256sum: Command = (ctx, args) => {
  if (args.length === 0) return err('sha256sum: reading standard input is not supported here\n');
  let stdout = '';
  let stderr = '';
  for (const f of args) {
    const node = ctx.server.vfs.get(resolve(ctx, f));
    if (!node) stderr += `sha256sum: ${f}: No such file or directory\n`;
    else if (node.kind === 'dir') stderr += `sha256sum: ${f}: Is a directory\n`;
    else stdout += `${createHash('sha256').update(node.content).digest('hex')}  ${f}\n`;
  }
  return { stdout, stderr, code: stderr ? 1 : 0 };
};

function statFormat(fmt: string, f: string, node: VNode): string {
  return fmt.replace(/%([aAUGugsnFY%])/g, (_, c: string) => {
    switch (c) {
      case 'a':
        return node.mode.toString(8);
      case 'A':
        return modeString(node);
      case 'U':
        return node.owner;
      case 'G':
        return node.group;
      case 'u':
        return String(USERS[node.owner]?.uid ?? 65534);
      case 'g':
        return String(USERS[node.group]?.uid ?? 65534);
      case 's':
        return String(node.content.length);
      case 'n':
        return f;
      case 'F':
        return node.kind === 'dir' ? 'directory' : node.content.length ? 'regular file' : 'regular empty file';
      case 'Y':
        return String(Math.floor(node.mtime / 1000));
      default:
        return '%';
    }
  });
}

const stat: Command = (ctx, args) => {
  let fmt: string | undefined;
  const files: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '-c' || a === '--format') fmt = args[++i];
    else if (a.startsWith('--format=')) fmt = a.slice(9);
    else if (a.startsWith('-c') && a.length > 2) fmt = a.slice(2);
    else if (a.startsWith('-')) return err(`stat: invalid option -- '${a.slice(1)}'\n`);
    else files.push(a);
  }
  if (files.length === 0) return err("stat: missing operand\nTry 'stat --help' for more information.\n");
  let stdout = '';
  let stderr = '';
  for (const f of files) {
    const node = ctx.server.vfs.get(resolve(ctx, f));
    if (!node) {
      stderr += `stat: cannot statx '${f}': No such file or directory\n`;
      continue;
    }
    stdout +=
      fmt !== undefined
        ? statFormat(fmt, f, node) + '\n'
        : statFormat(`  File: %n\n  Size: %s\tType: %F\nAccess: (0%a/%A)  Uid: (%u/%U)   Gid: (%g/%G)\n`, f, node);
  }
  return { stdout, stderr, code: stderr ? 1 : 0 };
};

const test: Command = (ctx, args) => {
  if (args.length === 1) return out('', args[0] === '' ? 1 : 0);
  if (args.length !== 2) return err('sh: 1: test: unsupported expression\n', 2);
  const [op, f] = args;
  const node = ctx.server.vfs.get(resolve(ctx, f));
  const isRoot = ctx.user === 'root';
  const mine = node && node.owner === ctx.user;
  const bit = (n: number) => !!node && (isRoot || (node.mode & (mine ? n << 6 : n)) !== 0);
  let yes: boolean;
  switch (op) {
    case '-e':
      yes = !!node;
      break;
    case '-f':
      yes = node?.kind === 'file';
      break;
    case '-d':
      yes = node?.kind === 'dir';
      break;
    case '-s':
      yes = !!node && node.content.length > 0;
      break;
    case '-r':
      yes = bit(4);
      break;
    case '-w':
      yes = bit(2);
      break;
    case '-x':
      yes = !!node && (node.mode & 0o111) !== 0 && bit(1);
      break;
    case '-n':
      yes = f !== '';
      break;
    case '-z':
      yes = f === '';
      break;
    default:
      return err(`sh: 1: test: ${op}: unexpected operator\n`, 2);
  }
  return out('', yes ? 0 : 1);
};

const cat: Command = (ctx, args) => {
  let stdout = '';
  let stderr = '';
  for (const f of args) {
    const node = ctx.server.vfs.get(resolve(ctx, f));
    if (!node) stderr += `cat: ${f}: No such file or directory\n`;
    else if (node.kind === 'dir') stderr += `cat: ${f}: Is a directory\n`;
    else stdout += node.content.toString('utf8');
  }
  return { stdout, stderr, code: stderr ? 1 : 0 };
};

const rm: Command = (ctx, args) => {
  const { flags, rest, bad } = splitFlags(args, 'f');
  if (bad) return err(`rm: invalid option -- '${bad}'\n`);
  let stderr = '';
  for (const f of rest) {
    const p = resolve(ctx, f);
    const node = ctx.server.vfs.get(p);
    if (!node) {
      if (!flags.has('f')) stderr += `rm: cannot remove '${f}': No such file or directory\n`;
      continue;
    }
    if (node.kind === 'dir') {
      stderr += `rm: cannot remove '${f}': Is a directory\n`;
      continue;
    }
    ctx.server.vfs.remove(p);
  }
  return { stdout: '', stderr, code: stderr ? 1 : 0 };
};

/** `mv [-f] SOURCE DEST`: how an upload staged in a sudo user's home reaches /var/lib/sshmgr. */
const mv: Command = (ctx, args) => {
  const { rest, bad } = splitFlags(args, 'f');
  if (bad) return err(`mv: invalid option -- '${bad}'\n`);
  if (rest.length !== 2)
    return err(
      `mv: ${rest.length < 2 ? 'missing destination file operand' : 'extra operand'}\nTry 'mv --help' for more information.\n`,
    );
  const [from, to] = rest.map((f) => resolve(ctx, f));
  const vfs = ctx.server.vfs;
  const node = vfs.get(from);
  if (!node) return err(`mv: cannot stat '${rest[0]}': No such file or directory\n`);
  const dest = vfs.get(to)?.kind === 'dir' ? `${to}/${from.split('/').pop()}` : to;
  // A user other than root may only move between folders it owns.
  const dirOwner = (p: string) => vfs.get(p.slice(0, p.lastIndexOf('/')) || '/')?.owner;
  if (ctx.user !== 'root' && (dirOwner(from) !== ctx.user || dirOwner(dest) !== ctx.user)) {
    return err(`mv: cannot move '${rest[0]}' to '${rest[1]}': Permission denied\n`);
  }
  try {
    vfs.rename(from, dest);
  } catch (e) {
    return err(`mv: cannot move '${rest[0]}' to '${rest[1]}': ${(e as Error).message}\n`);
  }
  return out('');
};

const supervisorctl: Command = async (ctx, args) => {
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

const COMMANDS: Record<string, Command> = {
  chown,
  chmod,
  mkdir,
  sha256sum,
  stat,
  test,
  cat,
  rm,
  mv,
  supervisorctl,
  'ssh-mgr-controller': sshMgrController,
  true: () => out(''),
  false: () => out('', 1),
  echo: (_ctx, args) => out(args.join(' ') + '\n'),
  whoami: (ctx) => out(ctx.user + '\n'),
  hostname: (ctx) => out(ctx.server.name + '\n'),
  ls: (ctx, args) => {
    const p = resolve(ctx, args.filter((a) => !a.startsWith('-'))[0] ?? '.');
    const node = ctx.server.vfs.get(p);
    if (!node) return err(`ls: cannot access '${p}': No such file or directory\n`, 2);
    return out(
      node.kind === 'dir'
        ? ctx.server.vfs
            .list(p)
            .map((n) => n + '\n')
            .join('')
        : p + '\n',
    );
  },
};
