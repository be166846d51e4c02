// Decisions bind what grows with the fleet by digest (issue 31): the drained
// backends are a count and the sha256 of their sorted list, so a message, the
// webhook's text and a status line stay the same size whatever the fleet.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { sha256Hex } from '../domain/sha256';
import {
  Decision,
  decisionMessage,
  DECISION_MESSAGE_MAX,
  drainedFacts,
  drainedList,
  parseDecisionMessage,
} from '../domain/decision';
import { notificationText } from '../domain/notification';
import { FullRolloutStatus, RolloutStatus } from '../domain/messages/rollout';
import { boundedStatus } from '../domain/status';
import { statusBlock, changeLines, NAMED_LINE_MAX } from '../client/render/status';
import { auditDecision } from '../signing/audit';
import { parseAllowedSigners } from '../signing/allowed-signers';
import { keyTextSigner } from '../signing/signer';
import { parseArmoredSignature, signMessage } from '../signing/sshsig';
import { fingerprint } from '../signing/keys';
import { generateEd25519KeyPair } from '../keymanager/keygen';

const nodeSha = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex');
/** 2,000 backends of 60-character names, as a large site names them. */
const NAMES = Array.from(
  { length: 2000 },
  (_, i) =>
    `kmbackend-prod-eu-west-1a-rack-${String(i % 40).padStart(2, '0')}-node-${String(i).padStart(4, '0')}.corp.example.com`,
);

