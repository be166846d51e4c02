// The rules behind the web page, without a browser: delegated decisions
// (`on-behalf-of`, delegate keys in allowed_signers, accepted by OpenSSH too)
// and the HTML escaper that keeps inventory names and comments inert.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import {
  decisionMessage,
  parseDecisionMessage,
  DecisionMessageError,
  isDelegate,
  drainedFacts,
} from '../domain/decision';
import { gateAnswerRefusal, parseNameMatching, personNamed } from '../domain/people';
import { parseHotfixFileName, parseHotfixName, HOTFIX_NAME_MAX, HotfixNameError } from '../domain/hotfix';
import { workflowId, WORKFLOW_ID_MAX } from '../domain/rollout';
import { RolloutStatus } from '../domain/messages/rollout';
import { changeLines, statusBlock } from '../client/render/status';
import { parseAllowedSigners, peopleOf } from '../signing/allowed-signers';
import { keyFileSigner } from '../signing/signer';
import { signMessage } from '../signing/sshsig';
import { verifySignedDecision, SignatureRefused } from '../signing/verify';
import { auditDecision } from '../signing/audit';
import { notificationText } from '../domain/notification';
import { esc, safeHref, scriptJson } from '../web/html';
import { inEventOrder } from '../domain/timeline';
import { keygenVerify, makeKey, publicKeyLine, requireSshKeygen } from './helpers/openssh-tools';
import { scratchDir } from './helpers/stack';

const GATE = {
  action: 'approve' as const,
  rollout: 'rollout-hotfix_backend_x-1',
  hotfix: 'hotfix_backend_x',
  sha256: 'a'.repeat(64),
  canary: 'km-be-1',
  drained: drainedFacts(['km-be-2']),
  comment: 'ok',
};

