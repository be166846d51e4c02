// `km-hotfix fleet import FILE` / `fleet list`: the inventory (SPEC §3).
import { Command } from 'commander';
import { InventoryError, FleetServer } from '../../domain/fleet';
import { parseInventory } from '../../domain/inventory-file';
import { loadConfig } from '../../platform/config';
import { CliError, EXIT } from '../errors';
import { inert } from '../../domain/terminal';
import { limits, readLimitedFile } from '../files';
import { connectOrchestrator } from '../../store/database';
import { listInventory, replaceInventory } from '../../store/inventory';

async function readInventoryFile(file: string): Promise<FleetServer[]> {
  // Bounded before parsing: a huge file would cost gigabytes of memory in the YAML parser.
  const maxBytes = limits().inventoryBytes;
  const { bytes } = await readLimitedFile(file, {
    maxBytes,
    followSymlinks: true,
    what: 'a YAML or JSON inventory',
    limitVariable: 'KM_HOTFIX_MAX_INVENTORY_MIB',
  });
  try {
    return parseInventory(bytes.toString('utf8'), file, { maxBytes });
  } catch (err) {
    if (err instanceof InventoryError) throw new CliError(err.message, EXIT.refused);
    throw err;
  }
}

/** Plain columns, padded to the widest cell; cells are printed inert (they come from files and people). */
export function formatTable(header: string[], raw: string[][]): string {
  const rows = raw.map((r) => r.map(inert));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

export function registerFleet(program: Command): void {
  const fleet = program
    .command('fleet')
    .description('the fleet inventory: which Key Manager servers exist and how to reach them');

  fleet
    .command('import <file>')
    .description('replace the inventory with the servers of a YAML or JSON file (see the README, "Fleet inventory")')
    .action(async (file: string) => {
      // Validate everything before touching the database: a bad file changes nothing.
      const servers = await readInventoryFile(file);
      const sql = await connectOrchestrator(loadConfig());
      try {
        await replaceInventory(sql, servers);
      } finally {
        await sql.end({ timeout: 5 });
      }
      const count = (role: string) => servers.filter((s) => s.role === role).length;
      console.log(
        `imported ${servers.length} server${servers.length === 1 ? '' : 's'} (${count('frontend')} frontend, ${count('backend')} backend, ${count('both')} both)`,
      );
    });

  fleet
    .command('list')
    .description('list the inventory in order')
    .option('--json', 'one JSON document ({"servers": [...]}, the import format)')
    .action(async (opts: { json?: boolean }) => {
      const sql = await connectOrchestrator(loadConfig());
      let servers: FleetServer[];
      try {
        servers = await listInventory(sql);
      } finally {
        await sql.end({ timeout: 5 });
      }
      if (opts.json) {
        console.log(JSON.stringify({ servers }, null, 2));
        return;
      }
      if (servers.length === 0) {
        console.error("the inventory is empty: import one with 'km-hotfix fleet import FILE'");
        return;
      }
      console.log(
        formatTable(
          ['NAME', 'ROLE', 'HOST:PORT', 'USER', 'SUDO', 'URL'],
          servers.map((s) => [s.name, s.role, `${s.host}:${s.port}`, s.user, s.sudo ? 'yes' : 'no', s.url ?? '-']),
        ),
      );
    });
}
