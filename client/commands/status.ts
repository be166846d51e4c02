// `km-hotfix status ID [--watch] [--json]`: phase, canary, drained backends,
// the gate, approvals and a per-server table; --watch follows it live.
import type { Command } from 'commander';
import type { Client } from '@temporalio/client';
import { FULL_SERVER_LIST_MAX, SERVER_STATES, ServerState } from '../../domain/rollout';
import { RolloutStatus } from '../../domain/messages/rollout';
import type { Config } from '../../platform/config';
import { CliError, EXIT, exitCodeOf } from '../errors';
import { UserError } from '../../platform/errors';
import { serverElapsed, short, statusBlock } from '../render/status';
import { watch } from '../render/watch';
import { cut, outputWidth, wrap } from '../render/fit';
import {
  config,
  ID_HELP,
  describeWorkflow,
  isFinal,
  ledgerViewFor,
  noAnswerError,
  outcomeExit,
  readStatus,
  resolveWorkflowId,
  wholeNumber,
  withOrchestrator,
  withTemporal,
} from './common';
import type { LedgerView } from '../../status/live';
import { isNoAnswer, readRollout } from '../../status/read';
import { statusFromLedger } from '../../status/from-ledger';
import { recordedDrained } from '../../store/ledger-reads';
import { serverStates, ServerPage } from '../../store/server-states';
import { drainedFacts, drainedList } from '../../domain/decision';
import { formatTable } from './fleet';
import { inert } from '../../domain/terminal';

/** Servers per page of 'status --servers' by default, and at most. */
export const SERVER_PAGE_SIZE = 100;
export const SERVER_PAGE_MAX = 1_000;

interface ServersOptions {
  drained?: boolean;
  servers?: boolean;
  state?: string;
  page?: number;
  pageSize?: number;
  json?: boolean;
  watch?: boolean;
}

/** The paging flags, checked before anything is read: one clear line and exit 2 otherwise. */
function serversRequest(o: ServersOptions): { state?: ServerState; page: number; pageSize: number } | undefined {
  const paging = o.state !== undefined || o.page !== undefined || o.pageSize !== undefined;
  if (!o.servers) {
    if (paging) throw new CliError('--state, --page and --page-size page the server list: add --servers', EXIT.refused);
    return undefined;
  }
  if (o.watch)
    throw new CliError('--servers lists the ledger once; it does not --watch (drop one of them)', EXIT.refused);
  if (o.state !== undefined && !(SERVER_STATES as readonly string[]).includes(o.state)) {
    throw new CliError(`--state must be one of ${SERVER_STATES.join(', ')} (got '${o.state}')`, EXIT.refused);
  }
  const pageSize = o.pageSize ?? SERVER_PAGE_SIZE;
  if (pageSize > SERVER_PAGE_MAX)
    throw new CliError(`--page-size must be at most ${SERVER_PAGE_MAX} (got ${pageSize})`, EXIT.refused);
  return { ...(o.state ? { state: o.state as ServerState } : {}), page: o.page ?? 1, pageSize };
}

/** One page of the per-server ledger as a table with a footer that says how to get the next. */
export function serverPageLines(
  id: string,
  p: ServerPage,
  state: ServerState | undefined,
  now = Date.now(),
  width = Infinity,
): string[] {
  const pages = Math.max(1, Math.ceil(p.total / p.pageSize));
  const what = `${p.total} server(s)${state ? ` in state ${state}` : ''}`;
  if (p.servers.length === 0) {
    return [
      p.total === 0
        ? `${id}: no ${state ? `${state} ` : ''}servers recorded in the ledger`
        : `${id}: page ${p.page} is past the last page (${pages}) of ${what}`,
    ].map(inert);
  }
  const table = formatTable(
    ['SERVER', 'ROLE', 'STATE', 'ELAPSED', 'NOTE'],
    p.servers.map((s) => [s.name, s.role ?? '-', s.state, serverElapsed(s, now), s.error ? short(s.error) : '']),
  );
  const first = (p.page - 1) * p.pageSize + 1;
  const next =
    p.page < pages
      ? `; next: km-hotfix status ${id} --servers${state ? ` --state ${state}` : ''} --page ${p.page + 1}${p.pageSize !== SERVER_PAGE_SIZE ? ` --page-size ${p.pageSize}` : ''}`
      : '';
  // Rows give way at their note (the error: whole in --json); the footer wraps, the id in it whole.
  return [
    ...table.split('\n').map((l) => cut(inert(l), width)),
    ...wrap(
      inert(`servers ${first}-${first + p.servers.length - 1} of ${what} (page ${p.page} of ${pages})${next}`),
      width,
      2,
    ),
  ];
}

