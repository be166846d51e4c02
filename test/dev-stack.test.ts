// `km-hotfix dev` as a user runs it: the real command as a child process,
// stopped with signals; checks the output contract, that nothing is left
// behind, and that a workflow survives a restart on the same data folder.
import assert from 'node:assert/strict';
import { spawn, ChildProcess } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Worker } from '@temporalio/worker';
import { BIN, cliEnv, lines, runCli } from './helpers/cli-process';
import { scratchDir } from './helpers/stack';
import { run } from './helpers/openssh-tools';
import { workflowBundle } from './helpers/worker';
import { freePort, portInUse } from '../stack/process';
import type { DevPids } from '../stack/dev-stack';

const FIXTURES = path.resolve(__dirname, 'fixtures', 'workflows.js');
const EXPORTS = ['TEMPORAL_ADDRESS', 'TEMPORAL_NAMESPACE', 'DATABASE_URL', 'KM_DATABASE_URL'];
/** Without KM_HOTFIX_ALLOWED_SIGNERS, dev makes demo people and exports these. */
const PEOPLE_EXPORTS = ['KM_HOTFIX_ALLOWED_SIGNERS', 'KM_HOTFIX_SIGNING_KEY'];
/** The approvers' web page's address, last. */
const WEB_EXPORTS = ['KM_HOTFIX_WEB_URL'];

