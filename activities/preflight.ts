// Preflight and removal planning: read-only look-ups in the inventory, the
// Key Manager database and (health checks) the servers themselves. Nothing
// here changes a server or a database.
import { setMaxListeners } from 'node:events';
import type { Sql } from 'postgres';
import type { KeyManagerDatabase } from '../keymanager/database';
import type { KeyManagerSsh } from '../keymanager/key-manager-ssh';
import { HotfixNameError, parseHotfixName, Component } from '../domain/hotfix';
import { compactPlan, packServers, parseBatch, planRollout, PlanError, RolloutPlan } from '../domain/plan';
import type { FleetServer } from '../domain/fleet';
import { checkInventory, checkRegistration, planRemoval, PreflightError, RemovalPlan } from '../domain/preflight';
import { hotfixFileInfo } from '../store/hotfix-files';
import { listInventory } from '../store/inventory';
import { nonRetryable, toFailure } from './failures';
import { FAILURE } from '../domain/failures';
import { COMMAND_TIMEOUT_MS, notRunning } from './server-step';
import { activityContext } from './context';
import {
  HEALTH_PROBLEMS_SHOWN,
  type CheckServersInput,
  type HealthProblem,
  type HealthReport,
  type PrepareRemovalInput,
  type PrepareRolloutInput,
  type RemovalContext,
  type RolloutContext,
} from '../domain/messages/preflight';

function invalid(err: unknown): never {
  if (err instanceof PreflightError) throw nonRetryable(err.type, err.message);
  if (err instanceof PlanError || err instanceof HotfixNameError) throw nonRetryable(FAILURE.invalid, err.message);
  throw err;
}

export function preflightActivities(deps: { orchestrator: Sql; kmDb: KeyManagerDatabase; kmSsh: KeyManagerSsh }) {
  const { orchestrator, kmDb, kmSsh } = deps;

  async function inventoryKnownToKeyManager(): Promise<FleetServer[]> {
    try {
      return checkInventory(
        await listInventory(orchestrator),
        (await kmDb.servers()).map((s) => s.name),
      );
    } catch (err) {
      invalid(err);
    }
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
        const file = await hotfixFileInfo(orchestrator, input.uploadSha256, input.uploadFileName);
        if (!file)
          throw nonRetryable(
            FAILURE.invalid,
            `hotfix file ${input.uploadSha256} is not stored: run 'km-hotfix upload FILE' again`,
          );
        if (file.name !== input.hotfix)
          throw nonRetryable(FAILURE.invalid, `the file ${file.fileName} holds ${file.name}, not ${input.hotfix}`);
      }
      try {
        checkRegistration(input.hotfix, registeredRow, input.uploadSha256);
      } catch (err) {
        invalid(err);
      }
      const fleet = await inventoryKnownToKeyManager();
      const hasHotfix = new Set(await kmDb.appliedOn(input.hotfix));
      let plan: RolloutPlan;
      try {
        plan = planRollout({
          component,
          fleet,
          servers: input.servers,
          hasHotfix,
          canary: input.canary,
          batch: parseBatch(input.batch),
        });
      } catch (err) {
        invalid(err);
      }
      return {
        component,
        plan: compactPlan(plan, fleet),
        registered: !!registeredRow,
        sha256: registeredRow?.sha256 ?? null,
      };
    },

    async prepareRemoval(input: PrepareRemovalInput): Promise<RemovalContext> {
      let component: Component;
      try {
        component = parseHotfixName(input.hotfix).component;
      } catch (err) {
        invalid(err);
      }
      const fleet = await inventoryKnownToKeyManager();
      const row = await kmDb.hotfix(input.hotfix);
      const registered = !!row;
      const appliedOn = new Set(await kmDb.appliedOn(input.hotfix));
      let removal: RemovalPlan;
      try {
        removal = planRemoval({ hotfix: input.hotfix, fleet, servers: input.servers, registered, appliedOn });
      } catch (err) {
        invalid(err);
      }
      const targets = new Set(removal.targets);
      return {
        component,
        scope: packServers(removal.scope),
        targets: removal.scope.flatMap((s, i) => (targets.has(s.name) ? [i] : [])),
        registered,
        sha256: row?.sha256 ?? null,
      };
    },

    /**
     * Every server answers over SSH with its pinned host key and has all
     * services RUNNING. Returns the problems rather than failing at the first,
     * so the user sees all of them at once.
     */
    async checkServers(input: CheckServersInput): Promise<HealthReport> {
      const fleet = new Map((await listInventory(orchestrator)).map((s) => [s.name, s]));
      const problems: HealthProblem[] = [];
      const ctx = activityContext();
      // 16 checks at a time share the cancellation signal, each adding (and removing) a listener.
      if (ctx) setMaxListeners(64, ctx.cancellationSignal);
      const queue = [...input.servers];
      // Every second, not per server: a slow server must not look like a dead worker (workflows/steps.ts HEARTBEAT_TIMEOUT).
      const ticker = ctx ? setInterval(() => ctx?.heartbeat(), 1000) : undefined;
      const worker = async () => {
        for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
          const target = fleet.get(name);
          if (!target) {
            problems.push({ server: name, type: FAILURE.invalid, message: `${name} is not in the inventory` });
            continue;
          }
          try {
            const services = await kmSsh.servicesStatus(target, {
              timeoutMs: COMMAND_TIMEOUT_MS.status,
              signal: ctx?.cancellationSignal,
            });
            const down = notRunning(services);
            if (services.length === 0 || down.length > 0) {
              problems.push({
                server: name,
                type: FAILURE.servicesDown,
                message: `${name}: not healthy (${down.map((d) => `${d.name} ${d.state}`).join(', ') || 'no services'}): fix it or leave it out with --servers`,
              });
            }
          } catch (err) {
            const f = toFailure(err, name);
            problems.push({ server: name, type: f.type ?? 'Error', message: f.message });
          }
        }
      };
      // Bounded parallelism: a 2,000-server preflight must not open 2,000 connections at once.
      try {
        ctx?.heartbeat();
        await Promise.all(Array.from({ length: Math.min(16, queue.length) }, worker));
      } finally {
        if (ticker) clearInterval(ticker);
      }
      const order = new Map(input.servers.map((n, i) => [n, i]));
      const sorted = problems.sort((a, b) => (order.get(a.server) ?? 0) - (order.get(b.server) ?? 0));
      return {
        problems: sorted.slice(0, HEALTH_PROBLEMS_SHOWN),
        more: Math.max(0, sorted.length - HEALTH_PROBLEMS_SHOWN),
      };
    },
  };
}
