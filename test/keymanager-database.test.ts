// keymanager/database.ts against the harness's embedded PostgreSQL, with the
// SPEC §2 tables created by the test (Key Manager creates them in real life).
import { strict as assert } from 'node:assert';
import type { Sql } from 'postgres';
import postgres from 'postgres';
import { KeyManagerDatabase } from '../keymanager/database';
import { KmError } from '../keymanager/errors';
import { freePort } from '../stack/process';
import { freshDatabase, sqlFor } from './helpers/stack';
import { createKmSchema } from './helpers/km-schema';

describe('keymanager/database (KM database, SPEC §2)', function () {
  this.timeout(30_000);
  let sql: Sql;
  let other: Sql;
  let db: KeyManagerDatabase;
  let urlOf = '';

  before(async () => {
    const url = await freshDatabase('kmdb');
    urlOf = url;
    sql = sqlFor(url);
    other = sqlFor(url); // a second client, for concurrent transactions
    await createKmSchema(sql);
    db = new KeyManagerDatabase(sql);
  });

  beforeEach(async () => {
    await sql`TRUNCATE km_hotfix_applied, km_hotfix, km_server`;
    await sql`INSERT INTO km_server (name, role, max_processes) VALUES
      ('km-be-1', 'backend', 4), ('km-be-2', 'backend', 6), ('km-fe-1', 'frontend', 2), ('km-both-1', 'both', 3)`;
    await sql`INSERT INTO km_hotfix (name, file_name, version, sha256, uploaded_at) VALUES
      ('hotfix_backend_fix_queue_stall', 'sshmgr-3.0.0-hotfix_backend_fix_queue_stall_UKM-7.gz', '3.0.0', ${'a'.repeat(64)}, '2025-01-02T03:04:05Z'),
      ('hotfix_common_fix_tags_and_stats', 'sshmgr-3.0.0-hotfix_common_fix_tags_and_stats_UKM-1291.gz', '3.0.0', ${'b'.repeat(64)}, '2025-02-01T00:00:00Z')`;
    await sql`INSERT INTO km_hotfix_applied (server_name, hotfix_name) VALUES
      ('km-be-2', 'hotfix_backend_fix_queue_stall'), ('km-be-1', 'hotfix_backend_fix_queue_stall')`;
  });

  it('lists servers with roles and Maximum Processes', async () => {
    assert.deepEqual(await db.servers(), [
      { name: 'km-be-1', role: 'backend', maxProcesses: 4 },
      { name: 'km-be-2', role: 'backend', maxProcesses: 6 },
      { name: 'km-both-1', role: 'both', maxProcesses: 3 },
      { name: 'km-fe-1', role: 'frontend', maxProcesses: 2 },
    ]);
  });

  it('reads one hotfix, all hotfixes with where each is applied, and applied-ness', async () => {
    const h = await db.hotfix('hotfix_backend_fix_queue_stall');
    assert.deepEqual(h, {
      name: 'hotfix_backend_fix_queue_stall',
      fileName: 'sshmgr-3.0.0-hotfix_backend_fix_queue_stall_UKM-7.gz',
      version: '3.0.0',
      sha256: 'a'.repeat(64),
      uploadedAt: new Date('2025-01-02T03:04:05Z'),
    });
    assert.ok(h?.uploadedAt instanceof Date);
    assert.equal(await db.hotfix('hotfix_common_nope'), undefined);

    const all = await db.hotfixes();
    assert.deepEqual(
      all.map((x) => [x.name, x.appliedOn]),
      [
        ['hotfix_backend_fix_queue_stall', ['km-be-1', 'km-be-2']],
        ['hotfix_common_fix_tags_and_stats', []],
      ],
    );
    assert.equal(all[1].sha256, 'b'.repeat(64));

    assert.deepEqual(await db.appliedOn('hotfix_backend_fix_queue_stall'), ['km-be-1', 'km-be-2']);
    assert.deepEqual(await db.appliedOn('hotfix_common_fix_tags_and_stats'), []);
    assert.equal(await db.isApplied('km-be-1', 'hotfix_backend_fix_queue_stall'), true);
    assert.equal(await db.isApplied('km-fe-1', 'hotfix_backend_fix_queue_stall'), false);
    assert.equal(await db.isApplied('km-be-1', 'hotfix_common_fix_tags_and_stats'), false);
  });

  it('answers many server steps asking at once with one query per hotfix, each answer right', async () => {
    const queries: string[] = [];
    const counted = postgres(urlOf, {
      max: 4,
      onnotice: () => undefined,
      debug: (_c, query) => {
        queries.push(query);
      },
    });
    try {
      const counting = new KeyManagerDatabase(counted);
      const asks: [string, string][] = [
        ['km-be-1', 'hotfix_backend_fix_queue_stall'],
        ['km-fe-1', 'hotfix_backend_fix_queue_stall'],
        ['km-be-2', 'hotfix_backend_fix_queue_stall'],
        ['km-be-1', 'hotfix_common_fix_tags_and_stats'],
        ['km-be-1', 'hotfix_backend_fix_queue_stall'],
        ['km-nope', 'hotfix_backend_fix_queue_stall'],
      ];
      const answers = await Promise.all(asks.map(([server, hotfix]) => counting.isApplied(server, hotfix)));
      assert.deepEqual(answers, [true, false, true, false, true, false]);
      assert.equal(
        queries.filter((q) => /km_hotfix_applied/.test(q)).length,
        2,
        'one query per hotfix, not one per ask',
      );
      // A lone ask still gets its answer on its own.
      assert.equal(await counting.isApplied('km-be-2', 'hotfix_backend_fix_queue_stall'), true);
    } finally {
      await counted.end();
    }
  });

  it('reads and writes Maximum Processes', async () => {
    assert.deepEqual([...(await db.maxProcesses(['km-be-2', 'km-be-1', 'km-unknown']))].sort(), [
      ['km-be-1', 4],
      ['km-be-2', 6],
    ]);
    assert.equal((await db.maxProcesses([])).size, 0);
    await db.setMaxProcesses('km-be-2', 0);
    assert.deepEqual(
      [...(await sql`SELECT name, max_processes FROM km_server WHERE name LIKE 'km-be-%' ORDER BY name`)],
      [
        { name: 'km-be-1', max_processes: 4 },
        { name: 'km-be-2', max_processes: 0 },
      ],
    );
    await db.setMaxProcesses('km-be-2', 6);
    assert.equal((await db.maxProcesses(['km-be-2'])).get('km-be-2'), 6);

    await assert.rejects(
      db.setMaxProcesses('km-be-1', -1),
      (e: unknown) => e instanceof KmError && e.kind === 'invalid-argument',
    );
    await assert.rejects(
      db.setMaxProcesses('km-be-1', 1.5),
      (e: unknown) => e instanceof KmError && e.kind === 'invalid-argument',
    );
    await assert.rejects(
      db.setMaxProcesses('km-nope', 1),
      (e: unknown) => e instanceof KmError && e.kind === 'invalid-argument' && /no such server/.test(e.message),
    );
    assert.equal((await db.maxProcesses(['km-be-1'])).get('km-be-1'), 4, 'refused writes changed nothing');
  });

  it('deletes a hotfix only when it is applied nowhere', async () => {
    assert.equal(await db.deleteHotfixIfUnapplied('hotfix_backend_fix_queue_stall'), 'still-applied');
    assert.ok(await db.hotfix('hotfix_backend_fix_queue_stall'));
    assert.equal(await db.deleteHotfixIfUnapplied('hotfix_common_fix_tags_and_stats'), 'deleted');
    assert.equal(await db.hotfix('hotfix_common_fix_tags_and_stats'), undefined);
    assert.equal(await db.deleteHotfixIfUnapplied('hotfix_common_fix_tags_and_stats'), 'absent');
    await sql`DELETE FROM km_hotfix_applied WHERE hotfix_name = 'hotfix_backend_fix_queue_stall'`;
    assert.equal(await db.deleteHotfixIfUnapplied('hotfix_backend_fix_queue_stall'), 'deleted');
  });

  it('never deletes a hotfix that a concurrent, not yet committed apply is adding', async () => {
    // Another client (Key Manager applying it somewhere) inserts an applied row and holds its transaction open.
    let commit!: () => void;
    const committed = new Promise<void>((r) => {
      commit = r;
    });
    let inserted!: () => void;
    const insertedP = new Promise<void>((r) => {
      inserted = r;
    });
    const apply = other.begin(async (tx) => {
      await tx`INSERT INTO km_hotfix_applied (server_name, hotfix_name) VALUES ('km-fe-1', 'hotfix_common_fix_tags_and_stats')`;
      inserted();
      await committed;
    });
    await insertedP;
    let settled = false;
    const deleting = db.deleteHotfixIfUnapplied('hotfix_common_fix_tags_and_stats').finally(() => {
      settled = true;
    });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(settled, false, 'the delete waits for the row lock instead of deleting under the apply');
    commit();
    await apply;
    assert.equal(await deleting, 'still-applied');
    assert.ok(await db.hotfix('hotfix_common_fix_tags_and_stats'));
  });

  it('reports an unreachable Key Manager database as a retryable connection error', async () => {
    const port = await freePort();
    const dead = postgres(`postgres://nobody@127.0.0.1:${port}/none`, {
      max: 1,
      connect_timeout: 2,
      onnotice: () => undefined,
    });
    try {
      const err = await new KeyManagerDatabase(dead).servers().then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(err instanceof KmError, String(err));
      assert.equal(err.kind, 'connection');
      assert.equal(err.retryable, true);
      assert.match(err.message, /KM_DATABASE_URL/);
    } finally {
      await dead.end({ timeout: 1 });
    }
  });
});
