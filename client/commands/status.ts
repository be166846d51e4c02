// `km-hotfix status ID [--watch] [--json]`: phase, canary, drained backends,
// the gate, approvals and a per-server table; --watch follows it live.
import type { Command } from 'commander';
import type { Client } from '@temporalio/client';
import type { RolloutStatus } from '../../domain/rollout';
import type { Config } from '../../platform/config';
import { EXIT, exitCodeOf } from '../errors';
import { UserError } from '../../platform/errors';
import { statusBlock } from '../render/status';
import { watch } from '../render/watch';
import { config, describeWorkflow, isFinal, outcomeExit, readStatus, withOrchestrator, withTemporal } from './common';
import { ledgerStatus } from '../../store/ledger';
import { listInventory } from '../../store/inventory';

async function statusFromLedger(cfg: Config, id: string): Promise<RolloutStatus | undefined> {
  return withOrchestrator(cfg, async (sql) => ledgerStatus(sql, id, new Map((await listInventory(sql)).map((s) => [s.name, s.role]))));
}

/**
 * How long `status` waits for the workflow's live answer. A query is answered
 * by the worker that holds the workflow; when that worker has died, the task
 * moves to another within seconds (worker/worker.ts): meanwhile the ledger
 * answers at once.
 */
export const LIVE_ANSWER_MS = 2_000;

/** Observations of a workflow, tolerant of a short gap right after it starts (no answer yet). */
export function statusReader(client: Client, id: string): () => Promise<RolloutStatus> {
  return async () => {
    const started = Date.now();
    for (;;) {
      try {
        return await readStatus(client, await describeWorkflow(client, id));
      } catch (err) {
        // The first workflow task may not have run yet; give it a few seconds (a bad id fails at once).
        if (err instanceof UserError && exitCodeOf(err) === EXIT.refused) throw err;
        if (Date.now() - started > 10_000) throw err;
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  };
}

/** Follow a workflow to its end (live view, or silently with json), print, and set the exit code. */
export async function followWorkflow(cfg: Config, id: string, o: { json?: boolean }): Promise<RolloutStatus> {
  return withTemporal(cfg, async (client) => {
    const read = statusReader(client, id);
    let st: RolloutStatus;
    if (o.json) {
      st = await read();
      while (!isFinal(st)) {
        await new Promise((r) => setTimeout(r, 500));
        st = await read();
      }
      console.log(JSON.stringify(st, null, 2));
    } else {
      st = await watch({ read });
    }
    process.exitCode = outcomeExit(st);
    return st;
  });
}

export function registerStatus(program: Command): void {
  program
    .command('status <id>')
    .summary('phase, canary, drained backends, the gate, approvals and every server of a rollout or removal')
    .description('Show a rollout, removal or upload: phase, canary, which backends are drained (and their Maximum Processes), what the verification gate waits for, approvals, and each server\'s state and elapsed time.')
    .option('--watch', 'follow it live until it ends (redrawn in place on a terminal, one line per change otherwise); exit 0 completed, 1 rolled back or failed')
    .option('--json', 'one JSON document (with --watch: the final one)')
    .addHelpText('after', `
Server states: pending, patching, patched, skipped (had it already), failed, rolling_back,
rolled_back, rollback_failed (needs a person), untouched; removals: removing, removed.

Examples:
  km-hotfix status rollout-hotfix_backend_fix_queue_stall-20250101T120000-a1b2c3
  km-hotfix status ID --watch
  km-hotfix status ID --json | jq .phase`)
    .action(async (id: string, o: { watch?: boolean; json?: boolean }) => {
      const cfg = config();
      if (o.watch) {
        await followWorkflow(cfg, id, o);
        return;
      }
      const st = await withTemporal(cfg, async (client) => {
        try {
          return await readStatus(client, await describeWorkflow(client, id), LIVE_ANSWER_MS);
        } catch (err) {
          // Temporal forgets a closed workflow after its retention; the ledger does not.
          // A query unanswered in time (its workflow task moving to another worker) gets the ledger's view too.
          const gone = err instanceof UserError && exitCodeOf(err) === EXIT.refused;
          const silent = err instanceof UserError && exitCodeOf(err) === EXIT.unreachable;
          const fromLedger = (gone || silent) && cfg.databaseUrl ? await statusFromLedger(cfg, id) : undefined;
          if (!fromLedger) throw err;
          console.error(gone
            ? `km-hotfix: Temporal no longer has ${id}; this is its record in the ledger`
            : `km-hotfix: Temporal did not answer within ${LIVE_ANSWER_MS / 1000} s; showing the ledger's view (try again in a few seconds for the live one)`);
          return fromLedger;
        }
      });
      if (o.json) console.log(JSON.stringify(st, null, 2));
      else console.log(statusBlock(st, Date.now(), !!process.stdout.isTTY).join('\n'));
      process.exitCode = EXIT.ok;
    });
}
