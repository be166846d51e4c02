// The rules behind the web page, without a browser: delegated decisions
// (`on-behalf-of`, delegate keys in allowed_signers, accepted by OpenSSH too)
// and the HTML escaper that keeps inventory names and comments inert.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { decisionMessage, parseDecisionMessage, DecisionMessageError, isDelegate, drainedFacts } from '../domain/decision';
import { parseAllowedSigners } from '../signing/allowed-signers';
import { keyFileSigner } from '../signing/signer';
import { signMessage } from '../signing/sshsig';
import { verifySignedDecision, SignatureRefused } from '../signing/verify';
import { auditDecision } from '../signing/audit';
import { notificationText } from '../domain/notification';
import { esc, safeHref, scriptJson } from '../web/html';
import { keygenVerify, makeKey, publicKeyLine, requireSshKeygen } from './helpers/openssh-tools';
import { scratchDir } from './helpers/stack';

const GATE = {
  action: 'approve' as const, rollout: 'rollout-hotfix_backend_x-1', hotfix: 'hotfix_backend_x', sha256: 'a'.repeat(64),
  canary: 'km-be-1', drained: drainedFacts(['km-be-2']), comment: 'ok',
};

describe('delegated decisions (the web page signs for a person)', function () {
  this.timeout(60_000);
  let dir: string;
  let signersFile: string;
  let webKey: string;
  let bobKey: string;

  before(async function () {
    await requireSshKeygen(this);
    dir = await scratchDir('web-domain');
    webKey = await makeKey(dir, 'web');
    bobKey = await makeKey(dir, 'bob');
    const line = async (name: string, key: string) => `${name} ${(await publicKeyLine(key)).split(/\s+/).slice(0, 2).join(' ')}`;
    signersFile = path.join(dir, 'allowed_signers');
    await fs.writeFile(signersFile, `${await line('km-hotfix-web@delegate', webKey)}\n${await line('bob', bobKey)}\n`);
  });

  const sign = async (key: string, message: string) => ({ message, signature: await signMessage(await keyFileSigner(key), message) });
  const signers = async () => parseAllowedSigners(await fs.readFile(signersFile, 'utf8'));

  it('the message gains an on-behalf-of line before at, and parses back to the same decision', () => {
    const at = '2026-11-27T17:26:00.000Z';
    const m = decisionMessage({ ...GATE, onBehalfOf: 'carol', at });
    assert.match(m, /\ncomment: ok\non-behalf-of: carol\nat: 2026-11-27T17:26:00.000Z\n$/);
    assert.deepEqual(parseDecisionMessage(m), { ...GATE, onBehalfOf: 'carol', at });
    assert.equal(parseDecisionMessage(decisionMessage({ ...GATE, at })).onBehalfOf, undefined, 'a person signing for themself has no such line');
    assert.throws(() => decisionMessage({ action: 'pause', rollout: 'r', hotfix: 'h', sha256: 'a'.repeat(64), comment: '', onBehalfOf: 'carol', at }), DecisionMessageError);
    assert.throws(() => decisionMessage({ ...GATE, onBehalfOf: 'other@delegate', at }), /names a person, not a delegate/);
    assert.throws(() => decisionMessage({ ...GATE, onBehalfOf: 'a b', at }), DecisionMessageError);
    assert.ok(isDelegate('km-hotfix-web@delegate'));
    assert.ok(!isDelegate('@delegate'));
    assert.ok(!isDelegate('bob'));
  });

  it('a delegate key counts as the person it names; as itself it counts for nobody; a person\'s key cannot sign for another', async () => {
    const now = new Date();
    const at = now.toISOString();
    const v = verifySignedDecision(await sign(webKey, decisionMessage({ ...GATE, onBehalfOf: 'carol', at })), await signers(), now);
    assert.equal(v.by, 'carol');
    assert.equal(v.via, 'km-hotfix-web@delegate');
    assert.match(v.key, /^SHA256:/);
    assert.throws(() => verifySignedDecision({ message: decisionMessage({ ...GATE, at }), signature: '' }, [], now), SignatureRefused);
    const file = await signers();
    const asItself = await sign(webKey, decisionMessage({ ...GATE, at }));
    assert.throws(() => verifySignedDecision(asItself, file, now), (e: unknown) => e instanceof SignatureRefused && e.refusal === 'not-a-delegate' && /signs only for a person/.test(e.message));
    const bobForCarol = await sign(bobKey, decisionMessage({ ...GATE, onBehalfOf: 'carol', at }));
    assert.throws(() => verifySignedDecision(bobForCarol, file, now), /only a delegate key .* may sign for someone else/);
    assert.equal(verifySignedDecision(await sign(bobKey, decisionMessage({ ...GATE, at })), await signers(), now).by, 'bob');
  });

  it('audit: a delegated decision holds when the ledger names the person and the delegate; not when it hides the delegate', async () => {
    const now = new Date();
    const s = await sign(webKey, decisionMessage({ ...GATE, onBehalfOf: 'carol', at: now.toISOString() }));
    const v = verifySignedDecision(s, await signers(), now);
    const proof = { by: 'carol', key: v.key, message: s.message, signature: s.signature, recordedAt: now };
    const expected = { rollout: GATE.rollout, action: 'approve' as const };
    assert.deepEqual(auditDecision({ ...proof, via: 'km-hotfix-web@delegate' }, expected, await signers()), []);
    assert.match(auditDecision(proof, expected, await signers()).join('; '), /is not a key of carol/);
    assert.match(auditDecision({ ...proof, by: 'bob', via: 'km-hotfix-web@delegate' }, expected, await signers()).join('; '), /on behalf of carol, the ledger names bob/);
  });

  it('OpenSSH still parses the signers file and verifies the delegate\'s signature for its principal', async () => {
    const message = decisionMessage({ ...GATE, onBehalfOf: 'carol', at: new Date().toISOString() });
    const s = await sign(webKey, message);
    const r = await keygenVerify(dir, signersFile, 'km-hotfix-web@delegate', message, s.signature);
    assert.equal(r.code, 0, r.stderr);
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
    const waiting = notificationText({ ...base, event: 'waiting', canary: 'km-be-1', canaryUrl: 'https://km-be-1.example/', drained: ['km-be-2'] }, 'https://km-hotfix.example/');
    assert.equal(waiting, 'hotfix_backend_x waits for verification: check canary km-be-1 directly on https://km-be-1.example/ (not through the load balancer), then approve or reject (not alice, who started it): https://km-hotfix.example/rollouts/rollout-h-1. Backends km-be-2 are drained.');
    assert.match(notificationText({ ...base, event: 'completed', servers: 5 }), /completed on 5 server\(s\): \(km-hotfix status rollout-h-1\)/);
    const evil = notificationText({ ...base, event: 'rolled_back', error: 'rejected by bob: <!channel> <http://x|click>\nnext' });
    assert.match(evil, /&lt;!channel&gt; &lt;http:\/\/x\|click&gt; next/);
    assert.match(notificationText({ ...base, event: 'rollback_failed', needsAttention: ['km-be-3'] }), /FAILED TO ROLL BACK; needs a person for km-be-3/);
  });
});
