// `km-hotfix list`: recent rollouts, removals and uploads from the ledger.
// `km-hotfix hotfixes`: Key Manager's System → Hotfixes and Hotfixes Applied.
import type { Command } from 'commander';
import { recentRollouts } from '../../store/ledger-reads';
import { formatTable } from './fleet';
import { listText } from '../render/list';
import { outputWidth } from '../render/fit';
import { config, wholeNumber, withKeyManager, withOrchestrator } from './common';

function when(d: Date): string {
  return d.toISOString().replace('T', ' ').slice(0, 19) + 'Z';
}

export function registerList(program: Command): void {
  program
    .command('list')
    .summary('recent rollouts, removals and uploads, newest first (from the ledger)')
    .description(
      "Recent rollouts, removals and uploads from the orchestrator's ledger (it outlives Temporal's retention), newest first, with their phase and outcome. One line each when that fits the terminal (COLUMNS, or the terminal's width; a pipe gets whole lines), else a few lines each, the id first and alone.",
    )
    .option('--limit <n>', 'how many', wholeNumber('--limit', 1), 20)
    .option('--json', 'one JSON document')
    .addHelpText(
      'after',
      `
Examples:
  km-hotfix list --limit 5
  km-hotfix status ID          # details of one`,
    )
    .action(async (o: { limit: number; json?: boolean }) => {
      const rows = await withOrchestrator(config(), (sql) => recentRollouts(sql, o.limit));
      if (o.json) {
        console.log(JSON.stringify({ rollouts: rows }, null, 2));
        return;
      }
      if (rows.length === 0) {
        console.error("no rollouts yet: start one with 'km-hotfix rollout HOTFIX'");
        return;
      }
      console.log(listText(rows, outputWidth()));
    });

  program
    .command('hotfixes')
    .summary("registered hotfixes and where each is applied (Key Manager's System → Hotfixes / Hotfixes Applied)")
    .description(
      'Hotfixes registered in the Key Manager database, and for each the servers whose Hotfixes Applied lists it.',
    )
    .option('--json', 'one JSON document')
    .addHelpText(
      'after',
      `
Examples:
  km-hotfix hotfixes
  km-hotfix hotfixes --json | jq '.hotfixes[] | {name, appliedOn}'`,
    )
    .action(async (o: { json?: boolean }) => {
      const { hotfixes, servers } = await withKeyManager(config(), async (km) => ({
        hotfixes: await km.hotfixes(),
        servers: await km.servers(),
      }));
      if (o.json) {
        console.log(JSON.stringify({ hotfixes, servers: servers.map((s) => s.name) }, null, 2));
        return;
      }
      if (hotfixes.length === 0) {
        console.error("no hotfix is registered in Key Manager: 'km-hotfix upload FILE' registers one");
        return;
      }
      console.log(
        formatTable(
          ['NAME', 'VERSION', 'FILE', 'UPLOADED', 'APPLIED ON'],
          hotfixes.map((h) => [
            h.name,
            h.version,
            h.fileName,
            when(h.uploadedAt),
            `${h.appliedOn.length}/${servers.length}${h.appliedOn.length ? `: ${h.appliedOn.join(', ')}` : ''}`,
          ]),
        ),
      );
    });
}
