// Hostile and careless input (issue 13), against the real Temporal dev
// server, PostgreSQL and the simulated fleet over SSH, with the real CLI as a
// child process. Every refusal is exit 2 and one line without control
// characters, and changes nothing: the Key Manager database, the
// orchestrator database, the simulator's command logs and Temporal are
// compared before and after. Accepted hostile text is rendered inert.
// Memory and time are bounded (peak RSS of the child, the runCli timeout).
// docs/SECURITY.md has this table in prose.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { promises as fs } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { cliSettings, rolloutEnv, RolloutEnv, FAST_TIMING } from './helpers/rollout-env';
import { assertOk, assertRefused, CliResult, lines, runCli } from './helpers/cli-process';
import { scratchDir, testStack } from './helpers/stack';
import { runChild } from '../stack/process';
import { makeHotfix } from '../simulator';
import { WORKFLOW_TYPES, statusQuery } from '../domain/messages/rollout';
import type { RolloutInput, RolloutStatus } from '../domain/messages/rollout';
import { oneLine } from '../domain/decision';

const CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/; // any control character but the newline that ends a line
const KEY = `SHA256:${'a'.repeat(43)}`;
const RSS_FILE_HOOK = path.resolve(__dirname, 'helpers', 'report-rss.js');
/** Peak memory allowed to a refusal: well under the 300 MB file and /dev/zero it refuses. */
const MAX_RSS_KIB = 200 * 1024;

interface Case {
  what: string;
  /** Arguments; a function builds them (files) just before the run. */
  args: string[] | (() => Promise<string[]>);
  env?: Record<string, string>;
  refusal: RegExp;
  /** Also bound the child's peak memory. */
  boundMemory?: boolean;
}

