// `km-hotfix remove HOTFIX`: unapply (and restart) on every server that has
// it, then delete it from the Key Manager database once it is applied nowhere.
import type { Command } from 'commander';
import { HotfixNameError, parseHotfixName } from '../../domain/hotfix';
import { conflictingRollouts } from '../../store/claims';
import type { RemovalInput, RolloutTiming } from '../../domain/messages/rollout';
import { hotfixRemoval } from '../../workflows/removal';
import type { Config } from '../../platform/config';
import { CliError, EXIT } from '../errors';
import { awaitStartAccepted, config, duration, nameList, newWorkflowId, withDatabases, withTemporal } from './common';
import { signDecision } from './signing';
import { NO_FILE } from '../../domain/decision';
import { checkedInventory, refuse, refuseConflicts } from './prepare';
import { planRemoval } from '../../domain/preflight';
import { announceStarted } from './rollout';

export interface RemoveRequest {
  hotfix: string;
  servers?: string[];
  keepRegistered?: boolean;
  timing?: Partial<RolloutTiming>;
}

export async function startRemoval(cfg: Config, req: RemoveRequest): Promise<{ id: string; targets: string[] }> {
  let name: string;
  try {
    name = parseHotfixName(req.hotfix).name;
  } catch (err) {
    if (err instanceof HotfixNameError) throw new CliError(err.message, EXIT.refused);
    throw err;
  }
  const servers = req.servers ?? [];
  return withDatabases(cfg, async (db) => {
    const fleet = await checkedInventory(db);
    const row = await db.kmDb.hotfix(name);
    const registered = !!row;
    const appliedOn = new Set(await db.kmDb.appliedOn(name));
    let targets: string[];
    try {
      targets = planRemoval({ hotfix: name, fleet, servers, registered, appliedOn }).targets;
    } catch (err) {
      refuse(err);
    }
    const conflicts = await conflictingRollouts(db.orchestrator, name, targets);
    return withTemporal(cfg, async (client) => {
      await refuseConflicts(db.orchestrator, client, conflicts);
      const id = newWorkflowId('removal', name);
      const signed = await signDecision(cfg, {
        action: 'remove',
        rollout: id,
        hotfix: name,
        sha256: row?.sha256 ?? NO_FILE,
      });
      const input: RemovalInput = {
        hotfix: name,
        signed,
        servers,
        keepRegistered: !!req.keepRegistered,
        ...(req.timing ? { timing: req.timing } : {}),
      };
      await client.workflow.start(hotfixRemoval, { taskQueue: cfg.taskQueue, workflowId: id, args: [input] });
      await awaitStartAccepted(client, id, 'remove');
      return { id, targets };
    });
  });
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
    .option('--wait', 'follow the removal until it ends; exit 0 completed, 1 failed')
    .option('--json', 'print {"id": ...} (with --wait: the final status document)')
    .addHelpText(
      'after',
      `
Examples:
  km-hotfix remove hotfix_backend_fix_queue_stall --wait
  km-hotfix remove hotfix_frontend_fix_login --servers km-fe-2`,
    )
    .action(
      async (
        hotfix: string,
        o: { servers?: string[]; keepRegistered?: boolean; servicesTimeout?: number; wait?: boolean; json?: boolean },
      ) => {
        const cfg = config();
        const started = await startRemoval(cfg, {
          hotfix,
          servers: o.servers,
          keepRegistered: o.keepRegistered,
          ...(o.servicesTimeout ? { timing: { servicesTimeoutMs: o.servicesTimeout } } : {}),
        });
        if (started.targets.length === 0 && !o.json)
          process.stderr.write(
            `${hotfix} is applied on none of these servers: the removal only ${o.keepRegistered || o.servers ? 'checks that' : 'deletes the registration'}\n`,
          );
        await announceStarted(cfg, started.id, o);
      },
    );
}
