// What leaves a workflow stays bounded whatever the fleet (issue 11): a
// status of 20,000 servers is counts and the servers needing attention, not
// 20,000 entries; a small fleet's status still lists every server.
import assert from 'node:assert/strict';
import { ATTENTION_LIST_MAX, FULL_SERVER_LIST_MAX, ServerState, STATUS_ERROR_MAX } from '../domain/rollout';
import { FullRolloutStatus, ServerStatus } from '../domain/messages/rollout';
import { boundedStatus } from '../domain/status';
import { compactPlan, expandPlan, packServers, planRollout, unpackServers } from '../domain/plan';
import type { FleetServer } from '../domain/fleet';
import { LedgerView, withLedgerView } from '../status/live';

/** Temporal warns about a payload at 512 KiB and fails the workflow task at 2 MiB. */
const PAYLOAD_WARNING = 512 * 1024;

const name = (i: number) => `km3-be-${String(i).padStart(5, '0')}`;

function full(servers: ServerStatus[], needsAttention: string[] = []): FullRolloutStatus {
  const now = new Date().toISOString();
  return {
    id: 'rollout-hotfix_backend_x-20260101T100000-abc',
    kind: 'rollout',
    hotfix: 'hotfix_backend_x',
    phase: 'rollback_failed',
    requestedBy: 'alice',
    requestedKey: null,
    sha256: null,
    canary: name(1),
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
    needsAttention,
    needsAttentionMore: 0,
    startedAt: now,
    updatedAt: now,
    endedAt: now,
    activeBatchWorkflows: [],
  };
}

const LONG_ERROR = `apply failed: ${'Key Manager said: something long. '.repeat(60)}`;

describe('bounded status (domain/rollout.ts)', () => {
  it('20,000 servers, a thousand failed with long errors: counts, 50 named, the rest counted, far below the payload warning', () => {
    const servers: ServerStatus[] = Array.from({ length: 20_000 }, (_, i) => ({
      name: name(i + 1),
      role: 'backend',
      state: i < 1000 ? 'rollback_failed' : i < 15_000 ? 'rolled_back' : 'untouched',
      startedAt: '2026-01-01T10:00:00.000Z',
      endedAt: '2026-01-01T10:00:02.000Z',
      ...(i < 1000 ? { error: LONG_ERROR } : {}),
    }));
    const st = boundedStatus(
      full(
        servers,
        servers.slice(0, 1000).map((s) => s.name),
      ),
    );
    assert.equal(st.servers, undefined, 'no per-server list above the threshold');
    assert.equal(st.serverCount, 20_000);
    assert.deepEqual(st.serverCounts, { rollback_failed: 1000, rolled_back: 14_000, untouched: 5000 });
    assert.equal(st.attention.length, ATTENTION_LIST_MAX);
    assert.equal(st.attention[0].name, name(1));
    assert.equal(st.attentionMore, 1000 - ATTENTION_LIST_MAX);
    assert.ok(st.attention[0].error!.length <= STATUS_ERROR_MAX + 1, 'errors are cut');
    assert.equal(st.needsAttention.length, ATTENTION_LIST_MAX);
    assert.equal(st.needsAttentionMore, 1000 - ATTENTION_LIST_MAX);
    const size = Buffer.byteLength(JSON.stringify(st));
    assert.ok(size < 64 * 1024, `${size} bytes`);
  });

  it(`at ${FULL_SERVER_LIST_MAX} servers every one is listed, and even all failed with long errors it stays below the payload warning`, () => {
    const servers: ServerStatus[] = Array.from({ length: FULL_SERVER_LIST_MAX }, (_, i) => ({
      name: name(i + 1),
      role: 'both',
      state: 'failed',
      startedAt: '2026-01-01T10:00:00.000Z',
      endedAt: '2026-01-01T10:00:02.000Z',
      error: LONG_ERROR,
    }));
    const st = boundedStatus(full(servers));
    assert.equal(st.servers?.length, FULL_SERVER_LIST_MAX);
    assert.equal(st.serverCount, FULL_SERVER_LIST_MAX);
    assert.deepEqual(st.serverCounts, { failed: FULL_SERVER_LIST_MAX });
    const size = Buffer.byteLength(JSON.stringify(st));
    assert.ok(size < PAYLOAD_WARNING, `${size} bytes`);
    const one = boundedStatus(
      full([...servers, { name: name(FULL_SERVER_LIST_MAX + 1), role: 'both', state: 'pending' }]),
    );
    assert.equal(one.servers, undefined, 'one more server and the list is left out');
    assert.equal(one.serverCounts.pending, 1);
  });

  it("leaves the workflow's own list untouched (the rollback needs it)", () => {
    const servers: ServerStatus[] = [{ name: 'a', role: 'both', state: 'failed', error: LONG_ERROR }];
    const f = full(servers);
    const st = boundedStatus(f);
    assert.equal(f.servers[0].error, LONG_ERROR);
    assert.notEqual(st.servers?.[0].error, LONG_ERROR);
  });

  it('the preflight answer for 20,000 targets is compact (names and one letter per role) and expands back to the same plan', () => {
    const fleet: FleetServer[] = Array.from({ length: 20_000 }, (_, i) => ({
      name: name(i + 1),
      role: i % 3 === 0 ? 'frontend' : i % 3 === 1 ? 'backend' : 'both',
      host: `10.0.${i >> 8}.${i & 255}`,
      port: 22,
      user: 'root',
      sudo: false,
      hostKey: 'ssh-ed25519 AAAA',
      ...(i === 0 ? { url: 'https://km3-be-00001:8443/' } : {}),
    }));
    const hasHotfix = new Set([name(5), name(6)]);
    const plan = planRollout({ component: 'frontend', fleet, hasHotfix, batch: { kind: 'count', count: 200 } });
    const c = compactPlan(plan, fleet);
    const size = Buffer.byteLength(JSON.stringify(c));
    assert.ok(size < PAYLOAD_WARNING, `${size} bytes`);
    const x = expandPlan(c);
    assert.deepEqual(
      x.targets.map((s) => s.name),
      plan.targets,
    );
    assert.deepEqual(
      x.targets.slice(0, 3).map((s) => s.role),
      ['frontend', 'backend', 'both'],
    );
    assert.deepEqual(x.skipped, plan.skipped);
    assert.deepEqual(x.rest, plan.fanout);
    assert.equal(c.window, 200);
    assert.equal(c.canary?.server, plan.canary?.server);
    assert.equal(c.canary?.url, 'https://km3-be-00001:8443/');
    assert.deepEqual(unpackServers(packServers([{ name: 'a', role: 'backend' }])), [{ name: 'a', role: 'backend' }]);
  });
});

