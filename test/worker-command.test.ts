// `km-hotfix worker` as a user runs it: configuration errors, start against
// the harness's Temporal and fresh databases, graceful SIGTERM.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { BIN, cliEnv, lines, runCli } from './helpers/cli-process';
import { freshDatabase, scratchDir, sqlFor, testStack } from './helpers/stack';
import { freePort } from '../stack/process';
import { generateEd25519KeyPair } from '../keymanager/keygen';

describe('km-hotfix worker (real command, harness Temporal and PostgreSQL)', function () {
  this.timeout(90_000);
  let env: Record<string, string>;
  let badSigners: string;

  before(async () => {
    const dir = await scratchDir('worker-cmd');
    const key = path.join(dir, 'id_ed25519');
    await fs.writeFile(key, generateEd25519KeyPair().private, { mode: 0o600 });
    const signers = path.join(dir, 'allowed_signers');
    await fs.writeFile(signers, `alice ${generateEd25519KeyPair().public}\n`);
    badSigners = path.join(dir, 'bad_signers');
    await fs.writeFile(badSigners, 'alice ssh-ed25519 not-base64!\n');
    env = {
      TEMPORAL_ADDRESS: testStack().temporal.address,
      KM_HOTFIX_TASK_QUEUE: `worker-cmd-${randomBytes(3).toString('hex')}`,
      DATABASE_URL: await freshDatabase('worker_orch'),
      KM_DATABASE_URL: await freshDatabase('worker_km'),
      KM_SSH_KEY: key,
      KM_HOTFIX_ALLOWED_SIGNERS: signers,
    };
  });

  it('names every missing setting in one line, exit 2', async () => {
    const r = await runCli(['worker'], { TEMPORAL_ADDRESS: env.TEMPORAL_ADDRESS });
    assert.equal(r.code, 2, r.stderr);
    assert.equal(lines(r.stderr).length, 1, r.stderr);
    assert.match(
      r.stderr,
      /DATABASE_URL, KM_DATABASE_URL, KM_SSH_KEY \(or SSH_AUTH_SOCK\) and KM_HOTFIX_ALLOWED_SIGNERS are not set/,
    );
  });

  it('refuses to start without a signers file, or with one it cannot read: one line, exit 2, before connecting anywhere', async () => {
    const none = await runCli(['worker'], { ...env, KM_HOTFIX_ALLOWED_SIGNERS: undefined });
    assert.equal(none.code, 2, none.stderr);
    assert.equal(lines(none.stderr).length, 1, none.stderr);
    assert.match(none.stderr, /KM_HOTFIX_ALLOWED_SIGNERS is not set: point it at an OpenSSH allowed_signers file/);
    const bad = await runCli(['worker'], { ...env, KM_HOTFIX_ALLOWED_SIGNERS: badSigners });
    assert.equal(bad.code, 2, bad.stderr);
    assert.equal(lines(bad.stderr).length, 1, bad.stderr);
    assert.match(bad.stderr, /KM_HOTFIX_ALLOWED_SIGNERS: .*bad_signers line 1: the key is not base64/);
    const gone = await runCli(['worker'], { ...env, KM_HOTFIX_ALLOWED_SIGNERS: '/nonexistent/allowed_signers' });
    assert.equal(gone.code, 2, gone.stderr);
    assert.match(gone.stderr, /cannot read the signers file \/nonexistent\/allowed_signers \(ENOENT\)/);
  });

  it('an unreadable KM_SSH_KEY: exit 2', async () => {
    const r = await runCli(['worker'], { ...env, KM_SSH_KEY: '/nonexistent/key' });
    assert.equal(r.code, 2, r.stderr);
    assert.match(lines(r.stderr)[0], /KM_SSH_KEY=\/nonexistent\/key cannot be read/);
  });

  it('an unreachable Temporal or database: one line, exit 3', async () => {
    const port = await freePort();
    const t = await runCli(['worker'], { ...env, TEMPORAL_ADDRESS: `127.0.0.1:${port}` });
    assert.equal(t.code, 3, t.stderr);
    assert.equal(lines(t.stderr).length, 1, t.stderr);
    assert.match(t.stderr, new RegExp(`cannot reach Temporal at 127\\.0\\.0\\.1:${port}.*TEMPORAL_ADDRESS`));
    const k = await runCli(['worker'], { ...env, KM_DATABASE_URL: `postgres://u:p@127.0.0.1:${port}/key_manager` });
    assert.equal(k.code, 3, k.stderr);
    assert.match(k.stderr, /cannot reach the Key Manager database at .*KM_DATABASE_URL/);
  });

  it('migrates the orchestrator database, polls, and drains on SIGTERM (exit 0)', async () => {
    const child = spawn(process.execPath, [BIN, 'worker'], {
      env: cliEnv({ ...env, KM_HOTFIX_LOG_LEVEL: 'WARN' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    try {
      const deadline = Date.now() + 60_000;
      while (!/polling task queue/.test(stderr)) {
        assert.equal(child.exitCode, null, `worker exited: ${stderr}`);
        assert.ok(Date.now() < deadline, `worker did not start: ${stderr}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const sql = sqlFor(env.DATABASE_URL);
      const tables = (
        await sql<{ t: string }[]>`SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'public'`
      ).map((r) => r.t);
      assert.ok(tables.includes('fleet_server') && tables.includes('km_hotfix_migrations'), `migrated: ${tables}`);
      child.kill('SIGTERM');
      assert.equal(await exited, 0, stderr);
      assert.match(stderr, /stopped/);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
