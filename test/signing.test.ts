// Signed decisions (SPEC §7), the library: the canonical message, SSHSIG in
// both directions with OpenSSH's own ssh-keygen, a real ssh-agent, and the
// allowed_signers file. What is refused must be refused by both sides.
import { strict as assert } from 'node:assert';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import {
  Decision,
  decisionMessage,
  parseDecisionMessage,
  DecisionMessageError,
  decisionMismatch,
  oneLine,
  DecisionFacts,
  DecisionAction,
  drainedFacts,
} from '../domain/decision';
import { signMessage, parseArmoredSignature, verifySshSig, Signer } from '../signing/sshsig';
import { keyFileSigner, agentKeys, agentSigner, SigningKeyError } from '../signing/signer';
import {
  parseAllowedSigners,
  AllowedSignersError,
  findSigner,
  allowsPrincipal,
  matchPrincipals,
} from '../signing/allowed-signers';
import { fingerprint, parsePublicKeyText } from '../signing/keys';
import { verifySignedDecision, SignatureRefused, SignatureRefusal } from '../signing/verify';
import { auditDecision } from '../signing/audit';
import {
  requireSshKeygen,
  makeKey,
  publicKeyLine,
  keygenSign,
  keygenVerify,
  startAgent,
  run,
  TestAgent,
} from './helpers/openssh-tools';

const SHA = 'a'.repeat(64);
const AT = '2026-11-27T17:26:00.000Z';
const approve: Decision = {
  action: 'approve',
  rollout: 'rollout-hotfix_backend_x-20261127T172600-ab12',
  hotfix: 'hotfix_backend_x',
  sha256: SHA,
  canary: 'km-be-1',
  drained: drainedFacts(['km-be-3', 'km-be-2', 'km-be-3']),
  comment: 'operations run on km-be-1 only; looks good',
  at: AT,
};
/** What `printf 'km-be-2\nkm-be-3\n' | sha256sum` says. */
const DRAINED_SHA = createHash('sha256').update('km-be-2\nkm-be-3\n').digest('hex');

