// What a person sees: the status block stays readable for a large fleet.
import assert from 'node:assert/strict';
import { changeLines, outcomeLine, statusBlock } from '../client/render/status';
import { FULL_SERVER_LIST_MAX } from '../domain/rollout';
import { RolloutStatus, ServerStatus } from '../domain/messages/rollout';
import { boundedStatus } from '../domain/status';

function bigRollout(n: number, limit = Infinity): RolloutStatus {
  const servers: ServerStatus[] = Array.from({ length: n }, (_, i) => ({
    name: `km-be-${i + 1}`,
    role: 'backend',
    state: i < 150 ? 'patched' : 'pending',
  }));
  servers[150].state = 'patching';
  servers[151].state = 'patching';
  servers[40].state = 'failed';
  servers[40].error = 'km-be-41: applying failed';
  const now = new Date().toISOString();
  // Bounded as a workflow bounds it, with the list kept whatever its size (this block is about rendering one).
  return boundedStatus(
    {
      id: 'rollout-x',
      kind: 'rollout',
      hotfix: 'hotfix_backend_x',
      phase: 'fanout',
      requestedBy: 'alice',
      requestedKey: null,
      sha256: null,
      canary: 'km-be-300',
      drained: [],
      approvals: [],
      decisions: [],
      servers,
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
    },
    limit,
  );
}

describe('status block', () => {
  it('a live view of 2,000 servers fits the terminal: failed, running and the canary first, the rest counted', () => {
    const st = bigRollout(2000);
    const lines = statusBlock(st, Date.now(), false, 10);
    assert.ok(lines.length < 25, `${lines.length} lines`);
    const table = lines.join('\n');
    for (const n of ['km-be-41', 'km-be-151', 'km-be-152', 'km-be-300'])
      assert.match(table, new RegExp(`^${n}\\s`, 'm'), n);
    assert.match(table, /… and 1991 more \(patched 144 · pending 1847\): 'km-hotfix status rollout-x' lists them all/);
  });

  it('without a bound (plain status) every server is listed', () => {
    const lines = statusBlock(bigRollout(300), Date.now(), false);
    assert.equal(lines.filter((l) => /^km-be-\d+\s/.test(l)).length, 300);
    assert.ok(!lines.some((l) => l.includes('more (')));
  });

  it('a status above the threshold (no server list): counts, the failed server, and where to page the rest; --watch lines follow the counts', () => {
    const st = bigRollout(2000, FULL_SERVER_LIST_MAX);
    assert.equal(st.servers, undefined);
    const lines = statusBlock(st, Date.now(), false);
    const text = lines.join('\n');
    assert.match(text, /149\/2000 patched or skipped {2}\(patched 149 · failed 1 · patching 2 · pending 1848\)/);
    assert.match(text, /^km-be-41\s+backend\s+failed/m);
    assert.match(text, /… and 1999 more: 'km-hotfix status rollout-x --servers' pages every server/);
    assert.ok(lines.length < 20, `${lines.length} lines`);
    const later = { ...st, serverCounts: { ...st.serverCounts, patched: 155, pending: 1842 } };
    assert.deepEqual(
      changeLines(st, later, Date.parse('2026-01-01T10:00:00Z')).map((l) => l.replace(/^\S+\s+/, '')),
      ['progress 155/2000 patched or skipped (patched 155 · failed 1 · patching 2 · pending 1842)'],
    );
    const done = {
      ...st,
      phase: 'rollback_failed' as const,
      error: 'stopped',
      needsAttention: ['km-be-1', 'km-be-2'],
      needsAttentionMore: 70,
    };
    assert.match(
      outcomeLine(done),
      /needs a person: km-be-1, km-be-2 and 70 more \('km-hotfix status rollout-x --servers --state rollback_failed'\)/,
    );
  });
});
