// `km-hotfix remove HOTFIX`: unapply (and restart) on every server that has
// it, then delete it from the Key Manager database once it is applied nowhere.
import type { Command } from 'commander';
import { HotfixNameError, parseHotfixName } from '../../domain/hotfix';
import { conflictingRollouts } from '../../store/claims';
import type { RemovalInput, RolloutTiming } from '../../domain/messages/rollout';
import { hotfixRemoval } from '../../workflows/removal';
import type { Config } from '../../platform/config';
import { CliError, EXIT } from '../errors';
import {
  awaitStartAccepted,
  config,
  Databases,
  duration,
  nameList,
  newWorkflowId,
  withDatabases,
  withTemporal,
} from './common';
import { signDecision } from './signing';
import { NO_FILE } from '../../domain/decision';
import { checkedInventory, refuse, refuseConflicts } from './prepare';
import { planRemoval } from '../../domain/preflight';
import { announceStarted } from './rollout';
import type { FleetServer } from '../../domain/fleet';
import { commandLine } from '../../keymanager/ssh';
import { inert } from '../../domain/terminal';
import { createInterface } from 'node:readline/promises';

export interface RemoveRequest {
  hotfix: string;
  servers?: string[];
  keepRegistered?: boolean;
  timing?: Partial<RolloutTiming>;
}

/** What a removal will do, read before anything changes: the same rule as the workflow's preflight (planRemoval). */
export interface RemovalPlanned {
  hotfix: string;
  /** The servers that have it, in the order the removal takes them (one at a time, inventory order). */
  targets: FleetServer[];
  /** Deleted from the Key Manager database at the end (not with --servers or --keep-registered, nor when not registered). */
  deletes: boolean;
  sha256: string;
  conflicts: { id: string; reason: string }[];
}

function hotfixNameOf(text: string): string {
  try {
    return parseHotfixName(text).name;
  } catch (err) {
    if (err instanceof HotfixNameError) throw new CliError(err.message, EXIT.refused);
    throw err;
  }
}

async function planned(db: Databases, req: RemoveRequest): Promise<RemovalPlanned> {
  const name = hotfixNameOf(req.hotfix);
  const servers = req.servers ?? [];
  const fleet = await checkedInventory(db);
  const row = await db.kmDb.hotfix(name);
  const appliedOn = new Set(await db.kmDb.appliedOn(name));
  let names: string[];
  try {
    names = planRemoval({ hotfix: name, fleet, servers, registered: !!row, appliedOn }).targets;
  } catch (err) {
    refuse(err);
  }
  const byName = new Map(fleet.map((s) => [s.name, s]));
  return {
    hotfix: name,
    targets: names.map((n) => byName.get(n)).filter((s): s is FleetServer => !!s),
    deletes: !!row && !req.keepRegistered && servers.length === 0,
    sha256: row?.sha256 ?? NO_FILE,
    conflicts: await conflictingRollouts(db.orchestrator, name, names),
  };
}

/** The commands the worker sends each server, rendered as it sends them (sudo -n, quoting). */
export function removalCommands(s: FleetServer, hotfix: string): string[] {
  return [
    commandLine(s, ['ssh-mgr-controller', `--unapply-hotfix=${hotfix}`]),
    commandLine(s, ['supervisorctl', 'restart', 'all']),
    commandLine(s, ['supervisorctl', 'status']),
  ];
}

/** `remove --plan` as text: which servers, in which order, what each gets, and what happens to the registration. */
export function removalPlanLines(p: RemovalPlanned): string[] {
  const n = p.targets.length;
  const out = [
    n === 0
      ? `${p.hotfix} is applied on none of these servers: no server is touched or restarted`
      : `${p.hotfix} is applied on ${n} server(s); one at a time, in this order, each is unapplied, its services restarted and checked:`,
  ];
  p.targets.forEach((s, i) => {
    out.push(`  ${i + 1}. ${s.name} (${s.role})`);
    for (const c of removalCommands(s, p.hotfix)) out.push(`       ${c}`);
  });
  out.push(
    p.deletes
      ? `then, once it is applied nowhere, ${p.hotfix} is deleted from the Key Manager database (System → Hotfixes)`
      : `then ${p.hotfix} stays registered in Key Manager`,
  );
  for (const c of p.conflicts) out.push(`refused while rollout ${c.id} is still active on ${c.reason}`);
  return out.map(inert);
}

/**
 * A removal restarts every server that has the hotfix: a person says yes
 * first (y/N on a terminal); a script says --yes, else nothing happens.
 */
async function confirmed(p: RemovalPlanned, yes: boolean): Promise<void> {
  if (yes) return;
  const what = p.targets.length
    ? `unapplies ${p.hotfix} and restarts ${p.targets.length} server(s)`
    : `changes ${p.hotfix}'s registration`;
  if (!process.stdin.isTTY)
    throw new CliError(
      `remove ${what}: add --yes to do it without asking (--plan shows what it does); nothing was changed`,
      EXIT.refused,
    );
  process.stderr.write(removalPlanLines(p).join('\n') + '\n');
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  const answer = await rl.question(`remove ${p.hotfix} now? [y/N] `).finally(() => rl.close());
  if (!/^y(es)?$/i.test(answer.trim())) throw new CliError('not removed: nothing was changed', EXIT.refused);
}

