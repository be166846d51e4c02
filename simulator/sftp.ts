// The SFTP subsystem of a simulated server, on its virtual filesystem.
// Enough of SFTP v3 for OpenSSH's `sftp` (put/get/ls/chmod/mkdir/rm/rename)
// and ssh2's fastPut/writeFile. New files belong to the login user (0644).
import type { Attributes, SFTPWrapper } from 'ssh2';
import { utils } from 'ssh2';
import { modeString, USERS, Vfs, VfsError, VNode } from './vfs';

const { STATUS_CODE, OPEN_MODE } = utils.sftp;

export interface SftpContext {
  vfs: Vfs;
  user: string;
  home: string;
  /** Log one completed operation ("sftp:write /path") with its status (0 = OK). */
  log(command: string, exitCode: number): void;
}

interface OpenFile {
  kind: 'file';
  path: string;
  write: boolean;
  chunks?: Buffer[];
  size: number;
  dirty: boolean;
  failed: boolean;
}
interface OpenDir {
  kind: 'dir';
  path: string;
  listed: boolean;
}

const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;

function attrsOf(node: VNode): Attributes {
  const t = Math.floor(node.mtime / 1000);
  return {
    mode: (node.kind === 'dir' ? S_IFDIR : S_IFREG) | node.mode,
    uid: USERS[node.owner]?.uid ?? 65534,
    gid: USERS[node.group]?.uid ?? 65534,
    size: node.content.length,
    atime: t,
    mtime: t,
  };
}

function longname(name: string, node: VNode): string {
  return `${modeString(node)}    1 ${node.owner.padEnd(8)} ${node.group.padEnd(8)} ${String(node.content.length).padStart(8)} Jan  1 00:00 ${name}`;
}

