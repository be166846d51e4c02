// Faults of the Key Manager DATABASE for drills (the simulator's SSH faults
// live in simulator/faults.ts): a trigger on km_server makes the next N
// writes of Maximum Processes fail, as a transient error or as "database
// unreachable" (SQLSTATE 08006). The counter is a sequence, so a failed
// (rolled back) write still consumes it. Test-only: Key Manager owns its
// schema; this adds a table, a sequence and a trigger to a TEST database.
import type { Sql } from 'postgres';

export type KmDbStep = 'drain' | 'restore';
export type KmDbFault = 'transient' | 'unreachable';

export async function installKmDbFaults(km: Sql): Promise<void> {
  await km.unsafe(`
    CREATE TABLE IF NOT EXISTS km_test_fault (step text PRIMARY KEY, failures integer NOT NULL, code text NOT NULL, seq text NOT NULL);
    CREATE OR REPLACE FUNCTION km_test_fault_fn() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
      f km_test_fault%ROWTYPE;
    BEGIN
      SELECT * INTO f FROM km_test_fault WHERE km_test_fault.step = CASE WHEN NEW.max_processes = 0 THEN 'drain' ELSE 'restore' END;
      IF FOUND AND nextval(f.seq) <= f.failures THEN
        RAISE EXCEPTION 'simulated % fault on km_server %', f.step, NEW.name USING ERRCODE = f.code;
      END IF;
      RETURN NEW;
    END $$;
    DROP TRIGGER IF EXISTS km_test_fault_trg ON km_server;
    CREATE TRIGGER km_test_fault_trg BEFORE UPDATE ON km_server FOR EACH ROW EXECUTE FUNCTION km_test_fault_fn();`);
}

/** The next `failures` writes of this step fail. */
export async function kmDbFault(km: Sql, step: KmDbStep, fault: KmDbFault, failures: number): Promise<void> {
  const seq = `km_test_fault_${step}_${Date.now()}`;
  await km.unsafe(`CREATE SEQUENCE ${seq}`);
  await km`INSERT INTO km_test_fault (step, failures, code, seq) VALUES (${step}, ${failures}, ${fault === 'unreachable' ? '08006' : 'P0001'}, ${seq})
           ON CONFLICT (step) DO UPDATE SET failures = EXCLUDED.failures, code = EXCLUDED.code, seq = EXCLUDED.seq`;
}

export async function clearKmDbFaults(km: Sql): Promise<void> {
  await km`DELETE FROM km_test_fault`;
}

/** Whether the fault of this step has fired (its counter was consumed at least once). */
export async function kmDbFaultFired(km: Sql, step: KmDbStep): Promise<boolean> {
  const [f] = await km<{ seq: string }[]>`SELECT seq FROM km_test_fault WHERE step = ${step}`;
  if (!f) return false;
  const [r] = await km.unsafe<{ is_called: boolean }[]>(`SELECT is_called FROM ${f.seq}`);
  return r.is_called;
}
