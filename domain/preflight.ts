// The checks every rollout and removal passes before it starts, on facts read
// from the inventory and the Key Manager database. Pure: `km-hotfix plan`,
// `rollout` and `remove` run them for an early refusal (exit 2), the
// workflows' preflight activities run them again as the truth at start.
import type { FleetServer } from './fleet';
import { FAILURE, FailureType } from './failures';

/** A refusal of the preflight: nothing was changed; `type` is the failure type the workflow sees. */
export class PreflightError extends Error {
  override name = 'PreflightError';
  constructor(
    readonly type: FailureType,
    message: string,
  ) {
    super(message);
  }
}

/** The inventory, every server of which Key Manager knows by the same name (km_server). */
export function checkInventory(fleet: FleetServer[], keyManagerServers: Iterable<string>): FleetServer[] {
  if (fleet.length === 0)
    throw new PreflightError(FAILURE.invalid, "the inventory is empty: import one with 'km-hotfix fleet import FILE'");
  const known = new Set(keyManagerServers);
  const strangers = fleet.filter((s) => !known.has(s.name)).map((s) => s.name);
  if (strangers.length > 0) {
    throw new PreflightError(
      FAILURE.invalid,
      `inventory servers ${strangers.slice(0, 5).join(', ')} are not in the Key Manager database's km_server table: inventory names must match Key Manager's server names (check KM_DATABASE_URL)`,
    );
  }
  return fleet;
}

export interface Registered {
  sha256: string;
  fileName: string;
}

/**
 * A rollout applies a registered hotfix, or brings its file (`fileSha256`),
 * which must then be the one registered under that Name if any. Returns
 * whether the Name is registered now.
 */
export function checkRegistration(
  name: string,
  registered: Registered | undefined,
  fileSha256: string | undefined,
): boolean {
  if (fileSha256 !== undefined) {
    if (registered && registered.sha256 !== fileSha256) {
      throw new PreflightError(
        FAILURE.conflict,
        `Key Manager already has a different file registered as ${name} (${registered.fileName}): remove it first with 'km-hotfix remove ${name}', or roll out the registered one by its Name`,
      );
    }
  } else if (!registered) {
    throw new PreflightError(
      FAILURE.unknownHotfix,
      `${name} is not registered in Key Manager: upload it first with 'km-hotfix upload FILE', or pass the file to 'km-hotfix rollout' ('km-hotfix hotfixes' lists what is registered)`,
    );
  }
  return !!registered;
}

export interface RemovalPlan {
  /** The servers in scope (--servers, or the whole inventory), in inventory order. */
  scope: FleetServer[];
  /** Servers in scope that list the hotfix, in inventory order. */
  targets: string[];
}

/** Where a removal unapplies the hotfix: `servers` (empty = everywhere) must be inventory names; something must be there to remove. */
export function planRemoval(input: {
  hotfix: string;
  fleet: FleetServer[];
  servers: string[];
  registered: boolean;
  appliedOn: ReadonlySet<string>;
}): RemovalPlan {
  const names = new Set(input.fleet.map((s) => s.name));
  const unknown = input.servers.filter((n) => !names.has(n));
  if (unknown.length)
    throw new PreflightError(
      FAILURE.invalid,
      `--servers names ${unknown.join(', ')}, not in the inventory: run 'km-hotfix fleet list' for the names`,
    );
  if (!input.registered && input.appliedOn.size === 0) {
    throw new PreflightError(
      FAILURE.unknownHotfix,
      `${input.hotfix} is not registered in Key Manager and applied nowhere: nothing to remove ('km-hotfix hotfixes' lists what is registered)`,
    );
  }
  const inScope = input.servers.length ? new Set(input.servers) : names;
  const scope = input.fleet.filter((s) => inScope.has(s.name));
  return { scope, targets: scope.filter((s) => input.appliedOn.has(s.name)).map((s) => s.name) };
}
