// The orchestrator's SSH client against a real OpenSSH sshd with fake Key
// Manager commands: one full patch and unpatch of that server, and the two
// refusals that must happen before any command runs.
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { SshPool } from '../keymanager/ssh';
import { KeyManagerSsh } from '../keymanager/key-manager-ssh';
import { KmError } from '../keymanager/errors';
import { requireSshd, startSshd, TestSshd } from './helpers/sshd';

const FILE = 'sshmgr-3.0.0-hotfix_common_fix_tags_and_stats_UKM-1291.gz';
const NAME = 'hotfix_common_fix_tags_and_stats';

describe('OpenSSH sshd: patch and unpatch one server', function () {
  this.timeout(60_000);
  let sshd: TestSshd;
  let pool: SshPool;
  let km: KeyManagerSsh;
  let hotfixDir: string;

  before(async function () {
    await requireSshd(this);
    sshd = await startSshd('openssh');
    hotfixDir = path.join(sshd.dir, 'var-lib-sshmgr');
    pool = new SshPool({ privateKey: sshd.clientKey });
    km = new KeyManagerSsh(pool, { hotfixDir });
  });

  after(async () => {
    await pool?.close();
    await sshd?.stop();
  });

  it('uploads, registers, applies, restarts, checks status, unapplies and restarts', async () => {
    const t = sshd.target();
    const content = Buffer.from(`#!/bin/sh\n# hotfix payload ${Date.now()}\n`);

    const remote = await km.uploadHotfixFile(t, FILE, content);
    assert.equal(remote, path.join(hotfixDir, FILE));
    assert.deepEqual(await fs.readFile(remote), content, 'the bytes arrived unchanged over SFTP');
    const st = await fs.stat(remote);
    assert.equal(st.mode & 0o777, 0o750);

    await km.registerHotfix(t, remote);
    // The fake checked ownership (sshmgr:sshmgr) and the owner's execute bit before registering.
    const registered = (await sshd.read(`registered/${NAME}`)).trim().split(' ');
    assert.deepEqual(registered, [remote, createHash('sha256').update(content).digest('hex'), '750']);

    await km.applyHotfix(t, NAME);
    assert.equal(await sshd.exists(`applied/${NAME}`), true);
    await km.restartServices(t);
    assert.equal((await sshd.read('restarts')).trim(), '1');
    const status = await km.servicesStatus(t);
    assert.deepEqual(
      status.map((s) => [s.name, s.state]),
      [
        ['km-api', 'RUNNING'],
        ['km-worker', 'RUNNING'],
        ['km-scheduler', 'RUNNING'],
      ],
    );
    assert.match(status[0].detail, /^pid \d+, uptime 0:01:\d\d$/);

    await km.unapplyHotfix(t, NAME);
    assert.equal(await sshd.exists(`applied/${NAME}`), false);
    await km.restartServices(t);
    assert.equal((await sshd.read('restarts')).trim(), '2');

    assert.deepEqual((await sshd.read('controller.log')).trim().split('\n'), [
      `--upload-hotfix=${remote}`,
      `--apply-hotfix=${NAME}`,
      `--unapply-hotfix=${NAME}`,
    ]);
    assert.deepEqual((await sshd.read('supervisorctl.log')).trim().split('\n'), [
      'restart all',
      'status',
      'restart all',
    ]);
    assert.equal(await sshd.exists('sudo.log'), false, 'no sudo for a target without sudo: true');
    // Every step above went over one reused connection.
    assert.equal(sshd.connections(), 1);
  });

  it('refuses a server whose host key differs from the pinned one before any command', async () => {
    const before = await sshd.read('controller.log');
    const acceptedBefore = (sshd.log().match(/Accepted publickey/g) ?? []).length;
    const t = sshd.target({ name: 'km-rekeyed', hostKey: sshd.otherHostKey });
    const err = await km.applyHotfix(t, NAME).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof KmError, String(err));
    assert.equal(err.kind, 'host-key');
    assert.equal(err.retryable, false);
    assert.equal(err.server, 'km-rekeyed');
    assert.ok(err.message.includes(sshd.otherHostKey) && err.message.includes(sshd.hostKey), err.message);
    assert.match(err.message, /re-keyed.*import/);
    await assert.rejects(pool.checkHostKey(t), (e: unknown) => e instanceof KmError && e.kind === 'host-key');
    assert.equal(await sshd.read('controller.log'), before, 'the fake saw no command');
    assert.equal(
      (sshd.log().match(/Accepted publickey/g) ?? []).length,
      acceptedBefore,
      'the client never even authenticated',
    );
  });

  it('reports a key the server does not accept as an authentication failure', async () => {
    const other = new SshPool({ privateKey: sshd.otherClientKey });
    try {
      const err = await other.exec(sshd.target({ name: 'km-auth' }), ['true']).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(err instanceof KmError, String(err));
      assert.equal(err.kind, 'auth');
      assert.equal(err.retryable, false);
      assert.match(err.message, /^km-auth: SSH authentication as 'root'/);
    } finally {
      await other.close();
    }
  });
});
