// The Key Manager simulator, driven through a real ssh2 client (host key
// pinned), OpenSSH's own ssh/sftp (strict host key checking), the shared KM
// database and the control API.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Command } from 'commander';
import { Client } from 'ssh2';
import type { Sql } from 'postgres';
import { makeHotfix, startSimFleet, shellQuote, type SimFleet, type SimServer } from '../simulator';
import { registerSim, simRun } from '../client/commands/sim';
import { CliError } from '../client/errors';
import { parseInventory } from '../domain/inventory-file';
import { runChild } from '../stack/process';
import { freshDatabase, scratchDir, sqlFor } from './helpers/stack';
import { generateEd25519KeyPair } from '../keymanager/keygen';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

const clientKeys = generateEd25519KeyPair();
const otherKeys = generateEd25519KeyPair();

function connect(s: SimServer, opts: { key?: string; user?: string; hostKey?: string } = {}): Promise<Client> {
  return new Promise((resolve, reject) => {
    const c = new Client();
    // Our own socket so that Nagle is off on the client side too.
    const sock = net.connect({ host: s.host, port: s.port });
    sock.setNoDelay(true);
    c.once('ready', () => resolve(c));
    c.once('error', reject);
    c.connect({
      host: s.host,
      port: s.port,
      username: opts.user ?? s.user,
      privateKey: opts.key ?? clientKeys.private,
      readyTimeout: 10_000,
      // Pinned: never trust on first use.
      hostVerifier: (key: Buffer) =>
        'SHA256:' + createHash('sha256').update(key).digest('base64').replace(/=+$/, '') ===
        (opts.hostKey ?? s.hostKey),
      sock,
    });
  });
}

/** Run one command; rejects when the connection is lost before an exit status. */
function exec(c: Client, command: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    c.exec(command, (err, stream) => {
      if (err) return reject(err);
      let stdout = '';
      let stderr = '';
      let code: number | null = null;
      stream.on('data', (d: Buffer) => {
        stdout += d.toString();
      });
      stream.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      stream.on('exit', (c2: number | null) => {
        code = c2;
      });
      stream.on('close', () =>
        code === null ? reject(new Error('connection lost before exit status')) : resolve({ code, stdout, stderr }),
      );
    });
  });
}

async function run(s: SimServer, command: string): Promise<Run> {
  const c = await connect(s);
  try {
    return await exec(c, command);
  } finally {
    c.end();
  }
}