describe('delegated decisions (the web page signs for a person)', function () {
  this.timeout(60_000);
  let dir: string;
  let signersFile: string;
  let webKey: string;
  let bobKey: string;
  let carolKey: string;
  /** A second delegate, its suffix in capitals. */
  let shoutKey: string;

  before(async function () {
    await requireSshKeygen(this);
    dir = await scratchDir('web-domain');
    webKey = await makeKey(dir, 'web');
    bobKey = await makeKey(dir, 'bob');
    carolKey = await makeKey(dir, 'carol');
    shoutKey = await makeKey(dir, 'shout');
    const line = async (name: string, key: string) =>
      `${name} ${(await publicKeyLine(key)).split(/\s+/).slice(0, 2).join(' ')}`;
    signersFile = path.join(dir, 'allowed_signers');
    // A pattern line and an expired line make nobody a person.
    await fs.writeFile(
      signersFile,
      [
        await line('km-hotfix-web@delegate', webKey),
        await line('bob', bobKey),
        await line('carol', carolKey),
        await line('other-web@DELEGATE', shoutKey),
        await line('*@contractors.example', shoutKey),
        `olga valid-before="20200101" ${(await publicKeyLine(carolKey)).split(/\s+/).slice(0, 2).join(' ')}`,
        '',
      ].join('\n'),
    );
  });

  const sign = async (key: string, message: string) => ({
    message,
    signature: await signMessage(await keyFileSigner(key), message),
  });
  const signers = async () => parseAllowedSigners(await fs.readFile(signersFile, 'utf8'));

  it('the message gains an on-behalf-of line before at, and parses back to the same decision', () => {
    const at = '2026-11-27T17:26:00.000Z';
    const m = decisionMessage({ ...GATE, onBehalfOf: 'carol', at });
    assert.match(m, /\ncomment: ok\non-behalf-of: carol\nat: 2026-11-27T17:26:00.000Z\n$/);
    assert.deepEqual(parseDecisionMessage(m), { ...GATE, onBehalfOf: 'carol', at });
    assert.equal(
      parseDecisionMessage(decisionMessage({ ...GATE, at })).onBehalfOf,
      undefined,
      'a person signing for themself has no such line',
    );
    assert.throws(
      () =>
        decisionMessage({
          action: 'pause',
          rollout: 'r',
          hotfix: 'h',
          sha256: 'a'.repeat(64),
          comment: '',
          onBehalfOf: 'carol',
          at,
        }),
      DecisionMessageError,
    );
    assert.throws(
      () => decisionMessage({ ...GATE, onBehalfOf: 'other@delegate', at }),
      /names a person, not a delegate/,
    );
    assert.throws(() => decisionMessage({ ...GATE, onBehalfOf: 'a b', at }), DecisionMessageError);
    assert.ok(isDelegate('km-hotfix-web@delegate'));
    assert.ok(!isDelegate('@delegate'));
    assert.ok(!isDelegate('bob'));
  });

  it("a delegate key counts as the person it names; as itself it counts for nobody; a person's key cannot sign for another", async () => {
    const now = new Date();
    const at = now.toISOString();
    const v = verifySignedDecision(
      await sign(webKey, decisionMessage({ ...GATE, onBehalfOf: 'carol', at })),
      await signers(),
      now,
    );
    assert.equal(v.by, 'carol');
    assert.equal(v.via, 'km-hotfix-web@delegate');
    assert.match(v.key, /^SHA256:/);
    assert.throws(
      () => verifySignedDecision({ message: decisionMessage({ ...GATE, at }), signature: '' }, [], now),
      SignatureRefused,
    );
    const file = await signers();
    const asItself = await sign(webKey, decisionMessage({ ...GATE, at }));
    assert.throws(
      () => verifySignedDecision(asItself, file, now),
      (e: unknown) =>
        e instanceof SignatureRefused && e.refusal === 'not-a-delegate' && /signs only for a person/.test(e.message),
    );
    const bobForCarol = await sign(bobKey, decisionMessage({ ...GATE, onBehalfOf: 'carol', at }));
    assert.throws(
      () => verifySignedDecision(bobForCarol, file, now),
      /only a delegate key .* may sign for someone else/,
    );
    assert.equal(
      verifySignedDecision(await sign(bobKey, decisionMessage({ ...GATE, at })), await signers(), now).by,
      'bob',
    );
  });

  it('audit: a delegated decision holds when the ledger names the person and the delegate; not when it hides the delegate', async () => {
    const now = new Date();
    const s = await sign(webKey, decisionMessage({ ...GATE, onBehalfOf: 'carol', at: now.toISOString() }));
    const v = verifySignedDecision(s, await signers(), now);
    const proof = { by: 'carol', key: v.key, message: s.message, signature: s.signature, recordedAt: now };
    const expected = { rollout: GATE.rollout, action: 'approve' as const };
    assert.deepEqual(auditDecision({ ...proof, via: 'km-hotfix-web@delegate' }, expected, await signers()), []);
    assert.match(auditDecision(proof, expected, await signers()).join('; '), /is not a key of carol/);
    assert.match(
      auditDecision({ ...proof, by: 'bob', via: 'km-hotfix-web@delegate' }, expected, await signers()).join('; '),
      /on behalf of carol, the ledger names bob/,
    );
  });

  // Issue 23, item 2: on today's code the delegate's word made anyone a person.
  it('the delegate creates nobody: on-behalf-of a name without a line of its own, or spelled otherwise, is refused', async () => {
    const now = new Date();
    const at = now.toISOString();
    const file = await signers();
    assert.deepEqual(
      peopleOf(file, 'km-hotfix', now),
      ['bob', 'carol'],
      'delegates, patterns and an expired line are no people',
    );
    for (const [name, re] of [
      ['mallory', /^mallory is not in the signers file/],
      ['Carol', /^Carol is not in the signers file: .* spelled as the file spells it/],
      ['olga', /^olga is not in the signers file/],
      ['someone@contractors.example', /^someone@contractors\.example is not in the signers file/],
    ] as const) {
      const s = await sign(webKey, decisionMessage({ ...GATE, onBehalfOf: name, at }));
      assert.throws(
        () => verifySignedDecision(s, file, now),
        (e: unknown) => e instanceof SignatureRefused && e.refusal === 'unknown-person' && re.test(e.message),
        name,
      );
    }
    const v = verifySignedDecision(
      await sign(webKey, decisionMessage({ ...GATE, onBehalfOf: 'carol', at })),
      file,
      now,
    );
    assert.deepEqual([v.by, v.via], ['carol', 'km-hotfix-web@delegate']);
    assert.deepEqual(
      v.personKeys,
      [file.find((l) => l.name === 'carol')!.fingerprint],
      "the person's own keys, for the requester rule",
    );
  });

  // Issue 23, item 5: `@DELEGATE` was a person on today's code.
  it('the delegate suffix is matched in any case: such a key never decides as itself, such a name is never signed for', async () => {
    const now = new Date();
    const at = now.toISOString();
    assert.ok(isDelegate('something@DELEGATE'));
    assert.ok(isDelegate('Web@Delegate'));
    const asItself = await sign(shoutKey, decisionMessage({ ...GATE, at }));
    const file = await signers();
    assert.throws(
      () => verifySignedDecision(asItself, file, now),
      (e: unknown) => e instanceof SignatureRefused && e.refusal === 'not-a-delegate',
    );
    assert.throws(
      () => decisionMessage({ ...GATE, onBehalfOf: 'km-hotfix-web@DELEGATE', at }),
      /names a person, not a delegate/,
    );
    assert.match(
      (personNamed('km-hotfix-web@DELEGATE', ['bob'], 'case-insensitive') as { refused: string }).refused,
      /is a delegate, not a person/,
    );
  });

  it("the page's names: exact by default; case-insensitive only when unique in the file, and then the file's spelling", () => {
    const people = ['alice', 'bob', 'Kim', 'KIM'];
    assert.deepEqual(personNamed('alice', people), { person: 'alice' });
    assert.deepEqual(personNamed('ALICE', people), { refused: 'ALICE is not in the signers file' });
    assert.deepEqual(personNamed('ALICE', people, 'case-insensitive'), { person: 'alice' });
    assert.deepEqual(personNamed('Bob', people, 'case-insensitive'), { person: 'bob' });
    assert.match(
      (personNamed('kim', people, 'case-insensitive') as { refused: string }).refused,
      /kim is ambiguous: the signers file has Kim, KIM/,
    );
    assert.match(
      (personNamed('Kim', people, 'case-insensitive') as { refused: string }).refused,
      /ambiguous/,
      'even an exact spelling, when the proxy does not tell case apart',
    );
    assert.deepEqual(personNamed('mallory', people, 'case-insensitive'), {
      refused: 'mallory is not in the signers file',
    });
    assert.equal(parseNameMatching(undefined), 'exact');
    assert.equal(parseNameMatching('case-insensitive'), 'case-insensitive');
    assert.throws(
      () => parseNameMatching('loose'),
      /KM_HOTFIX_WEB_NAMES must be exact or case-insensitive, not 'loose'/,
    );
  });

  it("the gate's rule compares the file's principals and the person's keys: the requester under another name with her key is the requester", () => {
    const gate = { requestedBy: 'alice', requestedKey: 'SHA256:alice', approvers: [] as string[] };
    assert.match(
      gateAnswerRefusal({ by: 'alice', keys: [] }, gate) ?? '',
      /^alice started this rollout: someone else must verify the canary$/,
    );
    assert.match(
      gateAnswerRefusal({ by: 'alice-laptop', keys: ['SHA256:web', 'SHA256:alice'] }, gate) ?? '',
      /^alice-laptop started this rollout as alice with the same key/,
    );
    assert.match(
      gateAnswerRefusal({ by: 'alice', key: 'SHA256:alice', keys: ['SHA256:alice'] }, gate) ?? '',
      /^alice \(SHA256:alice\) started this rollout/,
    );
    assert.equal(gateAnswerRefusal({ by: 'bob', keys: ['SHA256:bob'] }, gate), null);
    assert.equal(
      gateAnswerRefusal({ by: 'bob', keys: [] }, { ...gate, approvers: ['carol'] }),
      'bob is not an approver of this rollout (approvers: carol)',
    );
    assert.equal(gateAnswerRefusal({ by: 'carol', keys: [] }, { ...gate, approvers: ['carol'] }), null);
  });

  it('audit: a recorded delegated decision for someone who is not a person of the file fails', async () => {
    const now = new Date();
    // As today's code accepted it: the page's key, on behalf of a name the file does not have.
    const s = await sign(webKey, decisionMessage({ ...GATE, onBehalfOf: 'mallory', at: now.toISOString() }));
    const proof = {
      by: 'mallory',
      via: 'km-hotfix-web@delegate',
      key: verifySignedDecision(
        await sign(webKey, decisionMessage({ ...GATE, onBehalfOf: 'bob', at: now.toISOString() })),
        await signers(),
        now,
      ).key,
      message: s.message,
      signature: s.signature,
      recordedAt: now,
    };
    assert.match(
      auditDecision(proof, { rollout: GATE.rollout, action: 'approve' }, await signers()).join('; '),
      /mallory is not in the signers file: km-hotfix-web@delegate may sign only for a person/,
    );
  });

  it("OpenSSH still parses the signers file and verifies the delegate's signature for its principal", async () => {
    const message = decisionMessage({ ...GATE, onBehalfOf: 'carol', at: new Date().toISOString() });
    const s = await sign(webKey, message);
    const r = await keygenVerify(dir, signersFile, 'km-hotfix-web@delegate', message, s.signature);
    assert.equal(r.code, 0, r.stderr);
  });
});

