// Preflight and removal planning: read-only look-ups in the inventory, the
// Key Manager database and (health checks) the servers themselves. Nothing
// here changes a server or a database.
import { setMaxListeners } from 'node:events';
import { Context } from '@temporalio/activity';
import type { Sql } from 'postgres';
import type { KeyManagerDatabase } from '../keymanager/database';
import type { KeyManagerSsh } from '../keymanager/key-manager-ssh';
import { HotfixNameError, parseHotfixName, Component } from '../domain/hotfix';
import { parseBatch, planRollout, PlanError, RolloutPlan } from '../domain/plan';
import type { FleetServer, Role } from '../domain/fleet';
import { hotfixFileInfo } from '../store/hotfix-files';
import { listInventory } from '../store/inventory';
import { FAILURE, nonRetryable, toFailure } from './failures';
import { COMMAND_TIMEOUT_MS, notRunning } from './key-manager-ssh';

export interface ServerSummary {
  name: string;
  role: Role;
  url?: string;
}

export interface PrepareRolloutInput {
  hotfix: string;
  servers: string[];
  canary?: string;
  batch: string;
  /** The rollout brings its own file (uploaded after preflight). */
  uploadSha256?: string;
}

export interface RolloutContext {
  component: Component;
  /** Every target, plus every backend that may be drained, in inventory order. */
  servers: ServerSummary[];
  plan: RolloutPlan;
  registered: boolean;
}

export interface RemovalContext {
  component: Component;
  servers: ServerSummary[];
  /** Servers (inventory order) that list the hotfix and are in scope. */
  targets: string[];
  registered: boolean;
}

export interface HealthProblem {
  server: string;
  type: string;
  message: string;
}

function invalid(err: unknown): never {
  if (err instanceof PlanError || err instanceof HotfixNameError) throw nonRetryable(FAILURE.invalid, err.message);
  throw err;
}