describe('the canonical decision message', () => {
  it('is the SPEC §7 lines, in order, each ending in a newline', () => {
    assert.equal(
      decisionMessage(approve),
      [
        'km-hotfix decision v1',
        'action: approve',
        `rollout: ${approve.rollout}`,
        'hotfix: hotfix_backend_x',
        `sha256: ${SHA}`,
        'canary: km-be-1',
        `drained: 2 sha256:${DRAINED_SHA}`,
        'comment: operations run on km-be-1 only; looks good',
        `at: ${AT}`,
        '',
      ].join('\n'),
    );
  });

  it('parses back what it builds; actions other than approve/reject carry no canary or drain', () => {
    assert.deepEqual(parseDecisionMessage(decisionMessage(approve)), approve);
    const abort: Decision = {
      action: 'abort',
      rollout: approve.rollout,
      hotfix: approve.hotfix,
      sha256: SHA,
      comment: '',
      at: AT,
    };
    const text = decisionMessage(abort);
    assert.ok(text.includes('\ncomment:\n'), 'an empty value has no trailing space');
    assert.deepEqual(parseDecisionMessage(text), abort);
    const none = decisionMessage({ ...approve, drained: drainedFacts([]) });
    assert.ok(none.includes('\ndrained:\n'), 'no drained backend: an empty value');
    assert.deepEqual(parseDecisionMessage(none).drained, drainedFacts([]));
  });

  it('still reads a message from before digests (drained listed by name): its digest is computed from the names', () => {
    const old = decisionMessage(approve).replace(/^drained: .*$/m, 'drained: km-be-2,km-be-3');
    const d = parseDecisionMessage(old);
    assert.deepEqual(d.drained, { count: 2, sha256: DRAINED_SHA, listed: ['km-be-2', 'km-be-3'] });
    assert.equal(decisionMessage(d), old, 'written back byte for byte');
    assert.equal(
      decisionMismatch(
        d,
        {
          action: 'approve',
          rollout: approve.rollout,
          hotfix: approve.hotfix,
          sha256: SHA,
          canary: 'km-be-1',
          drained: drainedFacts(['km-be-3', 'km-be-2']),
        },
        Date.parse(AT),
      ),
      null,
    );
    assert.throws(
      () => parseDecisionMessage(old.replace('km-be-2,km-be-3', 'km-be-3,km-be-2')),
      /canonical/,
      'unsorted',
    );
  });

  it('refuses line breaks and control characters in values, and anything not canonical', () => {
    for (const comment of ['two\nlines', 'cr\rhere', 'esc\u001b[31m', 'nul\u0000', 'ls\u2028sep', ' padded']) {
      assert.throws(() => decisionMessage({ ...approve, comment }), DecisionMessageError, JSON.stringify(comment));
    }
    assert.throws(() => decisionMessage({ ...approve, canary: 'km be 1' }), DecisionMessageError);
    assert.throws(() => decisionMessage({ ...approve, at: '2026-11-27 17:26' }), DecisionMessageError);
    const good = decisionMessage(approve);
    const variants = [
      good.replace(/\n/g, '\r\n'),
      good.slice(0, -1),
      good.replace(`drained: 2 sha256:${DRAINED_SHA}`, `drained: 02 sha256:${DRAINED_SHA}`),
      good.replace(`drained: 2 sha256:${DRAINED_SHA}`, `drained: 2 sha256:${DRAINED_SHA.toUpperCase()}`),
      good.replace(`drained: 2 sha256:${DRAINED_SHA}`, `drained: 2 ${DRAINED_SHA}`),
      good.replace(`drained: 2 sha256:${DRAINED_SHA}`, `drained: 0 sha256:${DRAINED_SHA}`),
      good.replace(`drained: 2 sha256:${DRAINED_SHA}`, `drained: 2  sha256:${DRAINED_SHA}`),
      good.replace('action: approve\n', ''),
      good.replace('canary: km-be-1\n', 'canary: km-be-1\ncanary: km-be-9\n'),
      good.replace('comment: ', 'comment:  '),
      good.replace('km-hotfix decision v1', 'km-hotfix decision v2'),
      `${good}extra: 1\n`,
    ];
    for (const v of variants) assert.throws(() => parseDecisionMessage(v), DecisionMessageError, JSON.stringify(v));
  });

  it('turns a multi-line comment into one line', () => {
    assert.equal(oneLine('  looks\n good\t\r\n '), 'looks good');
  });

  it('says which fact does not fit the rollout now, and refuses a stale or future `at`', () => {
    const facts: DecisionFacts = {
      action: 'approve',
      rollout: approve.rollout,
      hotfix: approve.hotfix,
      sha256: SHA,
      canary: 'km-be-1',
      drained: drainedFacts(['km-be-2', 'km-be-3']),
    };
    const now = Date.parse(AT) + 60_000;
    assert.equal(decisionMismatch(approve, facts, now), null);
    assert.match(decisionMismatch(approve, { ...facts, action: 'reject' }, now) ?? '', /for 'approve', not 'reject'/);
    assert.match(decisionMismatch(approve, { ...facts, rollout: 'rollout-other' }, now) ?? '', /rollout/);
    assert.match(decisionMismatch(approve, { ...facts, sha256: 'b'.repeat(64) }, now) ?? '', /file sha256/);
    assert.match(decisionMismatch(approve, { ...facts, canary: 'km-be-2' }, now) ?? '', /canary/);
    assert.match(
      decisionMismatch(approve, { ...facts, drained: drainedFacts(['km-be-2']) }, now) ?? '',
      /signed drained backends are 2 sha256:[0-9a-f]{64} but this rollout's are 1 sha256:/,
    );
    assert.match(
      decisionMismatch(approve, { ...facts, drained: drainedFacts(['km-be-2', 'km-be-4']) }, now) ?? '',
      /drained/,
      'as many, not the same',
    );
    assert.match(decisionMismatch(approve, facts, Date.parse(AT) + 11 * 60_000) ?? '', /11 minutes ago/);
    assert.match(decisionMismatch(approve, facts, Date.parse(AT) - 11 * 60_000) ?? '', /in the future/);
  });
});

