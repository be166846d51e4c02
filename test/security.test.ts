// Security checks (issue 9): no private key bytes and no database password in
// any workflow history, the ledger or the worker's log; names, paths and
// comments with shell metacharacters, newlines, very long values or odd
// Unicode are refused at the edge or stay inert data (what the simulated
// servers ran says so); the ledger is append-only for the orchestrator's role.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import postgres, { Sql } from 'postgres';
import type { WorkflowHandle } from '@temporalio/client';
import { rolloutEnv, RolloutEnv, FAST_TIMING } from './helpers/rollout-env';
import { scratchDir, testStack } from './helpers/stack';
import { startWorkerProcess, WorkerProcess } from './helpers/worker-process';
import { runCli, lines } from './helpers/cli-process';
import { collect, RecordedHistory } from './record-histories';
import { kmMaxProcesses as maxProcessesOf } from './helpers/invariant';
import { endsBy } from './helpers/endings';
import { statusQuery, WORKFLOW_TYPES } from '../domain/messages/rollout';
import { appendEvent, recordPhase, recordRolloutStart } from '../store/ledger-writes';
import { rolloutEvents } from '../store/ledger-reads';
import { isFinalPhase } from '../domain/rollout';
import { RolloutInput, RolloutStatus } from '../domain/messages/rollout';
import { makeHotfix } from '../simulator';