// Issue 23, item 4: on today's code a web approval read as if it were dana's own key.
describe("a delegated decision is shown as the delegate's", () => {
  it('status and --watch say "approved by dana via km-hotfix-web@delegate (SHA256:…)"; a person\'s own stays "by bob (SHA256:…)"', () => {
    const now = new Date().toISOString();
    const approval = {
      by: 'dana',
      decision: 'approve' as const,
      at: now,
      comment: 'ok',
      key: 'SHA256:webkey',
      via: 'km-hotfix-web@delegate',
      message: '',
      signature: '',
    };
    const base: RolloutStatus = {
      id: 'rollout-x',
      kind: 'rollout',
      hotfix: 'hotfix_backend_x',
      phase: 'verifying',
      requestedBy: 'alice',
      requestedKey: 'SHA256:alicekey',
      sha256: null,
      canary: 'km-be-1',
      drained: [],
      approvals: [],
      decisions: [],
      servers: [],
      serverCount: 0,
      serverCounts: {},
      attention: [],
      attentionMore: 0,
      error: null,
      paused: false,
      gate: null,
      needsAttention: [],
      needsAttentionMore: 0,
      startedAt: now,
      updatedAt: now,
      endedAt: null,
      activeBatchWorkflows: [],
    };
    const answered: RolloutStatus = { ...base, phase: 'fanout', approvals: [approval] };
    assert.match(
      statusBlock(answered).join('\n'),
      /^approved\s+by dana via km-hotfix-web@delegate \(SHA256:webkey\) at /m,
    );
    assert.match(
      changeLines(base, answered).join('\n'),
      /approved by dana via km-hotfix-web@delegate \(SHA256:webkey\): ok/,
    );
    assert.match(
      statusBlock({ ...answered, approvals: [{ ...approval, by: 'bob', key: 'SHA256:bobkey', via: undefined }] }).join(
        '\n',
      ),
      /^approved\s+by bob \(SHA256:bobkey\) at /m,
    );
  });
});

