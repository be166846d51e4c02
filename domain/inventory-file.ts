// Inventory files (SPEC §3) as text: YAML or JSON. Apart from domain/fleet.ts
// so that workflow code, which imports the fleet's types and rules, never
// pulls the YAML parser into its bundle (eslint.config.mjs enforces it).
import YAML from 'yaml';
import { FleetServer, InventoryError, validateInventory } from './fleet';

/** Parse and validate an inventory file's text (YAML or JSON). Throws InventoryError naming the entry and field. */
export function parseInventory(text: string, source = 'inventory'): FleetServer[] {
  let doc: unknown;
  try {
    doc = YAML.parse(text); // YAML is a superset of JSON
  } catch (err) {
    throw new InventoryError(`${source} is not valid YAML or JSON: ${(err as Error).message.split('\n')[0]}`);
  }
  return validateInventory(doc, source);
}

/** Render an inventory back to YAML (the simulator writes one). */
export function inventoryToYaml(servers: FleetServer[]): string {
  return YAML.stringify({ servers });
}
