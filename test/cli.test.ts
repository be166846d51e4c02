// The real `km-hotfix` executable, as a child process, against the real
// Temporal dev server, PostgreSQL and the simulated fleet over SSH. The worker
// runs in this process (rolloutEnv), so the CLI child is only a client.
// Assertions read real stdout/stderr/exit codes, the Key Manager database and
// the simulator's command logs.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { promises as fs } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { cliSettings, rolloutEnv, RolloutEnv } from './helpers/rollout-env';
import { assertOk, assertRefused, CliResult, lines, runCli } from './helpers/cli-process';
import { freshDatabase, scratchDir, testStack } from './helpers/stack';
import { freePort } from '../stack/process';
import { makeHotfix } from '../simulator';
import type { RolloutStatus } from '../domain/messages/rollout';
import type { Component } from '../domain/hotfix';
import type { PlanDocument } from '../client/render/plan';
import { serversOf } from './helpers/servers';
import { serverStates } from '../store/server-states';

const APPLY = /ssh-mgr-controller --apply-hotfix=/;
const UNAPPLY = /ssh-mgr-controller --unapply-hotfix=/;
const FLEET = ['km-be-1', 'km-be-2', 'km-be-3', 'km-fe-1', 'km-fe-2'];

describe('km-hotfix CLI: the commands of SPEC §4 as a child process', function () {
  this.timeout(120_000);
  let env: RolloutEnv;
  let dir: string;
  let base: Record<string, string>;
  let seq = 0;

  before(async () => {
    env = await rolloutEnv({ frontends: 2, backends: 3 });
    dir = await scratchDir('cli');
    // alice signs by default; a test passes another KM_HOTFIX_SIGNING_KEY to sign as someone else.
    base = cliSettings(env, testStack().temporal.address);
  });
  after(async () => {
    await env?.close();
  });
  afterEach(async () => {
    // Pass or fail, nothing a test started keeps running or holds a server.
    await env?.endAll();
    for (const s of env.fleet.servers) s.clearFaults();
  });

  const as = (who: string): Record<string, string> => ({ KM_HOTFIX_SIGNING_KEY: env.people.keys[who] });
  const km = (args: string[], extra: Record<string, string | undefined> = {}, timeoutMs = 60_000): Promise<CliResult> =>
    runCli(args, { ...base, ...extra }, timeoutMs);

  /** A sample hotfix file on disk (not registered). */
  async function hotfixFile(
    component: Component,
    version = '3.0.0',
  ): Promise<{ path: string; name: string; fileName: string }> {
    const made = await makeHotfix({
      component,
      version,
      description: `cli_fix_${++seq}`,
      issueId: `UKM-${3000 + seq}`,
      outDir: dir,
    });
    return { path: made.path!, name: `hotfix_${component}_cli_fix_${seq}`, fileName: made.fileName };
  }

  const ok = assertOk;
  const refused = assertRefused;

  const handle = (id: string) => env.client.workflow.getHandle(id);
  const statusJson = async (id: string): Promise<RolloutStatus> => {
    const r = await km(['status', id, '--json']);
    ok(r, 'status --json');
    return JSON.parse(r.stdout) as RolloutStatus;
  };
  const logCount = (server: string, re: RegExp) => env.commands(server, re).length;

  it('happy path: plan, rollout from a file, self-approval and an unlisted approver refused, approve, watch to completion; JSON documents, list, hotfixes', async () => {
    const file = await hotfixFile('backend');
    const before = await env.maxProcesses();
    for (const s of env.fleet.servers) s.clearLog();

    // plan: a dry run that changes nothing
    const plan = await km(['plan', file.path, '--batch', '2', '--json']);
    ok(plan, 'plan --json');
    const doc = JSON.parse(plan.stdout) as PlanDocument;
    assert.equal(doc.hotfix, file.name);
    assert.equal(doc.canary?.server, 'km-be-1');
    assert.match(doc.canary?.reason ?? '', /backend/);
    assert.deepEqual(doc.drained, [
      { server: 'km-be-2', maxProcesses: before['km-be-2'] },
      { server: 'km-be-3', maxProcesses: before['km-be-3'] },
    ]);
    // A window of 2 over 4 servers: each place patches two in turn, so km-fe-1 starts with km-be-2 (never km-fe-2).
    assert.deepEqual(doc.fanout?.runs, [
      ['km-fe-1', 'km-fe-2'],
      ['km-be-2', 'km-be-3'],
    ]);
    assert.equal(doc.fanout?.window, 2);
    assert.deepEqual(doc.order, ['km-be-1', 'km-fe-1', 'km-be-2', 'km-fe-2', 'km-be-3']);
    assert.equal(doc.servers.find((s) => s.name === 'km-be-2')?.start, 2);
    const be2 = doc.servers.find((s) => s.name === 'km-be-2')!;
    assert.deepEqual(be2.commands.apply.slice(0, 2), [
      `ssh-mgr-controller --apply-hotfix=${file.name}`,
      'supervisorctl restart all',
    ]);
    assert.deepEqual(be2.commands.rollback.slice(0, 2), [
      `ssh-mgr-controller --unapply-hotfix=${file.name}`,
      'supervisorctl restart all',
    ]);
    assert.equal(doc.upload?.via, 'km-be-1');
    const text = await km(['plan', file.path, '--batch', '2']);
    ok(text, 'plan');
    assert.match(text.stdout, new RegExp(`km-be-2\\s+Maximum Processes ${before['km-be-2']} -> 0`));
    assert.doesNotMatch(text.stdout, /batch \d:/);
    assert.match(text.stdout, /in a window of 2 \(--batch 2\): at most 2 at once/);
    assert.match(text.stdout, /place 1: km-fe-1, km-fe-2\n\s+place 2: km-be-2, km-be-3/);
    assert.match(text.stdout, /Start order .*: km-fe-1 \+ km-be-2, then km-fe-2 \+ km-be-3/);
    assert.match(text.stdout, /rollback:\s+ssh-mgr-controller --unapply-hotfix=/);
    assert.deepEqual(await env.maxProcesses(), before, 'plan changed nothing');
    for (const s of env.fleet.servers) assert.deepEqual(s.log(), [], `plan ran nothing on ${s.name}`);

    // rollout from the file: uploaded, canary km-be-1, the other backends drained
    const started = await km([
      'rollout',
      file.path,
      '--approvers',
      'bob,carol',
      '--batch',
      '2',
      '--services-timeout',
      '20s',
      '--json',
    ]);
    ok(started, 'rollout --json');
    const { id } = JSON.parse(started.stdout) as { id: string };
    assert.match(id, new RegExp(`^rollout-${file.name}-`));
    await env.waitForPhase(handle(id), 'verifying');
    const drained = await env.maxProcesses();
    assert.equal(drained['km-be-2'], 0);
    assert.equal(drained['km-be-3'], 0);
    assert.equal(drained['km-be-1'], before['km-be-1']);
    assert.deepEqual(await env.applied(file.name), ['km-be-1']);

    // status --json has SPEC §4's fields
    const st = await statusJson(id);
    assert.equal(st.id, id);
    assert.equal(st.kind, 'rollout');
    assert.equal(st.hotfix, file.name);
    assert.equal(st.phase, 'verifying');
    assert.equal(st.requestedBy, 'alice');
    assert.equal(st.canary, 'km-be-1');
    assert.deepEqual(st.drained, [
      { server: 'km-be-2', maxProcesses: before['km-be-2'] },
      { server: 'km-be-3', maxProcesses: before['km-be-3'] },
    ]);
    assert.deepEqual(st.approvals, []);
    assert.equal(st.error, null);
    assert.deepEqual(
      serversOf(st)
        .map((s) => s.name)
        .sort(),
      FLEET,
    );
    for (const s of serversOf(st)) assert.ok(s.role && s.state, JSON.stringify(s));
    assert.equal(serversOf(st).find((s) => s.name === 'km-be-1')?.state, 'patched');
    const human = await km(['status', id]);
    ok(human, 'status');
    assert.match(human.stdout, /phase\s+verifying/);
    assert.match(human.stdout, /gate\s+waiting since .* for bob or carol to verify canary km-be-1/);
    assert.match(human.stdout, /km-be-2 \(Maximum Processes \d+\)/);

    // the gate's validators: never the requester, only listed approvers
    refused(
      await km(['approve', id]),
      2,
      /approve refused: alice \(SHA256:[^)]+\) started this rollout: someone else must verify the canary/,
      'self-approval',
    );
    refused(
      await km(['approve', id], as('dave')),
      2,
      /approve refused: dave is not an approver of this rollout \(approvers: bob, carol\)/,
      'unlisted approver',
    );
    assert.equal((await env.status(handle(id))).phase, 'verifying', 'refused answers changed nothing');

    // a watcher (not a terminal: plain lines), then bob approves; slower applies in fan-out, so the watcher sees it
    for (const s of ['km-fe-1', 'km-fe-2']) env.fleet.server(s).fault({ applyMs: 1500 });
    const watching = km(['status', id, '--watch']);
    const approved = await km(['approve', id, '--comment', 'queue drains on km-be-1'], as('bob'));
    ok(approved, 'approve');
    assert.match(approved.stdout, /approved .* by bob \(SHA256:[A-Za-z0-9+/]{43}\)/);
    const watched = await watching;
    ok(watched, 'status --watch');
    assert.doesNotMatch(watched.stdout, /\x1b\[/, 'no ANSI codes when stdout is not a terminal');
    assert.match(watched.stdout, /phase fanout/);
    assert.match(watched.stdout, /km-fe-1 patched/);
    assert.match(watched.stdout, /approved by bob \(SHA256:[^)]+\): queue drains on km-be-1/);
    assert.match(lines(watched.stdout).at(-1)!, /^completed: .* applied on 5 server\(s\)/);

    // the Key Manager database and the servers agree
    assert.deepEqual(await env.applied(file.name), FLEET);
    assert.deepEqual(await env.maxProcesses(), before, 'Maximum Processes restored exactly');
    for (const s of FLEET)
      assert.equal(logCount(s, new RegExp(`--apply-hotfix=${file.name}$`)), 1, `${s} applied once`);
    assert.equal(logCount('km-be-1', /--upload-hotfix=\/var\/lib\/sshmgr\//), 1, 'uploaded through the canary');

    // The plan was the truth: the ledger's start times follow its order (servers of one start step at once,
    // each place's next server only after its previous one ended), though km-fe-* were slower than km-be-*.
    const ledger = new Map(
      (await serverStates(env.orchestrator, id, { page: 1, pageSize: 100 })).servers.map((s) => [s.name, s]),
    );
    const startedAt = (n: string) => Date.parse(ledger.get(n)?.startedAt ?? 'x');
    const endedAt = (n: string) => Date.parse(ledger.get(n)?.endedAt ?? 'x');
    const stepOf = new Map(doc.servers.map((s) => [s.name, s.start ?? 0]));
    const byStart = [...FLEET].sort((a, b) => startedAt(a) - startedAt(b));
    assert.ok(
      byStart.every((n, i) => i === 0 || stepOf.get(n)! >= stepOf.get(byStart[i - 1])!),
      `started ${byStart.map((n) => `${n}@${ledger.get(n)?.startedAt}`).join(', ')}; plan ${doc.order.join(', ')}`,
    );
    assert.equal(byStart[0], 'km-be-1', 'the canary first');
    for (const run of doc.fanout?.runs ?? [])
      for (let i = 1; i < run.length; i++)
        assert.ok(startedAt(run[i]) >= endedAt(run[i - 1]), `${run[i]} after ${run[i - 1]} ended, in the same place`);
    assert.ok(
      Math.abs(startedAt('km-fe-1') - startedAt('km-be-2')) < Math.min(1500, endedAt('km-fe-1') - startedAt('km-fe-1')),
      'km-fe-1 and km-be-2 started at once',
    );

    const final = await statusJson(id);
    assert.equal(final.phase, 'completed');
    assert.deepEqual(
      final.approvals.map((a) => [a.by, a.decision, a.comment]),
      [['bob', 'approve', 'queue drains on km-be-1']],
    );
    refused(await km(['approve', id], as('carol')), 2, /has ended \(completed\)/, 'approve after the end');

    const list = await km(['list', '--json']);
    ok(list, 'list --json');
    const row = (
      JSON.parse(list.stdout) as {
        rollouts: { id: string; kind: string; outcome: string; requestedBy: string; servers: number }[];
      }
    ).rollouts.find((r) => r.id === id);
    assert.deepEqual(row && [row.kind, row.outcome, row.requestedBy], ['rollout', 'completed', 'alice']);
    assert.equal(row?.servers, 5, 'a rollout of the whole inventory counts its 5 servers');
    const listText = await km(['list']);
    ok(listText, 'list');
    assert.match(listText.stdout, new RegExp(`${id}\\s+rollout\\s+${file.name}\\s+alice\\s+completed\\s+completed`));
    // COLUMNS=80 (a narrow terminal): every line fits, the id alone on its line.
    const narrow = await km(['list'], { COLUMNS: '80' });
    ok(narrow, 'list at 80 columns');
    for (const l of lines(narrow.stdout)) assert.ok(l.length <= 80, `${l.length}: ${l}`);
    assert.ok(lines(narrow.stdout).includes(id), narrow.stdout);
    assert.match(narrow.stdout, /rollout of \S+ by alice: completed, 5 servers/);

    const hf = await km(['hotfixes', '--json']);
    ok(hf, 'hotfixes --json');
    const entry = (JSON.parse(hf.stdout) as { hotfixes: { name: string; appliedOn: string[] }[] }).hotfixes.find(
      (h) => h.name === file.name,
    );
    assert.deepEqual(entry?.appliedOn, FLEET);
    const hfText = await km(['hotfixes']);
    ok(hfText, 'hotfixes');
    assert.match(hfText.stdout, new RegExp(`${file.name}\\s+3\\.0\\.0\\s+${file.fileName}\\s+.*5/5: km-be-1, km-be-2`));
  });

  it('upload, then reject: the canary is unapplied, nothing else touched, the watcher exits 1', async () => {
    const file = await hotfixFile('frontend');
    for (const s of env.fleet.servers) s.clearLog();
    const up = await km(['upload', file.path, '--via', 'km-fe-2', '--wait']);
    ok(up, 'upload --wait');
    assert.match(lines(up.stdout)[0], /^upload-hotfix_frontend_/);
    assert.match(up.stdout, /completed: .* registered in Key Manager \(uploaded via km-fe-2\)/);
    assert.equal(logCount('km-fe-2', /--upload-hotfix=/), 1);
    assert.equal((await env.km`SELECT 1 FROM km_hotfix WHERE name = ${file.name}`).length, 1, 'registered');

    const started = await km(['rollout', file.name], as('alice'));
    ok(started, 'rollout');
    assert.equal(lines(started.stdout).length, 1, 'stdout is the id alone');
    const id = lines(started.stdout)[0];
    assert.match(started.stderr, /km-hotfix status .* --watch/);
    const st = await env.waitForPhase(handle(id), 'verifying');
    assert.equal(st.canary, 'km-fe-1');
    assert.deepEqual(st.drained, []);

    const watching = km(['status', id, '--watch']);
    refused(
      await km(['reject', id, '--reason', '  '], as('bob')),
      2,
      /--reason must say what is wrong/,
      'blank reason',
    );
    const rejected = await km(['reject', id, '--reason', 'login page blank on km-fe-1'], as('bob'));
    ok(rejected, 'reject');
    const watched = await watching;
    assert.equal(watched.code, 1, `rolled back → exit 1\n${watched.stdout}\n${watched.stderr}`);
    assert.match(lines(watched.stdout).at(-1)!, /^rolled back: rejected by bob: login page blank on km-fe-1/);

    assert.deepEqual(await env.applied(file.name), []);
    assert.equal(logCount('km-fe-1', UNAPPLY), 1, 'the canary was unapplied');
    for (const s of FLEET.filter((x) => x !== 'km-fe-1')) assert.equal(logCount(s, APPLY), 0, `${s} untouched`);
    const final = await statusJson(id);
    assert.equal(final.phase, 'rolled_back');
    assert.deepEqual(
      final.approvals.map((a) => [a.by, a.decision, a.comment]),
      [['bob', 'reject', 'login page blank on km-fe-1']],
    );
    assert.equal(serversOf(final).find((s) => s.name === 'km-fe-2')?.state, 'untouched');
  });

  it('abort while verifying: rollout --wait exits 1, the canary is unapplied and Maximum Processes restored', async () => {
    const hf = await env.hotfix('backend');
    const before = await env.maxProcesses();
    for (const s of env.fleet.servers) s.clearLog();
    const waiting = km(['rollout', hf.name, '--wait', '--services-timeout', '20s']);
    let id: string | undefined;
    for (let i = 0; i < 100 && !id; i++) {
      id = (
        await env.orchestrator<{ id: string }[]>`SELECT id FROM rollout WHERE hotfix = ${hf.name} AND kind = 'rollout'`
      )[0]?.id;
      if (!id) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(id, 'the rollout started');
    await env.waitForPhase(handle(id), 'verifying');
    assert.equal((await env.maxProcesses())['km-be-2'], 0);

    const aborted = await km(['abort', id, '--reason', 'support asked us to wait'], as('carol'));
    ok(aborted, 'abort');
    assert.match(aborted.stdout, /aborting .* rolled back/);
    const r = await waiting;
    assert.equal(r.code, 1, `rollout --wait after an abort exits 1\n${r.stdout}\n${r.stderr}`);
    assert.equal(lines(r.stdout)[0], id, 'the id comes first');
    assert.match(r.stdout, /rolled back: aborted by carol: support asked us to wait/);

    assert.deepEqual(await env.applied(hf.name), []);
    assert.deepEqual(await env.maxProcesses(), before, 'Maximum Processes restored exactly');
    assert.equal(logCount('km-be-1', UNAPPLY), 1);
    const events = await env.orchestrator<
      { kind: string; actor: string; detail: { reason?: string } }[]
    >`SELECT kind, actor, detail FROM rollout_event WHERE rollout_id = ${id} AND kind = 'abort'`;
    assert.deepEqual(
      events.map((e) => [e.actor, e.detail.reason]),
      [['carol', 'support asked us to wait']],
    );
    refused(
      await km(['abort', id, '--reason', 'again']),
      2,
      /has ended \(rolled_back\): there is nothing to abort/,
      'abort after the end',
    );
  });

  it('pause holds the fan-out after the approval; resume finishes it', async () => {
    const hf = await env.hotfix('common');
    for (const s of env.fleet.servers) s.clearLog();
    const started = await km(['rollout', hf.name, '--batch', '1', '--json']);
    ok(started, 'rollout');
    const { id } = JSON.parse(started.stdout) as { id: string };
    await env.waitForPhase(handle(id), 'verifying');
    const paused = await km(['pause', id, '--reason', 'change freeze until 14:00']);
    ok(paused, 'pause');
    assert.match(paused.stdout, /^paused /);
    ok(await km(['approve', id], as('bob')), 'approve');
    await env.waitForPhase(handle(id), 'fanout');
    await new Promise((r) => setTimeout(r, 1500));
    const st = await statusJson(id);
    assert.equal(st.phase, 'fanout');
    assert.equal(st.paused, true);
    assert.deepEqual(await env.applied(hf.name), ['km-fe-1'], 'only the canary while paused');
    const again = await km(['pause', id]);
    ok(again, 'pause twice');
    assert.match(again.stdout, /already paused/);
    assert.match((await km(['status', id])).stdout, /PAUSED/);

    ok(await km(['resume', id]), 'resume');
    const done = await km(['status', id, '--watch', '--json']);
    ok(done, 'status --watch --json');
    const final = JSON.parse(done.stdout) as RolloutStatus;
    assert.equal(final.phase, 'completed');
    assert.equal(final.paused, false);
    assert.deepEqual(await env.applied(hf.name), FLEET);
    refused(await km(['resume', id]), 2, /has ended \(completed\)/, 'resume after the end');
  });

  it('remove --plan changes nothing, remove without --yes off a terminal is refused, remove --yes --wait unapplies everywhere then deletes', async () => {
    // Set-up through the workflow directly: this test is about the removal.
    const hf = await env.hotfix('common');
    const h = await env.startRollout({ hotfix: hf.name, batch: '5' });
    await env.waitForPhase(h, 'verifying');
    await env.approve(h, 'bob');
    assert.equal(((await h.result()) as RolloutStatus).phase, 'completed');
    assert.deepEqual(await env.applied(hf.name), FLEET);
    for (const s of env.fleet.servers) s.clearLog();
    const keyManager = async () => ({
      applied: await env.applied(hf.name),
      registered: (await env.km`SELECT name, sha256 FROM km_hotfix WHERE name = ${hf.name}`).map((r) => ({ ...r })),
      maxProcesses: await env.maxProcesses(),
      removals: (await env.orchestrator`SELECT id FROM rollout WHERE hotfix = ${hf.name} AND kind = 'removal'`).map(
        (r) => ({ ...r }),
      ),
    });
    const before = await keyManager();
    const untouched = async (what: string) => {
      assert.deepEqual(await keyManager(), before, `${what}: the Key Manager database and the ledger are unchanged`);
      for (const s of env.fleet.servers) assert.deepEqual(s.log(), [], `${what}: nothing ran on ${s.name}`);
    };

    // --plan: which servers, in which order, unapplied and restarted, then deleted; nothing changes
    const plan = await km(['remove', hf.name, '--plan']);
    ok(plan, 'remove --plan');
    const text = lines(plan.stdout);
    assert.match(text[0], new RegExp(`${hf.name} is applied on 5 server\\(s\\); one at a time, in this order`));
    const order = text.filter((l) => /^\s+\d+\. /.test(l)).map((l) => l.trim().split(' ')[1]);
    assert.deepEqual([...order].sort(), FLEET);
    assert.match(
      plan.stdout,
      new RegExp(`ssh-mgr-controller --unapply-hotfix=${hf.name}\\n\\s+supervisorctl restart all`),
    );
    assert.match(text.at(-1)!, /is deleted from the Key Manager database/);
    const planJson = await km(['remove', hf.name, '--plan', '--json']);
    ok(planJson, 'remove --plan --json');
    const doc = JSON.parse(planJson.stdout) as { servers: { name: string; commands: string[] }[]; deletes: boolean };
    assert.deepEqual(
      doc.servers.map((s) => s.name),
      order,
    );
    assert.equal(doc.deletes, true);
    const kept = await km(['remove', hf.name, '--plan', '--servers', 'km-fe-2']);
    ok(kept, 'remove --plan --servers');
    assert.match(kept.stdout, /1\. km-fe-2 \(frontend\)/);
    assert.match(kept.stdout, /stays registered/);
    await untouched('remove --plan');

    // stdin is not a terminal here: without --yes it refuses, and nothing changes
    refused(await km(['remove', hf.name]), 2, /add --yes to do it without asking.*nothing was changed/, 'no --yes');
    await untouched('remove without --yes');

    const r = await km(['remove', hf.name, '--yes', '--wait', '--services-timeout', '20s']);
    ok(r, 'remove --yes --wait');
    const id = lines(r.stdout)[0];
    assert.match(id, new RegExp(`^removal-${hf.name}-`));
    assert.match(lines(r.stdout).at(-1)!, /^completed: .* removed from 5 server\(s\)/);
    assert.deepEqual(await env.applied(hf.name), []);
    assert.equal((await env.km`SELECT 1 FROM km_hotfix WHERE name = ${hf.name}`).length, 0, 'deleted from km_hotfix');
    for (const s of FLEET) assert.equal(logCount(s, UNAPPLY), 1, `${s} unapplied once`);
    // the plan's order is the order the removal took the servers in (the ledger)
    const ran = await env.orchestrator<{ server: string }[]>`
      SELECT server FROM rollout_server WHERE rollout_id = ${id} AND state IN ('removing', 'removed')
      GROUP BY server ORDER BY min(at)`;
    assert.deepEqual(
      ran.map((x) => x.server),
      order,
      'plan order = run order',
    );
    refused(
      await km(['remove', hf.name, '--yes']),
      2,
      /not registered in Key Manager and applied nowhere/,
      'removing it again',
    );
  });

  it('ids a person can type: a unique prefix, a unique trailing part and last; ambiguous and unknown ones are exit 2', async () => {
    const [a, b] = [await env.hotfix('common'), await env.hotfix('common')];
    const hex = randomBytes(3).toString('hex');
    // Two rollouts whose ids end alike (the same hex suffix), on different servers: both wait at the gate.
    const idA = `rollout-${a.name}-20261208T010000-${hex}`;
    const idB = `rollout-${b.name}-20261208T010001-${hex}`;
    await env.waitForPhase(
      await env.startRollout({ hotfix: a.name, servers: ['km-fe-1'], workflowId: idA }),
      'verifying',
    );
    await env.waitForPhase(
      await env.startRollout({ hotfix: b.name, servers: ['km-fe-2'], workflowId: idB }),
      'verifying',
    );
    const idOf = async (args: string[]) => {
      const r = await km([...args, '--json']);
      ok(r, args.join(' '));
      return (JSON.parse(r.stdout) as RolloutStatus).id;
    };

    assert.equal(await idOf(['status', idA]), idA, 'the full id');
    assert.equal(await idOf(['status', idA.slice(0, -4)]), idA, 'a unique prefix');
    assert.equal(await idOf(['status', `1-${hex}`]), idB, 'a unique trailing part');
    assert.equal(await idOf(['status', 'last']), idB, 'last: the newest');
    const human = await km(['status', `0-${hex}`]);
    ok(human, 'status by trailing part');
    assert.match(human.stdout, new RegExp(idA));

    // ambiguous: both listed, newest first, one line each; exit 2; nothing decided
    for (const args of [
      ['status', hex],
      ['reject', hex, '--reason', 'no'],
      ['status', `rollout-hotfix_common_`],
    ]) {
      const r = await km(args, as('bob'));
      assert.equal(r.code, 2, `${args.join(' ')}: exit 2\n${r.stderr}`);
      const err = lines(r.stderr);
      assert.match(err[0], new RegExp(`^km-hotfix: \\d+ ids begin or end with '${args[1]}': type more`));
      assert.ok(err.length >= 3 && err.length <= 12, `bounded: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /\n\s+at /);
      if (args[1] === hex) {
        assert.equal(err.length, 3, r.stderr);
        assert.match(err[1], new RegExp(`^  ${idB}  \\(rollout, started `));
        assert.match(err[2], new RegExp(`^  ${idA}  \\(rollout, started `));
      }
    }
    assert.equal((await env.status(env.client.workflow.getHandle(idA))).phase, 'verifying');

    // none: one line, exit 2
    refused(await km(['status', 'f0f0f0f0']), 2, /no rollout, removal or upload with id 'f0f0f0f0'/, 'no such id');
    refused(await km(['approve', 'no-such-thing'], as('bob')), 2, /no rollout, removal or upload with id/, 'approve');
    const empty = { DATABASE_URL: await freshDatabase('ids') };
    refused(
      await km(['approve', 'last'], { ...as('bob'), ...empty }),
      2,
      /'last' is the newest rollout, and the ledger has none yet/,
      'last in an empty ledger',
    );
    refused(await km(['pause', 'last'], empty), 2, /'last' is the newest rollout or removal/, 'pause last');

    // the decisions: approve last approves B; A by its trailing part is rejected; audit by a prefix
    const approved = await km(['approve', 'last'], as('bob'));
    ok(approved, 'approve last');
    assert.match(approved.stdout, new RegExp(`^approved ${idB} by bob`));
    const rejected = await km(['reject', `0-${hex}`, '--reason', 'blank page'], as('bob'));
    ok(rejected, 'reject by trailing part');
    assert.match(rejected.stdout, new RegExp(`^rejected ${idA} by bob`));
    const audit = await km(['audit', idA.slice(0, -4)]);
    ok(audit, 'audit by prefix');
    assert.match(audit.stdout, /ok {4}reject {3}by bob/);
  });

  describe('bad input: exit 2, one line, nothing changed anywhere', () => {
    let registered: string;
    let malformed: string;
    let valid: string;
    before(async () => {
      registered = (await env.hotfix('backend')).name;
      valid = (await hotfixFile('backend')).path;
      malformed = path.join(dir, 'sshmgr-3.0.0-hotfix_backend.gz');
      await fs.writeFile(malformed, 'not a hotfix');
    });

    const rows: { what: string; args: () => string[]; env?: () => Record<string, string | undefined>; re: RegExp }[] = [
      {
        what: 'malformed hotfix file name (rollout)',
        args: () => ['rollout', malformed],
        re: /'sshmgr-3\.0\.0-hotfix_backend\.gz' is not a hotfix file name .*expected sshmgr-<version>-hotfix_/,
      },
      {
        what: 'malformed hotfix file name (upload)',
        args: () => ['upload', malformed],
        re: /is not a hotfix file name/,
      },
      {
        what: 'missing hotfix file',
        args: () => ['rollout', path.join(dir, 'sshmgr-3.0.0-hotfix_backend_gone_UKM-1.gz')],
        re: /cannot read .*ENOENT/,
      },
      {
        what: 'unknown hotfix',
        args: () => ['rollout', 'hotfix_backend_not_there'],
        re: /hotfix_backend_not_there is not registered in Key Manager: upload it first/,
      },
      {
        what: 'unknown server in --servers',
        args: () => ['rollout', registered, '--servers', 'km-be-1,km-nope-9'],
        re: /--servers names km-nope-9, not in the inventory/,
      },
      {
        what: '--canary of the wrong role',
        args: () => ['rollout', registered, '--canary', 'km-fe-1'],
        re: /--canary km-fe-1 has role frontend, but a hotfix_backend_\* hotfix must be verified first on a backend/,
      },
      {
        what: '--batch 0',
        args: () => ['rollout', registered, '--batch', '0'],
        re: /--batch must be a number of servers/,
      },
      {
        what: '--batch 150%',
        args: () => ['rollout', registered, '--batch', '150%'],
        re: /--batch must be .* 1% to 100%/,
      },
      {
        what: '--approval-timeout soon',
        args: () => ['rollout', registered, '--approval-timeout', 'soon'],
        re: /--approval-timeout must be a duration/,
      },
      {
        what: '--approval-timeout 0s',
        args: () => ['rollout', registered, '--approval-timeout', '0s'],
        re: /--approval-timeout must be a duration from 1s to 30d/,
      },
      {
        what: '--max-failures -1',
        args: () => ['rollout', registered, '--max-failures', '-1'],
        re: /--max-failures must be a whole number/,
      },
      {
        what: 'a Name with shell metacharacters (rollout)',
        args: () => ['rollout', 'hotfix_backend_x;rm -rf /'],
        re: /'hotfix_backend_x;rm -rf \/' is not a hotfix Name/,
      },
      {
        what: 'a Name with shell metacharacters (plan)',
        args: () => ['plan', 'hotfix_backend_x$(reboot)'],
        re: /is not a hotfix Name/,
      },
      {
        what: 'a Name with shell metacharacters (remove)',
        args: () => ['remove', 'hotfix_common_x`id`'],
        re: /is not a hotfix Name/,
      },
      {
        what: 'only the requester as approver',
        args: () => ['rollout', registered, '--approvers', 'alice'],
        re: /--approvers lists only alice/,
      },
      {
        what: 'a signing key that cannot be read',
        args: () => ['rollout', registered],
        env: () => ({ KM_HOTFIX_SIGNING_KEY: path.join(dir, 'no-such-key') }),
        re: /cannot read the signing key .*no-such-key.*KM_HOTFIX_SIGNING_KEY/,
      },
      {
        what: 'no key to sign with',
        args: () => ['rollout', registered],
        env: () => ({ KM_HOTFIX_SIGNING_KEY: undefined }),
        re: /no key to sign with: set KM_HOTFIX_SIGNING_KEY/,
      },
      {
        what: '--message without --signature',
        args: () => ['approve', 'rollout-nothing-here', '--message', path.join(dir, 'm')],
        re: /--message and --signature go together/,
      },
      {
        what: 'unknown --via server',
        args: () => ['upload', valid, '--via', 'km-zz'],
        re: /--via km-zz is not in the inventory/,
      },
      {
        what: 'remove from an unknown server',
        args: () => ['remove', registered, '--servers', 'km-zz'],
        re: /--servers names km-zz, not in the inventory/,
      },
      {
        what: 'status of an unknown id',
        args: () => ['status', 'rollout-nothing-here'],
        re: /no rollout, removal or upload with id 'rollout-nothing-here'/,
      },
      {
        what: 'approve an unknown id',
        args: () => ['approve', 'rollout-nothing-here'],
        re: /no rollout, removal or upload with id/,
      },
    ];

    async function snapshot() {
      const plain = <T extends object>(rows: readonly T[]) => rows.map((r) => ({ ...r }));
      return {
        hotfixes: plain(await env.km`SELECT name, sha256 FROM km_hotfix ORDER BY name`),
        applied: plain(await env.km`SELECT server_name, hotfix_name FROM km_hotfix_applied ORDER BY 1, 2`),
        maxProcesses: await env.maxProcesses(),
        rollouts: plain(await env.orchestrator`SELECT id FROM rollout ORDER BY id`),
        files: plain(await env.orchestrator`SELECT sha256 FROM hotfix_file ORDER BY 1`),
        claims: plain(await env.orchestrator`SELECT server FROM server_claim`),
      };
    }

    it('refuses every row before anything starts', async () => {
      const before = await snapshot();
      const workflowsBefore = (await env.client.workflow.count(`TaskQueue = '${env.taskQueue}'`)).count;
      for (const s of env.fleet.servers) s.clearLog();
      for (const row of rows) {
        const r = await km(row.args(), row.env?.());
        refused(r, 2, row.re, row.what);
        assert.equal(r.stdout, '', `${row.what}: nothing on stdout (no id)`);
      }
      assert.deepEqual(await snapshot(), before, 'the Key Manager and orchestrator databases are unchanged');
      for (const s of env.fleet.servers)
        assert.deepEqual(
          s.log().map((e) => e.command),
          [],
          `${s.name} ran nothing`,
        );
      await new Promise((r) => setTimeout(r, 1000)); // visibility is eventually consistent
      assert.equal(
        (await env.client.workflow.count(`TaskQueue = '${env.taskQueue}'`)).count,
        workflowsBefore,
        'no workflow started',
      );
    });
  });

  describe('unreachable services: exit 3, one line naming which', () => {
    let registered: string;
    let dead: string;
    before(async () => {
      registered = (await env.hotfix('frontend')).name;
      dead = `127.0.0.1:${await freePort()}`;
    });

    it('Temporal unreachable: rollout (after validation) and status', async () => {
      const r = await km(['rollout', registered], { TEMPORAL_ADDRESS: dead });
      refused(r, 3, new RegExp(`cannot reach Temporal at ${dead}.*TEMPORAL_ADDRESS`), 'rollout without Temporal');
      refused(
        await km(['status', 'rollout-x'], { TEMPORAL_ADDRESS: dead }),
        3,
        new RegExp(`cannot reach Temporal at ${dead}`),
        'status without Temporal',
      );
      assert.equal(
        (await env.orchestrator`SELECT 1 FROM rollout WHERE hotfix = ${registered} AND kind = 'rollout'`).length,
        0,
        'nothing started',
      );
    });

    it('a database unreachable: the message names the orchestrator or the Key Manager database', async () => {
      const deadUrl = `postgres://postgres@${dead}/nothing`;
      refused(
        await km(['rollout', registered], { DATABASE_URL: deadUrl }),
        3,
        /cannot reach the orchestrator database at .*DATABASE_URL/,
        'orchestrator down',
      );
      refused(
        await km(['rollout', registered], { KM_DATABASE_URL: deadUrl }),
        3,
        /cannot reach the Key Manager database at .*KM_DATABASE_URL/,
        'Key Manager database down',
      );
      refused(
        await km(['hotfixes'], { KM_DATABASE_URL: deadUrl }),
        3,
        /cannot reach the Key Manager database/,
        'hotfixes',
      );
      refused(await km(['list'], { DATABASE_URL: deadUrl }), 3, /cannot reach the orchestrator database/, 'list');
      refused(
        await km(['rollout', registered], { KM_DATABASE_URL: undefined }),
        2,
        /KM_DATABASE_URL is not set/,
        'KM_DATABASE_URL missing',
      );
    });
  });

  it('a rollout that overlaps an active one is refused with exit 2 naming it; once that workflow is terminated, its claims no longer block', async () => {
    const a = await hotfixFile('frontend');
    const first = await km(['rollout', a.path, '--servers', 'km-fe-1,km-fe-2']);
    ok(first, 'first rollout');
    const id = first.stdout.trim();
    await env.waitForPhase(handle(id), 'verifying');
    const b = await hotfixFile('common');
    refused(
      await km(['rollout', b.path, '--servers', 'km-fe-2,km-be-1']),
      2,
      new RegExp(`rollout ${id} is still active on km-fe-2`),
      'overlap',
    );
    // An operator terminates it outside km-hotfix: the ledger still holds its claims.
    await handle(id).terminate('operator');
    const second = await km(['rollout', b.path, '--servers', 'km-fe-2,km-be-1']);
    ok(second, 'rollout after the holder was terminated');
    const [row] = await env.orchestrator<{ phase: string }[]>`SELECT phase FROM rollout WHERE id = ${id}`;
    assert.equal(row.phase, 'failed', 'the terminated rollout is marked in the ledger');
    await env.waitForPhase(handle(second.stdout.trim()), 'verifying');
    ok(await km(['abort', second.stdout.trim(), '--reason', 'test over']), 'abort');
    await handle(second.stdout.trim()).result();
    await new Promise((r) => setTimeout(r, 300)); // the terminated canary's interrupted restart settles
  });

  it('status of a rollout Temporal no longer has (retention) comes from the ledger', async () => {
    const f = await hotfixFile('common');
    const started = await km(['rollout', f.path, '--servers', 'km-be-2,km-be-3', '--batch', '2']);
    ok(started, 'rollout');
    const id = started.stdout.trim();
    await env.waitForPhase(handle(id), 'verifying');
    ok(await km(['approve', id, '--comment', 'fine'], as('bob')), 'approve');
    await handle(id).result();
    // Temporal's deletion of a closed workflow takes ~30 s here: stand in for retention with a
    // copy of this rollout's ledger record under an id Temporal never had.
    const gone = `${id}-expired`;
    await env.orchestrator.begin(async (tx) => {
      await tx`INSERT INTO rollout (id, kind, hotfix, requested_by, servers, options, phase, outcome, error, started_at, updated_at, ended_at)
               SELECT ${gone}, kind, hotfix, requested_by, servers, options, phase, outcome, error, started_at, updated_at, ended_at FROM rollout WHERE id = ${id}`;
      await tx`INSERT INTO rollout_event (rollout_id, event_key, at, kind, server, actor, detail)
               SELECT ${gone}, event_key, at, kind, server, actor, detail FROM rollout_event WHERE rollout_id = ${id} ORDER BY seq`;
    });
    const r = await km(['status', gone, '--json']);
    ok(r, 'status from the ledger');
    assert.match(r.stderr, /Temporal no longer has .*ledger/);
    const st = JSON.parse(r.stdout) as RolloutStatus;
    assert.equal(st.phase, 'completed');
    assert.equal(st.canary, 'km-be-2');
    assert.deepEqual(
      st.approvals.map((a) => [a.by, a.decision, a.comment]),
      [['bob', 'approve', 'fine']],
    );
    assert.deepEqual(
      serversOf(st)
        .map((s) => [s.name, s.role, s.state])
        .sort(),
      [
        ['km-be-2', 'backend', 'patched'],
        ['km-be-3', 'backend', 'patched'],
      ],
    );
    refused(
      await km(['status', 'rollout-that-never-was']),
      2,
      /no rollout, removal or upload with id/,
      'unknown everywhere',
    );
  });
});
