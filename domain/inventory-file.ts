// Inventory files (SPEC §3) as text: YAML or JSON. Apart from domain/fleet.ts
// so that workflow code, which imports the fleet's types and rules, never
// pulls the YAML parser into its bundle (eslint.config.mjs enforces it).
import YAML from 'yaml';
import { FleetServer, InventoryError, validateInventory } from './fleet';

function oneLine(text: string): string {
  const l = text.split('\n')[0];
  return l.length > 160 ? `${l.slice(0, 159)}…` : l;
}

/**
 * Parse and validate an inventory file's text (YAML or JSON). Throws InventoryError naming the entry and field.
 * maxBytes bounds the text before the parser sees it (the CLI also bounds the read).
 */
export function parseInventory(text: string, source = 'inventory', opts: { maxBytes?: number } = {}): FleetServer[] {
  if (opts.maxBytes !== undefined && Buffer.byteLength(text) > opts.maxBytes)
    throw new InventoryError(
      `${source} is larger than ${opts.maxBytes} bytes: split the fleet or raise KM_HOTFIX_MAX_INVENTORY_MIB`,
    );
  let doc: unknown;
  try {
    // Plain data only: an unknown tag (!!js/function, !!python/...) is an error, not a warning on stderr.
    const parsed = YAML.parseDocument(text, { logLevel: 'silent', uniqueKeys: true }); // YAML is a superset of JSON
    const problem = parsed.errors[0] ?? parsed.warnings[0];
    if (problem?.code === 'TAG_RESOLVE_FAILED')
      throw new Error(
        `${oneLine(problem.message).replace(/:$/, '')}: an inventory holds plain text, numbers and true/false, no YAML tags`,
      );
    if (problem) throw problem;
    doc = parsed.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new InventoryError(`${source} is not valid YAML or JSON: ${oneLine((err as Error).message)}`);
  }
  return validateInventory(doc, source);
}

/** Render an inventory back to YAML (the simulator writes one). */
export function inventoryToYaml(servers: FleetServer[]): string {
  return YAML.stringify({ servers });
}