describe('allowed_signers', () => {
  const KEY_A = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJgw6mhJ4foAaVn2dByPaRQUGASBkGFJeUtSP/DHV+JI';
  it('reads names, pattern lists, options, quotes, comments and blank lines', () => {
    const signers = parseAllowedSigners(
      [
        '# the km-hotfix team',
        '',
        `alice ${KEY_A} alice@laptop`,
        `  bob,bob@corp namespaces="km-hotfix,git" ${KEY_A}`,
        `"*@corp",!mallory@corp ${KEY_A}`,
        `carol valid-after="20200101",valid-before="20991231Z" ${KEY_A}`,
      ].join('\n'),
    );
    assert.deepEqual(
      signers.map((s) => [s.line, s.name, s.principals, s.namespaces]),
      [
        [3, 'alice', ['alice'], null],
        [4, 'bob', ['bob', 'bob@corp'], ['km-hotfix', 'git']],
        [5, null, ['*@corp', '!mallory@corp'], null],
        [6, 'carol', ['carol'], null],
      ],
    );
    assert.equal(signers[0].comment, 'alice@laptop');
    assert.ok(matchPrincipals('dave@corp', signers[2].principals));
    assert.ok(!matchPrincipals('mallory@corp', signers[2].principals));
    assert.ok(!matchPrincipals('dave@home', signers[2].principals));
  });

  it('refuses a malformed line, naming it', () => {
    for (const [text, why] of [
      [`alice ssh-dss AAAA`, /line 1: 'ssh-dss' is not a supported key type/],
      [`alice frobnicate ${KEY_A}`, /line 1: unknown option 'frobnicate'/],
      [`# ok\nalice ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJgw`, /line 2: .*truncated|line 2: .*32 bytes/],
      [`alice namespaces="km-hotfix ${KEY_A}`, /unterminated quote/],
    ] as const) {
      assert.throws(
        () => parseAllowedSigners(text),
        (e: unknown) => e instanceof AllowedSignersError && why.test(e.message),
        text,
      );
    }
  });

  it('finds the person by key, honouring namespaces and validity', () => {
    const key = parsePublicKeyText(KEY_A).blob;
    const now = new Date('2026-11-27T00:00:00Z');
    const only = (line: string) => parseAllowedSigners(line);
    assert.equal(findSigner(only(`alice ${KEY_A}`), key, 'km-hotfix', now)?.name, 'alice');
    assert.equal(findSigner(only(`alice namespaces="git" ${KEY_A}`), key, 'km-hotfix', now), null);
    assert.equal(findSigner(only(`alice valid-before="20250101Z" ${KEY_A}`), key, 'km-hotfix', now), null);
    assert.equal(findSigner(only(`alice cert-authority ${KEY_A}`), key, 'km-hotfix', now), null);
    assert.equal(findSigner(only(`*@corp ${KEY_A}`), key, 'km-hotfix', now), null, 'a pattern names nobody');
    assert.ok(allowsPrincipal(only(`*@corp ${KEY_A}`), 'dave@corp', key, 'km-hotfix', now));
  });
});

