// The Key Manager database as Key Manager itself writes it (SPEC §2). The
// simulator creates the tables, registers its servers and writes
// km_hotfix / km_hotfix_applied; it never changes max_processes after
// registration (that is the orchestrator's job).
import postgres, { Sql } from 'postgres';
import type { Role } from '../domain/fleet';
import type { HotfixManifest } from './hotfix-file';

/** The tables of SPEC §2, exactly: what a real Key Manager has. */
export const KM_SPEC_SCHEMA = `
CREATE TABLE IF NOT EXISTS km_server (
  name          text PRIMARY KEY,
  role          text NOT NULL CHECK (role IN ('frontend','backend','both')),
  max_processes integer NOT NULL CHECK (max_processes >= 0));
CREATE TABLE IF NOT EXISTS km_hotfix (
  name        text PRIMARY KEY,
  file_name   text NOT NULL,
  version     text NOT NULL,
  sha256      text NOT NULL,
  uploaded_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS km_hotfix_applied (
  server_name text NOT NULL REFERENCES km_server(name),
  hotfix_name text NOT NULL REFERENCES km_hotfix(name),
  applied_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (server_name, hotfix_name));
`;

export const KM_SCHEMA =
  KM_SPEC_SCHEMA +
  `
-- Simulator only: the uploaded manifest, which a real Key Manager keeps in
-- its own storage. Keyed by sha256 so a deleted-then-reuploaded hotfix works.
CREATE TABLE IF NOT EXISTS km_sim_hotfix_content (
  sha256   text PRIMARY KEY,
  manifest jsonb NOT NULL);
`;

export interface RegisteredHotfix {
  name: string;
  version: string;
  sha256: string;
  manifest: HotfixManifest | undefined;
}

export class KmDatabase {
  readonly sql: Sql;

  constructor(url: string) {
    this.sql = postgres(url, { max: 8, onnotice: () => undefined, connect_timeout: 10 });
  }

  async ensureSchema(): Promise<void> {
    // Serialise concurrent simulators creating the same tables.
    await this.sql.begin(async (tx) => {
      await tx`SELECT pg_advisory_xact_lock(727274)`;
      await tx.unsafe(KM_SCHEMA);
    });
  }

  /** Insert servers; an existing row keeps its max_processes (it may be drained right now). */
  async registerServers(rows: { name: string; role: Role; maxProcesses: number }[]): Promise<void> {
    for (let i = 0; i < rows.length; i += 1000) {
      const chunk = rows.slice(i, i + 1000).map((r) => ({ name: r.name, role: r.role, max_processes: r.maxProcesses }));
      await this.sql`INSERT INTO km_server ${this.sql(chunk, 'name', 'role', 'max_processes')}
        ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role`;
    }
  }

  async hotfix(name: string): Promise<RegisteredHotfix | undefined> {
    const rows = await this.sql<{ name: string; version: string; sha256: string; manifest: HotfixManifest | null }[]>`
      SELECT h.name, h.version, h.sha256, c.manifest FROM km_hotfix h
      LEFT JOIN km_sim_hotfix_content c ON c.sha256 = h.sha256 WHERE h.name = ${name}`;
    const r = rows[0];
    return r ? { name: r.name, version: r.version, sha256: r.sha256, manifest: r.manifest ?? undefined } : undefined;
  }

  /** Register a hotfix; returns the sha256 already registered under that Name when it differs. */
  async upload(h: {
    name: string;
    fileName: string;
    version: string;
    sha256: string;
    manifest: HotfixManifest;
  }): Promise<{ conflict?: string }> {
    return this.sql.begin(async (tx) => {
      await tx`INSERT INTO km_sim_hotfix_content (sha256, manifest) VALUES (${h.sha256}, ${tx.json(h.manifest as unknown as postgres.JSONValue)})
        ON CONFLICT (sha256) DO NOTHING`;
      await tx`INSERT INTO km_hotfix (name, file_name, version, sha256) VALUES (${h.name}, ${h.fileName}, ${h.version}, ${h.sha256})
        ON CONFLICT (name) DO NOTHING`;
      const [row] = await tx<{ sha256: string }[]>`SELECT sha256 FROM km_hotfix WHERE name = ${h.name}`;
      return row.sha256 === h.sha256 ? {} : { conflict: row.sha256 };
    });
  }

  /** Returns false when it was applied already. */
  async apply(server: string, hotfix: string): Promise<boolean> {
    const rows = await this.sql`INSERT INTO km_hotfix_applied (server_name, hotfix_name) VALUES (${server}, ${hotfix})
      ON CONFLICT DO NOTHING RETURNING 1`;
    return rows.length > 0;
  }

  /** Returns false when it was not applied. */
  async unapply(server: string, hotfix: string): Promise<boolean> {
    const rows = await this
      .sql`DELETE FROM km_hotfix_applied WHERE server_name = ${server} AND hotfix_name = ${hotfix} RETURNING 1`;
    return rows.length > 0;
  }

  async close(): Promise<void> {
    await this.sql.end({ timeout: 2 });
  }
}