describe('sha256 in the workflow sandbox (domain/sha256.ts)', () => {
  it("is node:crypto's sha256 at every padding boundary, for non-ASCII text, and for a large fleet's list", () => {
    for (const n of [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000])
      assert.equal(sha256Hex('x'.repeat(n)), nodeSha('x'.repeat(n)), `${n} bytes`);
    for (const t of ['é', '日本語', '😀 emoji', 'a\nb\n']) assert.equal(sha256Hex(t), nodeSha(t), t);
    assert.equal(sha256Hex(''), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    assert.equal(sha256Hex(drainedList(NAMES)), nodeSha(drainedList(NAMES)));
  });
});

describe('the drained backends in a decision', () => {
  const at = '2026-11-27T17:26:00.000Z';
  const approve = (drained: string[]): Decision => ({
    action: 'approve',
    rollout: 'rollout-hotfix_backend_x-20261127T172600-ab12',
    hotfix: 'hotfix_backend_x',
    sha256: 'a'.repeat(64),
    canary: 'km-be-1',
    drained: drainedFacts(drained),
    comment: 'c'.repeat(2000),
    at,
  });

  it('2,000 backends of 60 characters: the message is as short as with two, the digest is sha256sum of the sorted list', () => {
    assert.equal(NAMES[0].length, 60);
    const big = decisionMessage(approve([...NAMES].reverse()));
    const small = decisionMessage(approve(['km-be-2', 'km-be-3']));
    assert.ok(big.length <= DECISION_MESSAGE_MAX, `${big.length} characters with the longest comment`);
    assert.equal(big.length - small.length, '2000'.length - '2'.length);
    const list = [...NAMES]
      .sort()
      .map((n) => `${n}\n`)
      .join('');
    assert.match(big, new RegExp(`\\ndrained: 2000 sha256:${nodeSha(list)}\\n`));
    assert.deepEqual(parseDecisionMessage(big).drained, { count: 2000, sha256: nodeSha(list) });
    assert.deepEqual(drainedFacts([...NAMES, NAMES[0]]), drainedFacts(NAMES), 'once each');
  });

  it('the webhook names a few and counts the rest', () => {
    const text = notificationText({
      event: 'waiting',
      rolloutId: 'rollout-h-1',
      hotfix: 'hotfix_backend_x',
      requestedBy: 'alice',
      canary: 'km-be-1',
      drained: NAMES.slice(0, 5),
      drainedCount: 1999,
    });
    assert.ok(text.length < 800, `${text.length} characters`);
    assert.match(text, new RegExp(`Backends ${NAMES[0].replace(/\./g, '\\.')}, .* and 1994 more are drained\\.$`));
  });

  it('a status of 2,000 drained backends: short lines, the count and where the list is; a few are named', () => {
    const now = new Date().toISOString();
    const drained = NAMES.map((server, i) => ({ server, maxProcesses: 4 + (i % 3) }));
    const full: FullRolloutStatus = {
      id: 'rollout-hotfix_backend_x-20261127T172600-ab12',
      kind: 'rollout',
      hotfix: 'hotfix_backend_x',
      phase: 'verifying',
      requestedBy: 'alice',
      requestedKey: null,
      sha256: 'a'.repeat(64),
      canary: 'km-be-1',
      drained,
      approvals: [],
      decisions: [],
      servers: [{ name: 'km-be-1', role: 'backend', state: 'patched' }],
      serverCount: 0,
      serverCounts: {},
      attention: [],
      attentionMore: 0,
      error: null,
      paused: false,
      gate: {
        message: 'Verify',
        canary: 'km-be-1',
        drained: drainedFacts(NAMES),
        approvers: [],
        waitingSince: now,
        deadline: now,
      },
      needsAttention: [],
      needsAttentionMore: 0,
      startedAt: now,
      updatedAt: now,
      endedAt: null,
      activeBatchWorkflows: [],
    };
    const st: RolloutStatus = boundedStatus(full);
    assert.equal(st.drainedCount, 2000);
    const out = statusBlock(st);
    for (const l of out) assert.ok(l.length <= NAMED_LINE_MAX, `${l.length}: ${l}`);
    assert.ok(
      out.some((l) =>
        /^drained\s+2000 backends \('km-hotfix status \S+ --drained' lists them\) — set to 0 now$/.test(l),
      ),
      out.join('\n'),
    );
    assert.ok(
      out.some((l) => l.includes(`an answer signs  drained: 2000 sha256:${nodeSha(drainedList(NAMES))}`)),
      out.join('\n'),
    );
    const changes = changeLines(undefined, { ...st, phase: 'drain' });
    for (const l of changes) assert.ok(l.length <= NAMED_LINE_MAX + 20, `${l.length}: ${l}`);
    const few = statusBlock(
      boundedStatus({
        ...full,
        drained: drained.slice(0, 1),
        gate: { ...full.gate!, drained: drainedFacts(NAMES.slice(0, 1)) },
      }),
    );
    assert.ok(
      few.some((l) => l.includes(`${NAMES[0]} (Maximum Processes 4) — set to 0 now`)),
      'one backend is named',
    );
  });

  it("audit re-computes the digest from the ledger's list: one backend more or less there, and the decision fails", async () => {
    const pair = generateEd25519KeyPair('bob');
    const signers = parseAllowedSigners(`bob ${pair.public.trim().split(/\s+/).slice(0, 2).join(' ')}\n`);
    const now = new Date();
    const message = decisionMessage({ ...approve(NAMES), comment: 'ok', at: now.toISOString() });
    const signature = await signMessage(keyTextSigner(pair.private), message);
    const signed = {
      by: 'bob',
      key: fingerprint(parseArmoredSignature(signature).publicKey.blob),
      message,
      signature,
      recordedAt: now,
    };
    const expected = { rollout: approve(NAMES).rollout, action: 'approve' as const };
    assert.deepEqual(auditDecision(signed, { ...expected, drained: [...NAMES].reverse() }, signers), []);
    assert.match(
      auditDecision(signed, { ...expected, drained: NAMES.slice(1) }, signers).join('; '),
      /signed drained backends are 2000 sha256:\S+ but the ledger's drained backends are 1999 sha256:\S+: the ledger's list or the message was altered/,
    );
    assert.match(
      auditDecision(signed, { ...expected, drained: [...NAMES.slice(1), 'km-somewhere-else'] }, signers).join('; '),
      /altered/,
    );
  });
});