/**
 * `--drained`: the backends drained for the verification, from the ledger,
 * as the canonical list a decision's digest is over (sorted, one per line):
 * `km-hotfix status ID --drained | sha256sum` gives the sha256 an answer signs.
 */
async function listDrained(cfg: Config, id: string, json: boolean): Promise<void> {
  if (!cfg.databaseUrl) throw new CliError('--drained reads the orchestrator database: set DATABASE_URL', EXIT.refused);
  await withOrchestrator(cfg, async (sql) => {
    const known = await sql`SELECT 1 FROM rollout WHERE id = ${id}`;
    if (known.length === 0)
      throw new CliError(
        `no rollout, removal or upload ${id} in the ledger: 'km-hotfix list' shows the ids`,
        EXIT.refused,
      );
    const drained = (await recordedDrained(sql, id)) ?? [];
    const facts = drainedFacts(drained.map((d) => d.server));
    if (json) {
      console.log(JSON.stringify({ id, count: facts.count, sha256: facts.sha256, drained }, null, 2));
      return;
    }
    process.stdout.write(drainedList(drained.map((d) => d.server)));
    console.error(
      facts.count === 0
        ? `${id}: no backend was drained`
        : `${id}: ${facts.count} drained backends, sha256:${facts.sha256}`,
    );
  });
}

async function listServers(
  cfg: Config,
  id: string,
  req: { state?: ServerState; page: number; pageSize: number },
  json: boolean,
): Promise<void> {
  if (!cfg.databaseUrl)
    throw new CliError('--servers reads the orchestrator database: set KM_HOTFIX_DATABASE_URL', EXIT.refused);
  await withOrchestrator(cfg, async (sql) => {
    const known = await sql`SELECT 1 FROM rollout WHERE id = ${id}`;
    if (known.length === 0)
      throw new CliError(
        `no rollout, removal or upload ${id} in the ledger: 'km-hotfix list' shows the ids`,
        EXIT.refused,
      );
    const page = await serverStates(sql, id, req);
    if (json)
      console.log(
        JSON.stringify(
          {
            id,
            ...(req.state ? { state: req.state } : {}),
            total: page.total,
            page: page.page,
            pageSize: page.pageSize,
            pages: Math.max(1, Math.ceil(page.total / page.pageSize)),
            servers: page.servers,
          },
          null,
          2,
        ),
      );
    else console.log(serverPageLines(id, page, req.state, Date.now(), outputWidth()).join('\n'));
  });
}
/**
 * How long `status` waits for the workflow's live answer. A query is answered
 * by the worker that holds the workflow; when that worker has died, the task
 * moves to another within seconds (worker/worker.ts): meanwhile the ledger
 * answers at once.
 */
export const LIVE_ANSWER_MS = 2_000;

