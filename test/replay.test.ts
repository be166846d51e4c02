// Replay (issue 9): the committed histories of representative runs
// (test/histories/, recorded by `npm run histories`) must replay against the
// current workflow code. A change that would break running workflows fails
// here; the fix is patched(), never re-recording (README).
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Worker } from '@temporalio/worker';
import { DeterminismViolationError } from '@temporalio/workflow';
import { workflowBundle, PROJECT_WORKFLOWS } from './helpers/worker';
import { historyFromJson } from './helpers/history-json';
import { HISTORIES_DIR, RecordedHistory } from './record-histories';

const SCENARIOS = [
  'approve',
  'reject',
  'approval-timeout',
  'failure-rollback',
  'removal',
  'crash',
  'handoff',
  'temporal-cancel',
  'retried-server',
];
const ALTERED = path.resolve(__dirname, 'fixtures', 'altered-workflows.js');

async function load(): Promise<RecordedHistory[]> {
  // Below it too: histories kept from before a patched() change (README).
  const files = (await fs.readdir(HISTORIES_DIR, { recursive: true })).filter((f) => f.endsWith('.json')).sort();
  return Promise.all(
    files.map(async (f) => JSON.parse(await fs.readFile(path.join(HISTORIES_DIR, f), 'utf8')) as RecordedHistory),
  );
}

async function replay(workflowsPath: string, recorded: RecordedHistory[]): Promise<Map<string, Error | undefined>> {
  const results = new Map<string, Error | undefined>();
  const histories = recorded.map((r) => ({ workflowId: r.workflowId, history: historyFromJson(r.history) }));
  for await (const r of Worker.runReplayHistories({ workflowBundle: await workflowBundle(workflowsPath) }, histories))
    results.set(r.workflowId, r.error);
  return results;
}

describe('replay: recorded histories against the current workflow code', function () {
  this.timeout(120_000);
  let recorded: RecordedHistory[];
  before(async () => {
    recorded = await load();
  });

  it('has every representative run, children included', () => {
    for (const s of SCENARIOS)
      assert.ok(
        recorded.some((r) => r.scenario === s),
        `a recorded ${s} run`,
      );
    for (const type of ['hotfixRollout', 'hotfixRemoval', 'serverBatches'])
      assert.ok(
        recorded.some((r) => r.workflowType === type),
        `a ${type} history`,
      );
    const crash = recorded.find((r) => r.scenario === 'crash' && r.workflowType === 'hotfixRollout');
    // Workflow tasks done by the killed worker, then by the new one.
    const events =
      (crash?.history as { events?: { workflowTaskStartedEventAttributes?: { identity?: string } }[] } | undefined)
        ?.events ?? [];
    const workers = new Set(events.map((e) => e.workflowTaskStartedEventAttributes?.identity).filter(Boolean));
    assert.ok(workers.size >= 2, `the crash history shows two workers (${[...workers].join(', ')})`);
  });

  it('every history replays without a determinism error', async () => {
    const results = await replay(PROJECT_WORKFLOWS, recorded);
    assert.equal(results.size, recorded.length);
    const broken = [...results].filter(([, e]) => e).map(([id, e]) => `${id}: ${e?.message.split('\n')[0]}`);
    assert.deepEqual(
      broken,
      [],
      `replay failed: a workflow change breaks running workflows; guard it with patched() (README)`,
    );
  });

  it('fails when the workflow code changes without patched() (a rollout that sleeps first)', async () => {
    const rollouts = recorded.filter((r) => r.workflowType === 'hotfixRollout');
    const results = await replay(ALTERED, rollouts);
    for (const r of rollouts) {
      const err = results.get(r.workflowId);
      assert.ok(err, `${r.scenario}: replaying ${r.workflowId} against altered code must fail`);
      assert.ok(
        err instanceof DeterminismViolationError || /nondetermin/i.test(err.message),
        `${r.workflowId}: ${err.message}`,
      );
    }
  });
});
