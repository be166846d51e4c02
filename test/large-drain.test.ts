// A backend hotfix on a large fleet (issue 31): 2,000 backends with names of
// up to 60 characters, so the canary's verification drains 1,999 of them. The
// answer at the gate names them by count and sha256 (a few hundred bytes, not
// 120 KB): approved from the CLI, from the web page in a real Chromium, and
// with OpenSSH's ssh-keygen over `--print-message`, which shows the list next
// to the message. A digest that is not the rollout's list is refused and
// changes nothing; audit re-computes the digest from the ledger's list and
// catches a row whose list was altered. The expected digest is computed here
// from the Key Manager database, not taken from the workflow.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import { cliSettings, rolloutEnv, RolloutEnv } from './helpers/rollout-env';
import { assertOk, lines, runCli, CliResult } from './helpers/cli-process';
import { scratchDir, testStack } from './helpers/stack';
import { keygenSign } from './helpers/openssh-tools';
import { launchBrowser, TestBrowser } from './helpers/browser';
import { startWebServer, WebServer } from '../web/server';
import { generateEd25519KeyPair } from '../keymanager/keygen';
import { freePort } from '../stack/process';
import { isFinalPhase } from '../domain/rollout';
import { RolloutStatus } from '../domain/messages/rollout';

/** 52 characters: `${PREFIX}-be-2000` is 60. */
const PREFIX = 'kmb-prod-eu-west-1a-rack-17-chassis-05-blade-corp-ex';
const BACKENDS = 2000;
const CANARY = `${PREFIX}-be-1`;
const DELEGATE = 'km-hotfix-web@delegate';
/** What "fits the terminal" means here: no line longer, and not more lines, than a terminal window shows. */
const TERMINAL_COLUMNS = 160;
const TERMINAL_ROWS = 40;

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

