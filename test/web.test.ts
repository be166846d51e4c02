// The approvers' web page (issue 12) in a real headless chromium, over the
// real Temporal dev server, PostgreSQL and the simulated fleet. The proxy's
// identity header is set by the browser (the test server trusts 127.0.0.1);
// decisions are signed by the page's delegate key and judged by the workflow.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import type { Page } from 'playwright-core';
import { rolloutEnv, RolloutEnv } from './helpers/rollout-env';
import { launchBrowser, SCREENSHOTS, TestBrowser } from './helpers/browser';
import { scratchDir, testStack } from './helpers/stack';
import { BIN, cliEnv, lines, runCli } from './helpers/cli-process';
import { spawn } from 'node:child_process';
import { startWebServer, WebServer } from '../web/server';
import { generateEd25519KeyPair } from '../keymanager/keygen';
import { isFinalPhase, RolloutStatus } from '../domain/rollout';
import { freePort } from '../stack/process';
import { serversOf } from './helpers/servers';

const DELEGATE = 'km-hotfix-web@delegate';

describe('web page for approvers (real chromium)', function () {
  this.timeout(180_000);
  let env: RolloutEnv;
  let web: WebServer;
  let browser: TestBrowser;
  const started: WorkflowHandle[] = [];
  // A small webhook receiver: keeps every {text}; when down, answers 503 (and still counts the attempt).
  const hook = { messages: [] as string[], attempts: 0, down: false, server: http.createServer() };
  hook.server.on('request', (req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => { body += c.toString(); });
    req.on('end', () => {
      hook.attempts++;
      if (hook.down) {
        res.statusCode = 503;
        res.end();
        return;
      }
      hook.messages.push(String((JSON.parse(body) as { text?: unknown }).text));
      res.end('ok');
    });
  });
  const messagesAbout = async (id: string, n: number): Promise<string[]> => {
    for (let i = 0; i < 150; i++) {
      const found = hook.messages.filter((m) => m.includes(encodeURIComponent(id)));
      if (found.length >= n) return found;
      await new Promise((r) => setTimeout(r, 100));
    }
    return hook.messages.filter((m) => m.includes(encodeURIComponent(id)));
  };

  before(async () => {
    await new Promise<void>((r) => hook.server.listen(0, '127.0.0.1', r));
    const webPort = await freePort();
    // Slow restarts: the fan-out lasts long enough to watch the grid change.
    env = await rolloutEnv({
      frontends: 1, backends: 4, restartMs: 700,
      notify: { webhookUrl: `http://127.0.0.1:${(hook.server.address() as AddressInfo).port}/hook`, webUrl: `http://127.0.0.1:${webPort}` },
    });
    const dir = await scratchDir('web');
    const pair = generateEd25519KeyPair(DELEGATE);
    const keyFile = path.join(dir, 'web_ed25519');
    await fs.writeFile(keyFile, pair.private, { mode: 0o600 });
    const [type, b64] = pair.public.trim().split(/\s+/);
    await fs.appendFile(env.people.allowedSigners, `${DELEGATE} ${type} ${b64}\n`);
    web = await startWebServer({ client: env.client, orchestrator: env.orchestrator, trustedProxies: ['127.0.0.1', '::1'], signingKey: keyFile, pollMs: 300, port: webPort });
    browser = await launchBrowser();
    await fs.mkdir(SCREENSHOTS, { recursive: true });
  });

  // Every rollout a test started ends, pass or fail: aborted if it still runs, then awaited.
  afterEach(async () => {
    for (const h of started.splice(0)) {
      const st = await env.status(h).catch(() => undefined);
      if (st && !isFinalPhase(st.phase)) await env.abort(h, 'dana').catch(() => undefined);
      await h.result().catch(() => undefined);
    }
    await env.km`DELETE FROM km_hotfix_applied`;
  });
  after(async () => {
    await browser?.close();
    await web?.close();
    await env?.close();
    hook.server.close();
  });

  async function gateRollout(approvers: string[] = []): Promise<{ h: WorkflowHandle; st: RolloutStatus }> {
    const hf = await env.hotfix('backend');
    const h = await env.startRollout({ hotfix: hf.name, as: 'alice', approvers });
    started.push(h);
    const st = await env.waitForPhase(h, 'verifying');
    assert.equal(st.phase, 'verifying', st.error ?? '');
    return { h, st };
  }

  const pageUrl = (h: WorkflowHandle) => `${web.url}/rollouts/${encodeURIComponent(h.workflowId)}`;

  async function open(person: string | undefined, h: WorkflowHandle): Promise<Page> {
    const ctx = await browser.context(person);
    const page = await ctx.newPage();
    await page.goto(pageUrl(h));
    return page;
  }

  it('approve end to end: the page shows canary, its URL and drained backends; the grid recolours live during fan-out; the timeline names the person, the delegate and the key', async () => {
    const { h, st } = await gateRollout();
    const page = await open('bob', h);
    assert.equal(await page.locator('#phase').textContent(), 'verifying');
    assert.equal(await page.locator('#canary').textContent(), st.canary);
    const canaryUrl = await page.locator('#canary-url').getAttribute('href');
    assert.equal(canaryUrl, new URL(st.gate?.url ?? 'http://missing/').toString());
    const drained = await page.locator('#drained td:first-child').allTextContents();
    assert.deepEqual(drained, st.drained.map((d) => d.server));
    assert.equal(await page.locator('[data-server]').count(), serversOf(st).length);
    await page.screenshot({ path: path.join(SCREENSHOTS, 'web-verifying.png'), fullPage: true });

    await page.fill('#approve-form textarea[name=comment]', 'login works <b>on</b> the canary');
    await page.click('#approve');
    await page.locator('#notice', { hasText: 'approved by bob' }).waitFor({ timeout: 15_000 });

    // Fan-out: the page stays loaded while server-sent events recolour the grid.
    await page.locator('#phase', { hasText: 'fanout' }).waitFor({ timeout: 30_000 });
    const patchedAtLoad = Number(await page.evaluate('window.__stayed = true, document.querySelectorAll(\'[data-state="patched"]\').length'));
    // A function, not a string: the page's Content-Security-Policy forbids eval.
    type Doc = { document: { querySelectorAll(s: string): { length: number } } };
    await page.waitForFunction((n: number) => (globalThis as unknown as Doc).document.querySelectorAll('[data-state="patched"]').length > n, patchedAtLoad, { timeout: 30_000 });
    assert.equal(await page.evaluate('window.__stayed === true'), true, 'the grid changed without reloading the page');

    const done = (await h.result()) as RolloutStatus;
    assert.equal(done.phase, 'completed', done.error ?? '');
    await page.locator('#phase', { hasText: 'completed' }).waitFor({ timeout: 15_000 });
    assert.equal(await page.locator('[data-state="patched"]').count(), serversOf(done).filter((s) => s.state === 'patched').length);
    const approval = done.approvals[0]!;
    assert.equal(approval.by, 'bob');
    assert.equal(approval.via, DELEGATE);
    assert.match(approval.message, /\non-behalf-of: bob\n/);
    assert.equal(approval.comment, 'login works <b>on</b> the canary');
    const row = page.locator('#timeline tr', { hasText: 'approve' }).first();
    const text = await row.textContent();
    assert.match(text ?? '', /login works <b>on<\/b> the canary/, 'the comment is shown as text, not markup');
    assert.match(text ?? '', new RegExp(`signed by bob via ${DELEGATE} with SHA256:`));
    assert.equal(await page.locator('#timeline b', { hasText: 'on' }).count(), 0);
    await page.screenshot({ path: path.join(SCREENSHOTS, 'web-completed.png'), fullPage: true });
    await page.context().close();

    // The webhook heard: waiting (canary, its URL, the page), then completed.
    const [waiting, completed] = await messagesAbout(h.workflowId, 2);
    assert.match(waiting ?? '', new RegExp(`${done.hotfix} waits for verification: check canary ${st.canary} directly on ${st.gate?.url?.replace(/[.]/g, '\\.')}`));
    assert.ok(waiting?.includes(pageUrl(h)), waiting);
    assert.match(completed ?? '', new RegExp(`${done.hotfix} completed on 5 server`));
  });

  it('reject with a reason: the workflow rolls back and the timeline keeps the reason', async () => {
    const { h } = await gateRollout();
    const page = await open('carol', h);
    await page.fill('#reject-form textarea[name=reason]', 'login page blank');
    await page.click('#reject');
    await page.locator('#notice', { hasText: 'rejected by carol' }).waitFor({ timeout: 15_000 });
    const done = (await h.result()) as RolloutStatus;
    assert.equal(done.phase, 'rolled_back');
    assert.match(done.error ?? '', /rejected by carol: login page blank/);
    await page.goto(pageUrl(h));
    assert.match(await page.locator('#timeline').textContent() ?? '', /login page blank/);
    await page.context().close();
    const said = await messagesAbout(h.workflowId, 2);
    assert.match(said[1] ?? '', /rolled back: rejected by carol: login page blank/);
  });

  it('a webhook that is down neither blocks nor fails a rollout; it is retried a few times', async () => {
    hook.down = true;
    try {
      const { h } = await gateRollout();
      const attempts = hook.attempts;
      await env.approve(h, 'bob');
      const done = (await h.result()) as RolloutStatus;
      assert.equal(done.phase, 'completed', done.error ?? '');
      assert.ok(hook.attempts - attempts >= 3, `retried (${hook.attempts - attempts} attempts after the gate)`);
    } finally {
      hook.down = false;
    }
  });

  it('a person the rules exclude sees the workflow\'s refusal, and nothing changes', async () => {
    const { h } = await gateRollout(['carol']);
    const page = await open('bob', h);
    await page.click('#approve');
    await page.locator('#notice', { hasText: 'approve refused: bob is not an approver of this rollout (approvers: carol)' }).waitFor({ timeout: 15_000 });
    const requester = await open('alice', h);
    await requester.click('#approve');
    await requester.locator('#notice', { hasText: /approve refused: alice \(SHA256:\S+\) started this rollout/ }).waitFor({ timeout: 15_000 });
    const st = await env.status(h);
    assert.equal(st.phase, 'verifying');
    assert.deepEqual(st.approvals, []);
    await page.context().close();
    await requester.context().close();
  });

  it('without a person named by a trusted proxy the page is read-only: no buttons, also when the header comes from an untrusted address', async () => {
    const { h } = await gateRollout();
    const page = await open(undefined, h);
    assert.equal(await page.locator('#phase').textContent(), 'verifying');
    assert.equal(await page.locator('#approve').count(), 0);
    assert.equal(await page.locator('#reject').count(), 0);
    assert.equal(await page.locator('#no-buttons').count(), 1);
    await page.context().close();

    // The header from an address that is not the proxy names nobody.
    const other = await startWebServer({ client: env.client, orchestrator: env.orchestrator, trustedProxies: ['192.0.2.1'], signingKey: undefined });
    try {
      const ctx = await browser.context('bob');
      const p = await ctx.newPage();
      await p.goto(`${other.url}/rollouts/${encodeURIComponent(h.workflowId)}`);
      assert.equal(await p.locator('#read-only').count(), 1);
      assert.equal(await p.locator('#approve').count(), 0);
      await ctx.close();
    } finally {
      await other.close();
    }
    assert.equal((await env.status(h)).phase, 'verifying');
  });

  it('a forged cross-site post is refused (Sec-Fetch-Site, Origin, form token) and changes nothing', async () => {
    const { h } = await gateRollout();
    // Another site whose page posts to the approve form on load; the browser still carries the person's header.
    const evil = http.createServer((_req, res) => {
      res.setHeader('content-type', 'text/html');
      res.end(`<form id="f" method="post" action="${pageUrl(h)}/approve"><input name="comment" value="forged"></form><script>document.getElementById('f').submit()</script>`);
    });
    await new Promise<void>((r) => evil.listen(0, '127.0.0.1', r));
    try {
      const ctx = await browser.context('bob');
      const page = await ctx.newPage();
      // localhost vs 127.0.0.1: another origin.
      const response = page.waitForResponse((r) => r.url().endsWith('/approve'));
      await page.goto(`http://localhost:${(evil.address() as AddressInfo).port}/`);
      const r = await response;
      assert.equal(r.status(), 403);
      assert.match(await r.text(), /Refused: a cross-site request/);
      await ctx.close();
    } finally {
      evil.close();
    }
    // Without a browser's headers, the form token is still required.
    const direct = await fetch(`${pageUrl(h)}/approve`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-user': 'bob' }, body: 'comment=forged' });
    assert.equal(direct.status, 403);
    assert.match(await direct.text(), /form token/);
    const st = await env.status(h);
    assert.equal(st.phase, 'verifying');
    assert.deepEqual(st.approvals, []);
  });

  it('lists rollouts: active first, then recent, with hotfix, phase, requester and outcome', async () => {
    const { h, st } = await gateRollout();
    const ctx = await browser.context();
    const page = await ctx.newPage();
    await page.goto(web.url);
    const active = await page.locator('h2:has-text("Active") + table').textContent();
    assert.match(active ?? '', new RegExp(st.hotfix));
    assert.match(active ?? '', /verifying/);
    assert.match(active ?? '', /alice/);
    assert.match(await page.locator('h2:has-text("Recent") + table').textContent() ?? '', /completed|rolled_back/);
    await ctx.close();
    void h;
  });

  it('km-hotfix web: serves the page from the configured Temporal and database until Ctrl-C; bad input is one line and exit 2', async () => {
    const base = { TEMPORAL_ADDRESS: testStack().temporal.address, DATABASE_URL: env.orchestratorUrl };
    const badPort = await runCli(['web', '--port', 'http'], base);
    assert.equal(badPort.code, 2, badPort.stderr);
    assert.equal(lines(badPort.stderr).length, 1, badPort.stderr);
    const badKey = await runCli(['web', '--port', '0'], { ...base, KM_HOTFIX_WEB_SIGNING_KEY: '/nonexistent/web_ed25519' });
    assert.equal(badKey.code, 2, badKey.stderr);
    assert.match(badKey.stderr, /KM_HOTFIX_WEB_SIGNING_KEY/);
    assert.equal(lines(badKey.stderr).length, 1, badKey.stderr);

    const port = await freePort();
    const child = spawn(process.execPath, [BIN, 'web', '--port', String(port)], { env: cliEnv(base), stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const exited = new Promise<number | null>((r) => child.once('close', (code) => r(code)));
    try {
      for (let i = 0; i < 100 && !stderr.includes(`http://127.0.0.1:${port}`); i++) await new Promise((r) => setTimeout(r, 100));
      assert.match(stderr, new RegExp(`km-hotfix web: http://127.0.0.1:${port} \\(read-only: no KM_HOTFIX_WEB_SIGNING_KEY\\)`));
      const res = await fetch(`http://127.0.0.1:${port}/`);
      assert.equal(res.status, 200);
      assert.match(await res.text(), /<h1>km-hotfix rollouts<\/h1>/);
      child.kill('SIGINT');
      assert.equal(await exited, 0, stderr);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
