// The commands that only read the virtual filesystem: sha256sum, stat, test
// and cat, with GNU coreutils' (and dash's `test`) messages and exit codes.
import { createHash } from 'node:crypto';
import { err, out, resolve, type Command } from './command-helpers';
import { modeString, USERS, VNode } from './vfs';

export const sha256sum: Command = (ctx, args) => {
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

export const stat: Command = (ctx, args) => {
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

export const test: Command = (ctx, args) => {
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

export const cat: Command = (ctx, args) => {
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
