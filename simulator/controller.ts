// `ssh-mgr-controller`: registers, applies and unapplies hotfixes in the
// Key Manager database, with the vendor's messages (SPEC §1).
import { createHash } from 'node:crypto';
import { HotfixNameError, parseHotfixFileName, parseHotfixName } from '../domain/hotfix';
import { installedChecksum, ManifestError, readManifest } from './hotfix-file';
import type { ExecContext, ExecResult } from './exec-context';
import { Vfs } from './vfs';

const USAGE = 'usage: ssh-mgr-controller --upload-hotfix=<path> | --apply-hotfix=<name> | --unapply-hotfix=<name>';

const fail = (message: string, code = 1): ExecResult => ({ stdout: '', stderr: message + '\n', code });
const ok = (message: string): ExecResult => ({ stdout: message + '\n', stderr: '', code: 0 });

export async function sshMgrController(ctx: ExecContext, args: string[]): Promise<ExecResult> {
  if (ctx.user !== 'root')
    return fail('ssh-mgr-controller: Permission denied: run it as root (sudo -n ssh-mgr-controller ...)');
  const actions: { action: string; value: string }[] = [];
  for (let i = 0; i < args.length; i++) {
    const m = /^--(upload-hotfix|apply-hotfix|unapply-hotfix)(?:=(.*))?$/s.exec(args[i]);
    if (!m) return fail(`ssh-mgr-controller: unrecognized argument '${args[i]}'\n${USAGE}`, 2);
    const value = m[2] ?? args[++i];
    if (value === undefined || value === '') return fail(`ssh-mgr-controller: --${m[1]} needs a value\n${USAGE}`, 2);
    actions.push({ action: m[1], value });
  }
  if (actions.length !== 1) return fail(USAGE, 2);
  const { action, value } = actions[0];
  try {
    if (action === 'upload-hotfix') return await upload(ctx, value);
    return await applyOrUnapply(ctx, action === 'apply-hotfix' ? 'apply' : 'unapply', value);
  } catch (err) {
    // The database is gone or refused: what a real controller prints as a traceback's last line.
    return fail(`Exception: could not reach the Key Manager database: ${(err as Error).message.split('\n')[0]}`);
  }
}

async function upload(ctx: ExecContext, rawPath: string): Promise<ExecResult> {
  const p = Vfs.normalize(rawPath, ctx.cwd);
  const node = ctx.server.vfs.get(p);
  if (!node) return fail(`Exception: Hotfix file ${p} does not exist`);
  if (node.kind !== 'file') return fail(`Exception: ${p} is a directory, not a hotfix file`);
  if (node.owner !== 'sshmgr')
    return fail(`Exception: Hotfix file ${p} is owned by ${node.owner}, not by sshmgr: run chown sshmgr:sshmgr ${p}`);
  if ((node.mode & 0o100) === 0)
    return fail(
      `Exception: Hotfix file ${p} is not executable by sshmgr (mode ${node.mode.toString(8).padStart(4, '0')}): run chmod u+x ${p}`,
    );
  let parsed;
  try {
    parsed = parseHotfixFileName(p);
  } catch (err) {
    if (err instanceof HotfixNameError) return fail(`Exception: ${err.message}`);
    throw err;
  }
  let manifest;
  try {
    manifest = readManifest(node.content);
  } catch (err) {
    if (err instanceof ManifestError) return fail(`Exception: Hotfix file ${p} ${err.message}`);
    throw err;
  }
  if (manifest.name !== parsed.name || manifest.version !== parsed.version) {
    return fail(
      `Exception: Hotfix file ${p} contains ${manifest.name} ${manifest.version}, but its name says ${parsed.name} ${parsed.version}`,
    );
  }
  const sha256 = createHash('sha256').update(node.content).digest('hex');
  const { conflict } = await ctx.server.db.upload({
    name: parsed.name,
    fileName: parsed.fileName,
    version: parsed.version,
    sha256,
    manifest,
  });
  if (conflict) {
    return fail(
      `Exception: Hotfix ${parsed.name} is already registered with different contents (sha256 ${conflict}); delete it from System -> Hotfixes before uploading another build`,
    );
  }
  return ok(`Hotfix ${parsed.name} (version ${parsed.version}) uploaded, sha256 ${sha256}`);
}

async function applyOrUnapply(ctx: ExecContext, kind: 'apply' | 'unapply', name: string): Promise<ExecResult> {
  try {
    parseHotfixName(name);
  } catch (err) {
    if (err instanceof HotfixNameError) return fail(`Exception: ${err.message}`);
    throw err;
  }
  const server = ctx.server;
  // Transient failure (fault): nothing happens, a retry can succeed.
  if (server.faults.take(kind === 'apply' ? 'failApplies' : 'failUnapplies')) {
    return fail(
      'Exception: Timed out waiting for the Key Manager database lock (another operation is running); try again',
    );
  }
  const latency = server.applyMs();
  if (latency > 0) await new Promise((r) => setTimeout(r, latency));
  if (ctx.aborted()) return { stdout: '', stderr: '', code: 129 }; // SIGHUP: the client went away
  const hotfix = await server.db.hotfix(name);
  if (!hotfix)
    return fail(`Exception: Hotfix ${name} not found: upload it first (ssh-mgr-controller --upload-hotfix=<file>)`);
  if (kind === 'unapply') {
    const removed = await server.db.unapply(server.name, name);
    return ok(removed ? `Hotfix ${name} unapplied` : `Hotfix ${name} is not applied on this server`);
  }
  // A hotfix registered without a simulator manifest: check its version only.
  const files = hotfix.manifest?.files ?? [
    { path: '/opt/sshmgr/VERSION', expectedOnDisk: installedChecksum(hotfix.version, '/opt/sshmgr/VERSION') },
  ];
  const kmVersion = server.kmVersion();
  for (const f of files) {
    const onDisk = installedChecksum(kmVersion, f.path);
    if (onDisk !== f.expectedOnDisk) {
      return fail(
        `Exception: File ${f.path}'s SHA checksum on disk ${onDisk} does not match what we expected to override: ${f.expectedOnDisk}`,
      );
    }
  }
  const added = await server.db.apply(server.name, name);
  return ok(added ? `Hotfix ${name} applied` : `Hotfix ${name} is already applied`);
}
