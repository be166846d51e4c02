// What a person sees: the status block stays readable for a large fleet.
import assert from 'node:assert/strict';
import { changeLines, outcomeLine, statusBlock } from '../client/render/status';
import { watchFrame } from '../client/render/watch';
import { listText } from '../client/render/list';
import { outputWidth, wrap } from '../client/render/fit';
import type { RolloutSummary } from '../store/ledger-reads';
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

// Issue 25: everything a person reads fits the terminal; the full id is on a line of its own.
describe('fits the terminal: status, --watch and list at 80 and 120 columns', () => {
  const ID = 'rollout-hotfix_backend_fix_queue_stall_on_login-20261208T012100-5140af';
  const KEY = `SHA256:${'k'.repeat(43)}`;
  const now = Date.parse('2026-12-08T01:25:00Z');
  const at = (s: number) => new Date(now - s * 1000).toISOString();

  function gateStatus(): RolloutStatus {
    const servers: ServerStatus[] = [
      { name: 'km-be-1', role: 'backend', state: 'patched', startedAt: at(200), endedAt: at(190) },
      { name: 'km-be-2', role: 'backend', state: 'pending' },
      { name: 'km-be-3', role: 'backend', state: 'pending' },
      { name: 'km-fe-1', role: 'frontend', state: 'pending' },
      {
        name: 'km-fe-2',
        role: 'frontend',
        state: 'failed',
        startedAt: at(100),
        endedAt: at(90),
        error: `ssh-mgr-controller --apply-hotfix exited 1: ${'the vendor controller could not reach its database '.repeat(4)}`,
      },
    ];
    return boundedStatus(
      {
        id: ID,
        kind: 'rollout',
        hotfix: 'hotfix_backend_fix_queue_stall_on_login',
        phase: 'verifying',
        requestedBy: 'alice',
        requestedKey: KEY,
        sha256: 'a'.repeat(64),
        canary: 'km-be-1',
        drained: [
          { server: 'km-be-2', maxProcesses: 5 },
          { server: 'km-be-3', maxProcesses: 6 },
        ],
        approvals: [],
        decisions: [],
        servers,
        serverCount: 0,
        serverCounts: {},
        attention: [],
        attentionMore: 0,
        error: null,
        paused: true,
        gate: {
          message: 'verify canary km-be-1',
          canary: 'km-be-1',
          url: 'https://km-be-1.keymanager.example.internal:8443/admin/login',
          drained: { count: 2, sha256: 'b'.repeat(64) },
          approvers: [],
          waitingSince: at(180),
          deadline: new Date(now + 86_400_000).toISOString(),
        },
        needsAttention: [],
        needsAttentionMore: 0,
        startedAt: at(300),
        updatedAt: at(1),
        endedAt: null,
        activeBatchWorkflows: [],
      },
      Infinity,
    );
  }

  const fits = (lines: string[], width: number) => {
    for (const l of lines) assert.ok(l.length <= width, `${l.length} > ${width}: ${l}\n${lines.join('\n')}`);
  };
  /** What wrapping split, joined again: text that was cut would be missing. */
  const joined = (lines: string[]) => lines.map((l) => l.trim()).join(' ');

  for (const width of [80, 120]) {
    it(`status at ${width} columns: no line wider, the id whole on its own line, nothing cut but the table's note`, () => {
      const lines = statusBlock(gateStatus(), now, true, Infinity, width);
      fits(lines, width);
      assert.equal(lines[0], ID);
      const text = joined(lines);
      // The two cut lines of the issue, whole now.
      assert.match(text, /drained\s+km-be-2 \(Maximum Processes 5\), km-be-3 \(Maximum Processes 6\) — set to 0 now/);
      assert.match(text, /for any approver but alice to verify canary km-be-1/);
      assert.match(text, /check https:\/\/km-be-1\.keymanager\.example\.internal:8443\/admin\/login directly/);
      assert.ok(text.includes(`started by alice (${KEY})`), text);
      // The commands with the id: whole, pasted as they are (a line continuation when the id needs its own line).
      const approve = lines.findIndex((l) => l.includes('km-hotfix approve'));
      const command = (i: number) =>
        lines[i].trim().endsWith('\\') ? `${lines[i].trim().slice(0, -1)}${lines[i + 1].trim()}` : lines[i].trim();
      assert.equal(command(approve).replace(/\s+/g, ' '), `km-hotfix approve ${ID}`);
      const reject = lines.findIndex((l) => l.includes('km-hotfix reject'));
      assert.ok(
        [`km-hotfix reject ${ID} --reason "..."`, `km-hotfix reject --reason "..." ${ID}`].includes(
          command(reject).replace(/\s+/g, ' '),
        ),
        lines.join('\n'),
      );
      const resume = lines.findIndex((l) => l.includes('km-hotfix resume'));
      assert.ok(resume > 0 && lines.slice(resume, resume + 2).some((l) => l.includes(ID)), lines.join('\n'));
      if (width === 80)
        assert.ok(lines.filter((l) => l.trim() === ID).length >= 3, 'approve, reject, resume: the id alone');
      // The failed server's row is there; its long error gives way.
      assert.ok(lines.some((l) => /^km-fe-2\s+frontend\s+failed\s+10\.0s\s+ssh-mgr-controller/.test(l)));
    });

    it(`status --watch at ${width} columns and 24 rows: the block fits the width and the screen`, () => {
      const lines = watchFrame(gateStatus(), now, width, 24);
      fits(lines, width);
      assert.ok(lines.length <= 23, `${lines.length} lines`);
      assert.equal(lines[0], ID);
      assert.match(joined(lines), /— set to 0 now/);
      // A large fleet: the table gives way, the rest stays.
      const big = watchFrame(bigRollout(2000), now, width, 24);
      fits(big, width);
      assert.ok(big.length <= 23, `${big.length} lines`);
      assert.ok(
        big.some((l) => l.startsWith('km-be-41 ')),
        'the failed server first',
      );
      assert.ok(
        big.some((l) => l.startsWith('… and ')),
        'the rest counted',
      );
    });

    it(`list at ${width} columns: each workflow's id whole on its own line, nothing wider`, () => {
      const rows: RolloutSummary[] = [
        {
          id: ID,
          kind: 'rollout',
          hotfix: 'hotfix_backend_fix_queue_stall_on_login',
          requestedBy: 'alice',
          phase: 'rolled_back',
          outcome: 'rolled_back',
          error:
            'km-fe-2: ssh-mgr-controller --apply-hotfix exited 1: the vendor controller could not reach its database\nsecond line',
          startedAt: new Date(now - 300_000),
          endedAt: new Date(now - 100_000),
          servers: 5,
        },
        {
          id: 'removal-hotfix_common_fix_tags-20261208T010000-0a1b2c',
          kind: 'removal',
          hotfix: 'hotfix_common_fix_tags',
          requestedBy: 'bob',
          phase: 'fanout',
          outcome: null,
          error: null,
          startedAt: new Date(now - 60_000),
          endedAt: null,
          servers: 2000,
        },
      ];
      const lines = listText(rows, width).split('\n');
      fits(lines, width);
      for (const r of rows) assert.ok(lines.includes(r.id), `${r.id} alone:\n${lines.join('\n')}`);
      const text = joined(lines);
      assert.match(text, /rollout of hotfix_backend_fix_queue_stall_on_login by alice: rolled_back, 5 servers/);
      assert.match(text, /removal of hotfix_common_fix_tags by bob: running, fanout, 2000 servers/);
      assert.ok(!text.includes('second line'));
      // A pipe: the table as before, one line each.
      const piped = listText(rows, Infinity).split('\n');
      assert.equal(piped.length, 3);
      assert.match(
        piped[1],
        new RegExp(`^${ID}\\s+rollout\\s+hotfix_backend\\S+\\s+alice\\s+rolled_back\\s+rolled_back\\s+5\\s`),
      );
    });
  }

  it('the width: COLUMNS wins, a terminal says its own (80 when it does not), a pipe gets whole lines', () => {
    assert.equal(outputWidth({ isTTY: true, columns: 132 }, {}), 132);
    assert.equal(outputWidth({ isTTY: true }, {}), 80);
    assert.equal(outputWidth({ isTTY: false }, {}), Infinity);
    assert.equal(outputWidth({ isTTY: false }, { COLUMNS: '100' }), 100);
    assert.equal(outputWidth({ isTTY: true, columns: 200 }, { COLUMNS: '80' }), 80);
    assert.equal(outputWidth({ isTTY: true, columns: 90 }, { COLUMNS: 'wide' }), 90);
    // A word longer than the width is never cut: it gets a line of its own.
    assert.deepEqual(wrap(`see ${ID} now`, 40, 2), ['see', ID, '  now']);
  });
});