describe('hostile and careless input: refused in one line with nothing changed, or rendered inert', function () {
  this.timeout(180_000);
  let env: RolloutEnv;
  let dir: string;
  let base: Record<string, string>;
  let seq = 0;

  before(async () => {
    env = await rolloutEnv({ frontends: 2, backends: 3 });
    dir = await scratchDir('hostile');
    // alice signs by default; a test passes another KM_HOTFIX_SIGNING_KEY to sign as someone else.
    base = cliSettings(env, testStack().temporal.address);
  });
  after(async () => {
    await env?.close();
  });

  const km = (args: string[], extra: Record<string, string | undefined> = {}, timeoutMs = 60_000): Promise<CliResult> =>
    runCli(args, { ...base, ...extra }, timeoutMs);

  const ok = assertOk;

  /** Refused on one line (cli-process assertRefused), and no control character reaches the terminal. */
  function refused(r: CliResult, code: number, re: RegExp, what: string): void {
    assertRefused(r, code, re, what);
    assert.doesNotMatch(r.stderr + r.stdout, CONTROL, `${what}: no control character reaches the terminal`);
  }

  /** Everything a refusal must leave alone. */
  async function snapshot(): Promise<unknown> {
    const [kmState] = await env.km<{ hotfixes: unknown; applied: unknown; servers: unknown }[]>`
      SELECT (SELECT json_agg(h ORDER BY name) FROM km_hotfix h) AS hotfixes,
             (SELECT json_agg(a ORDER BY server_name, hotfix_name) FROM km_hotfix_applied a) AS applied,
             (SELECT json_agg(s ORDER BY name) FROM km_server s) AS servers`;
    const [orch] = await env.orchestrator<
      { files: unknown; rollouts: number; events: number; fleet: unknown; claims: number }[]
    >`
      SELECT (SELECT json_agg(json_build_object('sha256', sha256, 'file', file_name) ORDER BY sha256, file_name) FROM hotfix_file) AS files,
             (SELECT count(*)::int FROM rollout) AS rollouts,
             (SELECT count(*)::int FROM rollout_event) AS events,
             (SELECT json_agg(f ORDER BY position) FROM fleet_server f) AS fleet,
             (SELECT count(*)::int FROM server_claim) + (SELECT count(*)::int FROM hotfix_claim) AS claims`;
    let workflows = 0;
    for await (const w of env.client.workflow.list({ query: `TaskQueue = '${env.taskQueue}'` })) if (w) workflows++;
    const sim = env.fleet.servers.map((s) => [s.name, s.log().length]);
    return { kmState, orch, workflows, sim };
  }

  async function write(name: string, content: string | Buffer): Promise<string> {
    const d = path.join(dir, `f${++seq}`);
    await fs.mkdir(d, { recursive: true });
    const p = path.join(d, name);
    await fs.writeFile(p, content);
    return p;
  }

  async function inDir(name: string, make: (p: string) => Promise<void>): Promise<string> {
    const d = path.join(dir, `f${++seq}`);
    await fs.mkdir(d, { recursive: true });
    const p = path.join(d, name);
    await make(p);
    return p;
  }

  const hotfixName = (desc: string) => `sshmgr-3.0.0-hotfix_backend_${desc}_UKM-${1000 + seq}.gz`;
  const inventory = (fields: Record<string, unknown>) =>
    JSON.stringify({ servers: [{ name: 'km-fe-1', role: 'frontend', host: '10.0.0.1', hostKey: KEY, ...fields }] });
  const yamlInventory = (nameValue: string) =>
    `servers:\n  - name: ${nameValue}\n    role: frontend\n    host: h\n    hostKey: "${KEY}"\n`;

  /** A big but valid-looking inventory: ~50 MB, like the one in the issue. */
  async function bigInventory(): Promise<string> {
    return inDir('fleet-50mb.yaml', async (p) => {
      const h = await fs.open(p, 'w');
      try {
        await h.write('servers:\n');
        const chunk: string[] = [];
        for (let i = 0; i < 100_000; i++) {
          chunk.push(
            `  - name: km-be-${i}\n    role: backend\n    host: 10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}\n    user: root\n    hostKey: "${KEY}"\n    url: https://km-be-${i}.example.com/${'p'.repeat(380)}\n`,
          );
          if (chunk.length === 5000) {
            await h.write(chunk.join(''));
            chunk.length = 0;
          }
        }
        await h.write(chunk.join(''));
      } finally {
        await h.close();
      }
    });
  }

  const CASES: Case[] = [
    // ---- hotfix files: only a regular gzip file within the limit is read (item 5)
    {
      what: 'upload: a symbolic link named like a hotfix, to /etc/shadow',
      args: async () => ['upload', await inDir(hotfixName('shadow'), (p) => fs.symlink('/etc/shadow', p))],
      refusal: /is a symbolic link: .*--follow-symlinks/,
    },
    {
      what: 'rollout: the same link',
      args: async () => ['rollout', await inDir(hotfixName('shadow'), (p) => fs.symlink('/etc/shadow', p))],
      refusal: /is a symbolic link/,
    },
    {
      what: 'plan: the same link',
      args: async () => ['plan', await inDir(hotfixName('shadow'), (p) => fs.symlink('/etc/shadow', p))],
      refusal: /is a symbolic link/,
    },
    {
      what: 'upload --follow-symlinks: a link to /dev/zero (memory bounded)',
      args: async () => [
        'upload',
        '--follow-symlinks',
        await inDir(hotfixName('zero'), (p) => fs.symlink('/dev/zero', p)),
      ],
      refusal: /is a character device, not a regular file/,
      boundMemory: true,
    },
    {
      what: 'upload: a FIFO named like a hotfix (no hang)',
      args: async () => [
        'upload',
        await inDir(hotfixName('fifo'), async (p) => {
          await runChild('mkfifo', [p]);
        }),
      ],
      refusal: /is a named pipe \(FIFO\), not a regular file/,
    },
    {
      what: 'rollout: a directory named like a hotfix',
      args: async () => ['rollout', await inDir(hotfixName('dir'), (p) => fs.mkdir(p))],
      refusal: /is a directory, not a regular file/,
    },
    {
      what: 'upload: a 300 MB file (refused before it is read; memory bounded)',
      args: async () => [
        'upload',
        await inDir(hotfixName('huge'), async (p) => {
          const h = await fs.open(p, 'w');
          await h.truncate(300 * 1024 * 1024);
          await h.close();
        }),
      ],
      refusal: /is larger than 256 MiB \(314572800 bytes\).*KM_HOTFIX_MAX_FILE_MIB/,
      boundMemory: true,
    },
    {
      what: 'upload: over a configured KM_HOTFIX_MAX_FILE_MIB=1',
      args: async () => [
        'upload',
        await write(hotfixName('two_mib'), Buffer.concat([Buffer.from([0x1f, 0x8b]), Buffer.alloc(2 * 1024 * 1024)])),
      ],
      env: { KM_HOTFIX_MAX_FILE_MIB: '1' },
      refusal: /is larger than 1 MiB/,
    },
    {
      what: 'upload: KM_HOTFIX_MAX_FILE_MIB=lots',
      args: async () => ['upload', await write(hotfixName('cfg'), 'x')],
      env: { KM_HOTFIX_MAX_FILE_MIB: 'lots' },
      refusal: /KM_HOTFIX_MAX_FILE_MIB must be a whole number of MiB/,
    },
    {
      what: 'upload: a shell script with a hotfix name (not gzip)',
      args: async () => ['upload', await write(hotfixName('script'), '#!/bin/sh\nrm -rf /\n')],
      refusal: /is not a gzip file/,
    },
    {
      what: 'rollout: an empty file',
      args: async () => ['rollout', await write(hotfixName('empty'), '')],
      refusal: /is empty/,
    },
    // ---- names, ids, identities and flags
    {
      what: 'rollout: a Name with a shell command',
      args: ['rollout', 'hotfix_backend_x;rm -rf /'],
      refusal: /description|Name|hotfix/,
    },
    {
      what: 'rollout: a Name with an escape sequence',
      args: ['rollout', 'hotfix_backend_a\u001b[2J'],
      refusal: /\\e\[2J/,
    },
    {
      what: 'status: an id with a newline',
      args: ['status', 'x\n10:00:00  phase completed'],
      refusal: /is not a workflow id/,
    },
    {
      what: 'approve: an id with a title escape',
      args: ['approve', 'rollout-x\u001b]0;owned\u0007'],
      refusal: /no rollout, removal or upload with id 'rollout-x\\e\]0;owned\\x07'/,
    },
    {
      what: 'approve --signature: a file that is no SSH signature',
      args: async () => [
        'approve',
        'rollout-x',
        '--message',
        await write('msg.txt', 'km-hotfix decision v1\n'),
        '--signature',
        await write('msg.sig', '\u001b[2Jowned'),
      ],
      refusal: /not an SSH signature/,
    },
    {
      what: 'an unknown option made of an escape sequence',
      args: ['list', '--\u001b[31mred'],
      refusal: /unknown option '--\\e\[31mred'/,
    },
    {
      what: 'rollout --canary that an SSH command line would read as an option',
      args: ['rollout', 'hotfix_backend_x', '--canary', '-oProxyCommand=touch /tmp/owned'],
      refusal: /not registered|canary|not in the inventory/,
    },
    // ---- inventories (item 6): nothing imported
    {
      what: "fleet import: host '-p'",
      args: async () => ['fleet', 'import', await write('fleet.json', inventory({ host: '-p' }))],
      refusal: /'host' must be a host name or IP address, not starting with '-'/,
    },
    {
      what: "fleet import: host '-oProxyCommand=sh'",
      args: async () => ['fleet', 'import', await write('fleet.json', inventory({ host: '-oProxyCommand=sh' }))],
      refusal: /'host'/,
    },
    {
      what: "fleet import: user '-l'",
      args: async () => ['fleet', 'import', await write('fleet.json', inventory({ user: '-l' }))],
      refusal: /'user' must be a login name/,
    },
    {
      what: 'fleet import: url with a clear-screen escape',
      args: async () => ['fleet', 'import', await write('fleet.json', inventory({ url: 'https://km-fe-1/\u001b[2J' }))],
      refusal:
        /'url' must be an http\(s\) address without spaces or control characters \(got "https:\/\/km-fe-1\/\\u001b\[2J"\)/,
    },
    {
      what: 'fleet import: url with a newline and a fake line',
      args: async () => [
        'fleet',
        'import',
        await write('fleet.json', inventory({ url: 'https://km-fe-1/\n10:00:00  phase completed' })),
      ],
      refusal: /'url'/,
    },
    {
      what: "fleet import: url host '-x'",
      args: async () => ['fleet', 'import', await write('fleet.json', inventory({ url: 'https://-x/' }))],
      refusal: /'url'/,
    },
    {
      what: 'fleet import: a name with a newline',
      args: async () => ['fleet', 'import', await write('fleet.json', inventory({ name: 'km\nfe' }))],
      refusal: /'name' must be letters/,
    },
    {
      what: 'fleet import: a !!js/function tag',
      args: async () => ['fleet', 'import', await write('fleet.yaml', yamlInventory('!!js/function "function(){}"'))],
      refusal: /Unresolved tag.*no YAML tags/,
    },
    {
      what: 'fleet import: a !!python/object tag',
      args: async () => [
        'fleet',
        'import',
        await write('fleet.yaml', yamlInventory('!!python/object/apply:os.system ["id"]')),
      ],
      refusal: /no YAML tags/,
    },
    {
      what: 'fleet import: a YAML alias bomb',
      args: async () => [
        'fleet',
        'import',
        await write(
          'fleet.yaml',
          `a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\nservers: [*f]\n`,
        ),
      ],
      refusal: /not valid YAML|alias/i,
      boundMemory: true,
    },
    {
      what: 'fleet import: a __proto__ key',
      args: async () => [
        'fleet',
        'import',
        await write(
          'fleet.json',
          '{"servers":[{"__proto__":{"admin":true},"name":"km-fe-1","role":"frontend","host":"h","hostKey":"' +
            KEY +
            '"}]}',
        ),
      ],
      refusal: /unknown field '__proto__'/,
    },
    {
      what: 'fleet import: a 50 MB inventory (refused before parsing; memory bounded)',
      args: async () => ['fleet', 'import', await bigInventory()],
      refusal: /is larger than 4 MiB .*KM_HOTFIX_MAX_INVENTORY_MIB/,
      boundMemory: true,
    },
    {
      what: 'fleet import: a FIFO (no hang)',
      args: async () => [
        'fleet',
        'import',
        await inDir('fleet.yaml', async (p) => {
          await runChild('mkfifo', [p]);
        }),
      ],
      refusal: /named pipe \(FIFO\)/,
    },
    // ---- configuration (item 7)
    {
      what: 'a DATABASE_URL without // (its password never printed)',
      args: ['list'],
      env: { DATABASE_URL: 'postgres:Secret@host/db' },
      refusal: /^km-hotfix: DATABASE_URL is not a PostgreSQL URL \(not shown: it may hold a password\)/,
    },
    {
      what: 'a KM_DATABASE_URL without //',
      args: ['hotfixes'],
      env: { KM_DATABASE_URL: 'postgresql:km:Secret@host:5432/km' },
      refusal: /^km-hotfix: KM_DATABASE_URL is not a PostgreSQL URL/,
    },
  ];

  it('the table: every hostile input is refused with exit 2 and one line, and changes nothing anywhere', async () => {
    const rssFile = path.join(dir, 'rss');
    // Every row runs, and every failing row is reported, not only the first.
    const failures: string[] = [];
    for (const c of CASES) {
      try {
        const args = typeof c.args === 'function' ? await c.args() : c.args;
        const before = await snapshot();
        const extra: Record<string, string> = { ...(c.env ?? {}) };
        if (c.boundMemory)
          Object.assign(extra, { NODE_OPTIONS: `--require ${RSS_FILE_HOOK}`, KM_HOTFIX_TEST_RSS_FILE: rssFile });
        const r = await km(args, extra, 30_000); // a hang (FIFO) fails here
        refused(r, 2, c.refusal, c.what);
        assert.doesNotMatch(r.stderr, /Secret/, `${c.what}: no password`);
        assert.deepEqual(await snapshot(), before, `${c.what}: nothing changed`);
        if (c.boundMemory) {
          const kib = Number(await fs.readFile(rssFile, 'utf8'));
          await fs.rm(rssFile);
          assert.ok(kib > 0 && kib < MAX_RSS_KIB, `${c.what}: peak memory ${Math.round(kib / 1024)} MiB`);
        }
      } catch (err) {
        const first = (err as Error).message.split('\n')[0];
        failures.push(first.startsWith(c.what) ? first : `${c.what}: ${first}`);
        await fs.rm(rssFile, { force: true });
      }
    }
    assert.deepEqual(failures, [], `${failures.length} of ${CASES.length} rows failed`);
  });

  it('item 1: a refused upload under a wrong name leaves nothing behind, and the right name then uploads and rolls out', async () => {
    const made = await makeHotfix({
      component: 'backend',
      version: '3.0.0',
      description: `fix_queue_stall_${randomBytes(2).toString('hex')}`,
      issueId: 'UKM-2001',
      outDir: await inDir('real', (p) => fs.mkdir(p)),
    });
    const realName = made.fileName;
    const wrongFile = `sshmgr-3.0.0-hotfix_backend_a-_UKM-${1000 + ++seq}.gz`;
    const wrong = await write(wrongFile, made.bytes);
    const kmBefore = await env.km`SELECT name FROM km_hotfix ORDER BY name`;

    const bad = await km(['upload', wrong, '--wait'], {}, 120_000);
    assert.equal(bad.code, 1, `the wrong name fails to register: ${bad.stdout}${bad.stderr}`);
    assert.match(
      bad.stdout,
      /contains hotfix_backend_fix_queue_stall_\w+ 3\.0\.0, but its name says hotfix_backend_a-/,
    );
    // Nothing stays: neither the copy on the server nor the stored file.
    assert.equal(
      env.fleet.server('km-fe-1').file(`/var/lib/sshmgr/${wrongFile}`),
      undefined,
      'the copy on the server was removed',
    );
    assert.deepEqual(
      [...(await env.orchestrator`SELECT file_name FROM hotfix_file WHERE file_name = ${wrongFile}`)],
      [],
      'the stored file was forgotten',
    );
    assert.deepEqual(
      [...(await env.km`SELECT name FROM km_hotfix ORDER BY name`)],
      [...kmBefore],
      'Key Manager registered nothing',
    );
    const [refusedEvent] = await env.orchestrator<
      { detail: { removedFromServer: boolean } }[]
    >`SELECT detail FROM rollout_event WHERE kind = 'upload-refused' AND detail->>'fileName' = ${wrongFile}`;
    assert.equal(refusedEvent?.detail.removedFromServer, true, 'the ledger says what was cleaned up');

    // The same bytes under the right name: a rollout gets past preflight and uploads the right name.
    const started = await km(['rollout', made.path!, '--json', '--services-timeout', '20s']);
    ok(started, 'rollout of the real file');
    const { id } = JSON.parse(started.stdout) as { id: string };
    const h = env.client.workflow.getHandle(id);
    try {
      const st = await env.waitForPhase(h, 'verifying', 60_000);
      assert.equal(st.phase, 'verifying', st.error ?? '');
      const [row] = await env.km<
        { file_name: string }[]
      >`SELECT file_name FROM km_hotfix WHERE sha256 = ${(await env.orchestrator<{ sha256: string }[]>`SELECT sha256 FROM hotfix_file WHERE file_name = ${realName}`)[0]?.sha256 ?? ''}`;
      assert.equal(row?.file_name, realName, 'registered under its right name');
    } finally {
      await env.abort(h, 'tester', 'test over');
      await h.result();
    }
  });

  it('item 2: signals and updates with missing, null or wrong-typed payloads sent straight to Temporal (rollout and removal) are refused or ignored, never a failed workflow task', async () => {
    const hf = await env.hotfix('frontend');
    const h = await env.startRollout({ hotfix: hf.name });
    try {
      await env.waitForPhase(h, 'verifying');
      // Signals, as the Temporal UI or `temporal workflow signal` send them.
      await h.signal('pause');
      await h.signal<[null]>('pause', null);
      await h.signal<[string]>('resume', 'x');
      await h.signal<[unknown]>('abort', {});
      await h.signal<[unknown]>('abort', { by: 5 });
      await h.signal<[unknown]>('abort', [{ by: 'eve' }]);
      await h.signal<[unknown]>('pause', { by: 'eve\n10:00:00  phase completed' });
      // Updates: every one refused by its validator, the caller told why (an unsigned decision is no decision).
      const refusals: [string, unknown[], RegExp][] = [
        ['approve', [], /approve needs a payload/],
        ['approve', [null], /approve needs a payload/],
        ['approve', ['bob'], /approve takes an object/],
        ['approve', [{ by: 'bob', comment: {} }], /the approve is not signed/],
        ['approve', [{ message: {}, signature: [] }], /the approve is not signed/],
        ['reject', [{ by: 'bob', reason: {} }], /the reject is not signed/],
        ['pause', [{ by: 'eve' }], /the pause is not signed/],
        ['abort', [{ by: 'eve', reason: 'x' }], /the abort is not signed/],
      ];
      for (const [name, args, re] of refusals) {
        await assert.rejects(
          h.executeUpdate(name, { args: args as [unknown] }),
          (e: unknown) => e instanceof WorkflowUpdateFailedError && re.test(String(e.cause?.message)),
          `${name} ${JSON.stringify(args)}`,
        );
      }
      const st = await h.query(statusQuery);
      assert.equal(st.phase, 'verifying');
      assert.equal(st.paused, false, 'no bad signal paused it');
      assert.deepEqual(st.approvals, []);
      const history = await h.fetchHistory();
      const failedTasks = (history.events ?? []).filter((e) => e.workflowTaskFailedEventAttributes);
      assert.deepEqual(
        failedTasks.map((e) => e.workflowTaskFailedEventAttributes?.failure?.message),
        [],
        'no workflow task failed',
      );
      // A good answer still works.
      await env.approve(h, 'bob', 'fine');
      const done = (await h.result()) as RolloutStatus;
      assert.equal(done.phase, 'completed', done.error ?? '');

      // The removal workflow takes the same Signals: bad ones are ignored there too.
      const removal = await env.startRemoval({ hotfix: hf.name });
      try {
        await removal.signal('pause');
        await removal.signal<[null]>('abort', null);
        await removal.signal<[unknown]>('resume', { by: ['x'] });
        const removed = (await removal.result()) as RolloutStatus;
        assert.equal(removed.phase, 'completed', removed.error ?? '');
        assert.deepEqual(await env.applied(hf.name), [], 'no bad signal stopped the removal');
        const failedRemovalTasks = ((await removal.fetchHistory()).events ?? []).filter(
          (e) => e.workflowTaskFailedEventAttributes,
        );
        assert.deepEqual(
          failedRemovalTasks.map((e) => e.workflowTaskFailedEventAttributes?.failure?.message),
          [],
          'no removal workflow task failed',
        );
      } finally {
        await removal.terminate('test over').catch(() => undefined);
      }
    } finally {
      await h.terminate('test over').catch(() => undefined);
    }
  });

  it('items 3 and 8: a hostile comment and reason are shown inert by status, status --watch and list; a paused then aborted rollout is not shown paused', async () => {
    const hf = await env.hotfix('common');
    const started = await km(['rollout', hf.name, '--json', '--services-timeout', '20s']);
    ok(started, 'rollout');
    const { id } = JSON.parse(started.stdout) as { id: string };
    const h = env.client.workflow.getHandle(id);
    const comment = 'ok\n10:00:00  phase completed\u001b[2J\u001b]0;owned\u0007';
    const reason = 'freeze\r\n10:00:01  completed: applied on 5 server(s)\u001b[31m';
    try {
      await env.waitForPhase(h, 'verifying');
      ok(await km(['pause', id]), 'pause');
      ok(
        await km(['approve', id, '--comment', comment], { KM_HOTFIX_SIGNING_KEY: env.people.keys.bob }),
        'approve with a hostile comment',
      );
      // A decision the workflow would refuse is refused by the CLI itself.
      refused(
        await km(['abort', id, '--reason', 'x'.repeat(2001)]),
        2,
        /'comment' is longer than 2000 characters/,
        'an over-long abort reason',
      );
      ok(
        await km(['abort', id, '--reason', reason], { KM_HOTFIX_SIGNING_KEY: env.people.keys.carol }),
        'abort with a hostile reason',
      );
      const final = (await h.result()) as RolloutStatus;
      assert.equal(final.phase, 'rolled_back');
      assert.equal(final.paused, false, 'item 8: a finished rollout is not paused');
      // A signed message is one line of printable text: the CLI signs the comment made one line.
      assert.equal(final.approvals[0]?.comment, oneLine(comment), 'stored as signed');

      const shown = [await km(['status', id]), await km(['status', id, '--watch']), await km(['list'])];
      for (const r of shown) {
        assert.ok(r.code === 0 || r.code === 1, `exit ${r.code}: ${r.stderr}`);
        assert.doesNotMatch(r.stdout + r.stderr, CONTROL, 'no control character reaches the terminal');
        assert.ok(
          !lines(r.stdout).some((l) => /^10:00:0\d\s+(phase completed|completed:)/.test(l)),
          `no fake line:\n${r.stdout}`,
        );
        assert.doesNotMatch(r.stdout, /PAUSED/, 'item 8');
      }
      assert.match(
        shown[0].stdout,
        /approved by bob \(SHA256:[^)]+\) at \S+: ok 10:00:00 phase completed \[2J \]0;owned\n/,
      );
      assert.match(
        shown[1].stdout,
        /rolled back: aborted by carol: freeze 10:00:01 completed: applied on 5 server\(s\) \[31m/,
      );
      // JSON is the machine form: escaped by JSON itself, the text kept as given.
      const json = await km(['status', id, '--json']);
      assert.doesNotMatch(json.stdout, CONTROL);
      assert.equal((JSON.parse(json.stdout) as RolloutStatus).approvals[0]?.comment, oneLine(comment));
    } finally {
      await h.terminate('test over').catch(() => undefined);
    }
  });

  it('fleet list shows an inventory row stored before these checks (a URL with escapes) inert', async () => {
    const [row] = await env.orchestrator<{ url: string | null }[]>`SELECT url FROM fleet_server WHERE name = 'km-fe-2'`;
    await env.orchestrator`UPDATE fleet_server SET url = ${'https://km-fe-2/\u001b]0;owned\u0007\n10:00:00  phase completed'} WHERE name = 'km-fe-2'`;
    try {
      const r = await km(['fleet', 'list']);
      ok(r, 'fleet list');
      assert.doesNotMatch(r.stdout, CONTROL);
      assert.match(r.stdout, /https:\/\/km-fe-2\/\\e\]0;owned\\x07\\n10:00:00  phase completed/);
    } finally {
      await env.orchestrator`UPDATE fleet_server SET url = ${row?.url ?? null} WHERE name = 'km-fe-2'`;
    }
  });

  it('item 4: status of a workflow whose query times out (no worker) is exit 3 and one line, no uncaught error', async () => {
    const input: RolloutInput = {
      hotfix: 'hotfix_common_nobody',
      signed: { message: '', signature: '' },
      servers: [],
      batch: '1',
      maxFailures: 0,
      approvers: [],
      approvalTimeoutMs: 60_000,
      timing: FAST_TIMING,
    };
    const queue = `nobody-${randomBytes(3).toString('hex')}`;
    const h = await env.client.workflow.start(WORKFLOW_TYPES.rollout, {
      taskQueue: queue,
      workflowId: `rollout-nobody-${randomBytes(3).toString('hex')}`,
      args: [input],
    });
    try {
      const r = await km(['status', h.workflowId], { KM_HOTFIX_TASK_QUEUE: queue }, 60_000);
      refused(r, 3, /does not answer its status query .*is a worker running on task queue/, 'status without a worker');
      assert.doesNotMatch(r.stderr, /Channel has been shut down/);
    } finally {
      await h.terminate('test over').catch(() => undefined);
    }
  });
});