/** Observations of a workflow, tolerant of a short gap right after it starts (no answer yet). */
export function statusReader(client: Client, id: string, ledger?: LedgerView): () => Promise<RolloutStatus> {
  return async () => {
    const started = Date.now();
    for (;;) {
      try {
        return await readStatus(client, await describeWorkflow(client, id), undefined, ledger);
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
  const ledger = ledgerViewFor(cfg);
  return withTemporal(cfg, async (client) => {
    const read = statusReader(client, id, ledger.view);
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
  }).finally(() => ledger.close());
}

export function registerStatus(program: Command): void {
  program
    .command('status')
    .argument('<id>', ID_HELP)
    .summary(
      'phase, canary, drained backends, the gate, approvals, counts by server state; --servers pages every server',
    )
    .description(
      `Show a rollout, removal or upload: phase, canary, which backends are drained (and their Maximum Processes), what the verification gate waits for, approvals, counts by server state, the servers needing attention, and each server's state and elapsed time while the rollout has at most ${FULL_SERVER_LIST_MAX} servers (above: --servers pages them).`,
    )
    .option(
      '--watch',
      'follow it live until it ends (redrawn in place on a terminal, one line per change otherwise); exit 0 completed, 1 rolled back or failed',
    )
    .option(
      '--json',
      `one JSON document (with --watch: the final one); it has a "servers" list while the rollout has at most ${FULL_SERVER_LIST_MAX} servers`,
    )
    .option(
      '--drained',
      'print the backends drained for the verification from the ledger, sorted, one per line (piped to sha256sum: the digest an approval signs)',
    )
    .option(
      '--servers',
      "list every server's latest state from the ledger, a page at a time (works after Temporal has forgotten the workflow)",
    )
    .option('--state <state>', 'with --servers: only servers in this state (e.g. failed, rollback_failed, pending)')
    .option('--page <n>', 'with --servers: which page (from 1)', wholeNumber('--page', 1))
    .option(
      '--page-size <n>',
      `with --servers: servers per page (default ${SERVER_PAGE_SIZE}, at most ${SERVER_PAGE_MAX})`,
      wholeNumber('--page-size', 1),
    )
    .addHelpText(
      'after',
      `
A status shows counts by state and the servers needing attention (failed,
rollback_failed); it lists every server only up to ${FULL_SERVER_LIST_MAX} servers. Above that,
'--servers' pages them from the ledger.

Server states: pending, patching, patched, skipped (had it already), failed, rolling_back,
rolled_back, rollback_failed (needs a person), untouched; removals: removing, removed.

Examples:
  km-hotfix status rollout-hotfix_backend_fix_queue_stall-20250101T120000-a1b2c3
  km-hotfix status ID --watch
  km-hotfix status ID --json | jq .phase
  km-hotfix status ID --servers --state failed
  km-hotfix status ID --servers --page 3 --page-size 500
  km-hotfix status ID --drained | sha256sum`,
    )
    .action(async (typed: string, o: ServersOptions) => {
      if (o.drained && (o.servers || o.watch))
        throw new CliError('--drained prints the drained backends once: drop --servers and --watch', EXIT.refused);
      const paging = serversRequest(o);
      const cfg = config();
      const id = await resolveWorkflowId(cfg, typed);
      if (o.drained) {
        await listDrained(cfg, id, !!o.json);
        process.exitCode = EXIT.ok;
        return;
      }
      if (paging) {
        await listServers(cfg, id, paging, !!o.json);
        process.exitCode = EXIT.ok;
        return;
      }
      if (o.watch) {
        await followWorkflow(cfg, id, o);
        return;
      }
      const ledger = ledgerViewFor(cfg);
      const st = await withTemporal(cfg, async (client) => {
        const a = await readRollout(client, id, {
          queryTimeoutMs: LIVE_ANSWER_MS,
          ...(ledger.view ? { ledger: ledger.view } : {}),
          ...(cfg.databaseUrl ? { fromLedger: (x) => withOrchestrator(cfg, (sql) => statusFromLedger(sql, x)) } : {}),
          // Temporal forgets a closed workflow after its retention; the ledger does not.
          // A query unanswered in time (its workflow task moving to another worker) gets the ledger's view too.
          fallBackOn: (n) => n.why !== 'ended' && n.why !== 'unreachable',
        });
        if (isNoAnswer(a)) throw noAnswerError(id, a);
        if (a.because)
          console.error(
            a.because.why === 'silent'
              ? `km-hotfix: Temporal did not answer within ${LIVE_ANSWER_MS / 1000} s; showing the ledger's view (try again in a few seconds for the live one)`
              : `km-hotfix: Temporal no longer has ${id}; this is its record in the ledger`,
          );
        return a.status;
      }).finally(() => ledger.close());
      if (o.json) console.log(JSON.stringify(st, null, 2));
      else console.log(statusBlock(st, Date.now(), !!process.stdout.isTTY, Infinity, outputWidth()).join('\n'));
      process.exitCode = EXIT.ok;
    });
}
