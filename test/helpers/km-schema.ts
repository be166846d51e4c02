// The Key Manager tables of SPEC §2. Key Manager creates them in production
// (and the simulator in development); the orchestrator never does, so only
// tests use this.
import type { Sql } from 'postgres';
import { KM_SPEC_SCHEMA } from '../../simulator/km-database';

// The same DDL the simulator runs, without its simulator-only table.
export const KM_SCHEMA_SQL = KM_SPEC_SCHEMA;

export async function createKmSchema(sql: Sql): Promise<void> {
  await sql.unsafe(KM_SCHEMA_SQL);
}