describe('a backend rollout on 2,000 backends of 60-character names: the gate names the drained backends by digest (issue 31)', function () {
  this.timeout(600_000);
  let env: RolloutEnv;
  let base: Record<string, string>;
  let dir: string;
  let web: WebServer;
  let browser: TestBrowser;
  const started: WorkflowHandle[] = [];

  before(async () => {
    assert.equal(`${PREFIX}-be-${BACKENDS}`.length, 60);
    env = await rolloutEnv({ frontends: 1, backends: BACKENDS, namePrefix: PREFIX, restartMs: 50 });
    base = cliSettings(env, testStack().temporal.address, 'bob');
    dir = await scratchDir('large-drain');
    const pair = generateEd25519KeyPair(DELEGATE);
    const keyFile = path.join(dir, 'web_ed25519');
    await fs.writeFile(keyFile, pair.private, { mode: 0o600 });
    await fs.appendFile(
      env.people.allowedSigners,
      `${DELEGATE} ${pair.public.trim().split(/\s+/).slice(0, 2).join(' ')}\n`,
    );
    web = await startWebServer({
      client: env.client,
      orchestrator: env.orchestrator,
      trustedProxies: ['127.0.0.1', '::1'],
      signingKey: keyFile,
      allowedSigners: env.people.allowedSigners,
      pollMs: 500,
      port: await freePort(),
    });
    browser = await launchBrowser();
  });
  // Every rollout a test started ends, pass or fail.
  afterEach(async () => {
    for (const h of started.splice(0)) {
      const st = await env.status(h).catch(() => undefined);
      if (st && !isFinalPhase(st.phase)) await env.abort(h, 'dana').catch(() => undefined);
      await h.result().catch(() => undefined);
    }
    await env?.endAll();
    await env.km`DELETE FROM km_hotfix_applied`;
  });
  after(async () => {
    await browser?.close();
    await web?.close();
    await env?.close();
  });

  const km = (args: string[], extra: Record<string, string | undefined> = {}): Promise<CliResult> =>
    runCli(args, { ...base, ...extra }, 120_000);

  /** A backend rollout of the canary and one more server, waiting at the gate; the drained backends as Key Manager has them. */
  async function atTheGate(): Promise<{
    h: WorkflowHandle;
    st: RolloutStatus;
    drained: string[];
    list: string;
    before: Record<string, number>;
  }> {
    const hf = await env.hotfix('backend');
    const before = await env.maxProcesses();
    const h = await env.startRollout({ hotfix: hf.name, as: 'alice', servers: [CANARY, `${PREFIX}-be-2`], batch: '2' });
    started.push(h);
    const st = await env.waitForPhase(h, 'verifying', 120_000);
    assert.equal(st.phase, 'verifying', st.error ?? '');
    assert.equal(st.canary, CANARY);
    const now = await env.maxProcesses();
    const drained = Object.keys(now)
      .filter((n) => n.includes('-be-') && now[n] === 0)
      .sort();
    assert.equal(drained.length, BACKENDS - 1, 'every other backend has Maximum Processes 0');
    return { h, st, drained, list: drained.map((n) => `${n}\n`).join(''), before };
  }

  async function completes(h: WorkflowHandle, before: Record<string, number>): Promise<RolloutStatus> {
    const done = (await h.result()) as RolloutStatus;
    assert.equal(done.phase, 'completed', done.error ?? '');
    assert.deepEqual(await env.applied(done.hotfix), [CANARY, `${PREFIX}-be-2`].sort());
    assert.deepEqual(await env.maxProcesses(), before, 'Maximum Processes restored everywhere');
    return done;
  }

  it('approved from the CLI; the status fits the terminal and says where the list is; status --drained is the list the digest is over', async () => {
    const { h, drained, list, before } = await atTheGate();
    const id = h.workflowId;

    const status = await km(['status', id]);
    assertOk(status, 'status');
    const out = status.stdout.split('\n');
    assert.ok(out.length <= TERMINAL_ROWS, `${out.length} lines:\n${status.stdout}`);
    for (const l of out) assert.ok(l.length <= TERMINAL_COLUMNS, `a line of ${l.length} characters: ${l}`);
    assert.match(
      status.stdout,
      new RegExp(
        `^drained\\s+${BACKENDS - 1} backends \\('km-hotfix status ${id} --drained' lists them\\) — set to 0 now$`,
        'm',
      ),
    );
    assert.ok(
      status.stdout.includes(`an answer signs  drained: ${BACKENDS - 1} sha256:${sha256(list)}`),
      status.stdout,
    );
    assert.doesNotMatch(status.stdout, new RegExp(`${PREFIX}-be-3\\b`), 'no drained backend named one by one');

    const listed = await km(['status', id, '--drained']);
    assertOk(listed, 'status --drained');
    assert.equal(listed.stdout, list, 'sorted, one per line: what `| sha256sum` hashes');
    assert.match(listed.stderr, new RegExp(`${BACKENDS - 1} drained backends, sha256:${sha256(list)}`));
    const json = JSON.parse((await km(['status', id, '--drained', '--json'])).stdout) as {
      count: number;
      sha256: string;
      drained: { server: string }[];
    };
    assert.deepEqual(
      [json.count, json.sha256, json.drained.map((d) => d.server)],
      [BACKENDS - 1, sha256(list), drained],
    );

    const approved = await km(['approve', id, '--comment', 'queue drains on the canary']);
    assertOk(approved, 'approve');
    assert.match(approved.stdout, /approved .* by bob \(SHA256:/);
    const done = await completes(h, before);
    const message = done.approvals[0].message;
    assert.ok(message.length < 1024, `the signed message is ${message.length} characters`);
    assert.ok(message.includes(`\ndrained: ${BACKENDS - 1} sha256:${sha256(list)}\n`), message);
    assertOk(await km(['audit', id]), 'audit');
  });

  it("signed by ssh-keygen over --print-message, which lists the drained backends; a digest that is not this rollout's is refused and changes nothing; audit catches an altered list in the ledger", async () => {
    const { h, drained, list, before } = await atTheGate();
    const id = h.workflowId;

    const printed = await km(['approve', id, '--print-message', '--comment', 'checked the canary directly']);
    assertOk(printed, '--print-message');
    assert.match(
      printed.stdout,
      new RegExp(
        `^km-hotfix decision v1\\naction: approve\\nrollout: ${id}\\nhotfix: \\S+\\nsha256: [0-9a-f]{64}\\ncanary: ${CANARY}\\ndrained: ${BACKENDS - 1} sha256:${sha256(list)}\\ncomment: checked the canary directly\\nat: \\S+Z\\n$`,
      ),
    );
    assert.ok(
      printed.stderr.includes(`these ${BACKENDS - 1} backends`) && printed.stderr.includes(list),
      'the list the digest is over is shown next to the message',
    );
    assert.match(printed.stderr, /sign it within 10 minutes/);

    // What must not move while refusals come in.
    const snapshot = async () => {
      const st = await env.status(h);
      const events = await env.orchestrator<
        { kind: string }[]
      >`SELECT kind FROM rollout_event WHERE rollout_id = ${id} AND kind IN ('approve', 'reject') ORDER BY seq`;
      return {
        phase: st.phase,
        approvals: st.approvals,
        events: events.map((e) => e.kind),
        maxProcesses: await env.maxProcesses(),
        applied: await env.applied(st.hotfix),
      };
    };
    const unchanged = await snapshot();
    const digestLine = `drained: ${BACKENDS - 1} sha256:${sha256(list)}`;
    const otherLists: [string, RegExp][] = [
      [
        drained
          .slice(1)
          .map((n) => `${n}\n`)
          .join(''),
        new RegExp(
          `the signed drained backends are ${BACKENDS - 2} sha256:[0-9a-f]{64} but this rollout's are ${BACKENDS - 1} sha256:${sha256(list)}`,
        ),
      ],
      [
        [...drained.slice(1), `${PREFIX}-fe-1`]
          .sort()
          .map((n) => `${n}\n`)
          .join(''),
        new RegExp(
          `the signed drained backends are ${BACKENDS - 1} sha256:[0-9a-f]{64} but this rollout's are ${BACKENDS - 1} sha256:`,
        ),
      ],
    ];
    for (const [other, re] of otherLists) {
      const count = other.split('\n').length - 1;
      const forged = printed.stdout.replace(digestLine, `drained: ${count} sha256:${sha256(other)}`);
      const file = path.join(dir, `forged-${count}.txt`);
      await fs.writeFile(file, forged);
      await fs.writeFile(`${file}.sig`, await keygenSign(dir, env.people.keys.bob, forged));
      const r = await km(['approve', id, '--message', file, '--signature', `${file}.sig`]);
      assert.equal(r.code, 2, `exit ${r.code}: ${r.stderr}`);
      assert.equal(lines(r.stderr).length, 1, r.stderr);
      assert.match(r.stderr, /^km-hotfix: approve refused: /);
      assert.match(r.stderr, re);
    }
    assert.deepEqual(await snapshot(), unchanged, 'the refusals changed nothing: rollout, ledger and fleet');

    const file = path.join(dir, 'approve.txt');
    await fs.writeFile(file, printed.stdout);
    await fs.writeFile(`${file}.sig`, await keygenSign(dir, env.people.keys.bob, printed.stdout));
    const approved = await km(['approve', id, '--message', file, '--signature', `${file}.sig`]);
    assertOk(approved, 'approve --message --signature');
    const done = await completes(h, before);
    assert.equal(done.approvals[0].message, printed.stdout, 'the ledger keeps the bytes ssh-keygen signed');

    assertOk(await km(['audit', id]), 'audit');
    // Someone with database access drops one backend from the recorded drain (the table is append-only: they must disable its trigger).
    await env.orchestrator.begin(async (tx) => {
      await tx`ALTER TABLE rollout_event DISABLE TRIGGER rollout_event_append_only`;
      await tx`UPDATE rollout_event SET detail = detail #- '{drained,7}' WHERE rollout_id = ${id} AND event_key = 'drain:recorded'`;
      await tx`ALTER TABLE rollout_event ENABLE TRIGGER rollout_event_append_only`;
    });
    const caught = await km(['audit', id]);
    assert.equal(caught.code, 1, caught.stdout + caught.stderr);
    assert.match(
      caught.stdout,
      new RegExp(
        `^FAIL\\s+approve\\s+by bob .*the signed drained backends are ${BACKENDS - 1} sha256:\\S+ but the ledger's drained backends are ${BACKENDS - 2} sha256:\\S+: the ledger's list or the message was altered`,
        'm',
      ),
    );
    assert.match(caught.stdout, /^ok\s+rollout\s+by alice/m);
  });

  it('approved from the web page (real Chromium): the digest next to a paged table of the drained backends and their list as a file', async () => {
    const { h, drained, list, before } = await atTheGate();
    const ctx = await browser.context('carol');
    try {
      const page = await ctx.newPage();
      await page.goto(`${web.url}/rollouts/${encodeURIComponent(h.workflowId)}`);
      assert.equal(await page.locator('#phase').textContent(), 'verifying');
      assert.equal(
        await page.locator('#drained-digest').textContent(),
        `drained: ${BACKENDS - 1} sha256:${sha256(list)}`,
      );
      assert.deepEqual(await page.locator('#drained td:first-child').allTextContents(), drained.slice(0, 100));
      assert.match(
        (await page.locator('#drained-nav').textContent()) ?? '',
        new RegExp(`page 1 of 20 \\(${BACKENDS - 1} backend\\(s\\)\\)`),
      );
      await page.click('#drained-next');
      await page.locator('#drained-nav', { hasText: 'page 2 of 20' }).waitFor({ timeout: 15_000 });
      assert.deepEqual(await page.locator('#drained td:first-child').allTextContents(), drained.slice(100, 200));
      const file = await page.request.get(
        `${web.url}${(await page.locator('#drained-list').getAttribute('href')) ?? ''}`,
      );
      assert.equal(await file.text(), list, 'drained.txt: sha256sum gives the digest');

      await page.fill('#approve-form textarea[name=comment]', 'canary fine');
      await page.click('#approve');
      await page.click('#confirm');
      await page.locator('#notice', { hasText: 'approved by carol' }).waitFor({ timeout: 30_000 });
    } finally {
      await ctx.close();
    }
    const done = await completes(h, before);
    assert.equal(done.approvals[0].by, 'carol');
    assert.ok(done.approvals[0].message.includes(`\ndrained: ${BACKENDS - 1} sha256:${sha256(list)}\n`));
    assertOk(await km(['audit', h.workflowId]), "audit of the web page's approval");
  });
});
