// `km-hotfix plan HOTFIX`: the dry run of a rollout. Runs the same checks and
// the same planRollout as `rollout`, reads Maximum Processes, changes nothing.
import type { Command } from 'commander';
import { planDocument, planText } from '../render/plan';
import { config, nameList, withDatabases } from './common';
import { prepareRollout, readHotfixArg } from './prepare';

export function registerPlan(program: Command): void {
  program
    .command('plan <hotfix>')
    .summary('show what a rollout would do, without changing anything')
    .description(
      `Show what 'km-hotfix rollout' would do with the same options, without changing anything: which server is the canary and why, which backends would be drained (with their current Maximum Processes), the fan-out window and the order the servers start in, and the exact commands each server would run — apply, restart, and the unapply commands of a rollback. HOTFIX is a registered Name or a hotfix file.`,
    )
    .option('--servers <a,b>', 'only these servers (default: the whole inventory)', nameList('--servers'))
    .option('--canary <server>', 'verify on this server first')
    .option('--batch <N|P%>', 'fan-out window: servers patched at once at most', '1')
    .option('--follow-symlinks', 'read a hotfix file given as a symbolic link (refused otherwise)')
    .option('--json', 'one JSON document')
    .addHelpText(
      'after',
      `
Examples:
  km-hotfix plan hotfix_backend_fix_queue_stall
  km-hotfix plan ./sshmgr-3.0.0-hotfix_frontend_fix_login_UKM-2002.gz --canary km-fe-2 --batch 50%
  km-hotfix plan hotfix_common_fix_tags_and_stats --json | jq .order`,
    )
    .action(
      async (
        hotfix: string,
        o: { servers?: string[]; canary?: string; batch: string; json?: boolean; followSymlinks?: boolean },
      ) => {
        const arg = await readHotfixArg(hotfix, { followSymlinks: o.followSymlinks });
        const doc = await withDatabases(config(), async (db) =>
          planDocument(await prepareRollout(db, arg, o), o.batch),
        );
        console.log(o.json ? JSON.stringify(doc, null, 2) : planText(doc));
      },
    );
}
