// Signed decisions (SPEC §7) against the real Temporal dev server, PostgreSQL
// and the simulated fleet: the workflow, not the CLI, refuses every decision
// that is not a registered person's fresh signature over this rollout as it
// is now, and a refusal changes nothing. Updates here go straight to Temporal
// (no CLI), as a client that bypasses km-hotfix would send them.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { WorkflowHandle, WorkflowUpdateFailedError } from '@temporalio/client';
import { rolloutEnv, RolloutEnv, signAs } from './helpers/rollout-env';
import { lines, runCli, CliResult } from './helpers/cli-process';
import { scratchDir, testStack } from './helpers/stack';
import { keygenSign, run, startAgent, TestAgent } from './helpers/openssh-tools';
import { approveUpdate, abortUpdate, WORKFLOW_TYPES } from '../domain/messages/rollout';
import { decisionMessage, drainedFacts } from '../domain/decision';
import type { RolloutStatus, SignedDecision } from '../domain/messages/rollout';
import { generateEd25519KeyPair } from '../keymanager/keygen';
import { keyTextSigner } from '../signing/signer';
import { signMessage } from '../signing/sshsig';

describe('signed decisions: the workflow checks every signature (SPEC §7)', function () {
  this.timeout(120_000);
  let env: RolloutEnv;
  let dir: string;
  let signersText: string;
  /** A key nobody registered. */
  let strangerKey: string;

  before(async () => {
    env = await rolloutEnv({ frontends: 1, backends: 2 });
    dir = await scratchDir('signed');
    signersText = await fs.readFile(env.people.allowedSigners, 'utf8');
    strangerKey = generateEd25519KeyPair('eve').private;
  });
  after(async () => {
    await env?.close();
  });
  afterEach(async () => {
    await fs.writeFile(env.people.allowedSigners, signersText); // a test that edits the file puts it back
    await env.km`DELETE FROM km_hotfix_applied`;
  });

  const refusedWith = async (p: Promise<unknown>, re: RegExp, what: string): Promise<void> => {
    await assert.rejects(
      p,
      (err: unknown) => {
        assert.ok(err instanceof WorkflowUpdateFailedError, `${what}: ${String(err)}`);
        assert.match(String(err.cause?.message), re, what);
        return true;
      },
      what,
    );
  };

  /** What must not move while refusals come in. */
  async function snapshot(h: WorkflowHandle) {
    const st = await env.status(h);
    const events = await env.orchestrator<
      { kind: string }[]
    >`SELECT kind FROM rollout_event WHERE rollout_id = ${h.workflowId} AND kind IN ('approve', 'reject', 'pause', 'resume', 'abort') ORDER BY seq`;
    return {
      phase: st.phase,
      paused: st.paused,
      approvals: st.approvals,
      decisions: st.decisions.map((d) => [d.action, d.by]),
      events: events.map((e) => e.kind),
      applied: await env.applied(st.hotfix),
      maxProcesses: await env.maxProcesses(),
    };
  }

  it('at the gate: unsigned, unknown key, the requester (by name and by key), replays, stale, tampered and forged answers are refused; nothing changes; then a signature made by ssh-keygen is accepted', async () => {
    const hf = await env.hotfix('backend');
    const h = await env.startRollout({ hotfix: hf.name, as: 'alice' });
    const st = await env.waitForPhase(h, 'verifying');
    assert.equal(st.phase, 'verifying', st.error ?? '');
    assert.equal(st.requestedBy, 'alice');
    assert.match(st.requestedKey ?? '', /^SHA256:[A-Za-z0-9+/]{43}$/);
    assert.deepEqual(
      st.drained.map((d) => d.server),
      ['km-be-2'],
    );
    const facts = {
      action: 'approve' as const,
      rollout: h.workflowId,
      hotfix: hf.name,
      sha256: hf.sha256,
      canary: 'km-be-1',
      drained: drainedFacts(['km-be-2']),
    };
    const before = await snapshot(h);

    // Unsigned, or not even shaped like a decision.
    const good = await env.sign('bob', facts);
    await refusedWith(
      h.executeUpdate(approveUpdate, { args: [{ message: good.message, signature: '' }] }),
      /not signed/,
      'empty signature',
    );
    await refusedWith(
      h.executeUpdate(approveUpdate, { args: [{ message: good.message } as SignedDecision] }),
      /not signed/,
      'missing signature',
    );
    await refusedWith(
      h.executeUpdate(approveUpdate, { args: [{ by: 'bob' } as unknown as SignedDecision] }),
      /not signed/,
      'the old unsigned request',
    );

    // A key that is not in the signers file.
    const strangerMessage = decisionMessage({ ...facts, comment: '', at: new Date().toISOString() });
    const stranger = {
      message: strangerMessage,
      signature: await signMessage(keyTextSigner(strangerKey), strangerMessage),
    };
    await refusedWith(
      h.executeUpdate(approveUpdate, { args: [stranger] }),
      /SHA256:\S+ is not a registered signer/,
      'unknown key',
    );

    // The requester by name, and by key under another name.
    await refusedWith(env.approve(h, 'alice'), /alice \(SHA256:\S+\) started this rollout/, 'requester');
    const alicePub = (await fs.readFile(`${env.people.keys.alice}.pub`, 'utf8'))
      .trim()
      .split(/\s+/)
      .slice(0, 2)
      .join(' ');
    await fs.writeFile(env.people.allowedSigners, `alice-laptop ${alicePub}\n${signersText}`);
    await refusedWith(
      env.approve(h, 'alice'),
      /alice-laptop \(SHA256:\S+\) started this rollout as alice with the same key/,
      'requester key, other name',
    );
    await fs.writeFile(env.people.allowedSigners, signersText);

    // Replays: a real signature by bob, made for another rollout, canary, file or drain.
    const replays: [Partial<typeof facts>, RegExp][] = [
      [{ rollout: `${h.workflowId}-other` }, /signed rollout is '.*-other' but this rollout's is/],
      [
        { canary: 'km-be-2', drained: drainedFacts(['km-be-1']) },
        /signed canary is 'km-be-2' but this rollout's is 'km-be-1'/,
      ],
      [{ sha256: 'f'.repeat(64) }, /signed file sha256 is 'f{64}'/],
      [
        { drained: drainedFacts([]) },
        /signed drained backends are \(none\) but this rollout's are 1 sha256:[0-9a-f]{64}/,
      ],
      [
        { drained: drainedFacts(['km-fe-1']) },
        /signed drained backends are 1 sha256:[0-9a-f]{64} but this rollout's are 1 sha256:/,
      ],
    ];
    for (const [change, re] of replays) {
      await refusedWith(
        h.executeUpdate(approveUpdate, { args: [await env.sign('bob', { ...facts, ...change })] }),
        re,
        `replay ${JSON.stringify(change)}`,
      );
    }
    // A signature for a rejection is not an approval.
    await refusedWith(
      h.executeUpdate(approveUpdate, { args: [await env.sign('bob', { ...facts, action: 'reject', comment: 'no' })] }),
      /for 'reject', not 'approve'/,
      'reject signature as approve',
    );

    // Too old, and from the future.
    const at = (minutes: number) => new Date(Date.now() + minutes * 60_000).toISOString();
    await refusedWith(
      h.executeUpdate(approveUpdate, { args: [await env.sign('bob', { ...facts, at: at(-11) })] }),
      /minutes ago; sign it again/,
      'stale',
    );
    await refusedWith(
      h.executeUpdate(approveUpdate, { args: [await env.sign('bob', { ...facts, at: at(11) })] }),
      /in the future/,
      'future',
    );

    // Tampered: bob's signature over one comment, sent with another.
    const signed = await env.sign('bob', { ...facts, comment: 'checked the queue' });
    await refusedWith(
      h.executeUpdate(approveUpdate, {
        args: [{ ...signed, message: signed.message.replace('checked the queue', 'checked nothing!') }],
      }),
      /does not verify over this message/,
      'tampered',
    );
    // Forged: bob's key in the frame, mallory's signature inside.
    const bobPub = (await fs.readFile(`${env.people.keys.bob}.pub`, 'utf8')).trim();
    const mallory = await signAs(env.people.keys.mallory, facts);
    const forgedFrame = Buffer.from(mallory.signature.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
    const malloryBlob = Buffer.from(
      (await fs.readFile(`${env.people.keys.mallory}.pub`, 'utf8')).trim().split(/\s+/)[1],
      'base64',
    );
    const bobBlob = Buffer.from(bobPub.split(/\s+/)[1], 'base64');
    const swapped = Buffer.from(
      forgedFrame.toString('hex').replace(malloryBlob.toString('hex'), bobBlob.toString('hex')),
      'hex',
    );
    const forged = {
      message: mallory.message,
      signature: `-----BEGIN SSH SIGNATURE-----\n${swapped.toString('base64')}\n-----END SSH SIGNATURE-----\n`,
    };
    await refusedWith(h.executeUpdate(approveUpdate, { args: [forged] }), /does not verify/, 'forged');

    // A signer removed from the file while the rollout waits: refused at once.
    await fs.writeFile(
      env.people.allowedSigners,
      signersText
        .split('\n')
        .filter((l) => !l.startsWith('bob '))
        .join('\n'),
    );
    await refusedWith(env.approve(h, 'bob'), /is not a registered signer/, 'revoked signer');
    await fs.writeFile(env.people.allowedSigners, signersText);

    assert.deepEqual(
      await snapshot(h),
      before,
      'every refusal left the rollout, the ledger and the fleet as they were',
    );

    // Accepted: a message signed by OpenSSH's own ssh-keygen with bob's key (as with a hardware token).
    const message = decisionMessage({ ...facts, comment: 'signed with ssh-keygen', at: new Date().toISOString() });
    const signature = await keygenSign(dir, env.people.keys.bob, message);
    const after = await h.executeUpdate(approveUpdate, { args: [{ message, signature }] });
    const fp = (await run('ssh-keygen', ['-l', '-f', `${env.people.keys.bob}.pub`])).stdout.split(' ')[1];
    assert.deepEqual(
      after.approvals.map((a) => [a.by, a.decision, a.key, a.comment, a.message, a.signature]),
      [['bob', 'approve', fp, 'signed with ssh-keygen', message, signature]],
    );
    await refusedWith(env.approve(h, 'dana'), /already been answered|not waiting/, 'a second answer');
    const done = (await h.result()) as RolloutStatus;
    assert.equal(done.phase, 'completed', done.error ?? '');
    // The ledger keeps the proof of the start and of the approval; never a private key.
    const rows = await env.orchestrator<
      { kind: string; actor: string; detail: Record<string, unknown> }[]
    >`SELECT kind, actor, detail FROM rollout_event WHERE rollout_id = ${h.workflowId} AND detail ? 'signature' ORDER BY seq`;
    assert.deepEqual(
      rows.map((r) => [r.kind, r.actor, r.detail.key]),
      [
        ['started', 'alice', st.requestedKey],
        ['approve', 'bob', fp],
      ],
    );
    const all = JSON.stringify(
      await env.orchestrator`SELECT detail FROM rollout_event WHERE rollout_id = ${h.workflowId}`,
    );
    assert.doesNotMatch(all, /PRIVATE KEY/);
  });

  it('a start signature that is missing, unknown or made for another rollout or file ends the workflow in preflight: no ledger row, no claim, no server touched', async () => {
    const hf = await env.hotfix('common');
    for (const s of env.fleet.servers) s.clearLog();
    const other = await env.sign('alice', {
      action: 'rollout',
      rollout: 'rollout-someone-elses',
      hotfix: hf.name,
      sha256: hf.sha256,
    });
    const strangerMessage = decisionMessage({
      action: 'rollout',
      rollout: 'x',
      hotfix: hf.name,
      sha256: hf.sha256,
      comment: '',
      at: new Date().toISOString(),
    });
    const cases: [SignedDecision, RegExp][] = [
      [{ message: '', signature: '' }, /not signed/],
      [other, /signed rollout is 'rollout-someone-elses'/],
      [
        await env.sign('alice', { action: 'rollout', rollout: 'PLACEHOLDER', hotfix: hf.name, sha256: 'e'.repeat(64) }),
        /signed (rollout|file sha256)/,
      ],
      [
        { message: strangerMessage, signature: await signMessage(keyTextSigner(strangerKey), strangerMessage) },
        /signed rollout|not a registered signer/,
      ],
    ];
    for (const [signed, re] of cases) {
      const h = await env.startRollout({ hotfix: hf.name, signed });
      const st = (await h.result()) as RolloutStatus;
      assert.equal(st.phase, 'failed');
      assert.match(st.error ?? '', re);
      assert.equal(st.requestedBy, '');
      assert.equal(
        (await env.orchestrator`SELECT 1 FROM rollout WHERE id = ${h.workflowId}`).length,
        0,
        'nothing in the ledger',
      );
    }
    assert.equal((await env.orchestrator`SELECT 1 FROM server_claim`).length, 0, 'no claim');
    for (const s of env.fleet.servers)
      assert.deepEqual(
        s
          .log()
          .map((e) => e.command)
          .filter((c) => /apply|restart/.test(c)),
        [],
        `${s.name} untouched`,
      );
    // A removal and an upload check theirs too.
    const removal = (await (await env.startRemoval({ hotfix: hf.name, signed: other })).result()) as RolloutStatus;
    assert.equal(removal.phase, 'failed');
    assert.match(removal.error ?? '', /for 'rollout', not 'remove'/);
    assert.deepEqual((await env.km`SELECT name FROM km_hotfix WHERE name = ${hf.name}`).length, 1, 'still registered');
    const fresh = await env.hotfix('common', { register: false });
    const uploadId = `upload-refused-${Date.now()}`;
    const upload = await env.client.workflow.start(WORKFLOW_TYPES.upload, {
      taskQueue: env.taskQueue,
      workflowId: uploadId,
      args: [
        {
          signed: await env.sign('tester', {
            action: 'upload',
            rollout: uploadId,
            hotfix: fresh.name,
            sha256: hf.sha256,
          }),
          sha256: fresh.sha256,
          fileName: fresh.fileName,
        },
      ],
    });
    const uploaded = (await upload.result()) as RolloutStatus;
    assert.equal(uploaded.phase, 'failed');
    assert.match(uploaded.error ?? '', /signed file sha256 is '[0-9a-f]{64}' but this upload's is/);
    assert.equal(
      (await env.km`SELECT 1 FROM km_hotfix WHERE name = ${fresh.name}`).length,
      0,
      'the upload registered nothing',
    );
  });

  it('abort and pause are signed too: an unknown key is refused and the rollout goes on; a registered person aborts', async () => {
    const hf = await env.hotfix('frontend');
    const h = await env.startRollout({ hotfix: hf.name });
    await env.waitForPhase(h, 'verifying');
    const before = await snapshot(h);
    const message = decisionMessage({
      action: 'abort',
      rollout: h.workflowId,
      hotfix: hf.name,
      sha256: hf.sha256,
      comment: 'stop',
      at: new Date().toISOString(),
    });
    await refusedWith(
      h.executeUpdate(abortUpdate, {
        args: [{ message, signature: await signMessage(keyTextSigner(strangerKey), message) }],
      }),
      /not a registered signer/,
      'unknown abort',
    );
    await refusedWith(
      h.executeUpdate(abortUpdate, {
        args: [await env.sign('carol', { action: 'abort', rollout: h.workflowId, hotfix: hf.name, sha256: hf.sha256 })],
      }),
      /abort needs a reason/,
      'abort without reason',
    );
    assert.deepEqual(await snapshot(h), before);
    const st = await env.abort(h, 'carol', 'change freeze');
    assert.deepEqual(
      st.decisions.map((d) => [d.action, d.by]),
      [
        ['rollout', 'alice'],
        ['abort', 'carol'],
      ],
    );
    const done = (await h.result()) as RolloutStatus;
    assert.equal(done.phase, 'rolled_back');
    assert.match(done.error ?? '', /aborted by carol: change freeze/);
  });

  describe('from the command line', () => {
    let base: Record<string, string>;
    before(() => {
      base = {
        TEMPORAL_ADDRESS: testStack().temporal.address,
        KM_HOTFIX_TASK_QUEUE: env.taskQueue,
        DATABASE_URL: env.orchestratorUrl,
        KM_DATABASE_URL: env.kmUrl,
        KM_HOTFIX_SIGNING_KEY: env.people.keys.alice,
        KM_HOTFIX_ALLOWED_SIGNERS: env.people.allowedSigners,
      };
    });
    const km = (args: string[], extra: Record<string, string | undefined> = {}): Promise<CliResult> =>
      runCli(args, { ...base, ...extra }, 60_000);
    const ok = (r: CliResult, what: string) =>
      assert.equal(r.code, 0, `${what}: exit ${r.code}\n${r.stdout}\n${r.stderr}`);

    it('approve --print-message, signed by ssh-keygen, then --message/--signature (only a listed approver); audit re-verifies and catches an altered ledger row', async () => {
      const hf = await env.hotfix('common');
      const started = await km(['rollout', hf.name, '--servers', 'km-fe-1,km-be-1', '--approvers', 'dana']);
      ok(started, 'rollout');
      const id = lines(started.stdout)[0];
      await env.waitForPhase(env.client.workflow.getHandle(id), 'verifying');

      // Signed elsewhere: the printed message is the exact bytes ssh-keygen signs.
      const printed = await km(['approve', id, '--print-message', '--comment', 'looked at km-fe-1']);
      ok(printed, '--print-message');
      assert.match(
        printed.stdout,
        new RegExp(
          `^km-hotfix decision v1\\naction: approve\\nrollout: ${id}\\nhotfix: ${hf.name}\\nsha256: ${hf.sha256}\\ncanary: km-fe-1\\ndrained:\\ncomment: looked at km-fe-1\\nat: \\S+Z\\n$`,
        ),
      );
      const msgFile = path.join(dir, 'approve.txt');
      await fs.writeFile(msgFile, printed.stdout);
      const sig = await run('ssh-keygen', ['-Y', 'sign', '-f', env.people.keys.dana, '-n', 'km-hotfix', msgFile]);
      assert.equal(sig.code, 0, sig.stderr);
      // alice cannot submit dana's message with her own signature; bob is no approver; dana's signature goes through.
      const bobSig = await keygenSign(dir, env.people.keys.bob, printed.stdout);
      await fs.writeFile(path.join(dir, 'bob.sig'), bobSig);
      const notListed = await km(['approve', id, '--message', msgFile, '--signature', path.join(dir, 'bob.sig')]);
      assert.equal(notListed.code, 2, notListed.stderr);
      assert.match(notListed.stderr, /approve refused: bob is not an approver of this rollout \(approvers: dana\)/);
      const approved = await km(['approve', id, '--message', msgFile, '--signature', `${msgFile}.sig`]);
      ok(approved, 'approve --message --signature');
      assert.match(approved.stdout, /approved .* by dana \(SHA256:/);
      const final = (await env.client.workflow.getHandle(id).result()) as RolloutStatus;
      assert.equal(final.phase, 'completed', final.error ?? '');
      const human = await km(['status', id]);
      assert.match(human.stdout, /approved\s+by dana \(SHA256:[^)]+\) at .*: looked at km-fe-1/);
      assert.match(human.stdout, /started by alice \(SHA256:/);

      // audit: every decision verifies against the signers file...
      const audit = await km(['audit', id, '--signers', env.people.allowedSigners]);
      ok(audit, 'audit');
      assert.match(audit.stdout, /^ok\s+rollout\s+by alice \(SHA256:/m);
      assert.match(audit.stdout, /^ok\s+approve\s+by dana \(SHA256:/m);
      // ...and OpenSSH agrees, from status --json alone.
      const doc = JSON.parse((await km(['status', id, '--json'])).stdout) as RolloutStatus;
      const a = doc.approvals[0];
      await fs.writeFile(path.join(dir, 'a.sig'), a.signature);
      const v = await run(
        'ssh-keygen',
        ['-Y', 'verify', '-f', env.people.allowedSigners, '-I', a.by, '-n', 'km-hotfix', '-s', path.join(dir, 'a.sig')],
        { input: a.message },
      );
      assert.equal(v.code, 0, v.stderr);
      // Someone with database access rewrites the recorded comment (the table is append-only: they must disable its trigger).
      await env.orchestrator.begin(async (tx) => {
        await tx`ALTER TABLE rollout_event DISABLE TRIGGER rollout_event_append_only`;
        await tx`UPDATE rollout_event SET detail = jsonb_set(detail, '{message}', to_jsonb(replace(detail->>'message', 'looked at km-fe-1', 'did not look'))) WHERE rollout_id = ${id} AND kind = 'approve'`;
        await tx`ALTER TABLE rollout_event ENABLE TRIGGER rollout_event_append_only`;
      });
      const caught = await km(['audit', id, '--signers', env.people.allowedSigners]);
      assert.equal(caught.code, 1, caught.stdout + caught.stderr);
      assert.match(
        caught.stdout,
        /^FAIL\s+approve\s+by dana .*the signature does not verify over the recorded message/m,
      );
      assert.match(caught.stdout, /^ok\s+rollout\s+by alice/m);
      const noSigners = await km(['audit', id], { KM_HOTFIX_ALLOWED_SIGNERS: undefined });
      assert.equal(noSigners.code, 2);
      assert.match(noSigners.stderr, /--signers FILE/);
    });

    // Issue 23: the CLI's path keeps the same identity rule: --approvers are people of the file, as it spells them.
    it('--approvers names people as the signers file spells them: a stranger, another spelling or a delegate is refused in one line, nothing started', async () => {
      const hf = await env.hotfix('common');
      const before = await env.orchestrator`SELECT id FROM rollout`;
      for (const [who, re] of [
        ['eve', /--approvers: eve is not in the signers file/],
        ['DANA', /--approvers: DANA is not in the signers file/],
        ['web@DELEGATE', /--approvers: web@DELEGATE is a delegate, not a person/],
      ] as const) {
        const r = await km(['rollout', hf.name, '--servers', 'km-fe-1', '--approvers', `dana,${who}`]);
        assert.equal(r.code, 2, `${who}: ${r.stdout}${r.stderr}`);
        assert.equal(lines(r.stderr).length, 1, r.stderr);
        assert.match(r.stderr, re);
        assert.equal(r.stdout, '');
      }
      assert.deepEqual(await env.orchestrator`SELECT id FROM rollout`, before, 'nothing started');
    });

    it('signs with the ssh-agent when KM_HOTFIX_SIGNING_KEY is not set: its first registered key', async () => {
      let agent: TestAgent | undefined;
      try {
        agent = await startAgent(dir);
        const strangerFile = path.join(dir, 'stranger');
        await fs.writeFile(strangerFile, strangerKey, { mode: 0o600 });
        await agent.add(strangerFile); // first, but nobody's
        await agent.add(env.people.keys.bob);
        const hf = await env.hotfix('common');
        const started = await km(['rollout', hf.name, '--servers', 'km-fe-1']);
        ok(started, 'rollout as alice');
        const id = lines(started.stdout)[0];
        await env.waitForPhase(env.client.workflow.getHandle(id), 'verifying');
        const viaAgent = { KM_HOTFIX_SIGNING_KEY: undefined, SSH_AUTH_SOCK: agent.socket };
        const rejected = await km(['reject', id, '--reason', 'wrong build'], viaAgent);
        ok(rejected, 'reject through the agent');
        assert.match(rejected.stdout, /rejected .* by bob \(SHA256:/);
        const final = (await env.client.workflow.getHandle(id).result()) as RolloutStatus;
        assert.equal(final.phase, 'rolled_back');
        assert.deepEqual(
          final.approvals.map((x) => [x.by, x.decision, x.comment]),
          [['bob', 'reject', 'wrong build']],
        );
      } finally {
        await agent?.stop();
      }
    });
  });
});