describe('live counts and failed servers from the ledger (status/live.ts withLedgerView)', () => {
  const servers: ServerStatus[] = Array.from({ length: FULL_SERVER_LIST_MAX + 10 }, (_, i) => ({
    name: name(i + 1),
    role: 'backend',
    state: i === 0 ? 'patched' : 'pending',
  }));
  const running = () => ({ ...boundedStatus(full(servers)), phase: 'fanout' as const, endedAt: null });
  const n = servers.length;
  const failed = (i: number) => ({ name: name(i), role: null, state: 'failed' as const, error: LONG_ERROR });
  const view = (
    counts: Partial<Record<ServerState, number>>,
    failing = { total: 0, servers: [] as ReturnType<typeof failed>[] },
  ): LedgerView => ({
    counts: async () => counts,
    inStates: async (_id, states, limit) => {
      assert.deepEqual(states, ['failed', 'rollback_failed']);
      assert.equal(limit, ATTENTION_LIST_MAX);
      return failing;
    },
    of: async () => [],
  });

  it("a running large fleet shows the ledger's counts and its failed servers (errors cut, the rest counted) when the ledger has every server", async () => {
    const st = await withLedgerView(
      running(),
      view(
        { patched: 40, patching: 50, failed: 60, pending: n - 150 },
        { total: 60, servers: Array.from({ length: ATTENTION_LIST_MAX }, (_, i) => failed(i + 2)) },
      ),
    );
    assert.deepEqual(st.serverCounts, { patched: 40, patching: 50, failed: 60, pending: n - 150 });
    assert.equal(st.attention.length, ATTENTION_LIST_MAX);
    assert.deepEqual(st.attention[0], {
      name: name(2),
      role: 'both',
      state: 'failed',
      error: `${LONG_ERROR.slice(0, STATUS_ERROR_MAX)}…`,
    });
    assert.equal(st.attentionMore, 60 - ATTENTION_LIST_MAX);
  });

  it("keeps the workflow's own answer when the ledger is incomplete, unreachable, or not asked", async () => {
    const own = { patched: 1, pending: n - 1 };
    assert.deepEqual(
      (await withLedgerView(running(), view({ patched: 1 }))).serverCounts,
      own,
      'server list not yet written',
    );
    assert.deepEqual(
      (
        await withLedgerView(running(), {
          counts: async () => {
            throw new Error('connection refused');
          },
          inStates: async () => ({ total: 0, servers: [] }),
          of: async () => [],
        })
      ).serverCounts,
      own,
    );
    assert.deepEqual((await withLedgerView(running())).serverCounts, own);
  });

  it('never asks for a small fleet (its status lists every server) or a finished workflow', async () => {
    let asked = 0;
    const counting: LedgerView = {
      counts: async () => {
        asked++;
        return { patched: n };
      },
      inStates: async () => {
        asked++;
        return { total: 0, servers: [] };
      },
      of: async () => {
        asked++;
        return [];
      },
    };
    const small = { ...boundedStatus(full(servers.slice(0, 3))), phase: 'fanout' as const };
    assert.deepEqual((await withLedgerView(small, counting)).serverCounts, { patched: 1, pending: 2 });
    assert.deepEqual(
      (await withLedgerView(boundedStatus(full(servers)), counting)).serverCounts,
      { patched: 1, pending: n - 1 },
      'rollback_failed is final',
    );
    assert.equal(asked, 0);
  });
});
