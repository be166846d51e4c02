// The commands a simulated Key Manager server knows, with the output and
// exit codes of GNU coreutils, sudo and supervisorctl. Privileged commands
// (chown, ssh-mgr-controller, supervisorctl) need root: a `sudo: true`
// server's login user must prefix them with `sudo -n`.
// The commands themselves live in file-commands.ts, read-commands.ts and
// supervisorctl.ts; this file dispatches to them.
import { err, out, resolve, type Command } from './command-helpers';
import { sshMgrController } from './controller';
import type { ExecContext, ExecResult } from './exec-context';
import type { CommandKind } from './faults';
import { chmod, chown, mkdir, mv, rm } from './file-commands';
import { cat, sha256sum, stat, test } from './read-commands';
import { supervisorctl } from './supervisorctl';

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