describe('SSHSIG interoperability with OpenSSH', function () {
  this.timeout(60_000);
  let dir: string;
  let signersFile: string;
  const message = decisionMessage(approve);

  before(async function () {
    await requireSshKeygen(this);
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'km-sign-'));
    const lines: string[] = [];
    for (const [name, type, bits] of [
      ['alice', 'ed25519'],
      ['bob', 'ed25519'],
      ['rosa', 'rsa', 3072],
      ['erin', 'ecdsa', 256],
      ['ezra', 'ecdsa', 521],
    ] as const) {
      const key = await makeKey(dir, name, type, bits);
      lines.push(`${name} ${await publicKeyLine(key)}`);
    }
    await makeKey(dir, 'stranger');
    signersFile = path.join(dir, 'allowed_signers');
    await fs.writeFile(signersFile, `${lines.join('\n')}\n`);
  });
  after(async () => {
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  const signers = async () => parseAllowedSigners(await fs.readFile(signersFile, 'utf8'));
  const when = new Date(AT);

  for (const name of ['alice', 'rosa', 'erin', 'ezra']) {
    it(`a signature made by km-hotfix with ${name}'s key file verifies with ssh-keygen -Y verify (and with km-hotfix)`, async () => {
      const signature = await signMessage(await keyFileSigner(path.join(dir, name)), message);
      const ok = await keygenVerify(dir, signersFile, name, message, signature);
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, new RegExp(`Good "km-hotfix" signature for ${name}`));
      const v = verifySignedDecision({ message, signature }, await signers(), when);
      assert.equal(v.by, name);
      assert.equal(v.decision.canary, 'km-be-1');
    });

    it(`a signature made by ssh-keygen -Y sign with ${name}'s key verifies with km-hotfix`, async () => {
      const signature = await keygenSign(dir, path.join(dir, name), message);
      const v = verifySignedDecision({ message, signature }, await signers(), when);
      assert.equal(v.by, name);
      // The fingerprint is the one ssh-keygen -l prints.
      const l = await run('ssh-keygen', ['-l', '-f', path.join(dir, `${name}.pub`)]);
      assert.equal(v.key, l.stdout.split(' ')[1]);
    });
  }

  it('signs through a real ssh-agent; both sides verify it', async () => {
    let agent: TestAgent | undefined;
    try {
      agent = await startAgent(dir);
      await agent.add(path.join(dir, 'stranger'));
      await agent.add(path.join(dir, 'bob'));
      await agent.add(path.join(dir, 'rosa'));
      const keys = await agentKeys(agent.socket);
      assert.equal(keys.length, 3);
      const registered = await signers();
      // The first key the agent holds that is a registered signer: bob's.
      const key = keys.find((k) => findSigner(registered, k, 'km-hotfix', when));
      assert.ok(key);
      for (const k of [key, keys[2]]) {
        const signature = await signMessage(agentSigner(agent.socket, k), message);
        const v = verifySignedDecision({ message, signature }, registered, when);
        const ok = await keygenVerify(dir, signersFile, v.by, message, signature);
        assert.equal(ok.code, 0, ok.stderr);
      }
      assert.equal(
        verifySignedDecision(
          { message, signature: await signMessage(agentSigner(agent.socket, key), message) },
          registered,
          when,
        ).by,
        'bob',
      );
    } finally {
      await agent?.stop();
    }
  });

  const refused = async (
    signed: { message: string; signature: string } | undefined,
    refusal: SignatureRefusal,
    why: RegExp,
  ) => {
    const registered = await signers();
    assert.throws(
      () => verifySignedDecision(signed, registered, when),
      (e: unknown) => e instanceof SignatureRefused && e.refusal === refusal && why.test(e.message),
    );
  };

  it('refuses a tampered message, on both sides', async () => {
    const signature = await signMessage(await keyFileSigner(path.join(dir, 'alice')), message);
    const tampered = message.replace('canary: km-be-1', 'canary: km-be-2');
    await refused({ message: tampered, signature }, 'bad-signature', /does not verify/);
    assert.notEqual((await keygenVerify(dir, signersFile, 'alice', tampered, signature)).code, 0);
  });

  it('refuses another namespace, on both sides', async () => {
    const signature = await keygenSign(dir, path.join(dir, 'alice'), message, 'git');
    assert.equal(parseArmoredSignature(signature).namespace, 'git');
    await refused({ message, signature }, 'bad-signature', /namespace 'git'/);
    assert.notEqual((await keygenVerify(dir, signersFile, 'alice', message, signature)).code, 0);
  });

  it('refuses a key that is not in the signers file, on both sides', async () => {
    const signature = await signMessage(await keyFileSigner(path.join(dir, 'stranger')), message);
    await refused({ message, signature }, 'unknown-signer', /is not a registered signer/);
    assert.notEqual((await keygenVerify(dir, signersFile, 'alice', message, signature)).code, 0);
  });

  it('refuses a signature whose key was swapped for a registered one', async () => {
    // Take a stranger's signature and put alice's public key into its frame: the signature no longer verifies.
    const stranger = await keyFileSigner(path.join(dir, 'stranger'));
    const alice = await keyFileSigner(path.join(dir, 'alice'));
    const forged: Signer = { publicKey: alice.publicKey, sign: (d) => stranger.sign(d) };
    const signature = await signMessage(forged, message);
    await refused({ message, signature }, 'bad-signature', /does not verify/);
    assert.notEqual((await keygenVerify(dir, signersFile, 'alice', message, signature)).code, 0);
  });

  it('refuses unsigned, garbage and non-canonical input with a reason', async () => {
    const signature = await signMessage(await keyFileSigner(path.join(dir, 'alice')), message);
    await refused(undefined, 'unsigned', /not signed/);
    await refused({ message, signature: '' }, 'unsigned', /not signed/);
    await refused({ message, signature: 'hello' }, 'malformed', /BEGIN SSH SIGNATURE/);
    await refused(
      { message, signature: signature.replace(/^(-----BEGIN SSH SIGNATURE-----\n)U1NI/, '$1AAAA') },
      'malformed',
      /not a valid SSH signature|SSHSIG/,
    );
    await refused({ message: 'approve everything\n', signature }, 'malformed', /first line/);
  });

  it('verifySshSig checks the namespace it is given', async () => {
    const sig = parseArmoredSignature(await signMessage(await keyFileSigner(path.join(dir, 'alice')), message));
    assert.ok(verifySshSig(sig, message));
    assert.ok(!verifySshSig(sig, message, 'file'));
  });

  it('the fingerprint matches ssh-keygen -l for every key type', async () => {
    for (const name of ['alice', 'rosa', 'erin', 'ezra']) {
      const pub = parsePublicKeyText(await publicKeyLine(path.join(dir, name)));
      const l = await run('ssh-keygen', ['-l', '-f', path.join(dir, `${name}.pub`)]);
      assert.equal(fingerprint(pub.blob), l.stdout.split(' ')[1], name);
    }
  });

  it('audit: a recorded decision holds only with its own message, key, person, rollout and action, recorded when signed', async () => {
    const registered = await signers();
    const signature = await signMessage(await keyFileSigner(path.join(dir, 'bob')), message);
    const key = verifySignedDecision({ message, signature }, registered, when).key;
    const proof = { by: 'bob', key, message, signature, recordedAt: new Date(Date.parse(AT) + 30_000) };
    const expected: { rollout: string; action: DecisionAction } = { rollout: approve.rollout, action: 'approve' };
    assert.deepEqual(auditDecision(proof, expected, registered), []);
    const problems = (over: Partial<typeof proof>, exp = expected) =>
      auditDecision({ ...proof, ...over }, exp, registered).join('; ');
    assert.match(
      problems({ message: message.replace('looks good', 'looks bad') }),
      /does not verify over the recorded message/,
    );
    assert.match(problems({ by: 'alice' }), /is not a key of alice in the signers file/);
    assert.match(problems({ key: 'SHA256:' + 'A'.repeat(43) }), /recorded as key SHA256:A+, but signed by SHA256:/);
    assert.match(problems({}, { ...expected, rollout: 'rollout-other' }), /the message is about .* not rollout-other/);
    assert.match(problems({}, { ...expected, action: 'reject' }), /the message says 'approve', the ledger 'reject'/);
    assert.match(problems({ recordedAt: new Date(Date.parse(AT) + 3_600_000) }), /signed at .* but recorded at/);
    assert.match(problems({ signature: 'garbage' }), /not an SSH signature/);
    // A signer removed from the file since: the decision no longer checks out against that file.
    assert.match(
      auditDecision(
        proof,
        expected,
        registered.filter((x) => x.name !== 'bob'),
      ).join('; '),
      /not a key of bob/,
    );
  });

  it('says what to do with a missing, public or encrypted signing key', async () => {
    await assert.rejects(
      keyFileSigner(path.join(dir, 'nope')),
      (e: unknown) => e instanceof SigningKeyError && /KM_HOTFIX_SIGNING_KEY/.test(e.message),
    );
    await assert.rejects(keyFileSigner(path.join(dir, 'alice.pub')), SigningKeyError);
    const locked = path.join(dir, 'locked');
    assert.equal((await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'secret', '-f', locked])).code, 0);
    await assert.rejects(
      keyFileSigner(locked),
      (e: unknown) => e instanceof SigningKeyError && /ssh-add/.test(e.message),
    );
  });
});