// Issue 23, item 3: the web page's routes are sized for this.
describe('the longest id km-hotfix makes', () => {
  it('comes from the longest Name a hotfix file name can hold; a longer Name or file name is refused in one line', () => {
    const name = `hotfix_common_${'a'.repeat(HOTFIX_NAME_MAX - 'hotfix_common_'.length)}`;
    assert.equal(parseHotfixName(name).name, name);
    const file = `sshmgr-1.0-${name}_A-1.gz`;
    assert.equal(file.length, 255);
    assert.equal(parseHotfixFileName(file).name, name);
    assert.throws(
      () => parseHotfixName(`${name}a`),
      (e: unknown) =>
        e instanceof HotfixNameError && /at most 237 characters/.test(e.message) && !e.message.includes('\n'),
    );
    assert.throws(() => parseHotfixFileName(`sshmgr-1.0-${name}a_A-1.gz`), /longer than 255 characters/);
    const longest = workflowId('removal', name, new Date(), 'abcdef');
    assert.equal(longest.length, WORKFLOW_ID_MAX);
    assert.ok(WORKFLOW_ID_MAX > 100, `${WORKFLOW_ID_MAX}: longer than fastify's default route parameter`);
  });
});

describe('HTML escaping of untrusted text', () => {
  it('escapes markup and quotes, shows control characters, links only http(s), keeps JSON inside <script>', () => {
    assert.equal(esc('<img src=x onerror="alert(1)">&\''), '&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;&#39;');
    assert.equal(esc('a\u001b[2Jb\u202e'), 'a\\e[2Jb\\u202e');
    assert.equal(safeHref('javascript:alert(1)'), null);
    assert.equal(safeHref('https://km-fe-1.example/'), 'https://km-fe-1.example/');
    assert.equal(scriptJson('</script><script>'), '"\\u003c/script>\\u003cscript>"');
  });
});

