// A tiny virtual filesystem per simulated server: path -> node with owner,
// group and mode. The standard directories live in one shared table; a
// server only allocates its own map on its first write (2,000 idle servers
// cost nothing here).
import * as path from 'node:path/posix';

export interface VNode {
  kind: 'file' | 'dir';
  content: Buffer;
  owner: string;
  group: string;
  /** Permission bits only (e.g. 0o750). */
  mode: number;
  mtime: number;
}

export const USERS: Record<string, { uid: number; home: string }> = {
  root: { uid: 0, home: '/root' },
  sshmgr: { uid: 999, home: '/var/lib/sshmgr' },
  kmadmin: { uid: 1000, home: '/home/kmadmin' },
};

const EMPTY = Buffer.alloc(0);
const BOOT = Date.now();
const dir = (owner: string, mode: number, group = owner): VNode => ({
  kind: 'dir',
  content: EMPTY,
  owner,
  group,
  mode,
  mtime: BOOT,
});

const DEFAULTS: ReadonlyMap<string, VNode> = new Map([
  ['/', dir('root', 0o755)],
  ['/root', dir('root', 0o700)],
  ['/home', dir('root', 0o755)],
  ['/home/kmadmin', dir('kmadmin', 0o755)],
  ['/tmp', dir('root', 0o1777)],
  ['/etc', dir('root', 0o755)],
  ['/opt', dir('root', 0o755)],
  ['/opt/sshmgr', dir('sshmgr', 0o755)],
  ['/var', dir('root', 0o755)],
  ['/var/lib', dir('root', 0o755)],
  // sshmgr's home, where the vendor suggests putting hotfix files.
  ['/var/lib/sshmgr', dir('sshmgr', 0o750)],
]);

export class VfsError extends Error {
  constructor(
    readonly code: 'ENOENT' | 'EEXIST' | 'ENOTDIR' | 'EISDIR',
    message: string,
  ) {
    super(message);
  }
}

export class Vfs {
  // undefined until the first write; a deleted default is kept as null.
  private own?: Map<string, VNode | null>;

  static normalize(p: string, cwd = '/'): string {
    return path.resolve(cwd, p);
  }

  get(p: string): VNode | undefined {
    const mine = this.own?.get(p);
    if (mine === null) return undefined;
    return mine ?? DEFAULTS.get(p);
  }

  /** A node this server may change: copied from the shared defaults on first change. */
  mutable(p: string): VNode | undefined {
    const node = this.get(p);
    if (!node) return undefined;
    if (this.own?.get(p) === node) return node;
    const copy = { ...node };
    this.set(p, copy);
    return copy;
  }

  private set(p: string, node: VNode | null): void {
    (this.own ??= new Map()).set(p, node);
  }

  private parentDir(p: string): VNode {
    const parent = this.get(path.dirname(p));
    if (!parent) throw new VfsError('ENOENT', 'No such file or directory');
    if (parent.kind !== 'dir') throw new VfsError('ENOTDIR', 'Not a directory');
    return parent;
  }

  writeFile(p: string, content: Buffer, owner: string, mode = 0o644): VNode {
    this.parentDir(p);
    const existing = this.get(p);
    if (existing?.kind === 'dir') throw new VfsError('EISDIR', 'Is a directory');
    // Overwriting keeps owner and mode, like open(O_TRUNC) on a real disk.
    const node: VNode = existing
      ? { ...existing, content, mtime: Date.now() }
      : { kind: 'file', content, owner, group: owner, mode, mtime: Date.now() };
    this.set(p, node);
    return node;
  }

  mkdir(p: string, owner: string, opts: { parents?: boolean; mode?: number } = {}): void {
    const existing = this.get(p);
    if (existing) {
      if (opts.parents && existing.kind === 'dir') return;
      throw new VfsError('EEXIST', 'File exists');
    }
    if (opts.parents && !this.get(path.dirname(p))) this.mkdir(path.dirname(p), owner, { parents: true });
    this.parentDir(p);
    this.set(p, { kind: 'dir', content: EMPTY, owner, group: owner, mode: opts.mode ?? 0o755, mtime: Date.now() });
  }

  remove(p: string): void {
    const node = this.get(p);
    if (!node) throw new VfsError('ENOENT', 'No such file or directory');
    if (node.kind === 'dir' && this.list(p).length > 0) throw new VfsError('EEXIST', 'Directory not empty');
    if (DEFAULTS.has(p))
      this.set(p, null); // hide the shared default
    else this.own?.delete(p);
  }

  rename(from: string, to: string): void {
    const node = this.get(from);
    if (!node) throw new VfsError('ENOENT', 'No such file or directory');
    this.parentDir(to);
    if (node.kind === 'dir') throw new VfsError('EISDIR', 'Is a directory'); // files only: enough for uploads
    this.set(to, node);
    this.remove(from);
  }

  /** Names directly inside a directory. */
  list(dirPath: string): string[] {
    const prefix = dirPath === '/' ? '/' : dirPath + '/';
    const names = new Set<string>();
    const consider = (p: string) => {
      if (p.startsWith(prefix) && p.length > prefix.length && !p.slice(prefix.length).includes('/') && this.get(p))
        names.add(p.slice(prefix.length));
    };
    for (const p of DEFAULTS.keys()) consider(p);
    if (this.own) for (const p of this.own.keys()) consider(p);
    return [...names].sort();
  }
}

/** `ls -l` style permission string: -rwxr-x--- */
export function modeString(node: VNode): string {
  const bits = ['r', 'w', 'x'];
  let s = node.kind === 'dir' ? 'd' : '-';
  for (let i = 8; i >= 0; i--) s += node.mode & (1 << i) ? bits[(8 - i) % 3] : '-';
  if (node.mode & 0o1000) s = s.slice(0, 9) + (node.mode & 1 ? 't' : 'T');
  return s;
}
