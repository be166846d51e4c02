// A real OpenSSH sshd for tests, on a random loopback port with its own
// config, host key and authorized key, and FAKE Key Manager commands
// (ssh-mgr-controller, supervisorctl, sudo) first on the session PATH. The
// fakes keep their state in files, so tests assert on what the server saw.
// Needs root (sshd's privilege separation) and Debian's openssh-server.
import { spawn, ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { runChild, freePort } from '../../stack/process';
import { scratchDir } from './stack';
import type { SshTarget } from '../../keymanager/ssh';

export const SSHD = '/usr/sbin/sshd';

export interface TestSshd {
  port: number;
  dir: string;
  /** Folder of the fakes' state files. */
  state: string;
  /** OpenSSH's own fingerprint of the server's host key (ssh-keygen -lf). */
  hostKey: string;
  /** A valid fingerprint of a key this server does not have. */
  otherHostKey: string;
  /** Private key in authorized_keys. */
  clientKey: Buffer;
  /** A private key the server does not accept. */
  otherClientKey: Buffer;
  target(over?: Partial<SshTarget>): SshTarget;
  /** sshd's log so far (stderr, LogLevel VERBOSE). */
  log(): string;
  /** TCP connections sshd accepted so far. */
  connections(): number;
  /** A state file's content, '' when absent. */
  read(file: string): Promise<string>;
  exists(file: string): Promise<boolean>;
  stop(): Promise<void>;
}

const CONTROLLER = `#!/bin/bash
# Fake ssh-mgr-controller: the vendor's commands, state in $KM_FAKE_STATE.
set -u
S="\${KM_FAKE_STATE:?}"
printf '%s\\n' "$*" >> "$S/controller.log"
mkdir -p "$S/registered" "$S/applied"
case "\${1:-}" in
  --upload-hotfix=*)
    f="\${1#--upload-hotfix=}"
    [ -f "$f" ] || { echo "Error: no such file: $f" >&2; exit 2; }
    owner=$(stat -c %U:%G "$f"); mode=$(stat -c %a "$f")
    [ "$owner" = "sshmgr:sshmgr" ] || { echo "Error: $f is owned by $owner, not sshmgr:sshmgr" >&2; exit 2; }
    [ $(( 0$mode & 0100 )) -ne 0 ] || { echo "Error: $f is not executable by sshmgr (mode $mode)" >&2; exit 2; }
    base=$(basename "$f" .gz); rest=\${base#sshmgr-*-}; name=\${rest%_*}
    printf '%s %s %s\\n' "$f" "$(sha256sum "$f" | cut -d' ' -f1)" "$mode" > "$S/registered/$name"
    echo "Hotfix $name uploaded";;
  --apply-hotfix=*)
    n="\${1#--apply-hotfix=}"
    [ -f "$S/registered/$n" ] || { echo "Error: unknown hotfix $n" >&2; exit 1; }
    if [ -f "$S/checksum-mismatch" ]; then cat "$S/checksum-mismatch" >&2; exit 1; fi
    touch "$S/applied/$n"; echo "Hotfix $n applied";;
  --unapply-hotfix=*)
    n="\${1#--unapply-hotfix=}"
    [ -f "$S/applied/$n" ] || { echo "Error: hotfix $n is not applied on this server" >&2; exit 1; }
    rm -f "$S/applied/$n"; echo "Hotfix $n unapplied";;
  *) echo "usage: ssh-mgr-controller --upload-hotfix=PATH | --apply-hotfix=NAME | --unapply-hotfix=NAME" >&2; exit 64;;
esac
`;

const SUPERVISORCTL = `#!/bin/bash
# Fake supervisorctl: three services; names listed in $S/down are STOPPED until a restart.
set -u
S="\${KM_FAKE_STATE:?}"
printf '%s\\n' "$*" >> "$S/supervisorctl.log"
services="km-api km-worker km-scheduler"
case "$*" in
  "restart all")
    for s in $services; do echo "$s: stopped"; echo "$s: started"; done
    echo $(( $(cat "$S/restarts" 2>/dev/null || echo 0) + 1 )) > "$S/restarts"
    rm -f "$S/down";;
  status)
    rc=0
    for s in $services; do
      if [ -f "$S/down" ] && grep -qx "$s" "$S/down"; then printf '%-32s STOPPED   Not started\\n' "$s"; rc=3
      else printf '%-32s RUNNING   pid %d, uptime 0:01:%02d\\n' "$s" $((1000 + RANDOM % 1000)) $((RANDOM % 60)); fi
    done
    exit $rc;;
  *) echo "fake supervisorctl: unsupported: $*" >&2; exit 2;;
esac
`;

const SUDO = `#!/bin/bash
# Fake sudo: records its arguments one [bracketed] word each, then runs the command.
printf '[%s]' "$@" >> "\${KM_FAKE_STATE:?}/sudo.log"; echo >> "$KM_FAKE_STATE/sudo.log"
[ "\${1:-}" = -n ] || { echo "fake sudo: expected -n first" >&2; exit 1; }
shift
exec "$@"
`;

async function keygen(file: string): Promise<void> {
  await runChild('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'km-hotfix-test', '-f', file]);
}

async function fingerprintOf(pubFile: string): Promise<string> {
  const { stdout } = await runChild('ssh-keygen', ['-l', '-E', 'sha256', '-f', pubFile]);
  const fp = stdout.split(/\s+/)[1];
  if (!fp?.startsWith('SHA256:')) throw new Error(`unexpected ssh-keygen -l output: ${stdout}`);
  return fp;
}

let sshmgrUser: Promise<void> | undefined;
/** The vendor procedure chowns hotfix files to sshmgr: make sure that system user exists. */
export function ensureSshmgrUser(): Promise<void> {
  sshmgrUser ??= (async () => {
    try {
      await runChild('getent', ['passwd', 'sshmgr']);
    } catch {
      await runChild('useradd', [
        '--system',
        '--user-group',
        '--no-create-home',
        '--home-dir',
        '/var/lib/sshmgr',
        '--shell',
        '/usr/sbin/nologin',
        'sshmgr',
      ]).catch(async (err) => {
        await runChild('getent', ['passwd', 'sshmgr']).catch(() => {
          throw err;
        });
      }); // raced with someone else
    }
  })();
  return sshmgrUser;
}

/** Skip reasons, or undefined when this machine can run sshd tests. */
export async function sshdUnavailable(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'sshd tests need root';
  try {
    await fs.access(SSHD);
  } catch {
    return `${SSHD} is missing: apt-get install -y openssh-server`;
  }
  return undefined;
}

export async function startSshd(name = 'sshd', extraConfig: string[] = []): Promise<TestSshd> {
  const dir = await scratchDir(name);
  const state = path.join(dir, 'state');
  const bin = path.join(dir, 'bin');
  await Promise.all([
    fs.mkdir(state, { mode: 0o777 }),
    fs.mkdir(bin),
    fs.mkdir('/run/sshd', { recursive: true, mode: 0o755 }),
    ensureSshmgrUser(),
  ]);
  await fs.chmod(state, 0o777);
  await Promise.all([
    keygen(path.join(dir, 'host_ed25519')),
    keygen(path.join(dir, 'other_host_ed25519')),
    keygen(path.join(dir, 'client_ed25519')),
    keygen(path.join(dir, 'other_client_ed25519')),
    fs.writeFile(path.join(bin, 'ssh-mgr-controller'), CONTROLLER, { mode: 0o755 }),
    fs.writeFile(path.join(bin, 'supervisorctl'), SUPERVISORCTL, { mode: 0o755 }),
    fs.writeFile(path.join(bin, 'sudo'), SUDO, { mode: 0o755 }),
  ]);
  await fs.copyFile(path.join(dir, 'client_ed25519.pub'), path.join(dir, 'authorized_keys'));
  const [hostKey, otherHostKey, clientKey, otherClientKey] = await Promise.all([
    fingerprintOf(path.join(dir, 'host_ed25519.pub')),
    fingerprintOf(path.join(dir, 'other_host_ed25519.pub')),
    fs.readFile(path.join(dir, 'client_ed25519')),
    fs.readFile(path.join(dir, 'other_client_ed25519')),
  ]);
  const port = await freePort();
  const config = [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${path.join(dir, 'host_ed25519')}`,
    `PidFile ${path.join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
    'PermitRootLogin prohibit-password',
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'UsePAM no',
    'StrictModes no',
    'LogLevel VERBOSE',
    'MaxStartups 100',
    'MaxSessions 10', // OpenSSH's default, stated: the pool's channel cap (8) must stay below it
    'Subsystem sftp internal-sftp',
    // The fakes first on the PATH of every session (applied after sshd's own PATH).
    `SetEnv PATH=${bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin KM_FAKE_STATE=${state}`,
    ...extraConfig,
  ];
  const configFile = path.join(dir, 'sshd_config');
  await fs.writeFile(configFile, config.join('\n') + '\n');

  let log = '';
  const child: ChildProcess = spawn(SSHD, ['-D', '-e', '-f', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr?.on('data', (d: Buffer) => {
    log += d.toString();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`sshd did not start within 10 s:\n${log}`));
    }, 10_000);
    const check = () => {
      if (/Server listening on 127\.0\.0\.1 port/.test(log)) {
        clearTimeout(timer);
        child.stderr?.off('data', check);
        resolve();
      }
    };
    child.stderr?.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`sshd exited ${code} at start:\n${log}`));
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });

  return {
    port,
    dir,
    state,
    hostKey,
    otherHostKey,
    clientKey,
    otherClientKey,
    target: (over = {}) => ({
      name: 'km-test-1',
      host: '127.0.0.1',
      port,
      user: 'root',
      sudo: false,
      hostKey,
      ...over,
    }),
    log: () => log,
    connections: () => (log.match(/Connection from 127\.0\.0\.1 port \d+ on 127\.0\.0\.1 port/g) ?? []).length,
    read: (file) => fs.readFile(path.join(state, file), 'utf8').catch(() => ''),
    exists: (file) =>
      fs.access(path.join(state, file)).then(
        () => true,
        () => false,
      ),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}

/**
 * In a `before` hook: skip the suite (saying why) where sshd cannot run; under
 * CI, fail instead, since .ci/run installs openssh-server and runs as root.
 */
export async function requireSshd(ctx: Mocha.Context): Promise<void> {
  const why = await sshdUnavailable();
  if (!why) return;
  if (process.env.CI) throw new Error(why);
  console.warn(`skipping: ${why}`);
  ctx.skip();
}