export async function startRemoval(
  cfg: Config,
  req: RemoveRequest,
  confirm: (p: RemovalPlanned) => Promise<void> = () => Promise.resolve(),
): Promise<{ id: string; targets: string[] }> {
  hotfixNameOf(req.hotfix);
  return withDatabases(cfg, async (db) => {
    const p = await planned(db, req);
    const targets = p.targets.map((s) => s.name);
    return withTemporal(cfg, async (client) => {
      await refuseConflicts(db.orchestrator, client, p.conflicts);
      await confirm(p);
      const id = newWorkflowId('removal', p.hotfix);
      const signed = await signDecision(cfg, { action: 'remove', rollout: id, hotfix: p.hotfix, sha256: p.sha256 });
      const input: RemovalInput = {
        hotfix: p.hotfix,
        signed,
        servers: req.servers ?? [],
        keepRegistered: !!req.keepRegistered,
        ...(req.timing ? { timing: req.timing } : {}),
      };
      await client.workflow.start(hotfixRemoval, { taskQueue: cfg.taskQueue, workflowId: id, args: [input] });
      await awaitStartAccepted(client, id, 'remove');
      return { id, targets };
    });
  });
}

interface RemoveFlags {
  servers?: string[];
  keepRegistered?: boolean;
  servicesTimeout?: number;
  plan?: boolean;
  yes?: boolean;
  wait?: boolean;
  json?: boolean;
}

export function registerRemove(program: Command): void {
  program
    .command('remove <hotfix>')
    .summary(
      'unapply a hotfix everywhere (or on some servers), then delete it from Key Manager; prints the workflow id',
    )
    .description(
      `Remove hotfix Name HOTFIX as the vendor describes: on each server that has it (per Key Manager's Hotfixes Applied), one at a time, ssh-mgr-controller --unapply-hotfix and supervisorctl restart all, then verify; once it is applied nowhere, delete it from the Key Manager database (System → Hotfixes). With --servers only those servers are touched and the registration is kept. Signed with your SSH key (KM_HOTFIX_SIGNING_KEY, else ssh-agent).`,
    )
    .option('--servers <a,b>', 'remove it only from these servers (keeps the registration)', nameList('--servers'))
    .option('--keep-registered', 'unapply everywhere but keep it registered, to apply again later')
    .option(
      '--services-timeout <dur>',
      'how long services may take to be RUNNING again after a restart (default 5m)',
      duration('--services-timeout'),
    )
    .option(
      '--plan',
      'print which servers it would unapply and restart, in which order, and whether it deletes the hotfix; change nothing',
    )
    .option('--yes', 'do it without asking (needed when stdin is not a terminal: scripts)')
    .option('--wait', 'follow the removal until it ends; exit 0 completed, 1 failed')
    .option('--json', 'print {"id": ...} (with --wait: the final status document; with --plan: the plan)')
    .addHelpText(
      'after',
      `
Every server that has the hotfix is restarted: on a terminal, remove shows the plan and asks y/N;
from a script (stdin not a terminal) it refuses unless --yes is given.

Examples:
  km-hotfix remove hotfix_backend_fix_queue_stall --plan
  km-hotfix remove hotfix_backend_fix_queue_stall --wait
  km-hotfix remove hotfix_frontend_fix_login --servers km-fe-2 --yes`,
    )
    .action(async (hotfix: string, o: RemoveFlags) => {
      const cfg = config();
      const req: RemoveRequest = {
        hotfix,
        servers: o.servers,
        keepRegistered: o.keepRegistered,
        ...(o.servicesTimeout ? { timing: { servicesTimeoutMs: o.servicesTimeout } } : {}),
      };
      if (o.plan) {
        if (o.wait || o.yes) throw new CliError('--plan changes nothing: drop --wait and --yes', EXIT.refused);
        hotfixNameOf(hotfix);
        const p = await withDatabases(cfg, (db) => planned(db, req));
        if (o.json)
          console.log(
            JSON.stringify(
              {
                hotfix: p.hotfix,
                servers: p.targets.map((s) => ({ name: s.name, role: s.role, commands: removalCommands(s, p.hotfix) })),
                deletes: p.deletes,
                conflicts: p.conflicts,
              },
              null,
              2,
            ),
          );
        else console.log(removalPlanLines(p).join('\n'));
        return;
      }
      const started = await startRemoval(cfg, req, (p) => confirmed(p, !!o.yes));
      if (started.targets.length === 0 && !o.json)
        process.stderr.write(
          `${hotfix} is applied on none of these servers: the removal only ${o.keepRegistered || o.servers ? 'checks that' : 'deletes the registration'}\n`,
        );
      await announceStarted(cfg, started.id, o);
    });
}
