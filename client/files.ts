// Reading a person's files (hotfix files, inventories) without trusting what
// has the right name: only regular files (a FIFO would hang, /dev/zero never
// ends), symbolic links only when asked, a size limit checked before reading
// and enforced while reading, as a stream.
import { constants, promises as fs, Stats } from 'node:fs';
import { createHash } from 'node:crypto';
import { formatBytes, inputLimits, InputLimits, LimitError } from '../domain/input-limits';
import { CliError, EXIT } from './errors';

export interface ReadOptions {
  /** Refuse files larger than this. */
  maxBytes: number;
  /** Follow a symbolic link (else refused). */
  followSymlinks: boolean;
  /** What the file should be, for messages: 'the hotfix file from the vendor'. */
  what: string;
  /** The setting that raises maxBytes, named in the refusal. */
  limitVariable: string;
}

export interface ReadFile {
  bytes: Buffer;
  sha256: string;
}

function kind(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a named pipe (FIFO)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}

const CHUNK = 1024 * 1024;

function refused(message: string): CliError {
  return new CliError(message, EXIT.refused);
}

/** The bytes of a regular file within the limit, or exit 2 with one line. */
export async function readLimitedFile(p: string, o: ReadOptions): Promise<ReadFile> {
  let st: Stats;
  try {
    st = await fs.lstat(p);
    if (st.isSymbolicLink()) {
      if (!o.followSymlinks)
        throw refused(
          `${p} is a symbolic link: give the path of ${o.what} itself, or pass --follow-symlinks if you mean it`,
        );
      st = await fs.stat(p);
    }
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw refused(
      `cannot read ${p} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): give the path of ${o.what}`,
    );
  }
  // Checked before opening: opening a FIFO for reading waits for a writer.
  if (!st.isFile()) throw refused(`${p} is ${kind(st)}, not a regular file: give the path of ${o.what}`);
  if (st.size > o.maxBytes)
    throw refused(
      `${p} is larger than ${formatBytes(o.maxBytes)} (${st.size} bytes): that is not ${o.what} (the limit is ${o.limitVariable})`,
    );
  let handle: fs.FileHandle;
  try {
    // O_NONBLOCK: a file swapped for a FIFO after the check still cannot hang us; O_NOFOLLOW: nor for a link.
    handle = await fs.open(
      p,
      constants.O_RDONLY | constants.O_NONBLOCK | (o.followSymlinks ? 0 : constants.O_NOFOLLOW),
    );
  } catch (err) {
    throw refused(
      `cannot read ${p} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): give the path of ${o.what}`,
    );
  }
  try {
    const opened = await handle.stat();
    if (!opened.isFile() || opened.ino !== st.ino || opened.dev !== st.dev)
      throw refused(`${p} changed while it was being read: try again`);
    // Read in chunks into one buffer of the size stat gave (at most the limit): memory is the file once,
    // and a file that grows while it is read (a log, a device behind a swapped path) is refused, not buffered.
    const expected = opened.size;
    const bytes = Buffer.allocUnsafe(expected);
    const hash = createHash('sha256');
    let size = 0;
    while (size < expected) {
      const { bytesRead } = await handle.read(bytes, size, Math.min(expected - size, CHUNK), null);
      if (bytesRead === 0) break;
      hash.update(bytes.subarray(size, size + bytesRead));
      size += bytesRead;
    }
    const { bytesRead: more } = await handle.read(Buffer.alloc(1), 0, 1, null);
    if (size !== expected || more > 0)
      throw refused(`${p} changed size while it was read: try again once it is complete`);
    return { bytes, sha256: hash.digest('hex') };
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** The configured limits; a bad setting is exit 2. */
export function limits(env: NodeJS.ProcessEnv = process.env): InputLimits {
  try {
    return inputLimits(env);
  } catch (err) {
    if (err instanceof LimitError) throw refused(err.message);
    throw err;
  }
}