/** Every command a simulated server may run for a rollout, an upload or a removal; anything else is an injection. */
const EXPECTED_COMMAND =
  /^(sudo -n )?(ssh-mgr-controller --(apply|unapply)-hotfix=hotfix_(frontend|backend|common)_[A-Za-z0-9._-]+|ssh-mgr-controller --upload-hotfix=\/var\/lib\/sshmgr\/sshmgr-[0-9.]+-hotfix_[A-Za-z0-9._-]+\.gz|supervisorctl (status|restart all)|sftp:\S+ \/var\/lib\/sshmgr\/[A-Za-z0-9._-]+|(chown sshmgr:sshmgr|chmod [0-7]+|mkdir -p|rm -f|sha256sum|test -f|stat [^;|&`$()<>\n]*) [A-Za-z0-9._/'" -]+)$/;

/** Text of everything in a decoded history: strings and payload bytes (as UTF-8). */
function textOf(v: unknown, out: string[] = [], depth = 0): string[] {
  if (typeof v === 'string') out.push(v);
  else if (v instanceof Uint8Array) out.push(Buffer.from(v).toString('utf8'));
  else if (v && typeof v === 'object' && depth < 40)
    for (const x of Object.values(v as Record<string, unknown>)) textOf(x, out, depth + 1);
  return out;
}

/** The SSH private key's secret parts: its PEM header, its base64 body, and 32-character slices of each line after the first (whose start is a constant preamble and the public key). */
function keySecrets(pem: string): string[] {
  const body = pem.split('\n').filter((l) => l && !l.startsWith('-----'));
  const slices = body
    .slice(1)
    .flatMap((l) => Array.from({ length: Math.floor(l.length / 32) }, (_, i) => l.slice(i * 32, i * 32 + 32)));
  return ['PRIVATE KEY-----', body.join(''), body.join('\n'), body.join('\\n'), ...slices];
}

describe('security: secrets stay out of histories and logs; bad input is refused or inert; the ledger is append-only', function () {
  this.timeout(180_000);
  let env: RolloutEnv;
  let admin: Sql;
  let role: string;
  let password: string;
  let roleUrl: (url: string) => string;
  let worker: WorkerProcess;
  const handles: WorkflowHandle[] = [];
  const tq = `security-${randomBytes(3).toString('hex')}`;

  before(async () => {
    env = await rolloutEnv({ frontends: 1, backends: 2 });
    admin = postgres(testStack().postgres.url('postgres'), { max: 1, onnotice: () => undefined });
    // The orchestrator connects as its own role with a password worth stealing.
    role = `km_orchestrator_${randomBytes(3).toString('hex')}`;
    password = `pw-${randomBytes(12).toString('hex')}`;
    await admin.unsafe(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`);
    for (const url of [env.orchestratorUrl, env.kmUrl]) {
      const db = postgres(url, { max: 1, onnotice: () => undefined });
      await db.unsafe(
        `GRANT CREATE, USAGE ON SCHEMA public TO ${role}; GRANT ALL ON ALL TABLES IN SCHEMA public TO ${role}; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO ${role}`,
      );
      await db.end();
    }
    roleUrl = (url) => {
      const u = new URL(url);
      u.username = role;
      u.password = password;
      return u.toString();
    };
    const keyFile = path.join(await scratchDir('security'), 'id_ed25519');
    await fs.writeFile(keyFile, env.sshPrivateKey, { mode: 0o600 });
    worker = await startWorkerProcess(env.client, {
      temporalAddress: testStack().temporal.address,
      taskQueue: tq,
      orchestratorUrl: roleUrl(env.orchestratorUrl),
      kmUrl: roleUrl(env.kmUrl),
      sshKeyFile: keyFile,
      allowedSigners: env.people.allowedSigners,
    });
  });
  afterEach(async () => {
    for (const h of handles.splice(0)) {
      const d = await h.describe().catch(() => undefined);
      if (d?.status.name === 'RUNNING') await h.terminate('test ended').catch(() => undefined);
      await env.orchestrator`DELETE FROM server_claim WHERE rollout_id = ${h.workflowId}`;
      await env.orchestrator`DELETE FROM hotfix_claim WHERE rollout_id = ${h.workflowId}`;
    }
    for (const s of env.fleet.servers) s.clearFaults();
  });
  after(async () => {
    await worker?.kill();
    await admin?.end({ timeout: 2 });
    await env?.close();
  });

  async function start(i: Partial<Omit<RolloutInput, 'signed'>> & { hotfix: string }): Promise<WorkflowHandle> {
    const workflowId = `security-${i.hotfix}-${randomBytes(2).toString('hex')}`;
    const signed = await env.sign('alice', {
      action: 'rollout',
      rollout: workflowId,
      hotfix: i.hotfix,
      sha256: await env.registeredSha256(i.hotfix),
    });
    const full: RolloutInput = {
      signed,
      servers: [],
      batch: '1',
      maxFailures: 0,
      approvers: [],
      approvalTimeoutMs: 3_600_000,
      timing: FAST_TIMING,
      ...i,
    };
    const h = await env.client.workflow.start(WORKFLOW_TYPES.rollout, { taskQueue: tq, workflowId, args: [full] });
    handles.push(h);
    return h;
  }
  async function phase(h: WorkflowHandle, want: string): Promise<void> {
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) {
      const st = await h.query(statusQuery).catch(() => undefined);
      if (st && (st.phase === want || isFinalPhase(st.phase))) return;
    }
    throw new Error(`phase ${want} not reached`);
  }
  function commandsRun(): string[] {
    return env.fleet.servers.flatMap((s) => s.log().map((e) => e.command));
  }

  // One line: a signed decision's comment may hold no line break or control character (SPEC §7; refused, below).
  const NASTY = [
    '$(touch /tmp/km-pwned)',
    '`reboot`',
    "'; rm -rf / #",
    '&& supervisorctl stop all',
    '\u202egnp.exe',
    'ü ✓ 𝔘 \u200b',
  ].join(' | ');

  it("a rollout with a failure and a rollback: no SSH or signing key bytes and no password in its histories, the ledger or the worker's log", async () => {
    const hf = await env.hotfix('backend');
    const before = await maxProcessesOf(env.km);
    env.fleet.servers.at(-1)!.fault({ failApplies: 100 });
    const h = await start({ hotfix: hf.name });
    await phase(h, 'verifying');
    await env.approve(h, 'bob', NASTY);
    const st = (await h.result()) as RolloutStatus;
    await endsBy(env, st, before, ['rolled_back']);

    const recorded: RecordedHistory[] = [];
    await collect(env.client, 'security', h.workflowId, recorded);
    const raw = await Promise.all(recorded.map((r) => env.client.workflow.getHandle(r.workflowId).fetchHistory()));
    const histories = raw.map((x) => textOf(x).join('\n')).join('\n');
    const ledger = (
      await env.orchestrator<
        { t: string }[]
      >`SELECT row_to_json(e)::text AS t FROM rollout_event e UNION ALL SELECT row_to_json(r)::text FROM rollout r`
    )
      .map((r) => r.t)
      .join('\n');
    const log = worker.output();
    // The corpus is real: the decoded payloads, the ledger and the log name the hotfix, the approver's comment is there.
    assert.ok(
      histories.includes(hf.name) && histories.includes(JSON.stringify(NASTY).slice(1, -1)),
      'payloads were decoded',
    );
    assert.ok(ledger.includes(hf.name), 'the ledger was read');
    assert.match(log, new RegExp(hf.name), 'the worker logged the rollout');
    // The fleet's SSH key, and every person's signing key (their signatures are in the histories; their keys must not be).
    const signingKeys = await Promise.all(Object.values(env.people.keys).map((f) => fs.readFile(f, 'utf8')));
    const secrets = [env.sshPrivateKey, ...signingKeys].flatMap(keySecrets);
    for (const [where, text] of [
      ['workflow histories', histories],
      ['the ledger', ledger],
      ["the worker's log", log],
    ] as const) {
      for (const secret of secrets)
        assert.ok(!text.includes(secret), `${where} contain private key material (${secret.slice(0, 12)}…)`);
      assert.ok(!text.includes(password), `${where} contain the database password`);
      assert.ok(!text.includes(encodeURIComponent(password)), `${where} contain the database password (URL-encoded)`);
    }
    // The comment was data: stored verbatim, never run.
    assert.equal(st.approvals[0]?.comment, NASTY);
    const unexpected = commandsRun().filter((c) => !EXPECTED_COMMAND.test(c));
    assert.deepEqual(unexpected, [], "the servers ran only the vendor's commands");
  });

  it('names, paths and server lists with metacharacters, newlines, long values or odd Unicode: exit 2, one line, nothing changed', async () => {
    const hf = await env.hotfix('common');
    const dir = await scratchDir('bad-input');
    const base = {
      TEMPORAL_ADDRESS: testStack().temporal.address,
      KM_HOTFIX_TASK_QUEUE: tq,
      DATABASE_URL: env.orchestratorUrl,
      KM_DATABASE_URL: env.kmUrl,
      USER: 'alice',
    };
    const commandsBefore = commandsRun().length;
    const [{ n: rolloutsBefore }] = await env.orchestrator<{ n: number }[]>`SELECT count(*)::int AS n FROM rollout`;
    const inventoryBefore = await env.orchestrator`SELECT * FROM fleet_server ORDER BY position`;
    const kmBefore = await env.km`SELECT * FROM km_hotfix_applied ORDER BY 1, 2`;

    // A real hotfix file whose name carries a command substitution.
    const made = await makeHotfix({
      component: 'common',
      version: '3.0.0',
      description: 'ok',
      issueId: 'UKM-1',
      outDir: dir,
    });
    const evil = path.join(dir, 'sshmgr-3.0.0-hotfix_common_x$(touch \u2028pwned)_UKM-1.gz');
    await fs.copyFile(made.path!, evil);
    const inventory = async (name: string, over: Record<string, unknown> = {}) => {
      const f = path.join(dir, `inv-${randomBytes(3).toString('hex')}.json`);
      const servers = env.fleet.inventory().map((s, i) => (i === 0 ? { ...s, name, ...over } : s));
      await fs.writeFile(f, JSON.stringify({ servers }));
      return f;
    };
    const cases: [string, string[]][] = [
      ['hotfix with ;', ['rollout', 'hotfix_common_x;touch /tmp/km-pwned']],
      ['hotfix with a newline', ['rollout', 'hotfix_common_x\nsupervisorctl stop all']],
      ['hotfix with $()', ['rollout', 'hotfix_common_$(reboot)']],
      ['hotfix 10,000 characters long', ['rollout', `hotfix_common_${'a'.repeat(10_000)}`]],
      ['hotfix with right-to-left override', ['rollout', 'hotfix_common_\u202eexe']],
      ['hotfix with non-ASCII letters', ['rollout', 'hotfix_common_fïx']],
      ['server with ;', ['rollout', hf.name, '--servers', `${env.fleet.servers[0].name};reboot`]],
      ['canary with backticks', ['rollout', hf.name, '--canary', '`reboot`']],
      [
        'servers with a newline',
        ['rollout', hf.name, '--servers', `${env.fleet.servers[0].name}\n${env.fleet.servers[1].name}`],
      ],
      ['batch with $()', ['rollout', hf.name, '--batch', '$(reboot)']],
      ['upload of a file name with $() and U+2028', ['upload', evil]],
      ['removal of a hotfix with ;', ['remove', 'hotfix_common_x;reboot']],
      ['inventory name with ;', ['fleet', 'import', await inventory('km-fe-1;reboot')]],
      ['inventory name with a newline', ['fleet', 'import', await inventory('km-fe-1\nkm-evil')]],
      ['inventory name 300 characters long', ['fleet', 'import', await inventory('k'.repeat(300))]],
      ['inventory name in Cyrillic', ['fleet', 'import', await inventory('km-fе-1')]],
      [
        'inventory host with an ssh option',
        ['fleet', 'import', await inventory('km-x', { host: '-oProxyCommand=touch /tmp/km-pwned' })],
      ],
      ['inventory user with ;', ['fleet', 'import', await inventory('km-x', { user: 'root;id' })]],
    ];
    const wrong: string[] = [];
    const results = await Promise.all(cases.map(([, args]) => runCli(args, base, 60_000)));
    for (const [i, r] of results.entries()) {
      const [what] = cases[i];
      const err = lines(r.stderr);
      // One line: what the user typed is shown escaped (no line breaks, no bidi overrides), no stack trace.
      if (r.code !== 2 || err.length !== 1 || /[\u2028\u2029\u202a-\u202e]|\n\s+at /.test(r.stderr))
        wrong.push(`${what}: exit ${r.code}, stderr ${JSON.stringify(r.stderr)}`);
    }
    assert.deepEqual(wrong, [], 'each refused with exit 2 and one line');
    assert.equal(commandsRun().length, commandsBefore, 'no server ran anything');
    const [{ n: rolloutsAfter }] = await env.orchestrator<{ n: number }[]>`SELECT count(*)::int AS n FROM rollout`;
    assert.equal(rolloutsAfter, rolloutsBefore, 'no rollout, upload or removal started');
    assert.deepEqual(
      await env.orchestrator`SELECT * FROM fleet_server ORDER BY position`,
      inventoryBefore,
      'the inventory is unchanged',
    );
    assert.deepEqual(
      await env.km`SELECT * FROM km_hotfix_applied ORDER BY 1, 2`,
      kmBefore,
      'the Key Manager database is unchanged',
    );
  });

  it('a rejection reason with metacharacters and odd Unicode is stored as data and never run; line breaks, NUL and 20,000 characters are refused at the gate', async () => {
    const hf = await env.hotfix('frontend');
    const before = await maxProcessesOf(env.km);
    const h = await start({ hotfix: hf.name });
    await phase(h, 'verifying');
    for (const bad of ['x'.repeat(20_000), 'bad\ncanary', 'bad\u0000canary', 'bad\u2028canary']) {
      await assert.rejects(
        env.reject(h, 'bob', bad),
        /longer than 2000 characters|line break or control character/,
        JSON.stringify(bad.slice(0, 20)),
      );
    }
    assert.equal((await h.query(statusQuery)).phase, 'verifying', 'a refused answer changes nothing');
    const reason = `${NASTY} ${'x'.repeat(1000)}`;
    await env.reject(h, 'bob', reason);
    const st = (await h.result()) as RolloutStatus;
    await endsBy(env, st, before, ['rolled_back']);
    const [ev] = await env.orchestrator<
      { detail: { comment: string } }[]
    >`SELECT detail FROM rollout_event WHERE rollout_id = ${h.workflowId} AND kind = 'reject'`;
    assert.equal(ev.detail.comment, reason, 'stored verbatim');
    const unexpected = commandsRun().filter((c) => !EXPECTED_COMMAND.test(c));
    assert.deepEqual(unexpected, []);
    await assert.rejects(fs.access('/tmp/km-pwned'));
  });

  it('the ledger stores a NUL (which PostgreSQL text cannot hold) as U+FFFD instead of refusing the write on every retry', async () => {
    // Unreachable through signed decisions today (one line, no controls); the ledger must not wedge if text ever carries one.
    const id = `nul-${randomBytes(3).toString('hex')}`;
    await recordRolloutStart(env.orchestrator, {
      id,
      kind: 'rollout',
      hotfix: 'hotfix_common_nul',
      requestedBy: 'a\u0000b',
      servers: [],
      options: { note: 'x\u0000y' },
    });
    await appendEvent(env.orchestrator, {
      rolloutId: id,
      key: 'reject',
      kind: 'reject',
      actor: 'bob',
      detail: { comment: 'bad\u0000canary' },
    });
    await recordPhase(env.orchestrator, id, 'rolled_back', 'rejected: bad\u0000canary');
    const events = await rolloutEvents(env.orchestrator, id);
    assert.equal(events.find((e) => e.kind === 'reject')?.detail.comment, 'bad\ufffdcanary');
    const [row] = await env.orchestrator<
      { error: string; requested_by: string }[]
    >`SELECT error, requested_by FROM rollout WHERE id = ${id}`;
    assert.deepEqual(row, { error: 'rejected: bad\ufffdcanary', requested_by: 'a\ufffdb' });
  });

  it('the ledger is append-only for the role the orchestrator connects as: UPDATE, DELETE and TRUNCATE are refused', async () => {
    const sql = postgres(roleUrl(env.orchestratorUrl), { max: 1, onnotice: () => undefined });
    try {
      const [{ n }] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM rollout_event`;
      assert.ok(n > 0, 'there are events to protect');
      await assert.rejects(sql`UPDATE rollout_event SET actor = 'mallory'`, /append-only/);
      await assert.rejects(sql`DELETE FROM rollout_event`, /append-only/);
      await assert.rejects(sql`TRUNCATE rollout_event CASCADE`, /append-only/);
      const [{ n: after }] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM rollout_event`;
      assert.equal(after, n);
    } finally {
      await sql.end({ timeout: 2 });
    }
  });
});
