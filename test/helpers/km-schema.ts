// The Key Manager tables of SPEC §2. Key Manager creates them in production
// (and the simulator in development); the orchestrator never does, so only
// tests use this.
import type { Sql } from 'postgres';

export const KM_SCHEMA_SQL = `
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

export async function createKmSchema(sql: Sql): Promise<void> {
  await sql.unsafe(KM_SCHEMA_SQL);
}
