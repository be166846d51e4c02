// The vendor procedure's commands on one Key Manager server
// (seed/key-manager-hotfixes.txt), over the SSH pool of keymanager/ssh.ts.
// This is the part a site adapts to its Key Manager installation. Every Name
// or file name is validated against the vendor grammar (domain/hotfix.ts)
// before it reaches a remote shell.
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { parseHotfixFileName, parseHotfixName } from '../domain/hotfix';
import { KmError, commandFailure } from './errors';
import { commandLine, ExecOptions, ExecResult, SshPool, SshTarget } from './ssh';

export interface ServiceStatus {
  name: string;
  /** supervisor state: RUNNING, STARTING, STOPPED, BACKOFF, STOPPING, EXITED, FATAL, UNKNOWN. */
  state: string;
  /** The rest of the line, e.g. "pid 123, uptime 0:01:02". */
  detail: string;
}

const SUPERVISOR_STATES = new Set([
  'STOPPED',
  'STARTING',
  'RUNNING',
  'BACKOFF',
  'STOPPING',
  'EXITED',
  'FATAL',
  'UNKNOWN',
]);

/** Parse `supervisorctl status` output; lines that are not a process status are ignored. */
export function parseSupervisorStatus(output: string): ServiceStatus[] {
  const services: ServiceStatus[] = [];
  for (const line of output.split('\n')) {
    const m = /^(\S+)\s+([A-Z]+)(?:\s+(.*))?$/.exec(line.trim());
    if (m && SUPERVISOR_STATES.has(m[2])) services.push({ name: m[1], state: m[2], detail: (m[3] ?? '').trim() });
  }
  return services;
}

export interface KeyManagerSshOptions {
  /** Where hotfix files are copied; the vendor suggests sshmgr's home. Default /var/lib/sshmgr. */
  hotfixDir?: string;
  /** Owner of copied hotfix files. Default sshmgr:sshmgr. */
  owner?: string;
}

type CmdOptions = ExecOptions;

/** The vendor procedure's commands on one Key Manager server (seed/key-manager-hotfixes.txt). */
export class KeyManagerSsh {
  readonly hotfixDir: string;
  private readonly owner: string;

  constructor(
    readonly pool: SshPool,
    opts: KeyManagerSshOptions = {},
  ) {
    const dir = opts.hotfixDir ?? '/var/lib/sshmgr';
    if (!path.posix.isAbsolute(dir) || /[\0\n]/.test(dir))
      throw new KmError('invalid-argument', `hotfix directory must be an absolute path (got ${JSON.stringify(dir)})`);
    this.hotfixDir = path.posix.normalize(dir).replace(/(.)\/$/, '$1');
    this.owner = opts.owner ?? 'sshmgr:sshmgr';
    if (!/^[a-z_][a-z0-9_.-]*(?::[a-z_][a-z0-9_.-]*)?$/i.test(this.owner))
      throw new KmError('invalid-argument', `invalid owner ${JSON.stringify(this.owner)}`);
  }

  /**
   * Copy a hotfix file to the server's hotfix directory, owned by and
   * executable for sshmgr (the vendor's step 1). Returns the remote path.
   * Re-running overwrites the same file, so a retry is safe.
   */
  async uploadHotfixFile(t: SshTarget, fileName: string, content: Buffer, opts: CmdOptions = {}): Promise<string> {
    if (fileName.includes('/'))
      throw new KmError('invalid-argument', `${t.name}: '${fileName}' must be a file name, not a path`, {
        server: t.name,
      });
    const parsed = validated(t, () => parseHotfixFileName(fileName));
    const remote = path.posix.join(this.hotfixDir, parsed.fileName);
    await this.must(t, ['mkdir', '-p', this.hotfixDir], opts, `creating ${this.hotfixDir}`);
    if (t.sudo) {
      // SFTP runs as the login user, who may not write there: stage in its home, then move as root.
      const home = await this.pool.homeDir(t, opts);
      const staged = path.posix.join(home, `.km-hotfix-${randomBytes(6).toString('hex')}-${parsed.fileName}`);
      await this.pool.writeFile(t, staged, content, { ...opts, mode: 0o600 });
      await this.must(t, ['mv', '-f', staged, remote], opts, `moving the hotfix file to ${remote}`);
    } else {
      await this.pool.writeFile(t, remote, content, opts);
    }
    await this.must(t, ['chown', this.owner, remote], opts, `making ${remote} owned by ${this.owner}`);
    await this.must(t, ['chmod', '0750', remote], opts, `making ${remote} executable for its owner`);
    return remote;
  }

