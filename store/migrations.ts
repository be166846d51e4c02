// Versioned migrations of the orchestrator's own database. Each runs once, in
// a transaction, and is recorded in km_hotfix_migrations; an advisory lock
// keeps two processes (CLI and worker) from migrating at the same time.
import type { Sql } from 'postgres';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'inventory, hotfix files, rollouts, rollout events, claims',
    sql: `
      CREATE TABLE fleet_server (
        position    integer NOT NULL,
        name        text PRIMARY KEY,
        role        text NOT NULL CHECK (role IN ('frontend','backend','both')),
        host        text NOT NULL,
        port        integer NOT NULL DEFAULT 22 CHECK (port BETWEEN 1 AND 65535),
        ssh_user    text NOT NULL DEFAULT 'root',
        sudo        boolean NOT NULL DEFAULT false,
        host_key    text NOT NULL,
        url         text,
        imported_at timestamptz NOT NULL DEFAULT now());

      -- Content-addressed: the same bytes are stored once, whatever their name.
      CREATE TABLE hotfix_file (
        sha256      text PRIMARY KEY,
        file_name   text NOT NULL,
        name        text NOT NULL,
        version     text NOT NULL,
        component   text NOT NULL,
        issue_id    text NOT NULL,
        size        integer NOT NULL,
        content     bytea NOT NULL,
        stored_at   timestamptz NOT NULL DEFAULT now(),
        stored_by   text NOT NULL);
      CREATE INDEX hotfix_file_name ON hotfix_file (name);

      CREATE TABLE rollout (
        id           text PRIMARY KEY,
        kind         text NOT NULL CHECK (kind IN ('upload','rollout','removal')),
        hotfix       text NOT NULL,
        requested_by text NOT NULL,
        servers      text[] NOT NULL DEFAULT '{}',
        options      jsonb NOT NULL DEFAULT '{}',
        phase        text NOT NULL,
        outcome      text,
        error        text,
        started_at   timestamptz NOT NULL DEFAULT now(),
        updated_at   timestamptz NOT NULL DEFAULT now(),
        ended_at     timestamptz);
      CREATE INDEX rollout_started ON rollout (started_at DESC);

      -- Append-only. event_key makes a retried activity's write a no-op.
      CREATE TABLE rollout_event (
        seq         bigserial PRIMARY KEY,
        rollout_id  text NOT NULL REFERENCES rollout(id),
        event_key   text NOT NULL,
        at          timestamptz NOT NULL DEFAULT now(),
        kind        text NOT NULL,
        server      text,
        actor       text,
        detail      jsonb NOT NULL DEFAULT '{}',
        UNIQUE (rollout_id, event_key));
      -- One active rollout or removal per server and per hotfix Name.
      CREATE TABLE server_claim (
        server      text PRIMARY KEY,
        rollout_id  text NOT NULL REFERENCES rollout(id),
        claimed_at  timestamptz NOT NULL DEFAULT now());
      CREATE TABLE hotfix_claim (
        hotfix      text PRIMARY KEY,
        rollout_id  text NOT NULL REFERENCES rollout(id),
        claimed_at  timestamptz NOT NULL DEFAULT now());

      CREATE FUNCTION rollout_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'rollout_event is append-only'; END $$;
      CREATE TRIGGER rollout_event_append_only BEFORE UPDATE OR DELETE ON rollout_event
        FOR EACH ROW EXECUTE FUNCTION rollout_event_append_only();
    `,
  },
  {
    version: 2,
    name: 'hotfix files keyed by (sha256, file name)',
    // The same bytes under another name are another file: an upload under a wrong
    // name must not stand in for the right one (issue 13, item 1).
    sql: `
      ALTER TABLE hotfix_file DROP CONSTRAINT hotfix_file_pkey;
      ALTER TABLE hotfix_file ADD PRIMARY KEY (sha256, file_name);
    `,
  },
  {
    version: 3,
    name: 'the ledger refuses TRUNCATE too',
    // Row triggers do not fire on TRUNCATE, which would empty the ledger at once.
    sql: `
      CREATE TRIGGER rollout_event_no_truncate BEFORE TRUNCATE ON rollout_event
        FOR EACH STATEMENT EXECUTE FUNCTION rollout_event_append_only();
    `,
  },
  {
    version: 4,
    name: 'per-server states of each rollout, append-only',
    // A status leaves out the per-server list on a large fleet (domain/rollout.ts
    // FULL_SERVER_LIST_MAX): the workflows write each state they learn here, and
    // 'km-hotfix status ID --servers' pages the latest state per server.
    // 'at' is when the workflow learned the state: the latest wins, whatever
    // order the writes (from the parent and its batch children) land in.
    sql: `
      CREATE TABLE rollout_server (
        seq         bigserial PRIMARY KEY,
        rollout_id  text NOT NULL REFERENCES rollout(id),
        server      text NOT NULL,
        state       text NOT NULL,
        at          timestamptz NOT NULL,
        position    integer,
        role        text,
        started_at  timestamptz,
        ended_at    timestamptz,
        error       text);
      CREATE INDEX rollout_server_latest ON rollout_server (rollout_id, server, at DESC, seq DESC);
      CREATE TRIGGER rollout_server_append_only BEFORE UPDATE OR DELETE ON rollout_server
        FOR EACH ROW EXECUTE FUNCTION rollout_event_append_only();
      CREATE TRIGGER rollout_server_no_truncate BEFORE TRUNCATE ON rollout_server
        FOR EACH STATEMENT EXECUTE FUNCTION rollout_event_append_only();
    `,
  },
  {
    version: 5,
    name: 'the records written before a change is sent, by server',
    // A step that finds its change already in effect looks up the record its
    // predecessor wrote before sending it (store/ledger.ts lastSent).
    sql: `
      CREATE INDEX rollout_event_sent ON rollout_event (rollout_id, server, seq DESC) WHERE kind = 'sent';
    `,
  },
  {
    version: 6,
    name: "a server's latest state is the one the database received last",
    // 'at' is chosen by the writer: the workflows and activities in other
    // processes, whose clocks differ (issue 22, item 7). It stays, for display;
    // the order is seq, the database's. The initial list (the rows with a
    // position) ranks below every other row of its server: it may land after
    // them (store/server-states.ts).
    sql: `
      DROP INDEX rollout_server_latest;
      CREATE INDEX rollout_server_latest ON rollout_server (rollout_id, server, (position IS NULL) DESC, seq DESC);
    `,
  },
];

const LOCK_ID = 0x6b6d6866; // 'kmhf'

/** Apply every migration not yet recorded. Safe to call at every start. */
export async function migrate(sql: Sql): Promise<number[]> {
  const applied: number[] = [];
  await sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${LOCK_ID})`;
    await tx`CREATE TABLE IF NOT EXISTS km_hotfix_migrations (
      version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`;
    const done = new Set(
      (await tx<{ version: number }[]>`SELECT version FROM km_hotfix_migrations`).map((r) => r.version),
    );
    for (const m of MIGRATIONS) {
      if (done.has(m.version)) continue;
      await tx.unsafe(m.sql);
      await tx`INSERT INTO km_hotfix_migrations (version, name) VALUES (${m.version}, ${m.name})`;
      applied.push(m.version);
    }
  });
  return applied;
}
