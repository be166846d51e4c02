// keymanager/ssh.ts, errors.ts and quote.ts: quoting and classification as
// units, then the transport against a real OpenSSH sshd (test/helpers/sshd.ts):
// literal arguments, sudo, timeouts, cancellation, refused and silent ports,
// connection reuse and recovery.
import { strict as assert } from 'node:assert';
import * as net from 'node:net';
import * as path from 'node:path';
import { promises as fs } from 'node:fs';
import { Server, utils as sshUtils } from 'ssh2';
import { SshPool, commandLine, hostKeyFingerprint, SshTarget } from '../keymanager/ssh';
import { KeyManagerSsh, parseSupervisorStatus } from '../keymanager/key-manager-ssh';
import { KmError, commandFailure, KmErrorKind } from '../keymanager/errors';
import { quote, quoteArgv } from '../keymanager/quote';
import { parseWords } from '../simulator/shell';
import { freePort } from '../stack/process';
import { requireSshd, startSshd, TestSshd } from './helpers/sshd';

const HOSTILE = [
  "x'; rm -rf / #",
  '$(touch PWNED)',
  '`touch PWNED`',
  'a"b\\c',
  "''",
  ' spaced  out ',
  'line1\nline2',
  '',
  '*',
  '~root',
  'A=b',
  '-n',
  '%s\\n',
  '; | & < > ( ) { } [ ] ! ?',
  'ünïcødé ✓',
];

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => assert.fail('expected a rejection'),
    (e: unknown) => e,
  );
}

