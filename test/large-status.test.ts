// A fleet above the status threshold (lowered through the workflow's timing,
// the same code as FULL_SERVER_LIST_MAX = 500): the status, the result and the
// approve Update's answer carry counts and the servers needing attention,
// not the list; every server's state is paged from the ledger by the CLI,
// with or without Temporal. Checked against the Key Manager database.
import assert from 'node:assert/strict';
import { cliSettings, rolloutEnv, RolloutEnv, FAST_TIMING } from './helpers/rollout-env';
import { assertOk, assertRefused, lines, runCli, CliResult } from './helpers/cli-process';
import { testStack } from './helpers/stack';
import { freePort } from '../stack/process';
import { serverStates } from '../store/server-states';
import type { RolloutStatus } from '../domain/messages/rollout';
import { startWebServer } from '../web/server';
import { statusQuery } from '../domain/messages/rollout';

const FLEET = ['km-fe-1', 'km-fe-2', 'km-fe-3', 'km-be-1', 'km-be-2', 'km-be-3', 'km-be-4'];
/** Above 4 servers a status leaves out the list; two servers per batch child, so several children write. */
const TIMING = { ...FAST_TIMING, fullServerListMax: 4, sliceServers: 2 };

describe('status of a fleet above the threshold: bounded, and paged from the ledger', function () {
  this.timeout(180_000);
  let env: RolloutEnv;
  let base: Record<string, string>;
  before(async () => {
    env = await rolloutEnv({ frontends: 3, backends: 4 });
    // alice signs by default; a test passes another KM_HOTFIX_SIGNING_KEY to sign as someone else.
    base = cliSettings(env, testStack().temporal.address);
  });
  after(async () => {
    await env?.close();
  });
  afterEach(async () => {
    await env?.endAll();
    await env.km`DELETE FROM km_hotfix_applied`;
    for (const s of env.fleet.servers) {
      s.clearLog();
      s.clearFaults();
    }
  });
  const km = (args: string[], extra: Record<string, string> = {}): Promise<CliResult> =>
    runCli(args, { ...base, ...extra }, 60_000);
  const ok = assertOk;
  const refused = (r: CliResult, re: RegExp, what: string): void => assertRefused(r, 2, re, what);

  it('fan-out with a failure: counts and the failed server in status, answer and result; every server paged from the ledger as Key Manager has it', async () => {
    const hf = await env.hotfix('frontend');
    env.fleet.server('km-be-3').fault({ failApplies: 100 });
    const h = await env.startRollout({ hotfix: hf.name, batch: '2', maxFailures: 1, timing: TIMING });
    const waiting = await env.waitForPhase(h, 'verifying');
    assert.equal(waiting.phase, 'verifying', waiting.error ?? '');
    assert.equal(waiting.servers, undefined, 'no per-server list above the threshold');
    assert.equal(waiting.serverCount, FLEET.length);
    assert.deepEqual(waiting.serverCounts, { patched: 1, pending: 6 });

    const answer = await env.approve(h, 'bob', 'fine');
    assert.equal(answer.servers, undefined, 'the approve answer is bounded too');
    assert.equal(answer.serverCount, FLEET.length);

    const done = (await h.result()) as RolloutStatus;
    assert.equal(done.phase, 'completed', done.error ?? '');
    assert.equal(done.servers, undefined);
    assert.deepEqual(done.serverCounts, { patched: 6, failed: 1 });
    assert.deepEqual(
      done.attention.map((s) => [s.name, s.state]),
      [['km-be-3', 'failed']],
    );
    assert.match(done.attention[0].error ?? '', /./);
    assert.equal(done.attentionMore, 0);

    // The ledger has every server's latest state, and it is what Key Manager says.
    const applied = new Set(await env.applied(hf.name));
    const page = await serverStates(env.orchestrator, h.workflowId, { page: 1, pageSize: 100 });
    assert.deepEqual(
      page.servers.map((s) => s.name),
      FLEET.filter((n) => page.servers.some((s) => s.name === n)),
      'inventory order',
    );
    assert.deepEqual(page.servers.map((s) => s.name).sort(), [...FLEET].sort());
    for (const s of page.servers)
      assert.equal(s.state, applied.has(s.name) ? 'patched' : 'failed', `${s.name}: ledger says ${s.state}`);
    assert.deepEqual([...applied].sort(), FLEET.filter((n) => n !== 'km-be-3').sort());

    // The CLI: --json has no servers field above the threshold; counts and the failed server in both forms.
    const json = await km(['status', h.workflowId, '--json']);
    ok(json, 'status --json');
    const st = JSON.parse(json.stdout) as RolloutStatus;
    assert.equal('servers' in st, false, 'no servers field above the threshold');
    assert.deepEqual(st.serverCounts, { patched: 6, failed: 1 });
    const human = await km(['status', h.workflowId]);
    ok(human, 'status');
    assert.match(human.stdout, /6\/7 patched or skipped\s+\(patched 6 · failed 1\)/);
    assert.match(human.stdout, /^km-be-3\s+backend\s+failed/m);
    assert.match(human.stdout, /--servers' pages/);

    // --servers pages the ledger, in inventory order; the footer says how to get the next page.
    const p2 = await km(['status', h.workflowId, '--servers', '--page', '2', '--page-size', '3']);
    ok(p2, 'status --servers --page 2');
    const rows = lines(p2.stdout)
      .filter((l) => /^km-/.test(l))
      .map((l) => l.split(/\s+/).slice(0, 3));
    assert.deepEqual(
      rows.map((r) => r[0]),
      page.servers.slice(3, 6).map((s) => s.name),
    );
    assert.match(
      p2.stdout,
      /servers 4-6 of 7 server\(s\) \(page 2 of 3\); next: km-hotfix status \S+ --servers --page 3 --page-size 3/,
    );
    const failed = await km(['status', h.workflowId, '--servers', '--state', 'failed', '--json']);
    ok(failed, 'status --servers --state failed --json');
    const doc = JSON.parse(failed.stdout) as {
      total: number;
      pages: number;
      servers: { name: string; state: string }[];
    };
    assert.deepEqual(
      doc.servers.map((s) => [s.name, s.state]),
      [['km-be-3', 'failed']],
    );
    assert.equal(doc.total, 1);

    // The ledger answers without Temporal.
    const gone = await km(['status', h.workflowId, '--servers', '--state', 'patched'], {
      TEMPORAL_ADDRESS: `127.0.0.1:${await freePort()}`,
    });
    ok(gone, 'status --servers without Temporal');
    assert.equal(lines(gone.stdout).filter((l) => /^km-/.test(l)).length, 6);

    // The web page: counts, the failed server, and a page of the ledger instead of a grid.
    const web = await startWebServer({ client: env.client, orchestrator: env.orchestrator, port: await freePort() });
    try {
      const html = await (await fetch(`${web.url}/rollouts/${encodeURIComponent(h.workflowId)}?page=2`)).text();
      assert.doesNotMatch(html, /id="grid"/);
      assert.match(html, /<p id="counts">7 servers: patched 6 · failed 1<\/p>/);
      assert.match(html, /<table id="attention"><tr><td>km-be-3<\/td><td>failed<\/td>/);
      assert.match(html, /← previous<\/a> · page 2 of 1 \(7 server\(s\)\)/, 'past the last page: says so, links back');
      const first = await (await fetch(`${web.url}/rollouts/${encodeURIComponent(h.workflowId)}?state=failed`)).text();
      assert.deepEqual(
        [...first.matchAll(/data-ledger-server="([^"]+)"/g)].map((m) => m[1]),
        ['km-be-3'],
      );
      const all = await (await fetch(`${web.url}/rollouts/${encodeURIComponent(h.workflowId)}`)).text();
      assert.deepEqual(
        [...all.matchAll(/data-ledger-server="([^"]+)"/g)].map((m) => m[1]),
        page.servers.map((x) => x.name),
      );
    } finally {
      await web.close();
    }

    // Bad flags: one line, exit 2, nothing read.
    refused(
      await km(['status', h.workflowId, '--servers', '--page', '0']),
      /--page must be a whole number >= 1/,
      '--page 0',
    );
    refused(
      await km(['status', h.workflowId, '--servers', '--state', 'done']),
      /--state must be one of pending, patching/,
      '--state done',
    );
    refused(await km(['status', h.workflowId, '--page', '2']), /add --servers/, '--page without --servers');
    refused(
      await km(['status', h.workflowId, '--servers', '--page-size', '5000']),
      /--page-size must be at most 1000/,
      '--page-size 5000',
    );
    refused(
      await km(['status', 'rollout-no-such-thing', '--servers']),
      /no rollout, removal or upload rollout-no-such-thing in the ledger/,
      'unknown id',
    );
  });

  it('a rejected canary: rolled back, and the ledger has the canary rolled back and every other server untouched', async () => {
    const hf = await env.hotfix('frontend');
    const h = await env.startRollout({ hotfix: hf.name, batch: '2', timing: TIMING });
    await env.waitForPhase(h, 'verifying');
    await env.reject(h, 'bob', 'the page is blank');
    const done = (await h.result()) as RolloutStatus;
    assert.equal(done.phase, 'rolled_back', done.error ?? '');
    assert.equal(done.servers, undefined);
    assert.deepEqual(done.serverCounts, { rolled_back: 1, untouched: 6 });
    const page = await serverStates(env.orchestrator, h.workflowId, { page: 1, pageSize: 100 });
    assert.deepEqual(
      page.servers.map((s) => [s.name, s.state]),
      FLEET.map((n) => [n, n === done.canary ? 'rolled_back' : 'untouched']),
    );
    assert.deepEqual(await env.applied(hf.name), []);
  });
});

describe('live counts of a fleet above the threshold: from the ledger while a batch child runs', function () {
  this.timeout(180_000);
  let env: RolloutEnv;
  before(async () => {
    env = await rolloutEnv({ frontends: 1, backends: 13 });
  });
  after(async () => {
    await env?.close();
  });
  afterEach(async () => {
    await env?.endAll();
    for (const s of env.fleet.servers) s.clearFaults();
  });

  it('counts and the failed server show as servers end, before the child that runs them ends (the workflow itself learns them then): web page and CLI', async () => {
    const hf = await env.hotfix('frontend');
    // One child runs all 13 backends, two at a time. The last, km-be-13, hangs 20 s in its apply while the rest
    // (0.3 s each) end, so the child cannot end before most servers have; km-be-5 fails every apply.
    const backends = env.fleet.servers.map((s) => s.name).filter((n) => n.startsWith('km-be-'));
    for (const n of backends)
      env.fleet
        .server(n)
        .fault(n === 'km-be-5' ? { failApplies: 100 } : { hangMs: n === 'km-be-13' ? 20_000 : 300, hangOn: 'apply' });
    const h = await env.startRollout({
      hotfix: hf.name,
      batch: '2',
      maxFailures: 1,
      timing: { ...FAST_TIMING, fullServerListMax: 4, sliceServers: 20 },
    });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob', 'fine');
    const web = await startWebServer({ client: env.client, orchestrator: env.orchestrator, port: await freePort() });
    try {
      const deadline = Date.now() + 30_000;
      let html = '';
      let counts = '';
      for (;;) {
        html = await (await fetch(`${web.url}/rollouts/${encodeURIComponent(h.workflowId)}`)).text();
        counts = /<p id="counts">([^<]*)<\/p>/.exec(html)?.[1] ?? '';
        if (Number(/patched (\d+)/.exec(counts)?.[1] ?? 0) >= 10 && /failed 1/.test(counts)) break;
        assert.ok(Date.now() < deadline, `the web page never showed 10 patched and 1 failed: ${counts}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.match(counts, /^14 servers: /);
      assert.match(html, /<table id="attention"><tr><td>km-be-5<\/td><td>failed<\/td>/);
      const cli = await runCli(
        ['status', h.workflowId, '--json'],
        cliSettings(env, testStack().temporal.address),
        60_000,
      );
      assertOk(cli, 'status --json');
      const st = JSON.parse(cli.stdout) as RolloutStatus;
      assert.ok((st.serverCounts.patched ?? 0) >= 10, `the CLI's counts: ${JSON.stringify(st.serverCounts)}`);
      assert.equal(st.serverCounts.failed, 1);
      assert.equal(
        Object.values(st.serverCounts).reduce((a, b) => a + (b ?? 0), 0),
        14,
      );
      assert.deepEqual(
        st.attention.map((s) => [s.name, s.state]),
        [['km-be-5', 'failed']],
      );
      assert.match(st.attention[0].error ?? '', /./);
      // The workflow's own answer has not moved yet (so the answers above were the ledger's): only the canary.
      const own = await h.query(statusQuery);
      assert.deepEqual(
        own.serverCounts,
        { patched: 1, pending: 13 },
        "the parent learns the child's results only when it ends",
      );
      assert.deepEqual(own.attention, []);
    } finally {
      await web.close();
    }
    const done = (await h.result()) as RolloutStatus;
    assert.equal(done.phase, 'completed', done.error ?? '');
    assert.deepEqual(done.serverCounts, { patched: 13, failed: 1 });
  });
});
