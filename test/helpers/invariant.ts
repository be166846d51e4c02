// The rollback promise (issue 9), as one check every fault, crash and
// property test ends with. It reads the truth (the Key Manager database, the
// simulator's command logs, Maximum Processes, the ledger), never the
// workflow's word alone:
//   completed       every target applied exactly once (a command that took effect), Maximum Processes as before
//                   (servers absorbed by --max-failures are reported failed);
//   rolled_back     no target listed in the KM database, Maximum Processes restored exactly, services RUNNING;
//   rollback_failed needsAttention names exactly the servers that still differ;
//   failed          (stopped in preflight) nothing changed;
// and always: every effective apply or unapply is followed by exactly one
// `supervisorctl restart all` (never a restart without a change), the ledger
// agrees with the KM database, no claim is left behind.
import assert from 'node:assert/strict';
import type { Sql } from 'postgres';
import type { SimFleet } from '../../simulator';
import type { RolloutStatus } from '../../domain/messages/rollout';
import { serversOf } from './servers';

export interface InvariantEnv {
  km: Sql;
  orchestrator: Sql;
  fleet: SimFleet;
}

export interface InvariantExpectation {
  /** Maximum Processes of every km_server before the rollout started. */
  maxProcessesBefore: Record<string, number>;
  /** The rollout's targets; default: the servers its status lists, minus those skipped at preflight. */
  targets?: string[];
  /** Servers skipped at preflight (already had the hotfix): they must not have been touched. */
  skipped?: string[];
  /** --batch as a number of servers: never more fan-out servers than this in flight at once (from the command logs). */
  window?: number;
}