function assertKm(err: unknown, kind: KmErrorKind, retryable: boolean): asserts err is KmError {
  assert.ok(err instanceof KmError, `expected KmError(${kind}), got ${err instanceof Error ? err.stack : String(err)}`);
  assert.equal(err.kind, kind, err.message);
  assert.equal(err.retryable, retryable);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('keymanager/quote', () => {
  it('leaves plain words bare and single-quotes everything else', () => {
    assert.equal(quote('ssh-mgr-controller'), 'ssh-mgr-controller');
    assert.equal(quote('--apply-hotfix=hotfix_common_x'), '--apply-hotfix=hotfix_common_x');
    assert.equal(
      quote('/var/lib/sshmgr/sshmgr-3.0.0-hotfix_a_b_C-1.gz'),
      '/var/lib/sshmgr/sshmgr-3.0.0-hotfix_a_b_C-1.gz',
    );
    assert.equal(quote("x'; rm -rf / #"), `'x'\\''; rm -rf / #'`);
    assert.equal(quote(''), "''");
    assert.equal(quote('A=b'), "'A=b'", 'a first word NAME=value would be an assignment');
    assert.equal(quote('~root'), "'~root'");
    assert.throws(() => quote('a\0b'), /NUL/);
    assert.throws(() => quoteArgv([]), /empty/);
  });

  it("round-trips hostile argv through the simulated servers' shell parser", () => {
    assert.deepEqual(parseWords(quoteArgv(HOSTILE)), HOSTILE);
    assert.deepEqual(parseWords(`a "b c" d\\ e 'f'"g"`), ['a', 'b c', 'd e', 'fg']);
    assert.throws(() => parseWords('echo $(id)'), /Syntax error/);
    assert.throws(() => parseWords("echo 'open"), /Syntax error|unterminated/);
  });

  it('prefixes sudo -n only for sudo targets', () => {
    assert.equal(commandLine({ sudo: true }, ['supervisorctl', 'restart', 'all']), 'sudo -n supervisorctl restart all');
    assert.equal(commandLine({ sudo: false }, ['supervisorctl', 'status']), 'supervisorctl status');
  });
});

describe('keymanager/errors classification', () => {
  const result = (stderr: string, code = 1) => ({ code, stdout: '', stderr });

  it('turns the vendor checksum exception (wrapped over lines) into a non-retryable checksum-mismatch that says what to do', () => {
    const vendor =
      "Exception: File /opt/sshmgr/api/v2/operations.pyc's SHA checksum\non disk 227957ee4fa02838e9ebbc7832e301df9f6978b2 does not match\nwhat we expected to override: f2e536bef2ed21552e21af703935b6d259f49dc5\n";
    const err = commandFailure({
      server: 'km-be-1',
      command: 'ssh-mgr-controller --apply-hotfix=hotfix_backend_x',
      result: result(`Traceback (most recent call last):\n  ...\n${vendor}`),
      hotfix: 'hotfix_backend_x',
    });
    assertKm(err, 'checksum-mismatch', false);
    assert.match(err.message, /^km-be-1: hotfix_backend_x was built for another Key Manager version/);
    assert.match(err.message, /support/);
    assert.match(err.message, /built for the installed Key Manager version/);
    assert.ok(
      err.message.includes(
        "Exception: File /opt/sshmgr/api/v2/operations.pyc's SHA checksum on disk 227957ee4fa02838e9ebbc7832e301df9f6978b2 does not match what we expected to override: f2e536bef2ed21552e21af703935b6d259f49dc5",
      ),
      err.message,
    );
    assert.equal(err.exitCode, 1);
  });

  it('recognises an unknown hotfix only for hotfix commands, and otherwise reports command-failed (retryable)', () => {
    assertKm(
      commandFailure({
        server: 's',
        command: 'c',
        result: result('Error: unknown hotfix hotfix_common_x'),
        hotfix: 'hotfix_common_x',
      }),
      'unknown-hotfix',
      false,
    );
    assertKm(
      commandFailure({
        server: 's',
        command: 'c',
        result: result('Hotfix hotfix_common_x not found'),
        hotfix: 'hotfix_common_x',
      }),
      'unknown-hotfix',
      false,
    );
    const other = commandFailure({
      server: 's',
      command: 'supervisorctl restart all',
      result: result('unix:///var/run/supervisor.sock no such file', 7),
    });
    assertKm(other, 'command-failed', true);
    assert.match(other.message, /exited 7: unix:/);
    assertKm(
      commandFailure({
        server: 's',
        command: 'c',
        result: result('Error: hotfix hotfix_common_x is not applied on this server'),
        hotfix: 'hotfix_common_x',
      }),
      'command-failed',
      true,
    );
  });

  it('parses supervisorctl status output', () => {
    const s = parseSupervisorStatus(
      'km-api                 RUNNING   pid 123, uptime 0:01:02\ngroup:worker_00        FATAL     Exited too quickly (process log may have details)\nkm-x STOPPED\n\nsome noise line here\n',
    );
    assert.deepEqual(s, [
      { name: 'km-api', state: 'RUNNING', detail: 'pid 123, uptime 0:01:02' },
      { name: 'group:worker_00', state: 'FATAL', detail: 'Exited too quickly (process log may have details)' },
      { name: 'km-x', state: 'STOPPED', detail: '' },
    ]);
  });
});

/** A TCP proxy in front of sshd that counts connections and can cut them all. */
async function tcpProxy(
  to: number,
): Promise<{ port: number; accepted: () => number; cut: () => void; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const server = net.createServer((client) => {
    accepted++;
    const upstream = net.connect({ host: '127.0.0.1', port: to });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    accepted: () => accepted,
    cut: () => {
      for (const s of sockets) s.resetAndDestroy();
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

describe('keymanager/ssh against OpenSSH sshd', function () {
  this.timeout(60_000);
  let sshd: TestSshd;
  let pool: SshPool;
  let t: SshTarget;

  before(async function () {
    await requireSshd(this);
    sshd = await startSshd('km-ssh');
    pool = new SshPool({ privateKey: sshd.clientKey });
    t = sshd.target();
  });

  after(async () => {
    await pool?.close();
    await sshd?.stop();
  });

  it('passes hostile strings as single literal arguments (printf sees each one intact, nothing is expanded)', async () => {
    const argv = HOSTILE.map((s) => s.replace('PWNED', path.join(sshd.state, 'pwned')));
    const r = await pool.exec(t, ['printf', '[%s]\\n', ...argv]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, argv.map((a) => `[${a}]\n`).join(''));
    assert.equal(await sshd.exists('pwned'), false);
  });

  it('returns non-zero exits with their output instead of throwing', async () => {
    const r = await pool.exec(t, ['sh', '-c', 'echo out; echo err >&2; exit 7']);
    assert.deepEqual(r, { code: 7, stdout: 'out\n', stderr: 'err\n' });
  });

  it('runs every command as sudo -n <command> on a sudo target, arguments still literal', async () => {
    const st = sshd.target({ name: 'km-sudo', sudo: true });
    const r = await pool.exec(st, ['printf', '%s\\n', "x'; rm -rf / #", '$(id)']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "x'; rm -rf / #\n$(id)\n");
    assert.equal((await sshd.read('sudo.log')).trim(), "[-n][printf][%s\\n][x'; rm -rf / #][$(id)]");

    // The Key Manager steps too, including the SFTP upload staged in the login user's home.
    const km = new KeyManagerSsh(pool, { hotfixDir: path.join(sshd.dir, 'sudo-hotfixes') });
    const file = 'sshmgr-3.0.0-hotfix_backend_fix_queue_stall_UKM-7.gz';
    const remote = await km.uploadHotfixFile(st, file, Buffer.from('payload'));
    await km.registerHotfix(st, remote);
    await km.applyHotfix(st, 'hotfix_backend_fix_queue_stall');
    await km.servicesStatus(st);
    const lines = (await sshd.read('sudo.log')).trim().split('\n').slice(1);
    assert.equal(lines.length, 7, lines.join('\n'));
    assert.ok(
      lines.every((l) => l.startsWith('[-n]')),
      lines.join('\n'),
    );
    assert.match(lines[0], new RegExp(`^\\[-n\\]\\[mkdir\\]\\[-p\\]\\[${path.join(sshd.dir, 'sudo-hotfixes')}\\]$`));
    assert.match(
      lines[1],
      /^\[-n\]\[mv\]\[-f\]\[\/root\/\.km-hotfix-[0-9a-f]{12}-sshmgr-3\.0\.0-hotfix_backend_fix_queue_stall_UKM-7\.gz\]\[/,
    );
    assert.deepEqual(lines.slice(2), [
      `[-n][chown][sshmgr:sshmgr][${remote}]`,
      `[-n][chmod][0750][${remote}]`,
      `[-n][ssh-mgr-controller][--upload-hotfix=${remote}]`,
      '[-n][ssh-mgr-controller][--apply-hotfix=hotfix_backend_fix_queue_stall]',
      '[-n][supervisorctl][status]',
    ]);
    assert.equal(await fs.readFile(remote, 'utf8'), 'payload');
    const staged = lines[1].slice('[-n][mv][-f]['.length, lines[1].indexOf(']', '[-n][mv][-f]['.length));
    await assert.rejects(fs.access(staged), 'the staged copy was moved, not left behind');
  });

  it('validates Names and file names before anything reaches the server', async () => {
    const km = new KeyManagerSsh(pool);
    const before = await sshd.read('controller.log');
    assertKm(await rejection(km.applyHotfix(t, 'hotfix_common_x; touch /tmp/pwned')), 'invalid-argument', false);
    assertKm(await rejection(km.unapplyHotfix(t, '--help')), 'invalid-argument', false);
    assertKm(
      await rejection(km.uploadHotfixFile(t, '../sshmgr-3.0.0-hotfix_common_x_UKM-1.gz', Buffer.from(''))),
      'invalid-argument',
      false,
    );
    assertKm(await rejection(km.uploadHotfixFile(t, 'evil.gz', Buffer.from(''))), 'invalid-argument', false);
    assertKm(
      await rejection(km.registerHotfix(t, 'relative/sshmgr-3.0.0-hotfix_common_x_UKM-1.gz')),
      'invalid-argument',
      false,
    );
    assertKm(await rejection(pool.exec(t, ['echo', 'a\0b'])), 'invalid-argument', false);
    assert.equal(await sshd.read('controller.log'), before);
  });

  it('classifies Key Manager failures over SSH: unknown hotfix, checksum mismatch, services not running', async () => {
    const km = new KeyManagerSsh(pool);
    assertKm(await rejection(km.applyHotfix(t, 'hotfix_common_never_uploaded')), 'unknown-hotfix', false);

    await fs.mkdir(path.join(sshd.state, 'registered'), { recursive: true });
    await fs.writeFile(path.join(sshd.state, 'registered', 'hotfix_frontend_old_build'), 'x');
    await fs.writeFile(
      path.join(sshd.state, 'checksum-mismatch'),
      "Exception: File /opt/sshmgr/api/v2/operations.pyc's SHA checksum on disk 227957ee does not match what we expected to override: f2e536be\n",
    );
    try {
      const err = await rejection(km.applyHotfix(t, 'hotfix_frontend_old_build'));
      assertKm(err, 'checksum-mismatch', false);
      assert.match(err.message, /another Key Manager version/);
    } finally {
      await fs.rm(path.join(sshd.state, 'checksum-mismatch'));
    }

    await fs.writeFile(path.join(sshd.state, 'down'), 'km-worker\n');
    const status = await km.servicesStatus(t); // supervisorctl exits 3: parsed, not thrown
    assert.deepEqual(
      status.map((s) => s.state),
      ['RUNNING', 'STOPPED', 'RUNNING'],
    );
    assert.equal(status[1].name, 'km-worker');
    await km.restartServices(t);
    assert.deepEqual(
      (await km.servicesStatus(t)).map((s) => s.state),
      ['RUNNING', 'RUNNING', 'RUNNING'],
    );
  });

  it('times out a hung command (retryable) and keeps the connection usable', async () => {
    const conns = sshd.connections();
    const started = Date.now();
    const err = await rejection(pool.exec(t, ['sleep', '5'], { timeoutMs: 500 }));
    assertKm(err, 'timeout', true);
    assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
    assert.equal((await pool.exec(t, ['echo', 'ok'])).stdout, 'ok\n');
    assert.equal(sshd.connections(), conns, 'the same connection served the next command');
  });

  it('on abort rejects with the reason at once and closes the channel, freeing its slot', async () => {
    const p = new SshPool({ privateKey: sshd.clientKey }, { maxChannels: 1 });
    try {
      const pidFile = path.join(sshd.state, 'abort.pid');
      const ac = new AbortController();
      const running = p.exec(t, ['sh', '-c', 'echo $$ > "$1"; exec sleep 30', 'sh', pidFile], { signal: ac.signal });
      let pid = 0;
      for (let i = 0; i < 100 && !pid; i++) {
        await sleep(50);
        pid = Number((await sshd.read('abort.pid')).trim()) || 0;
      }
      assert.ok(pid > 0, 'the remote command started');
      const reason = new Error('activity cancelled');
      const at = Date.now();
      ac.abort(reason);
      assert.equal(await rejection(running), reason);
      assert.ok(Date.now() - at < 2500, `abort took ${Date.now() - at} ms`);
      // With one channel allowed, the next command only runs if the aborted channel was closed and released.
      assert.equal((await p.exec(t, ['echo', 'next'], { timeoutMs: 5000 })).stdout, 'next\n');
      // An already-aborted signal never starts anything.
      assert.equal(
        await rejection(p.exec(t, ['touch', path.join(sshd.state, 'never')], { signal: ac.signal })),
        reason,
      );
      assert.equal(await sshd.exists('never'), false);
      // Root sessions have no post-auth privilege separation, so OpenSSH refuses the TERM we send (see ssh.ts): clean up ourselves.
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    } finally {
      await p.close();
    }
  });

  it('calls onTick about every second while a command runs', async () => {
    let ticks = 0;
    const started = Date.now();
    const r = await pool.exec(t, ['sleep', '2.4'], {
      onTick: () => {
        ticks++;
      },
    });
    const seconds = Math.floor((Date.now() - started) / 1000);
    assert.equal(r.code, 0);
    assert.ok(ticks >= 2 && ticks >= seconds - 1 && ticks <= seconds, `ticks: ${ticks} in ${seconds} s`);
    // No tick after the call returned.
    await sleep(1100);
    assert.ok(ticks <= seconds, `ticked after the end: ${ticks}`);
  });

  it('reports a refused port as a retryable connection error', async () => {
    const port = await freePort();
    const err = await rejection(pool.exec(sshd.target({ name: 'km-down', port }), ['true']));
    assertKm(err, 'connection', true);
    assert.equal(err.server, 'km-down');
    assert.match(err.message, /ECONNREFUSED/);
  });

  it('reports a server that never completes the handshake as a retryable timeout', async () => {
    const silent = net.createServer((s) => {
      s.on('error', () => undefined);
    }); // accepts, says nothing
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const p = new SshPool({ privateKey: sshd.clientKey }, { readyTimeoutMs: 400 });
    try {
      const started = Date.now();
      const err = await rejection(
        p.exec(sshd.target({ name: 'km-silent', port: (silent.address() as net.AddressInfo).port }), ['true']),
      );
      assertKm(err, 'timeout', true);
      assert.ok(Date.now() - started < 3000);
    } finally {
      await p.close();
      silent.close();
    }
  });

  /** Run n commands at once on pool p; returns the most that ran at the same time on the server. */
  async function concurrently(p: SshPool, n: number, log: string): Promise<number> {
    const results = await Promise.all(
      Array.from({ length: n }, () => p.exec(t, ['sh', '-c', 'echo + >> "$1"; sleep 0.3; echo - >> "$1"', 'sh', log])),
    );
    assert.ok(
      results.every((r) => r.code === 0),
      JSON.stringify(results.filter((r) => r.code !== 0)),
    );
    const marks = (await fs.readFile(log, 'utf8')).trim().split('\n');
    assert.equal(marks.length, 2 * n, 'every command ran exactly once');
    let running = 0;
    let max = 0;
    for (const c of marks) {
      running += c === '+' ? 1 : -1;
      max = Math.max(max, running);
    }
    return max;
  }

  it('reuses one connection per server for sequential and concurrent calls, at most 8 channels at once by default', async () => {
    const p = new SshPool({ privateKey: sshd.clientKey });
    try {
      const before = sshd.connections();
      for (let i = 0; i < 5; i++) assert.equal((await p.exec(t, ['true'])).code, 0);
      // sshd allows 10 sessions per connection (MaxSessions): only the pool's cap keeps this at 8.
      const max = await concurrently(p, 20, path.join(sshd.state, 'concurrency-8.log'));
      assert.ok(max > 1 && max <= 8, `max concurrent: ${max}`);
      assert.equal(sshd.connections() - before, 1, 'one TCP connection for all 25 calls');
      assert.equal(p.size, 1);
    } finally {
      await p.close();
    }
    assert.equal(p.size, 0);
  });

  it('honours maxChannels, and retries channels the server refuses (MaxSessions) without running anything twice', async () => {
    const three = new SshPool({ privateKey: sshd.clientKey }, { maxChannels: 3 });
    const twelve = new SshPool({ privateKey: sshd.clientKey }, { maxChannels: 12 });
    try {
      const max3 = await concurrently(three, 9, path.join(sshd.state, 'concurrency-3.log'));
      assert.ok(max3 > 1 && max3 <= 3, `max concurrent: ${max3}`);
      // 12 wanted, sshd allows 10: two opens are refused and retried after a channel closes.
      const max12 = await concurrently(twelve, 16, path.join(sshd.state, 'concurrency-12.log'));
      assert.ok(max12 <= 10, `max concurrent: ${max12}`);
    } finally {
      await Promise.all([three.close(), twelve.close()]);
    }
  });

  it('drops a broken connection: a command cut off fails as retryable, and the next call reconnects', async () => {
    const proxy = await tcpProxy(sshd.port);
    const p = new SshPool({ privateKey: sshd.clientKey });
    const via = sshd.target({ name: 'km-proxied', port: proxy.port });
    try {
      assert.equal((await p.exec(via, ['echo', 'one'])).stdout, 'one\n');
      const cutOff = p.exec(via, ['sleep', '5']);
      await sleep(300);
      proxy.cut();
      const err = await rejection(cutOff);
      assertKm(err, 'connection', true);
      assert.match(err.message, /may or may not have completed/);
      assert.equal((await p.exec(via, ['echo', 'two'])).stdout, 'two\n');
      assert.equal(proxy.accepted(), 2);

      // Cut while idle: the next call still succeeds, on a new connection.
      proxy.cut();
      assert.equal((await p.exec(via, ['echo', 'three'])).stdout, 'three\n');
      assert.equal(proxy.accepted(), 3);
    } finally {
      await p.close();
      await proxy.close();
    }
  });

  it('closes connections idle for idleMs, and reconnects on the next call', async () => {
    const p = new SshPool({ privateKey: sshd.clientKey }, { idleMs: 200 });
    try {
      const before = sshd.connections();
      await p.exec(t, ['true']);
      assert.equal(p.size, 1);
      await sleep(600);
      assert.equal(p.size, 0);
      await p.exec(t, ['true']);
      assert.equal(sshd.connections() - before, 2);
    } finally {
      await p.close();
    }
  });

  it('keeps at most maxIdle idle connections, closing the least recently used, and never a busy one', async () => {
    const p = new SshPool({ privateKey: sshd.clientKey }, { maxIdle: 2 });
    const [a, b, c] = ['km-a', 'km-b', 'km-c'].map((name) => ({ ...t, name }));
    try {
      const before = sshd.connections();
      await p.exec(a, ['true']);
      await p.exec(b, ['true']);
      await p.exec(a, ['true']); // a is now the most recently used: b goes first
      // c's command runs while a and b are idle: a third idle one only once c is done.
      const running = p.exec(c, ['sleep', '0.3']);
      await sleep(100);
      assert.equal(p.size, 3, 'a busy connection does not count against the idle cap');
      await running;
      assert.equal(p.size, 2);
      await p.exec(a, ['true']);
      await p.exec(c, ['true']);
      assert.equal(sshd.connections() - before, 3, 'a and c were reused');
      await p.exec(b, ['true']);
      assert.equal(sshd.connections() - before, 4, 'b was closed (least recently used) and connects again');
      assert.equal(p.size, 2);
    } finally {
      await p.close();
    }
  });

  it('never reuses a connection once the pinned host key of that server changes', async () => {
    const p = new SshPool({ privateKey: sshd.clientKey });
    try {
      await p.checkHostKey(t);
      assertKm(await rejection(p.checkHostKey({ ...t, hostKey: sshd.otherHostKey })), 'host-key', false);
      assertKm(await rejection(p.exec({ ...t, hostKey: sshd.otherHostKey }, ['true'])), 'host-key', false);
    } finally {
      await p.close();
    }
  });

  it('keeps the exit status of a command that ends in the same packets as the channel confirmation (a fast in-process server)', async () => {
    const key = sshUtils.generateKeyPairSync('ed25519');
    const pub = sshUtils.parseKey(key.public);
    assert.ok(!(pub instanceof Error));
    // Our own listener, so the server socket can be corked: success, data, exit status, EOF and close then leave in one write.
    const socks = new Map<object, net.Socket>();
    const ssh = new Server({ hostKeys: [key.private] }, (client) => {
      client.on('authentication', (ctx) => ctx.accept());
      client.on('error', () => undefined);
      client.on('session', (accept) => {
        accept().on('exec', (acceptExec) => {
          const sock = socks.get(client);
          sock?.cork();
          const ch = acceptExec();
          ch.write('fast\n');
          ch.exit(3);
          ch.end();
          process.nextTick(() => sock?.uncork());
        });
      });
    });
    const server = net.createServer((sock) => {
      sock.on('error', () => undefined);
      ssh.once('connection', (client) => socks.set(client, sock));
      ssh.injectSocket(sock);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const p = new SshPool({ privateKey: sshd.clientKey });
    try {
      const fast = {
        ...t,
        name: 'km-fast',
        port: (server.address() as net.AddressInfo).port,
        hostKey: hostKeyFingerprint(pub.getPublicSSH()),
      };
      for (let i = 0; i < 20; i++)
        assert.deepEqual(await p.exec(fast, ['anything']), { code: 3, stdout: 'fast\n', stderr: '' });
    } finally {
      await p.close();
      server.close();
    }
  });
});