function upload(c: Client, remote: string, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    c.sftp((err, sftp) => {
      if (err) return reject(err);
      sftp.writeFile(remote, data, (e) => {
        sftp.end();
        if (e) reject(e);
        else resolve();
      });
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const DIR = '/var/lib/sshmgr';

/** Upload, chown, chmod and register a hotfix file the way the orchestrator does. */
async function register(s: SimServer, fileName: string, bytes: Buffer, sudo = ''): Promise<Run> {
  const c = await connect(s);
  try {
    const p = `${DIR}/${fileName}`;
    await upload(c, p, bytes);
    assert.equal((await exec(c, `${sudo}chown sshmgr:sshmgr ${shellQuote(p)}`)).code, 0);
    assert.equal((await exec(c, `${sudo}chmod 0750 ${shellQuote(p)}`)).code, 0);
    return await exec(c, `${sudo}ssh-mgr-controller --upload-hotfix=${shellQuote(p)}`);
  } finally {
    c.end();
  }
}

describe('Key Manager simulator', function () {
  this.timeout(60_000);
  let fleet: SimFleet;
  let sql: Sql;
  let dir: string;
  let keyFile: string;
  let backendFix: { fileName: string; bytes: Buffer };

  before(async () => {
    const url = await freshDatabase('sim');
    sql = sqlFor(url);
    dir = await scratchDir('sim');
    keyFile = path.join(dir, 'id_ed25519');
    await fs.writeFile(keyFile, clientKeys.private, { mode: 0o600 });
    fleet = await startSimFleet({
      frontends: 2,
      backends: 3,
      both: 1,
      kmDatabaseUrl: url,
      authorizedKey: clientKeys.public,
      restartMs: 300,
      sudoServers: ['km-be-3'],
      controlPort: 0,
    });
    backendFix = await makeHotfix({
      component: 'backend',
      version: '3.0.0',
      description: 'fix_queue_stall',
      issueId: 'UKM-2001',
    });
  });
  after(async () => {
    await fleet?.stop();
  });
  afterEach(() => {
    for (const s of fleet.servers) s.clearFaults();
  });

  describe('fleet and Key Manager database', () => {
    it('registers every server in km_server with its role and distinct Maximum Processes', async () => {
      const rows = await sql<
        { name: string; role: string; max_processes: number }[]
      >`SELECT name, role, max_processes FROM km_server ORDER BY name`;
      assert.deepEqual(
        rows.map((r) => [r.name, r.role]),
        [
          ['km-be-1', 'backend'],
          ['km-be-2', 'backend'],
          ['km-be-3', 'backend'],
          ['km-both-1', 'both'],
          ['km-fe-1', 'frontend'],
          ['km-fe-2', 'frontend'],
        ],
      );
      const backendMax = rows.filter((r) => r.role !== 'frontend').map((r) => r.max_processes);
      assert.equal(new Set(backendMax).size, backendMax.length, `distinct: ${backendMax}`);
      assert.deepEqual(
        rows.filter((r) => r.role === 'backend').map((r) => r.max_processes),
        [4, 5, 6],
      );
    });

    it('gives an inventory with pinned host keys that the inventory parser accepts', () => {
      const inv = fleet.inventory();
      assert.deepEqual(
        inv.map((s) => s.name),
        ['km-fe-1', 'km-fe-2', 'km-be-1', 'km-be-2', 'km-be-3', 'km-both-1'],
      );
      const parsed = parseInventory(JSON.stringify({ servers: inv }));
      assert.equal(parsed.find((s) => s.name === 'km-be-3')?.user, 'kmadmin');
      assert.equal(parsed.find((s) => s.name === 'km-be-3')?.sudo, true);
      assert.equal(new Set(inv.map((s) => s.hostKey)).size, inv.length, 'each server has its own host key');
      assert.equal(new Set(inv.map((s) => s.port)).size, inv.length);
    });

    it('host key fingerprints are exactly what ssh-keygen -lf prints', async () => {
      const s = fleet.server('km-fe-1');
      const f = path.join(dir, 'kh-fp');
      await fs.writeFile(f, s.knownHostsLine + '\n');
      const out = (await runChild('ssh-keygen', ['-lf', f])).stdout;
      assert.match(
        out,
        new RegExp(`^256 ${s.hostKey.replace(/[+/]/g, '\\$&')} \\[127\\.0\\.0\\.1\\]:${s.port} \\(ED25519\\)`),
      );
    });
  });

  describe('SSH', () => {
    it('refuses a client that pins another host key', async () => {
      await assert.rejects(
        connect(fleet.server('km-fe-1'), { hostKey: fleet.server('km-fe-2').hostKey }),
        /verification failed/i,
      );
    });

    it('refuses an unknown key, and the wrong user', async () => {
      await assert.rejects(
        connect(fleet.server('km-fe-1'), { key: otherKeys.private }),
        /authentication methods failed/,
      );
      await assert.rejects(connect(fleet.server('km-be-3'), { user: 'root' }), /authentication methods failed/);
    });
  });

  describe('commands', () => {
    it('mkdir -p, SFTP upload, chown, chmod (octal and u+x), stat, sha256sum, test -f', async () => {
      const s = fleet.server('km-fe-2');
      const c = await connect(s);
      try {
        assert.equal((await exec(c, "mkdir -p '/var/lib/sshmgr/in coming/x'")).code, 0);
        assert.equal((await exec(c, "mkdir '/var/lib/sshmgr/in coming'")).code, 1);
        const data = Buffer.from('hello world\n');
        const p = '/var/lib/sshmgr/in coming/x/f.gz';
        await upload(c, p, data);
        assert.deepEqual(await exec(c, `stat -c '%U:%G %a %s' ${shellQuote(p)}`), {
          code: 0,
          stdout: 'root:root 644 12\n',
          stderr: '',
        });
        assert.equal((await exec(c, `chown sshmgr:sshmgr ${shellQuote(p)}`)).code, 0);
        assert.equal((await exec(c, `chmod 0750 ${shellQuote(p)}`)).code, 0);
        assert.equal(
          (await exec(c, `stat -c '%U:%G %a %A' ${shellQuote(p)}`)).stdout,
          'sshmgr:sshmgr 750 -rwxr-x---\n',
        );
        assert.equal((await exec(c, `chmod 0640 ${shellQuote(p)}`)).code, 0);
        assert.equal((await exec(c, `chmod u+x,o+r ${shellQuote(p)}`)).code, 0);
        assert.equal((await exec(c, `stat -c %a ${shellQuote(p)}`)).stdout, '744\n');
        assert.deepEqual(await exec(c, `sha256sum ${shellQuote(p)}`), {
          code: 0,
          stdout: `${createHash('sha256').update(data).digest('hex')}  ${p}\n`,
          stderr: '',
        });
        assert.equal((await exec(c, `test -f ${shellQuote(p)}`)).code, 0);
        assert.equal((await exec(c, "test -f '/var/lib/sshmgr/nope.gz'")).code, 1);
        assert.equal((await exec(c, "test -d '/var/lib/sshmgr'")).code, 0);
        const missing = await exec(c, "chown sshmgr:sshmgr '/var/lib/sshmgr/nope.gz'");
        assert.equal(missing.code, 1);
        assert.match(missing.stderr, /cannot access '\/var\/lib\/sshmgr\/nope.gz': No such file or directory/);
        assert.equal((await exec(c, "chmod 'a+q' '/var/lib/sshmgr'")).code, 1);
        assert.deepEqual(
          s.file(p) && { owner: s.file(p)!.owner, mode: s.file(p)!.mode, content: s.file(p)!.content.toString() },
          { owner: 'sshmgr', mode: 0o744, content: 'hello world\n' },
        );
      } finally {
        c.end();
      }
    });

    it('an unknown command exits 127 with sh: 1: <cmd>: not found', async () => {
      assert.deepEqual(await run(fleet.server('km-fe-1'), "reboot '-f'"), {
        code: 127,
        stdout: '',
        stderr: 'sh: 1: reboot: not found\n',
      });
    });

    it('no argument is ever interpreted by a shell: metacharacters are refused, quoted ones are literal', async () => {
      const s = fleet.server('km-fe-1');
      for (const line of [
        'test -f /x; reboot',
        'echo a | reboot',
        'echo $(reboot)',
        'echo `reboot`',
        'echo a > /etc/passwd',
        'echo a && reboot',
        'echo "$HOME"',
      ]) {
        const r = await run(s, line);
        assert.equal(r.code, 2, line);
        assert.match(r.stderr, /^sh: 1: Syntax error/, line);
      }
      const evil = "/var/lib/sshmgr/x'; reboot; echo '$(id)";
      const r = await run(s, `chown sshmgr:sshmgr ${shellQuote(evil)}`);
      assert.equal(r.code, 1);
      assert.equal(r.stderr, `chown: cannot access '${evil}': No such file or directory\n`);
      assert.equal((await run(s, `echo "a b" 'c'\\ d`)).stdout, 'a b c d\n');
    });

    it('sudo: true servers need sudo -n for chown, ssh-mgr-controller and supervisorctl', async () => {
      const s = fleet.server('km-be-3');
      assert.equal(s.user, 'kmadmin');
      const c = await connect(s);
      try {
        const p = `${DIR}/sudo-test.gz`;
        await upload(c, p, Buffer.from('x'));
        const chown = await exec(c, `chown sshmgr:sshmgr ${p}`);
        assert.equal(chown.code, 1);
        assert.match(chown.stderr, /Operation not permitted/);
        const noN = await exec(c, `sudo chown sshmgr:sshmgr ${p}`);
        assert.equal(noN.code, 1);
        assert.match(noN.stderr, /a terminal is required/);
        const ctl = await exec(c, 'ssh-mgr-controller --apply-hotfix=hotfix_backend_x');
        assert.equal(ctl.code, 1);
        assert.match(ctl.stderr, /Permission denied/);
        const sup = await exec(c, 'supervisorctl status');
        assert.equal(sup.code, 1);
        assert.match(sup.stderr, /Permission denied/);
        assert.equal((await exec(c, `sudo -n chown sshmgr:sshmgr ${p}`)).code, 0);
        assert.equal(s.file(p)?.owner, 'sshmgr');
        assert.equal((await exec(c, 'sudo -n supervisorctl status')).code, 0);
        // After the chown the login user no longer owns it: chmod needs sudo too, like on a real box.
        assert.equal((await exec(c, `chmod u+x ${p}`)).code, 1);
        assert.equal((await exec(c, `sudo -n chmod u+x ${p}`)).code, 0);
      } finally {
        c.end();
      }
    });
  });

  describe('ssh-mgr-controller', () => {
    it('--upload-hotfix names what is wrong with the file', async () => {
      const s = fleet.server('km-fe-1');
      const c = await connect(s);
      try {
        const p = `${DIR}/${backendFix.fileName}`;
        const missing = await exec(c, `ssh-mgr-controller --upload-hotfix=${p}`);
        assert.equal(missing.code, 1);
        assert.match(missing.stderr, /does not exist/);
        await upload(c, p, backendFix.bytes);
        const owner = await exec(c, `ssh-mgr-controller --upload-hotfix=${p}`);
        assert.equal(owner.code, 1);
        assert.match(owner.stderr, /owned by root, not by sshmgr/);
        await exec(c, `chown sshmgr:sshmgr ${p}`);
        const notExec = await exec(c, `ssh-mgr-controller --upload-hotfix=${p}`);
        assert.equal(notExec.code, 1);
        assert.match(notExec.stderr, /not executable by sshmgr \(mode 0644\)/);
        const bad = `${DIR}/sshmgr-3.0.0-hotfix_database_x_UKM-1.gz`;
        await upload(c, bad, backendFix.bytes);
        await exec(c, `chown sshmgr:sshmgr ${bad}`);
        await exec(c, `chmod u+x ${bad}`);
        const badName = await exec(c, `ssh-mgr-controller --upload-hotfix=${bad}`);
        assert.equal(badName.code, 1);
        assert.match(badName.stderr, /component 'database' must be frontend, backend or common/);
        const junk = `${DIR}/sshmgr-3.0.0-hotfix_common_junk_UKM-9.gz`;
        await upload(c, junk, Buffer.from('not gzip'));
        await exec(c, `chown sshmgr:sshmgr ${junk}`);
        await exec(c, `chmod 755 ${junk}`);
        const notGz = await exec(c, `ssh-mgr-controller --upload-hotfix=${junk}`);
        assert.equal(notGz.code, 1);
        assert.match(notGz.stderr, /not a valid hotfix archive/);
        assert.equal((await sql`SELECT 1 FROM km_hotfix`).length, 0, 'nothing registered');
      } finally {
        c.end();
      }
    });

    it('registers a hotfix once; same bytes again is fine, other bytes under the same Name are refused', async () => {
      const s = fleet.server('km-fe-1');
      const first = await register(s, backendFix.fileName, backendFix.bytes);
      assert.equal(first.code, 0, first.stderr);
      const sha = createHash('sha256').update(backendFix.bytes).digest('hex');
      const rows =
        await sql`SELECT name, file_name, version, sha256 FROM km_hotfix WHERE name = 'hotfix_backend_fix_queue_stall'`;
      assert.deepEqual(
        [...rows],
        [{ name: 'hotfix_backend_fix_queue_stall', file_name: backendFix.fileName, version: '3.0.0', sha256: sha }],
      );
      assert.equal(
        (await register(fleet.server('km-fe-2'), backendFix.fileName, backendFix.bytes)).code,
        0,
        'idempotent from another server',
      );
      const other = await makeHotfix({
        component: 'backend',
        version: '3.0.0',
        description: 'fix_queue_stall',
        issueId: 'UKM-2001',
        files: ['/opt/sshmgr/other.pyc'],
      });
      const conflict = await register(s, other.fileName, other.bytes);
      assert.equal(conflict.code, 1);
      assert.match(conflict.stderr, /already registered with different contents/);
      assert.equal(
        (await sql`SELECT sha256 FROM km_hotfix WHERE name = 'hotfix_backend_fix_queue_stall'`)[0].sha256,
        sha,
      );
    });

    it('--apply-hotfix: unknown hotfix, apply (twice is harmless), unapply', async () => {
      const s = fleet.server('km-be-1');
      const unknown = await run(s, "ssh-mgr-controller --apply-hotfix='hotfix_backend_nope'");
      assert.equal(unknown.code, 1);
      assert.match(unknown.stderr, /^Exception: Hotfix hotfix_backend_nope not found/);
      const applied = async () =>
        (
          await sql`SELECT server_name FROM km_hotfix_applied WHERE hotfix_name = 'hotfix_backend_fix_queue_stall' ORDER BY 1`
        ).map((r) => r.server_name as string);
      assert.equal((await run(s, "ssh-mgr-controller --apply-hotfix='hotfix_backend_fix_queue_stall'")).code, 0);
      assert.deepEqual(await applied(), ['km-be-1']);
      const again = await run(s, "ssh-mgr-controller --apply-hotfix='hotfix_backend_fix_queue_stall'");
      assert.equal(again.code, 0);
      assert.match(again.stdout, /already applied/);
      assert.deepEqual(await applied(), ['km-be-1']);
      assert.equal((await run(s, "ssh-mgr-controller --unapply-hotfix='hotfix_backend_fix_queue_stall'")).code, 0);
      assert.deepEqual(await applied(), []);
      assert.equal(
        (await run(s, "ssh-mgr-controller --unapply-hotfix='hotfix_backend_fix_queue_stall'")).code,
        0,
        'unapply of nothing is harmless',
      );
      assert.deepEqual(
        s.log().map((e) => e.exitCode),
        [1, 0, 0, 0, 0],
      );
    });

    it('--apply-hotfix on another Key Manager version fails with the exact checksum message', async () => {
      const s = fleet.server('km-be-2');
      s.fault({ kmVersion: '3.0.1' });
      const r = await run(s, "ssh-mgr-controller --apply-hotfix='hotfix_backend_fix_queue_stall'");
      const f =
        backendFix.bytes &&
        (await makeHotfix({ component: 'backend', version: '3.0.1', description: 'y', issueId: 'X-1' })).manifest
          .files[0];
      assert.equal(r.code, 1);
      assert.equal(
        r.stderr,
        `Exception: File /opt/sshmgr/api/v2/operations.pyc's SHA checksum on disk ${f.expectedOnDisk} does not match what we expected to override: ${(await makeHotfix({ component: 'backend', version: '3.0.0', description: 'fix_queue_stall', issueId: 'UKM-2001' })).manifest.files[0].expectedOnDisk}\n`,
      );
      assert.match(r.stderr, /on disk [0-9a-f]{40} does not match what we expected to override: [0-9a-f]{40}\n$/);
      assert.equal((await sql`SELECT 1 FROM km_hotfix_applied WHERE server_name = 'km-be-2'`).length, 0);
    });
  });

  describe('supervisorctl', () => {
    it('status in supervisor format; restart all: STOPPED, then RUNNING after restartMs', async () => {
      const s = fleet.server('km-both-1');
      const st = await run(s, 'supervisorctl status');
      assert.equal(st.code, 0);
      const lines = st.stdout.trimEnd().split('\n');
      assert.deepEqual(
        lines.map((l) => l.split(/\s+/)[0]),
        ['nginx', 'sshmgr-api', 'sshmgr-backend', 'sshmgr-frontend'],
      );
      for (const l of lines) assert.match(l, /^\S+\s+RUNNING   pid \d+, uptime \d+:\d\d:\d\d$/);
      assert.equal(lines[0].indexOf('RUNNING'), 33, 'name column is 32 wide, as supervisor prints it');

      const started = Date.now();
      const restarting = run(s, 'supervisorctl restart all');
      await sleep(100);
      const during = await run(s, 'supervisorctl status');
      assert.equal(during.code, 3);
      assert.match(during.stdout, /sshmgr-backend\s+STOPPED/);
      const r = await restarting;
      assert.ok(Date.now() - started >= 300, 'restart waits until programs are up');
      assert.equal(r.code, 0);
      assert.match(r.stdout, /sshmgr-backend: stopped\n[\s\S]*sshmgr-backend: started\n/);
      assert.equal((await run(s, 'supervisorctl status')).code, 0);
      assert.deepEqual(
        fleet
          .server('km-fe-1')
          .services()
          .map((x) => x.name),
        ['nginx', 'sshmgr-api', 'sshmgr-frontend'],
      );
      assert.deepEqual(
        fleet
          .server('km-be-1')
          .services()
          .map((x) => x.name),
        ['sshmgr-api', 'sshmgr-backend'],
      );
    });
  });

  describe('faults', () => {
    it('failApplies / failUnapplies: the next N fail (transient), then it works', async () => {
      const s = fleet.server('km-be-1');
      s.fault({ failApplies: 2, failUnapplies: 1 });
      const cmd = "ssh-mgr-controller --apply-hotfix='hotfix_backend_fix_queue_stall'";
      for (let i = 0; i < 2; i++) {
        const r = await run(s, cmd);
        assert.equal(r.code, 1);
        assert.match(r.stderr, /try again/);
      }
      assert.equal((await sql`SELECT 1 FROM km_hotfix_applied WHERE server_name = 'km-be-1'`).length, 0);
      assert.equal((await run(s, cmd)).code, 0);
      assert.equal((await run(s, "ssh-mgr-controller --unapply-hotfix='hotfix_backend_fix_queue_stall'")).code, 1);
      assert.equal((await run(s, "ssh-mgr-controller --unapply-hotfix='hotfix_backend_fix_queue_stall'")).code, 0);
      assert.equal((await sql`SELECT 1 FROM km_hotfix_applied WHERE server_name = 'km-be-1'`).length, 0);
      assert.deepEqual(s.pendingFaults(), {});
    });

    it('dropConnection: the client loses the connection, but the apply DID take effect', async () => {
      const s = fleet.server('km-be-2');
      s.clearLog();
      s.fault({ dropConnection: 1 });
      await assert.rejects(run(s, "ssh-mgr-controller --apply-hotfix='hotfix_backend_fix_queue_stall'"));
      assert.equal((await sql`SELECT 1 FROM km_hotfix_applied WHERE server_name = 'km-be-2'`).length, 1);
      const [entry] = s.log();
      assert.equal(entry.dropped, true);
      assert.equal(entry.exitCode, 0);
      // The retry is harmless.
      const retry = await run(s, "ssh-mgr-controller --apply-hotfix='hotfix_backend_fix_queue_stall'");
      assert.equal(retry.code, 0);
      assert.equal((await sql`SELECT count(*)::int AS n FROM km_hotfix_applied WHERE server_name = 'km-be-2'`)[0].n, 1);
      s.fault({ dropConnection: 1, dropOn: 'restart' });
      assert.equal((await run(s, 'supervisorctl status')).code, 0, 'other commands are not dropped');
      await assert.rejects(run(s, 'supervisorctl restart all'));
      await run(s, "ssh-mgr-controller --unapply-hotfix='hotfix_backend_fix_queue_stall'");
    });

    it('hangMs: the next matching command hangs; if the client gives up, it never runs', async () => {
      const s = fleet.server('km-be-1');
      s.fault({ hangMs: 400, hangOn: 'status' });
      let t = Date.now();
      assert.equal((await run(s, 'supervisorctl status')).code, 0);
      assert.ok(Date.now() - t >= 400, `hung ${Date.now() - t} ms`);
      t = Date.now();
      await run(s, 'supervisorctl status');
      assert.ok(Date.now() - t < 400, 'only once');

      s.fault({ hangMs: 500, hangOn: 'apply' });
      const c = await connect(s);
      const pending = exec(c, "ssh-mgr-controller --apply-hotfix='hotfix_backend_fix_queue_stall'").catch(
        (e: Error) => e,
      );
      await sleep(100);
      c.end(); // the client's timeout
      assert.ok((await pending) instanceof Error);
      await sleep(600);
      assert.equal((await sql`SELECT 1 FROM km_hotfix_applied WHERE server_name = 'km-be-1'`).length, 0);
      assert.equal(s.log().at(-1)?.exitCode, 129);
    });

    it('fatalService: restart leaves it FATAL (restart exits 1, status exits 3) until cleared', async () => {
      const s = fleet.server('km-be-2');
      s.fault({ fatalService: 'sshmgr-backend', restartMs: 50 });
      const r = await run(s, 'supervisorctl restart all');
      assert.equal(r.code, 1);
      assert.match(r.stdout, /sshmgr-backend: ERROR \(spawn error\)/);
      const st = await run(s, 'supervisorctl status');
      assert.equal(st.code, 3);
      assert.match(st.stdout, /^sshmgr-backend\s+FATAL\s+Exited too quickly/m);
      assert.match(st.stdout, /^sshmgr-api\s+RUNNING/m);
      s.clearFaults();
      assert.equal((await run(s, 'supervisorctl status')).code, 0);
    });

    it('refuseMs: connections are refused for a while, then accepted; open connections stay', async () => {
      const s = fleet.server('km-fe-2');
      const open = await connect(s);
      s.fault({ refuseMs: 600 });
      await assert.rejects(connect(s), /ECONNREFUSED/);
      assert.equal((await exec(open, 'true')).code, 0);
      open.end();
      await sleep(800);
      assert.equal((await run(s, 'true')).code, 0);
    });

    it('applyMs and restartMs latencies', async () => {
      const s = fleet.server('km-be-1');
      s.fault({ applyMs: 500, restartMs: 700 });
      let t = Date.now();
      assert.equal((await run(s, "ssh-mgr-controller --apply-hotfix='hotfix_backend_fix_queue_stall'")).code, 0);
      assert.ok(Date.now() - t >= 500);
      t = Date.now();
      await run(s, 'supervisorctl restart all');
      assert.ok(Date.now() - t >= 700);
      await run(s, "ssh-mgr-controller --unapply-hotfix='hotfix_backend_fix_queue_stall'");
    });
  });

  describe('control API', () => {
    it('lists servers, adds and clears faults, serves logs; bad input is refused', async () => {
      const base = fleet.controlUrl!;
      const list = (await (await fetch(`${base}/servers`)).json()) as { servers: { name: string; hostKey: string }[] };
      assert.equal(list.servers.length, 6);
      assert.equal(list.servers[0].hostKey, fleet.servers[0].hostKey);
      const s = fleet.server('km-fe-1');
      const res = await fetch(`${base}/servers/km-fe-1/faults`, {
        method: 'POST',
        body: JSON.stringify({ failApplies: 1 }),
      });
      assert.equal(res.status, 200);
      assert.deepEqual(s.pendingFaults(), { failApplies: 1 });
      assert.equal((await run(s, "ssh-mgr-controller --apply-hotfix='hotfix_backend_fix_queue_stall'")).code, 1);
      const log = (await (await fetch(`${base}/servers/km-fe-1/log`)).json()) as {
        log: { command: string; exitCode: number }[];
      };
      assert.deepEqual(log.log.at(-1), { ...s.log().at(-1) });
      assert.equal(
        (await fetch(`${base}/servers/km-fe-1/faults`, { method: 'POST', body: '{"failApplies": -1}' })).status,
        400,
      );
      assert.equal(
        (await fetch(`${base}/servers/km-fe-1/faults`, { method: 'POST', body: '{"explode": 1}' })).status,
        400,
      );
      assert.equal((await fetch(`${base}/servers/nope/faults`, { method: 'POST', body: '{}' })).status, 404);
      s.fault({ failApplies: 3 });
      assert.equal((await fetch(`${base}/servers/km-fe-1/faults`, { method: 'DELETE' })).status, 200);
      assert.deepEqual(s.pendingFaults(), {});
      const direct = (await (await fetch(s.url)).json()) as { name: string; services: unknown[] };
      assert.equal(direct.name, 'km-fe-1');
    });
  });

  describe('OpenSSH clients (strict host key checking)', () => {
    const opts = (known: string) => [
      '-o',
      'StrictHostKeyChecking=yes',
      '-o',
      `UserKnownHostsFile=${known}`,
      '-o',
      'BatchMode=yes',
      '-o',
      'ConnectTimeout=10',
      '-o',
      'GlobalKnownHostsFile=/dev/null',
      '-i',
      keyFile,
    ];

    it('ssh runs supervisorctl status and passes its exit code through', async () => {
      const s = fleet.server('km-fe-1');
      const known = path.join(dir, 'known_hosts');
      await fs.writeFile(known, fleet.servers.map((x) => x.knownHostsLine).join('\n') + '\n');
      const r = await runChild('ssh', [
        ...opts(known),
        '-p',
        String(s.port),
        `${s.user}@${s.host}`,
        'supervisorctl status',
      ]);
      assert.match(r.stdout, /^sshmgr-frontend\s+RUNNING\s+pid \d+/m);
      const fail = await runChild('ssh', [
        ...opts(known),
        '-p',
        String(s.port),
        `${s.user}@${s.host}`,
        'nosuchcmd',
      ]).catch((e: { result: { code: number; stderr: string } }) => e.result);
      assert.equal(fail.code, 127);
      assert.match(fail.stderr, /sh: 1: nosuchcmd: not found/);
    });

    it('ssh refuses a server whose host key is not the pinned one', async () => {
      const s = fleet.server('km-fe-1');
      const known = path.join(dir, 'known_hosts_wrong');
      // km-fe-2's key under km-fe-1's address.
      await fs.writeFile(
        known,
        `[${s.host}]:${s.port} ${fleet.server('km-fe-2').knownHostsLine.split(' ').slice(1).join(' ')}\n`,
      );
      const r = await runChild('ssh', [...opts(known), '-p', String(s.port), `${s.user}@${s.host}`, 'true']).catch(
        (e: { result: { code: number; stderr: string } }) => e.result,
      );
      assert.equal(r.code, 255);
      assert.match(r.stderr, /HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);
    });

    it('sftp -b uploads a file that the controller then registers', async () => {
      const s = fleet.server('km-fe-2');
      const known = path.join(dir, 'known_hosts');
      await fs.writeFile(known, fleet.servers.map((x) => x.knownHostsLine).join('\n') + '\n');
      const fix = await makeHotfix({
        component: 'frontend',
        version: '3.0.0',
        description: 'fix_login_page',
        issueId: 'UKM-77',
        outDir: dir,
      });
      const batch = path.join(dir, 'batch');
      await fs.writeFile(
        batch,
        `put ${fix.path} ${DIR}/${fix.fileName}\nchmod 750 ${DIR}/${fix.fileName}\nls -l ${DIR}\n`,
      );
      const r = await runChild('sftp', [...opts(known), '-P', String(s.port), '-b', batch, `${s.user}@${s.host}`]);
      assert.match(r.stdout, new RegExp(fix.fileName.replace(/\./g, '\\.')));
      assert.deepEqual(s.file(`${DIR}/${fix.fileName}`)?.content, fix.bytes);
      assert.equal(s.file(`${DIR}/${fix.fileName}`)?.mode, 0o750);
      assert.ok(
        s
          .log()
          .some((e) => e.channel === 'sftp' && e.command === `sftp:write ${DIR}/${fix.fileName}` && e.exitCode === 0),
      );
      await runChild('ssh', [
        ...opts(known),
        '-p',
        String(s.port),
        `${s.user}@${s.host}`,
        `chown sshmgr:sshmgr ${shellQuote(`${DIR}/${fix.fileName}`)}`,
      ]);
      const reg = await runChild('ssh', [
        ...opts(known),
        '-p',
        String(s.port),
        `${s.user}@${s.host}`,
        `ssh-mgr-controller --upload-hotfix=${shellQuote(`${DIR}/${fix.fileName}`)}`,
      ]);
      assert.match(reg.stdout, /hotfix_frontend_fix_login_page/);
      assert.equal((await sql`SELECT 1 FROM km_hotfix WHERE name = 'hotfix_frontend_fix_login_page'`).length, 1);
    });
  });

  describe('km-hotfix sim', () => {
    async function cli(args: string[]): Promise<string> {
      const program = new Command('km-hotfix').exitOverride();
      registerSim(program);
      const lines: string[] = [];
      const orig = console.log;
      console.log = (...a: unknown[]) => {
        lines.push(a.join(' '));
      };
      try {
        await program.parseAsync(['node', 'km-hotfix', ...args]);
      } finally {
        console.log = orig;
      }
      return lines.join('\n');
    }

    it('make-hotfix writes a file the simulator registers', async () => {
      const out = await cli([
        'sim',
        'make-hotfix',
        '--component',
        'common',
        '--version',
        '3.0.0',
        '--description',
        'fix_tags_and_stats',
        '--issue',
        'UKM-1291',
        '--out',
        dir,
      ]);
      assert.equal(out, path.join(dir, 'sshmgr-3.0.0-hotfix_common_fix_tags_and_stats_UKM-1291.gz'));
      const r = await register(fleet.server('km-be-3'), path.basename(out), await fs.readFile(out), 'sudo -n ');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(
        (await sql`SELECT version FROM km_hotfix WHERE name = 'hotfix_common_fix_tags_and_stats'`)[0]?.version,
        '3.0.0',
      );
      await assert.rejects(
        cli([
          'sim',
          'make-hotfix',
          '--component',
          'db',
          '--version',
          '3.0.0',
          '--description',
          'x',
          '--issue',
          'UKM-1',
        ]),
        CliError,
      );
      await assert.rejects(
        cli([
          'sim',
          'make-hotfix',
          '--component',
          'common',
          '--version',
          'three',
          '--description',
          'x',
          '--issue',
          'UKM-1',
        ]),
        (e: unknown) => e instanceof CliError && /not a version/.test(e.message),
      );
    });

    it('fault and log talk to a running simulator; unreachable is exit 3', async () => {
      const out = await cli([
        'sim',
        'fault',
        'km-fe-1',
        '--control',
        fleet.controlUrl!,
        '--fail-applies',
        '2',
        '--hang-ms',
        '10',
      ]);
      assert.match(out, /^km-fe-1: .*"failApplies":2/);
      assert.equal(fleet.server('km-fe-1').pendingFaults().failApplies, 2);
      await cli(['sim', 'fault', 'km-fe-1', '--control', fleet.controlUrl!, '--clear']);
      assert.deepEqual(fleet.server('km-fe-1').pendingFaults(), {});
      const log = JSON.parse(await cli(['sim', 'log', 'km-fe-1', '--control', fleet.controlUrl!, '--json'])) as {
        log: unknown[];
      };
      assert.equal(log.log.length, fleet.server('km-fe-1').log().length);
      await assert.rejects(
        cli(['sim', 'fault', 'nope', '--control', fleet.controlUrl!, '--fail-applies', '1']),
        (e: unknown) => e instanceof CliError && e.exitCode === 2 && /no server 'nope'/.test(e.message),
      );
      await assert.rejects(
        cli(['sim', 'log', 'km-fe-1', '--control', 'http://127.0.0.1:1']),
        (e: unknown) => e instanceof CliError && e.exitCode === 3,
      );
      await assert.rejects(
        cli(['sim', 'fault', 'km-fe-1', '--control', fleet.controlUrl!, '--fail-applies', 'x']),
        (e: unknown) => e instanceof CliError && e.exitCode === 2,
      );
    });

    it('run starts a fleet, writes its inventory and prints the control URL', async () => {
      const url = await freshDatabase('simrun');
      const pub = path.join(dir, 'id.pub');
      await fs.writeFile(pub, clientKeys.public + '\n');
      const inv = path.join(dir, 'inventory.yaml');
      let stop!: () => void;
      const until = new Promise<void>((r) => {
        stop = r;
      });
      const lines: string[] = [];
      let readyResolve!: () => void;
      const ready = new Promise<void>((r) => {
        readyResolve = r;
      });
      const running = simRun(
        { frontends: 1, backends: 2, kmDatabaseUrl: url, authorizedKey: pub, inventoryOut: inv },
        until,
        (l) => {
          lines.push(l);
          if (l === 'ready') readyResolve();
        },
      );
      await Promise.race([ready, running]);
      const servers = parseInventory(await fs.readFile(inv, 'utf8'));
      assert.deepEqual(
        servers.map((s) => s.name),
        ['km-fe-1', 'km-be-1', 'km-be-2'],
      );
      const control = lines.find((l) => l.startsWith('export KM_SIM_CONTROL='))!.split('=')[1];
      const list = (await (await fetch(`${control}/servers`)).json()) as { servers: { port: number }[] };
      assert.equal(list.servers[1].port, servers[1].port);
      stop();
      await running;
      await assert.rejects(fetch(`${control}/servers`));
      await assert.rejects(
        simRun(
          { frontends: 1, backends: 0, kmDatabaseUrl: 'postgres://u:p@127.0.0.1:1/x', authorizedKey: pub },
          Promise.resolve(),
        ),
        (e: unknown) => e instanceof CliError && e.exitCode === 3,
      );
      await assert.rejects(
        simRun(
          { frontends: 1, backends: 0, kmDatabaseUrl: url, authorizedKey: path.join(dir, 'missing.pub') },
          Promise.resolve(),
        ),
        (e: unknown) => e instanceof CliError && e.exitCode === 2,
      );
    });
  });

  describe('evidence', () =>
    it('the command log is ordered, timestamped and has exit codes', () => {
      const log = fleet.server('km-fe-1').log();
      assert.ok(log.length > 5);
      for (let i = 1; i < log.length; i++)
        assert.ok(Date.parse(log[i].at) + (log[i].durationMs ?? 0) >= Date.parse(log[i - 1].at), 'completion order');
      assert.ok(log.every((e) => Number.isInteger(e.exitCode) && !Number.isNaN(Date.parse(e.at))));
      assert.ok(log.some((e) => e.command === "reboot '-f'" && e.exitCode === 127));
      assert.ok(
        log.some((e) => e.channel === 'exec' && e.command === 'echo a | reboot' && e.exitCode === 2),
        'syntax errors are logged with exit 2',
      );
    }));
});