interface RunningDev {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Start `km-hotfix dev` in its own process group, as a shell would for a foreground job. */
function startDev(args: string[]): RunningDev {
  const child = spawn(process.execPath, [BIN, 'dev', ...args], {
    env: cliEnv({}),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal })),
  );
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** Resolves with the printed environment once `ready` is printed. */
async function waitReady(dev: RunningDev, timeoutMs: number): Promise<Record<string, string>> {
  const deadline = Date.now() + timeoutMs;
  let done = false;
  void dev.exited.then(() => {
    done = true;
  });
  while (!lines(dev.stdout()).includes('ready')) {
    if (done) throw new Error(`dev exited before ready: ${dev.stderr()}`);
    if (Date.now() > deadline) throw new Error(`dev did not print ready within ${timeoutMs} ms: ${dev.stderr()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const env: Record<string, string> = {};
  for (const line of lines(dev.stdout())) {
    const m = /^export ([A-Z_]+)=(.*)$/.exec(line);
    if (m) env[m[1]] = m[2].replace(/^'(.*)'$/, '$1');
  }
  return env;
}

async function stopDev(
  dev: RunningDev,
  signal: NodeJS.Signals,
  group: boolean,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  // Ctrl-C in a terminal signals the whole foreground process group.
  if (group) process.kill(-dev.child.pid!, signal);
  else dev.child.kill(signal);
  const timer = setTimeout(() => process.kill(-dev.child.pid!, 'SIGKILL'), 40_000);
  try {
    return await dev.exited;
  } finally {
    clearTimeout(timer);
  }
}

/** Every process whose ancestry includes `root` (from /proc). */
async function descendants(root: number): Promise<number[]> {
  const parent = new Map<number, number>();
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await fs.readFile(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(entry), ppid);
    } catch {
      // the process ended meanwhile
    }
  }
  const out: number[] = [];
  for (const pid of parent.keys()) {
    for (let p = parent.get(pid); p !== undefined && p > 1; p = parent.get(p)) {
      if (p === root) {
        out.push(pid);
        break;
      }
    }
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return false;
  }
}

async function devPorts(): Promise<{ temporal: number; ui: number; postgres: number; web: number }> {
  return { temporal: await freePort(), ui: await freePort(), postgres: await freePort(), web: await freePort() };
}

function portArgs(ports: { temporal: number; ui: number; postgres: number; web: number }): string[] {
  return [
    '--temporal-port',
    String(ports.temporal),
    '--ui-port',
    String(ports.ui),
    '--postgres-port',
    String(ports.postgres),
    '--web-port',
    String(ports.web),
  ];
}

describe('km-hotfix dev (real Temporal dev server, embedded PostgreSQL, in-process worker)', function () {
  this.timeout(180_000);
  const started: RunningDev[] = [];
  afterEach(async () => {
    // A failed test must not leave its stack running.
    for (const dev of started.splice(0)) {
      if (dev.child.exitCode === null && dev.child.signalCode === null)
        await stopDev(dev, 'SIGTERM', false).catch(() => undefined);
    }
  });

  it('prints the exports (demo people included) then ready within 60 s, and Ctrl-C (SIGINT) exits 0 leaving no process or port behind', async () => {
    const data = await scratchDir('dev-ready');
    const ports = await devPorts();
    const t0 = Date.now();
    const dev = startDev(['--data', data, ...portArgs(ports)]);
    started.push(dev);
    const env = await waitReady(dev, 60_000);
    const seconds = (Date.now() - t0) / 1000;
    console.log(`      (ready after ${seconds.toFixed(1)} s)`);

    const out = lines(dev.stdout());
    assert.deepEqual(
      out.slice(0, -1).map((l) => l.split('=')[0]),
      [...EXPORTS, ...PEOPLE_EXPORTS, ...WEB_EXPORTS].map((n) => `export ${n}`),
      dev.stdout(),
    );
    // Demo people: alice, bob and dana in the signers file; alice signs; OpenSSH accepts dana's key and the file.
    assert.equal(env.KM_HOTFIX_ALLOWED_SIGNERS, path.join(data, 'allowed_signers'));
    assert.equal(env.KM_HOTFIX_SIGNING_KEY, path.join(data, 'keys', 'alice'));
    const signers = (await fs.readFile(env.KM_HOTFIX_ALLOWED_SIGNERS, 'utf8'))
      .split('\n')
      .filter((l) => l && !l.startsWith('#'));
    assert.deepEqual(
      signers.map((l) => l.split(' ').slice(0, 2).join(' ')),
      ['alice ssh-ed25519', 'bob ssh-ed25519', 'dana ssh-ed25519', 'km-hotfix-web@delegate ssh-ed25519'],
    );
    // The approvers' page answers on its port while dev runs.
    assert.equal(env.KM_HOTFIX_WEB_URL, `http://127.0.0.1:${ports.web}`);
    const page = await fetch(env.KM_HOTFIX_WEB_URL);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /km-hotfix rollouts/);
    assert.equal((await fs.stat(path.join(data, 'keys', 'dana'))).mode & 0o077, 0, 'private keys are private');
    const message = path.join(data, 'msg');
    await fs.writeFile(message, 'km-hotfix decision v1\n');
    const signed = await run('ssh-keygen', [
      '-Y',
      'sign',
      '-f',
      path.join(data, 'keys', 'dana'),
      '-n',
      'km-hotfix',
      message,
    ]);
    assert.equal(signed.code, 0, signed.stderr);
    const verified = await run(
      'ssh-keygen',
      ['-Y', 'verify', '-f', env.KM_HOTFIX_ALLOWED_SIGNERS, '-I', 'dana', '-n', 'km-hotfix', '-s', `${message}.sig`],
      { input: 'km-hotfix decision v1\n' },
    );
    assert.equal(verified.code, 0, verified.stderr);
    assert.equal(out.at(-1), 'ready');
    assert.equal(env.TEMPORAL_ADDRESS, `127.0.0.1:${ports.temporal}`);
    assert.equal(env.TEMPORAL_NAMESPACE, 'default');
    assert.match(env.DATABASE_URL, /^postgres:\/\/.*\/km_hotfix$/);
    assert.match(env.KM_DATABASE_URL, /^postgres:\/\/.*\/key_manager$/);

    const pids = JSON.parse(await fs.readFile(path.join(data, 'pids.json'), 'utf8')) as DevPids;
    assert.equal(pids.dev, dev.child.pid);
    assert.ok(pids.temporal && alive(pids.temporal), 'temporal runs');
    assert.ok(pids.postgres && alive(pids.postgres), 'postgres runs');
    const children = await descendants(dev.child.pid!);
    assert.ok(children.includes(pids.temporal) && children.includes(pids.postgres), `children ${children}`);
    const pgPort = Number(new URL(env.DATABASE_URL).port);
    assert.equal(pgPort, ports.postgres);
    for (const port of [ports.temporal, ports.ui, pgPort])
      assert.ok(await portInUse(port), `port ${port} accepts while running`);

    const t1 = Date.now();
    const exit = await stopDev(dev, 'SIGINT', true);
    console.log(`      (stopped after ${((Date.now() - t1) / 1000).toFixed(1)} s)`);
    assert.deepEqual(exit, { code: 0, signal: null }, dev.stderr());
    for (const pid of [dev.child.pid!, ...children]) assert.ok(!alive(pid), `process ${pid} is gone`);
    for (const port of [ports.temporal, ports.ui, pgPort, ports.web])
      assert.ok(!(await portInUse(port)), `port ${port} is closed`);
    await assert.rejects(fs.access(path.join(data, 'pids.json')), 'pids.json removed');
  });

  it('keeps a waiting workflow across a restart (SIGTERM) on the same data folder, and completes it after', async () => {
    const data = await scratchDir('dev-restart');
    const ports = await devPorts();
    const args = ['--data', data, ...portArgs(ports)];
    const bundle = await workflowBundle(FIXTURES);
    const taskQueue = `dev-restart-${ports.temporal}`;
    const workflowId = `wait-${ports.temporal}`;
    const greet = async (who: string) => `hello ${who}`;

    // 1st run: start the workflow and let a worker take it to its wait.
    let dev = startDev(args);
    started.push(dev);
    let env = await waitReady(dev, 60_000);
    {
      const nc = await NativeConnection.connect({ address: env.TEMPORAL_ADDRESS });
      const conn = await Connection.connect({ address: env.TEMPORAL_ADDRESS });
      try {
        const worker = await Worker.create({
          connection: nc,
          taskQueue,
          workflowBundle: bundle,
          activities: { greet },
        });
        const client = new Client({ connection: conn });
        await worker.runUntil(async () => {
          const h = await client.workflow.start('greetAfterRelease', { taskQueue, workflowId, args: ['restart'] });
          // Waiting = its first workflow task completed (the handler is set, the condition blocks).
          for (;;) {
            const history = await h.fetchHistory();
            if (history.events?.some((e) => e.workflowTaskCompletedEventAttributes)) break;
            await new Promise((r) => setTimeout(r, 100));
          }
        });
      } finally {
        await conn.close();
        await nc.close();
      }
    }
    assert.deepEqual(await stopDev(dev, 'SIGTERM', false), { code: 0, signal: null }, dev.stderr());

    // 2nd run on the same folder: the workflow is still running; signal it and see it complete.
    dev = startDev(args);
    started.push(dev);
    env = await waitReady(dev, 60_000);
    {
      const nc = await NativeConnection.connect({ address: env.TEMPORAL_ADDRESS });
      const conn = await Connection.connect({ address: env.TEMPORAL_ADDRESS });
      try {
        const client = new Client({ connection: conn });
        const h = client.workflow.getHandle(workflowId);
        assert.equal((await h.describe()).status.name, 'RUNNING');
        const worker = await Worker.create({
          connection: nc,
          taskQueue,
          workflowBundle: bundle,
          activities: { greet },
        });
        const result = await worker.runUntil(async () => {
          await h.signal('release');
          return (await h.result()) as string;
        });
        assert.equal(result, 'hello restart');
      } finally {
        await conn.close();
        await nc.close();
      }
    }
    assert.deepEqual(await stopDev(dev, 'SIGTERM', false), { code: 0, signal: null }, dev.stderr());
  });

  it('with --sim F:B: exports KM_SSH_KEY, imports the simulated fleet, and reuses the key after a restart', async () => {
    const data = await scratchDir('dev-sim');
    const ports = await devPorts();
    const args = ['--sim', '1:2', '--data', data, ...portArgs(ports)];
    let dev = startDev(args);
    started.push(dev);
    let env = await waitReady(dev, 60_000);
    assert.deepEqual(
      lines(dev.stdout()).map((l) => l.split('=')[0]),
      [...EXPORTS, 'KM_SSH_KEY', 'KM_SIM_CONTROL', ...PEOPLE_EXPORTS, ...WEB_EXPORTS]
        .map((n) => `export ${n}`)
        .concat('ready'),
    );
    assert.equal(env.KM_SSH_KEY, path.join(data, 'ssh', 'id_ed25519'));
    assert.equal((await fs.stat(env.KM_SSH_KEY)).mode & 0o777, 0o600);
    const key = await fs.readFile(env.KM_SSH_KEY, 'utf8');
    const list = async () => {
      const r = await runCli(['fleet', 'list', '--json'], { DATABASE_URL: env.DATABASE_URL });
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as { servers: { name: string; role: string; host: string; hostKey: string }[] })
        .servers;
    };
    const servers = await list();
    assert.deepEqual(
      servers.map((s) => s.role),
      ['frontend', 'backend', 'backend'],
    );
    for (const s of servers) assert.match(s.hostKey, /^SHA256:/);
    assert.deepEqual(await stopDev(dev, 'SIGTERM', false), { code: 0, signal: null }, dev.stderr());

    dev = startDev(args);
    started.push(dev);
    env = await waitReady(dev, 60_000);
    assert.equal(await fs.readFile(env.KM_SSH_KEY, 'utf8'), key, 'the same key pair');
    assert.deepEqual(
      (await list()).map((s) => s.name),
      servers.map((s) => s.name),
    );
    assert.deepEqual(await stopDev(dev, 'SIGINT', true), { code: 0, signal: null }, dev.stderr());
  });

  it('after a dev killed with SIGKILL, the next start stops its orphaned Temporal and PostgreSQL first', async () => {
    const data = await scratchDir('dev-orphans');
    const ports = await devPorts();
    const args = ['--data', data, ...portArgs(ports)];
    let dev = startDev(args);
    started.push(dev);
    await waitReady(dev, 60_000);
    const pids = JSON.parse(await fs.readFile(path.join(data, 'pids.json'), 'utf8')) as DevPids;
    dev.child.kill('SIGKILL');
    await dev.exited;
    assert.ok(alive(pids.temporal!) && alive(pids.postgres!), 'the children outlive a SIGKILLed dev');

    dev = startDev(args);
    started.push(dev);
    await waitReady(dev, 60_000);
    assert.match(dev.stderr(), /stopping the Temporal dev server \(pid \d+\) left running/);
    assert.match(dev.stderr(), /stopping PostgreSQL \(pid \d+\) left running/);
    assert.ok(!alive(pids.temporal!) && !alive(pids.postgres!), 'the orphans are gone');
    assert.deepEqual(await stopDev(dev, 'SIGINT', true), { code: 0, signal: null }, dev.stderr());
  });

  it('refuses a busy Temporal port with one line and exit 3', async () => {
    const data = await scratchDir('dev-busy');
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const port = (busy.address() as net.AddressInfo).port;
    try {
      const r = await runCli([
        'dev',
        '--data',
        data,
        '--temporal-port',
        String(port),
        '--ui-port',
        String(await freePort()),
      ]);
      assert.equal(r.code, 3, r.stderr);
      assert.equal(r.stdout, '');
      const err = lines(r.stderr);
      assert.equal(err.length, 1, r.stderr);
      assert.match(err[0], new RegExp(`port ${port}.*in use.*--temporal-port`));
    } finally {
      busy.close();
    }
  });

  it('refuses a missing temporal binary with one line and exit 3', async () => {
    const data = await scratchDir('dev-nobin');
    const r = await runCli(
      ['dev', '--data', data, '--temporal-port', String(await freePort()), '--ui-port', String(await freePort())],
      { TEMPORAL_CLI: path.join(data, 'no-such-temporal') },
    );
    assert.equal(r.code, 3, r.stderr);
    const err = lines(r.stderr);
    assert.equal(err.length, 1, r.stderr);
    assert.match(err[0], /TEMPORAL_CLI=.*no-such-temporal/);
  });
});
