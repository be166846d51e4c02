// The commands that change the virtual filesystem: chown, chmod (and its
// mode parser), mkdir, rm and mv, with GNU coreutils' messages and exit codes.
import { err, out, resolve, splitFlags, type Command } from './command-helpers';
import { USERS, VfsError, VNode } from './vfs';

export const chown: Command = (ctx, args) => {
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

export const chmod: Command = (ctx, args) => {
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

export const mkdir: Command = (ctx, args) => {
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

export const rm: Command = (ctx, args) => {
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
export const mv: Command = (ctx, args) => {
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