export interface InvariantReport {
  phase: string;
  applied: string[];
  differing: string[];
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Commands that changed a server: they exited 0 (whether or not the connection then dropped before the answer arrived). */
export function effectiveCommands(fleet: SimFleet, server: string, pattern: RegExp): number {
  return fleet
    .server(server)
    .log()
    .filter((e) => pattern.test(e.command) && e.exitCode === 0).length;
}

export async function kmApplied(km: Sql, hotfix: string): Promise<string[]> {
  return (
    await km<
      { server_name: string }[]
    >`SELECT server_name FROM km_hotfix_applied WHERE hotfix_name = ${hotfix} ORDER BY server_name`
  ).map((r) => r.server_name);
}

export async function kmMaxProcesses(km: Sql): Promise<Record<string, number>> {
  const rows = await km<
    { name: string; max_processes: number }[]
  >`SELECT name, max_processes FROM km_server ORDER BY name`;
  return Object.fromEntries(rows.map((r) => [r.name, r.max_processes]));
}

/** Where the ledger says the hotfix is: a server with an `apply` event and no later `unapply` event. */
export async function ledgerApplied(orchestrator: Sql, rolloutId: string): Promise<string[]> {
  const rows = await orchestrator<{ server: string; kind: string }[]>`
    SELECT server, kind FROM rollout_event
     WHERE rollout_id = ${rolloutId} AND kind IN ('apply', 'unapply') AND server IS NOT NULL ORDER BY seq`;
  const state = new Map<string, boolean>();
  for (const r of rows) state.set(r.server, r.kind === 'apply');
  return [...state]
    .filter(([, on]) => on)
    .map(([s]) => s)
    .sort();
}

/**
 * The restart rule on one server, from its command log since `since`: each
 * effective apply or unapply of the hotfix is followed by exactly one
 * effective restart before the next change, and no restart follows nothing.
 * Returns what is wrong, or undefined.
 */
export function restartProblem(fleet: SimFleet, server: string, hotfix: string, since: string): string | undefined {
  const change = new RegExp(`--(un)?apply-hotfix=${escape(hotfix)}(\\s|$)`);
  const restart = /supervisorctl restart all/;
  let owed: string | undefined;
  for (const e of fleet.server(server).log()) {
    if (e.at < since || e.channel !== 'exec') continue;
    // A change counts when it exited 0; a restart when it ran at all (one that leaves a program FATAL exits 1, yet restarted everything).
    if (change.test(e.command) && e.exitCode === 0) {
      if (owed) return `${server}: '${e.command}' at ${e.at} came before the restart owed for '${owed}'`;
      owed = `${e.command} at ${e.at}`;
    } else if (restart.test(e.command) && e.ran) {
      if (!owed) return `${server}: a restart at ${e.at} followed no change`;
      owed = undefined;
    }
  }
  return owed ? `${server}: '${owed}' was never followed by a restart` : undefined;
}

/**
 * The most fan-out servers in flight at one instant: each server counts from
 * its first apply command to the end of its last apply or restart before its
 * first unapply (a server waiting for a retry holds its place), all from the
 * simulator's command logs.
 */
export function maxApplyInFlight(fleet: SimFleet, servers: string[], hotfix: string, since: string): number {
  const apply = new RegExp(`--apply-hotfix=${escape(hotfix)}(\\s|$)`);
  const unapply = new RegExp(`--unapply-hotfix=${escape(hotfix)}(\\s|$)`);
  const edges: [number, number][] = [];
  for (const s of servers) {
    const log = fleet
      .server(s)
      .log()
      .filter((e) => e.at >= since && e.channel === 'exec');
    // From the first apply that ran: one refused, dropped before it or failed at once changed nothing, and its server
    // waits for its retry in the queue like any other (a pause may give its place to another).
    const first = log.findIndex((e) => apply.test(e.command) && e.ran === true);
    if (first < 0) continue;
    const stop = log.findIndex((e) => unapply.test(e.command));
    // Its apply and restart commands (status reads are left out: a rollback's first read of a server is not fan-out).
    const mine = log
      .slice(first, stop < 0 ? undefined : stop)
      .filter((e) => apply.test(e.command) || /supervisorctl restart all/.test(e.command));
    const end = Math.max(...mine.map((e) => Date.parse(e.at) + (e.durationMs ?? 0)));
    edges.push([Date.parse(log[first].at), 1], [end, -1]);
  }
  // Ends before starts at the same instant: a place freed and taken again in one millisecond is not two.
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let now = 0;
  let most = 0;
  for (const [, d] of edges) most = Math.max(most, (now += d));
  return most;
}

/** Check the invariant for one finished rollout; throws an AssertionError naming what differs. */
export async function assertRolloutInvariant(
  env: InvariantEnv,
  status: RolloutStatus,
  exp: InvariantExpectation,
): Promise<InvariantReport> {
  const id = status.id;
  const hotfix = status.hotfix;
  const skipped = new Set(
    exp.skipped ??
      serversOf(status)
        .filter((s) => s.state === 'skipped')
        .map((s) => s.name),
  );
  const targets = (exp.targets ?? serversOf(status).map((s) => s.name)).filter((n) => !skipped.has(n));
  const where = `${id} ended ${status.phase} (${status.error ?? 'no error'})`;
  assert.ok(
    ['completed', 'rolled_back', 'rollback_failed', 'failed'].includes(status.phase),
    `${where}: not a final phase`,
  );

  const applied = await kmApplied(env.km, hotfix);
  const appliedTargets = targets.filter((t) => applied.includes(t)).sort();
  const mp = await kmMaxProcesses(env.km);
  const mpDiffers = Object.keys(exp.maxProcessesBefore)
    .filter((n) => mp[n] !== exp.maxProcessesBefore[n])
    .sort();
  const notRunning = targets
    .filter((t) =>
      env.fleet
        .server(t)
        .services()
        .some((s) => s.state !== 'RUNNING'),
    )
    .sort();
  const APPLY = new RegExp(`--apply-hotfix=${escape(hotfix)}(\\s|$)`);
  const CHANGES = new RegExp(`--(un)?apply-hotfix=${escape(hotfix)}(\\s|$)`);

  for (const s of skipped)
    assert.equal(effectiveCommands(env.fleet, s, CHANGES), 0, `${where}: ${s} was skipped at preflight but changed`);
  if (exp.window !== undefined) {
    const most = maxApplyInFlight(
      env.fleet,
      targets.filter((t) => t !== status.canary),
      hotfix,
      status.startedAt,
    );
    assert.ok(most <= exp.window, `${where}: ${most} servers in flight at once, more than the window of ${exp.window}`);
  }
  for (const t of targets) {
    const problem = restartProblem(env.fleet, t, hotfix, status.startedAt);
    assert.equal(problem, undefined, `${where}: every effective change gets exactly one restart: ${problem}`);
  }

  const differing = [...new Set([...appliedTargets, ...mpDiffers, ...notRunning])].sort();
  switch (status.phase) {
    case 'completed': {
      // --max-failures may absorb failed servers: they are reported failed, never hidden; the rest has it, applied once.
      const failed = serversOf(status)
        .filter((s) => s.state === 'failed')
        .map((s) => s.name);
      assert.ok(
        failed.length <= (status.maxFailures ?? 0),
        `${where}: ${failed.length} failed server(s) within --max-failures ${status.maxFailures ?? 0}`,
      );
      const ok = targets.filter((t) => !failed.includes(t)).sort();
      assert.deepEqual(
        appliedTargets.filter((t) => !failed.includes(t)),
        ok,
        `${where}: every target applied`,
      );
      for (const t of ok)
        assert.equal(effectiveCommands(env.fleet, t, APPLY), 1, `${where}: ${t} applied exactly once`);
      for (const t of failed)
        assert.ok(effectiveCommands(env.fleet, t, APPLY) <= 1, `${where}: ${t} applied at most once`);
      assert.deepEqual(mpDiffers, [], `${where}: Maximum Processes as before`);
      break;
    }
    case 'rolled_back':
      assert.deepEqual(appliedTargets, [], `${where}: no target listed in the Key Manager database`);
      assert.deepEqual(mpDiffers, [], `${where}: Maximum Processes restored exactly`);
      assert.deepEqual(notRunning, [], `${where}: services RUNNING on every target`);
      break;
    case 'rollback_failed': {
      const named = [...new Set(status.needsAttention.map((n) => n.split(' ')[0]))].sort();
      assert.ok(named.length > 0, `${where}: rollback_failed names nobody`);
      assert.deepEqual(named, differing, `${where}: needsAttention names exactly the servers that still differ`);
      break;
    }
    case 'failed':
      assert.deepEqual(appliedTargets, [], `${where}: a rollout stopped in preflight applied nothing`);
      assert.deepEqual(mpDiffers, [], `${where}: Maximum Processes untouched`);
      for (const t of targets) assert.equal(effectiveCommands(env.fleet, t, CHANGES), 0, `${where}: ${t} unchanged`);
      break;
  }

  // The ledger: same ending, same places, nothing still claimed.
  const [row] = await env.orchestrator<{ phase: string }[]>`SELECT phase FROM rollout WHERE id = ${id}`;
  assert.equal(row?.phase, status.phase, `${where}: the ledger records the same ending`);
  assert.deepEqual(
    (await ledgerApplied(env.orchestrator, id)).filter((s) => targets.includes(s)),
    appliedTargets,
    `${where}: the ledger agrees with the Key Manager database`,
  );
  const claims = await env.orchestrator<{ n: number }[]>`
    SELECT (SELECT count(*) FROM server_claim WHERE rollout_id = ${id}) + (SELECT count(*) FROM hotfix_claim WHERE rollout_id = ${id}) AS n`;
  assert.equal(Number(claims[0].n), 0, `${where}: claims released`);
  return { phase: status.phase, applied: appliedTargets, differing };
}