  /** `ssh-mgr-controller --upload-hotfix=<path>`: register the copied file in the Key Manager database. */
  async registerHotfix(t: SshTarget, remotePath: string, opts: CmdOptions = {}): Promise<void> {
    if (!path.posix.isAbsolute(remotePath))
      throw new KmError('invalid-argument', `${t.name}: '${remotePath}' must be an absolute path on the server`, {
        server: t.name,
      });
    validated(t, () => parseHotfixFileName(path.posix.basename(remotePath)));
    await this.must(
      t,
      ['ssh-mgr-controller', `--upload-hotfix=${remotePath}`],
      opts,
      `registering ${path.posix.basename(remotePath)}`,
    );
  }

  /** Remove a copied hotfix file that Key Manager refused to register (only a hotfix file in the hotfix folder). */
  async removeHotfixFile(t: SshTarget, remotePath: string, opts: CmdOptions = {}): Promise<void> {
    if (path.posix.dirname(remotePath) !== this.hotfixDir)
      throw new KmError('invalid-argument', `${t.name}: '${remotePath}' is not in ${this.hotfixDir}`, {
        server: t.name,
      });
    validated(t, () => parseHotfixFileName(path.posix.basename(remotePath)));
    await this.must(t, ['rm', '-f', remotePath], opts, `removing ${remotePath}`);
  }

  /** `ssh-mgr-controller --apply-hotfix=<Name>`. A checksum mismatch or an unknown Name is a non-retryable KmError. */
  async applyHotfix(t: SshTarget, name: string, opts: CmdOptions = {}): Promise<void> {
    validated(t, () => parseHotfixName(name));
    await this.must(t, ['ssh-mgr-controller', `--apply-hotfix=${name}`], opts, `applying ${name}`, name);
  }

  /** `ssh-mgr-controller --unapply-hotfix=<Name>`. */
  async unapplyHotfix(t: SshTarget, name: string, opts: CmdOptions = {}): Promise<void> {
    validated(t, () => parseHotfixName(name));
    await this.must(t, ['ssh-mgr-controller', `--unapply-hotfix=${name}`], opts, `unapplying ${name}`, name);
  }

  /** `supervisorctl restart all`. */
  async restartServices(t: SshTarget, opts: CmdOptions = {}): Promise<void> {
    await this.must(t, ['supervisorctl', 'restart', 'all'], opts, 'restarting services (supervisorctl restart all)');
  }

  /**
   * `supervisorctl status`. Exit 3 means some process is not RUNNING: still
   * parsed and returned. An empty list means supervisor listed nothing.
   */
  async servicesStatus(t: SshTarget, opts: CmdOptions = {}): Promise<ServiceStatus[]> {
    const argv = ['supervisorctl', 'status'];
    const r = await this.pool.exec(t, argv, opts);
    if (r.code !== 0 && r.code !== 3)
      throw commandFailure({
        server: t.name,
        command: commandLine(t, argv),
        result: r,
        what: "'supervisorctl status'",
      });
    return parseSupervisorStatus(r.stdout);
  }

  private async must(
    t: SshTarget,
    argv: string[],
    opts: CmdOptions,
    what: string,
    hotfix?: string,
  ): Promise<ExecResult> {
    const r = await this.pool.exec(t, argv, opts);
    if (r.code !== 0)
      throw commandFailure({
        server: t.name,
        command: commandLine(t, argv),
        result: r,
        hotfix,
        what: `${what} ('${commandLine(t, argv)}')`,
      });
    return r;
  }
}

function validated<T>(t: SshTarget, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw new KmError('invalid-argument', `${t.name}: ${(err as Error).message}`, { server: t.name, cause: err });
  }
}