export function serveSftp(sftp: SFTPWrapper, ctx: SftpContext): void {
  const handles = new Map<number, OpenFile | OpenDir>();
  let nextHandle = 1;
  const abs = (p: string) => Vfs.normalize(p || '.', ctx.home);
  const newHandle = (h: OpenFile | OpenDir) => {
    const id = nextHandle++;
    handles.set(id, h);
    const buf = Buffer.alloc(4);
    buf.writeUInt32BE(id);
    return buf;
  };
  const lookup = (buf: Buffer) => (buf.length === 4 ? handles.get(buf.readUInt32BE(0)) : undefined);
  const vfsStatus = (e: unknown) =>
    e instanceof VfsError && e.code === 'ENOENT' ? STATUS_CODE.NO_SUCH_FILE : STATUS_CODE.FAILURE;
  const setAttrs = (p: string, attrs: Attributes): number => {
    const node = ctx.vfs.get(p);
    if (!node) return STATUS_CODE.NO_SUCH_FILE;
    if (attrs.mode !== undefined) {
      if (ctx.user !== 'root' && node.owner !== ctx.user) return STATUS_CODE.PERMISSION_DENIED;
      (ctx.vfs.mutable(p) as VNode).mode = attrs.mode & 0o7777;
    }
    return STATUS_CODE.OK;
  };

  // OpenSSH's sftp waits for the server to close the channel after its EOF.
  sftp.on('end', () => sftp.end());

  sftp.on('REALPATH', (id, p) => {
    const path = abs(p);
    const node = ctx.vfs.get(path);
    sftp.name(id, [
      {
        filename: path,
        longname: node ? longname(path, node) : path,
        attrs: node ? attrsOf(node) : ({} as Attributes),
      },
    ]);
  });
  const statHandler = (id: number, p: string) => {
    const node = ctx.vfs.get(abs(p));
    if (!node) sftp.status(id, STATUS_CODE.NO_SUCH_FILE);
    else sftp.attrs(id, attrsOf(node));
  };
  sftp.on('STAT', statHandler);
  sftp.on('LSTAT', statHandler);
  sftp.on('SETSTAT', (id, p, attrs) => {
    const path = abs(p);
    const code = setAttrs(path, attrs);
    if (attrs.mode !== undefined)
      ctx.log(`sftp:chmod ${(attrs.mode & 0o7777).toString(8).padStart(4, '0')} ${path}`, code);
    sftp.status(id, code);
  });
  sftp.on('OPEN', (id, filename, flags, attrs) => {
    const path = abs(filename);
    const existing = ctx.vfs.get(path);
    const write = (flags & OPEN_MODE.WRITE) !== 0;
    if (existing?.kind === 'dir') return sftp.status(id, STATUS_CODE.FAILURE);
    if (!write) {
      if (!existing) return sftp.status(id, STATUS_CODE.NO_SUCH_FILE);
      return sftp.handle(
        id,
        newHandle({ kind: 'file', path, write: false, size: existing.content.length, dirty: false, failed: false }),
      );
    }
    if (!existing && !(flags & OPEN_MODE.CREAT)) return sftp.status(id, STATUS_CODE.NO_SUCH_FILE);
    if (existing && flags & OPEN_MODE.EXCL) return sftp.status(id, STATUS_CODE.FAILURE);
    try {
      const start = existing && !(flags & OPEN_MODE.TRUNC) ? existing.content : Buffer.alloc(0);
      // sshd's umask (022) applies to the mode the client asks for.
      ctx.vfs.writeFile(path, start, ctx.user, attrs.mode !== undefined ? attrs.mode & 0o755 : 0o644);
      sftp.handle(
        id,
        newHandle({ kind: 'file', path, write: true, chunks: [start], size: start.length, dirty: true, failed: false }),
      );
    } catch (e) {
      ctx.log(`sftp:write ${path}`, vfsStatus(e));
      sftp.status(id, vfsStatus(e));
    }
  });
  sftp.on('WRITE', (id, handle, offset, data) => {
    const h = lookup(handle);
    if (!h || h.kind !== 'file' || !h.write) return sftp.status(id, STATUS_CODE.FAILURE);
    // Writes arrive in order from both clients; an out-of-order write is assembled at close.
    if (offset === h.size) {
      h.chunks!.push(data);
      h.size += data.length;
    } else {
      const merged = placed(h, offset, data);
      h.chunks = [merged];
      h.size = merged.length;
    }
    h.dirty = true;
    sftp.status(id, STATUS_CODE.OK);
  });
  sftp.on('READ', (id, handle, offset, length) => {
    const h = lookup(handle);
    if (!h || h.kind !== 'file') return sftp.status(id, STATUS_CODE.FAILURE);
    const node = ctx.vfs.get(h.path);
    if (!node) return sftp.status(id, STATUS_CODE.NO_SUCH_FILE);
    if (offset >= node.content.length) return sftp.status(id, STATUS_CODE.EOF);
    sftp.data(id, node.content.subarray(offset, offset + length));
  });
  sftp.on('FSTAT', (id, handle) => {
    const h = lookup(handle);
    if (!h) return sftp.status(id, STATUS_CODE.FAILURE);
    flush(h);
    const node = ctx.vfs.get(h.path);
    if (!node) sftp.status(id, STATUS_CODE.NO_SUCH_FILE);
    else sftp.attrs(id, attrsOf(node));
  });
  sftp.on('FSETSTAT', (id, handle, attrs) => {
    const h = lookup(handle);
    if (!h) return sftp.status(id, STATUS_CODE.FAILURE);
    flush(h);
    const code = setAttrs(h.path, attrs);
    if (attrs.mode !== undefined)
      ctx.log(`sftp:chmod ${(attrs.mode & 0o7777).toString(8).padStart(4, '0')} ${h.path}`, code);
    sftp.status(id, code);
  });
  sftp.on('CLOSE', (id, handle) => {
    const h = lookup(handle);
    if (!h) return sftp.status(id, STATUS_CODE.FAILURE);
    handles.delete(handle.readUInt32BE(0));
    if (h.kind === 'file' && h.write) {
      flush(h);
      ctx.log(`sftp:write ${h.path}`, 0);
    }
    sftp.status(id, STATUS_CODE.OK);
  });
  sftp.on('OPENDIR', (id, p) => {
    const path = abs(p);
    const node = ctx.vfs.get(path);
    if (!node) return sftp.status(id, STATUS_CODE.NO_SUCH_FILE);
    if (node.kind !== 'dir') return sftp.status(id, STATUS_CODE.FAILURE);
    sftp.handle(id, newHandle({ kind: 'dir', path, listed: false }));
  });
  sftp.on('READDIR', (id, handle) => {
    const h = lookup(handle);
    if (!h || h.kind !== 'dir') return sftp.status(id, STATUS_CODE.FAILURE);
    if (h.listed) return sftp.status(id, STATUS_CODE.EOF);
    h.listed = true;
    const names = ctx.vfs.list(h.path).map((name) => {
      const node = ctx.vfs.get(h.path === '/' ? `/${name}` : `${h.path}/${name}`) as VNode;
      return { filename: name, longname: longname(name, node), attrs: attrsOf(node) };
    });
    if (names.length === 0) return sftp.status(id, STATUS_CODE.EOF);
    sftp.name(id, names);
  });
  sftp.on('MKDIR', (id, p, attrs) => {
    const path = abs(p);
    try {
      ctx.vfs.mkdir(path, ctx.user, { mode: attrs.mode !== undefined ? attrs.mode & 0o7777 : 0o755 });
      ctx.log(`sftp:mkdir ${path}`, 0);
      sftp.status(id, STATUS_CODE.OK);
    } catch (e) {
      ctx.log(`sftp:mkdir ${path}`, vfsStatus(e));
      sftp.status(id, vfsStatus(e));
    }
  });
  const remove = (id: number, p: string) => {
    const path = abs(p);
    try {
      ctx.vfs.remove(path);
      ctx.log(`sftp:remove ${path}`, 0);
      sftp.status(id, STATUS_CODE.OK);
    } catch (e) {
      ctx.log(`sftp:remove ${path}`, vfsStatus(e));
      sftp.status(id, vfsStatus(e));
    }
  };
  sftp.on('REMOVE', remove);
  sftp.on('RMDIR', remove);
  sftp.on('RENAME', (id, from, to) => {
    try {
      if (ctx.vfs.get(abs(to))) throw new VfsError('EEXIST', 'exists'); // SFTP v3 rename never overwrites
      ctx.vfs.rename(abs(from), abs(to));
      ctx.log(`sftp:rename ${abs(from)} ${abs(to)}`, 0);
      sftp.status(id, STATUS_CODE.OK);
    } catch (e) {
      sftp.status(id, vfsStatus(e));
    }
  });

  function placed(h: OpenFile, offset: number, data: Buffer): Buffer {
    // Out-of-order write: materialise what we have and splice.
    const cur = Buffer.concat(h.chunks!);
    const next = Buffer.alloc(Math.max(cur.length, offset + data.length));
    cur.copy(next);
    data.copy(next, offset);
    return next;
  }

  function flush(h: OpenFile | OpenDir): void {
    if (h.kind !== 'file' || !h.write || !h.dirty) return;
    const content = Buffer.concat(h.chunks!);
    h.chunks = [content];
    h.dirty = false;
    try {
      ctx.vfs.writeFile(h.path, content, ctx.user);
    } catch {
      h.failed = true; // removed meanwhile: the write is lost, as on a real disk
    }
  }
}