describe('webhook notifications (Slack-compatible text)', () => {
  it('says what to check and where, links the page, and keeps untrusted values from making links or mentions', () => {
    const base = { rolloutId: 'rollout-h-1', hotfix: 'hotfix_backend_x', requestedBy: 'alice' };
    const waiting = notificationText(
      { ...base, event: 'waiting', canary: 'km-be-1', canaryUrl: 'https://km-be-1.example/', drained: ['km-be-2'] },
      'https://km-hotfix.example/',
    );
    assert.equal(
      waiting,
      'hotfix_backend_x waits for verification: check canary km-be-1 directly on https://km-be-1.example/ (not through the load balancer), then approve or reject (not alice, who started it): https://km-hotfix.example/rollouts/rollout-h-1. Backends km-be-2 are drained.',
    );
    assert.match(
      notificationText({ ...base, event: 'completed', servers: 5 }),
      /completed on 5 server\(s\): \(km-hotfix status rollout-h-1\)/,
    );
    const evil = notificationText({
      ...base,
      event: 'rolled_back',
      error: 'rejected by bob: <!channel> <http://x|click>\nnext',
    });
    assert.match(evil, /&lt;!channel&gt; &lt;http:\/\/x\|click&gt; next/);
    assert.match(
      notificationText({ ...base, event: 'rollback_failed', needsAttention: ['km-be-3'] }),
      /FAILED TO ROLL BACK; needs a person for km-be-3/,
    );
  });
});

describe('the timeline in event order (domain/timeline.ts)', () => {
  const t = (s: number) => new Date(Date.UTC(2026, 11, 8, 1, 0, s));
  let seq = 0;
  const row = (
    kind: string,
    at: number,
    o: { server?: string; key?: string; detail?: Record<string, unknown> } = {},
  ) => ({
    seq: ++seq,
    at: t(at),
    kind,
    server: o.server ?? null,
    ...(o.key ? { key: o.key } : {}),
    detail: o.detail ?? {},
  });
  const phase = (p: string, at: number) => row('phase', at, { detail: { phase: p } });
  const label = (r: { kind: string; server: string | null; detail: Record<string, unknown> }) =>
    r.kind === 'phase' ? `phase ${String(r.detail.phase)}` : `${r.kind}${r.server ? ` ${r.server}` : ''}`;

  it("the workflow's rows trailing behind its steps' rows: the drain and the canary's phase come before the canary's apply, the answer before the restore", () => {
    seq = 0;
    // As the database received them: the workflow's queue wrote drain, phase canary and the answer late.
    const written = [
      row('started', 0),
      phase('preflight', 0),
      row('canary', 1, { server: 'km-be-1' }),
      phase('drain', 1),
      row('sent', 3, { server: 'km-be-1', detail: { action: 'apply' } }),
      row('apply', 3, { server: 'km-be-1' }),
      row('drain', 4),
      phase('canary', 4),
      row('restart', 5, { server: 'km-be-1', key: 'restart:apply:km-be-1:x#1' }),
      row('verified', 6, { server: 'km-be-1', detail: { applied: true } }),
      phase('verifying', 7),
      row('gate', 8, { server: 'km-be-1', detail: { url: 'https://km-be-1/' } }),
      row('restore', 20),
      row('approve', 21),
      phase('restore', 21),
      row('apply', 22, { server: 'km-fe-1' }),
      phase('fanout', 23),
      phase('completed', 30),
    ];
    assert.deepEqual(inEventOrder(written).map(label), [
      'started',
      'phase preflight',
      'canary km-be-1',
      'phase drain',
      'drain',
      'phase canary',
      'sent km-be-1',
      'apply km-be-1',
      'restart km-be-1',
      'verified km-be-1',
      'phase verifying',
      'gate km-be-1',
      'approve',
      'phase restore',
      'restore',
      'phase fanout',
      'apply km-fe-1',
      'phase completed',
    ]);
    // Written in any order, the same timeline.
    assert.deepEqual(inEventOrder([...written].reverse()).map(label), inEventOrder(written).map(label));
  });

  it('a rollback: the unapply after the rolling_back phase; steps by their own time, a steering decision among them by its time', () => {
    seq = 0;
    const written = [
      phase('fanout', 0),
      row('apply', 2, { server: 'b' }),
      row('apply', 1, { server: 'a' }),
      row('unapply', 5, { server: 'a' }),
      row('pause', 3),
      phase('rolling_back', 6),
      phase('rolled_back', 9),
    ];
    assert.deepEqual(inEventOrder(written).map(label), [
      'phase fanout',
      'apply a',
      'apply b',
      'pause',
      'phase rolling_back',
      'unapply a',
      'phase rolled_back',
    ]);
  });
});