export function preflightActivities(deps: { orchestrator: Sql; kmDb: KeyManagerDatabase; kmSsh: KeyManagerSsh }) {
  const { orchestrator, kmDb, kmSsh } = deps;

  async function inventoryKnownToKeyManager(): Promise<FleetServer[]> {
    const fleet = await listInventory(orchestrator);
    if (fleet.length === 0) throw nonRetryable(FAILURE.invalid, "the inventory is empty: import one with 'km-hotfix fleet import FILE'");
    const known = new Set((await kmDb.servers()).map((s) => s.name));
    const strangers = fleet.filter((s) => !known.has(s.name)).map((s) => s.name);
    if (strangers.length > 0) {
      throw nonRetryable(FAILURE.invalid, `inventory servers ${strangers.slice(0, 5).join(', ')} are not in the Key Manager database's km_server table: inventory names must match Key Manager's server names`);
    }
    return fleet;
  }

  return {
    async prepareRollout(input: PrepareRolloutInput): Promise<RolloutContext> {
      let component: Component;
      try {
        component = parseHotfixName(input.hotfix).component;
      } catch (err) {
        invalid(err);
      }
      const registeredRow = await kmDb.hotfix(input.hotfix);
      if (input.uploadSha256) {
        const file = await hotfixFileInfo(orchestrator, input.uploadSha256);
        if (!file) throw nonRetryable(FAILURE.invalid, `hotfix file ${input.uploadSha256} is not stored: run 'km-hotfix upload FILE' again`);
        if (file.name !== input.hotfix) throw nonRetryable(FAILURE.invalid, `the file ${file.fileName} holds ${file.name}, not ${input.hotfix}`);
        if (registeredRow && registeredRow.sha256 !== input.uploadSha256) {
          throw nonRetryable(FAILURE.conflict, `Key Manager already has a different file registered as ${input.hotfix} (${registeredRow.fileName}): remove it first with 'km-hotfix remove ${input.hotfix}'`);
        }
      } else if (!registeredRow) {
        throw nonRetryable(FAILURE.unknownHotfix, `${input.hotfix} is not registered in Key Manager: upload it first with 'km-hotfix upload FILE', or pass the file to 'km-hotfix rollout'`);
      }
      const fleet = await inventoryKnownToKeyManager();
      const hasHotfix = new Set(await kmDb.appliedOn(input.hotfix));
      let plan: RolloutPlan;
      try {
        plan = planRollout({ component, fleet, servers: input.servers, hasHotfix, canary: input.canary, batch: parseBatch(input.batch) });
      } catch (err) {
        invalid(err);
      }
      const involved = new Set([...plan.targets, ...plan.drain]);
      return {
        component,
        servers: fleet.filter((s) => involved.has(s.name)).map((s) => ({ name: s.name, role: s.role, ...(s.url ? { url: s.url } : {}) })),
        plan,
        registered: !!registeredRow,
      };
    },

    async prepareRemoval(input: { hotfix: string; servers: string[] }): Promise<RemovalContext> {
      let component: Component;
      try {
        component = parseHotfixName(input.hotfix).component;
      } catch (err) {
        invalid(err);
      }
      const fleet = await inventoryKnownToKeyManager();
      const names = new Set(fleet.map((s) => s.name));
      const unknown = input.servers.filter((n) => !names.has(n));
      if (unknown.length) throw nonRetryable(FAILURE.invalid, `--servers names ${unknown.join(', ')}, not in the inventory: run 'km-hotfix fleet list' for the names`);
      const registered = !!(await kmDb.hotfix(input.hotfix));
      const applied = new Set(await kmDb.appliedOn(input.hotfix));
      if (!registered && applied.size === 0) throw nonRetryable(FAILURE.unknownHotfix, `${input.hotfix} is not registered in Key Manager and applied nowhere: nothing to remove ('km-hotfix hotfixes' lists what is registered)`);
      const scope = input.servers.length ? new Set(input.servers) : names;
      const targets = fleet.filter((s) => applied.has(s.name) && scope.has(s.name)).map((s) => s.name);
      return { component, servers: fleet.filter((s) => scope.has(s.name)).map((s) => ({ name: s.name, role: s.role, ...(s.url ? { url: s.url } : {}) })), targets, registered };
    },

    /**
     * Every server answers over SSH with its pinned host key and has all
     * services RUNNING. Returns the problems rather than failing at the first,
     * so the user sees all of them at once.
     */
    async checkServers(input: { servers: string[] }): Promise<HealthProblem[]> {
      const fleet = new Map((await listInventory(orchestrator)).map((s) => [s.name, s]));
      const problems: HealthProblem[] = [];
      let ctx: Context | undefined;
      try { ctx = Context.current(); } catch { ctx = undefined; }
      // 16 checks at a time share the cancellation signal, each adding (and removing) a listener.
      if (ctx) setMaxListeners(64, ctx.cancellationSignal);
      const queue = [...input.servers];
      const worker = async () => {
        for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
          ctx?.heartbeat();
          const target = fleet.get(name);
          if (!target) { problems.push({ server: name, type: FAILURE.invalid, message: `${name} is not in the inventory` }); continue; }
          try {
            const services = await kmSsh.servicesStatus(target, { timeoutMs: COMMAND_TIMEOUT_MS.status, signal: ctx?.cancellationSignal });
            const down = notRunning(services);
            if (services.length === 0 || down.length > 0) {
              problems.push({ server: name, type: FAILURE.servicesDown, message: `${name}: not healthy (${down.map((d) => `${d.name} ${d.state}`).join(', ') || 'no services'}): fix it or leave it out with --servers` });
            }
          } catch (err) {
            const f = toFailure(err, name);
            problems.push({ server: name, type: f.type ?? 'Error', message: f.message });
          }
        }
      };
      // Bounded parallelism: a 2,000-server preflight must not open 2,000 connections at once.
      await Promise.all(Array.from({ length: Math.min(16, queue.length) }, worker));
      const order = new Map(input.servers.map((n, i) => [n, i]));
      return problems.sort((a, b) => (order.get(a.server) ?? 0) - (order.get(b.server) ?? 0));
    },
  };
}
