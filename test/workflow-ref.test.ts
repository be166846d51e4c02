// Ids a person can type (domain/workflow-ref.ts): the rule alone, over candidate ids.
import assert from 'node:assert/strict';
import type { WorkflowKind } from '../domain/rollout';
import { workflowId } from '../domain/rollout';
import { candidateLines, IdCandidate, isFullWorkflowId, kindWords, matchWorkflowId } from '../domain/workflow-ref';

const at = (minute: number) => new Date(Date.UTC(2026, 11, 8, 1, minute));
const c = (id: string, kind: WorkflowKind, minute: number): IdCandidate => ({ id, kind, startedAt: at(minute) });

// As `km-hotfix list` would show them, in no particular order here.
const upload = c('upload-hotfix_backend_fix_queue_stall-20261208T010000-0a1b2c', 'upload', 0);
const rollout1 = c('rollout-hotfix_backend_fix_queue_stall-20261208T010100-5140af', 'rollout', 1);
const rollout2 = c('rollout-hotfix_frontend_fix_login-20261208T010200-77aa01', 'rollout', 2);
const removal = c('removal-hotfix_backend_fix_queue_stall-20261208T010300-9e9e01', 'removal', 3);
const all = [rollout1, removal, upload, rollout2];
const ANY: WorkflowKind[] = ['rollout', 'removal', 'upload'];

describe('ids a person can type: the matching rule', () => {
  it('a full id as km-hotfix makes them needs no look-up; anything else does', () => {
    assert.ok(isFullWorkflowId(workflowId('rollout', 'hotfix_common_fix_tags', new Date(), '5140af')));
    assert.ok(isFullWorkflowId(removal.id));
    for (const s of ['5140af', 'last', 'rollout-hotfix_backend_fix_queue_stall', rollout1.id.slice(0, -1), 'x-y'])
      assert.equal(isFullWorkflowId(s), false, s);
  });

  it('the exact id wins, even when it also begins another', () => {
    const longer = c(`${rollout1.id}-again`, 'rollout', 9);
    assert.deepEqual(matchWorkflowId(rollout1.id, [longer, rollout1], ANY), { found: rollout1.id, how: 'exact' });
  });

  it('a unique prefix', () => {
    assert.deepEqual(matchWorkflowId('rollout-hotfix_front', all, ANY), { found: rollout2.id, how: 'prefix' });
    assert.deepEqual(matchWorkflowId('removal', all, ANY), { found: removal.id, how: 'prefix' });
  });

  it('the hex suffix, or any unique trailing part', () => {
    assert.deepEqual(matchWorkflowId('5140af', all, ANY), { found: rollout1.id, how: 'suffix' });
    assert.deepEqual(matchWorkflowId('0af', all, ANY), { found: rollout1.id, how: 'suffix' });
    assert.deepEqual(matchWorkflowId('010200-77aa01', all, ANY), { found: rollout2.id, how: 'suffix' });
  });

  it('ambiguous: every match, newest first, whether it begins or ends the ids', () => {
    assert.deepEqual(matchWorkflowId('rollout-hotfix_', all, ANY), { ambiguous: [rollout2, rollout1] });
    assert.deepEqual(matchWorkflowId('01', all, ANY), { ambiguous: [removal, rollout2] });
    // 'r' begins the rollouts and the removal and ends none: all three
    assert.deepEqual(matchWorkflowId('r', all, ANY), { ambiguous: [removal, rollout2, rollout1] });
  });

  it('none: nothing begins or ends with it, an empty text, or an empty ledger', () => {
    assert.deepEqual(matchWorkflowId('f0f0f0', all, ANY), { none: true });
    assert.deepEqual(matchWorkflowId('fix_queue', all, ANY), { none: true }, 'the middle of an id is not enough');
    assert.deepEqual(matchWorkflowId('', all, ANY), { none: true });
    assert.deepEqual(matchWorkflowId('5140af', [], ANY), { none: true });
  });

  it('last: the newest of the kinds a command acts on', () => {
    assert.deepEqual(matchWorkflowId('last', all, ANY), { found: removal.id, how: 'last' });
    assert.deepEqual(matchWorkflowId('last', all, ['rollout']), { found: rollout2.id, how: 'last' });
    assert.deepEqual(matchWorkflowId('last', all, ['upload']), { found: upload.id, how: 'last' });
    assert.deepEqual(matchWorkflowId('last', [upload], ['rollout', 'removal']), { none: true });
    assert.deepEqual(matchWorkflowId('last', [], ANY), { none: true });
  });

  it('lists candidates one a line, bounded, with how many more', () => {
    const many = Array.from({ length: 14 }, (_, i) =>
      c(`rollout-hotfix_common_x${i}-20261208T010000-00000${i % 10}`, 'rollout', i),
    );
    const lines = candidateLines(many, 30, 10);
    assert.equal(lines.length, 11);
    assert.match(
      lines[0],
      /^rollout-hotfix_common_x0-20261208T010000-000000 {2}\(rollout, started 2026-12-08 01:00Z\)$/,
    );
    assert.equal(lines[10], '... and 20 more');
    assert.deepEqual(candidateLines([rollout1, upload]).length, 2);
  });

  it('says which kinds last means', () => {
    assert.equal(kindWords(['rollout']), 'rollout');
    assert.equal(kindWords(['rollout', 'removal']), 'rollout or removal');
    assert.equal(kindWords(ANY), 'rollout, removal or upload');
  });
});
