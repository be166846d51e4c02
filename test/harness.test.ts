import assert from 'node:assert/strict';
import * as path from 'node:path';
import { testWorker } from './helpers/worker';
import { freshDatabase, sqlFor } from './helpers/stack';
import { migrate, MIGRATIONS } from '../store/migrations';

const FIXTURES = path.resolve(__dirname, 'fixtures', 'workflows.js');

describe('test harness (real Temporal dev server, embedded PostgreSQL)', () => {
  it('runs a workflow whose activity round-trips through a worker', async () => {
    const calls: string[] = [];
    const w = await testWorker({
      workflowsPath: FIXTURES,
      activities: {
        greet: async (who: string) => {
          calls.push(who);
          return `hello ${who}`;
        },
      },
    });
    try {
      const result: unknown = await w.run(() =>
        w.client.workflow.execute('greetNow', {
          taskQueue: w.taskQueue,
          workflowId: `greet-${w.taskQueue}`,
          args: ['km'],
        }),
      );
      assert.equal(result, 'hello km');
      assert.deepEqual(calls, ['km']);
    } finally {
      await w.close();
    }
  });

  it('migrates a fresh orchestrator database once, and again is a no-op', async () => {
    const sql = sqlFor(await freshDatabase('migrate'));
    assert.deepEqual(
      await migrate(sql),
      MIGRATIONS.map((m) => m.version),
    );
    assert.deepEqual(await migrate(sql), []);
    const tables = (
      await sql<
        { table_name: string }[]
      >`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1`
    ).map((r) => r.table_name);
    for (const t of ['fleet_server', 'hotfix_file', 'rollout', 'rollout_event', 'km_hotfix_migrations'])
      assert.ok(tables.includes(t), `${t} in ${tables}`);
  });
});
