// The rollout plan, from the vendor procedure: which server is the canary,
// which backends are drained while it is verified, and the fan-out window and
// the order its servers start in. Pure: the workflow, the activities and
// `km-hotfix plan` all use it.
import type { Component } from './hotfix';
import { runLength } from './rollout';
import { FleetServer, servesBackend, servesFrontend } from './fleet';
import type { Role } from './fleet';

export class PlanError extends Error {
  override name = 'PlanError';
}

export type BatchSize = { kind: 'count'; count: number } | { kind: 'percent'; percent: number };

/** `--batch N` or `--batch P%`. */
export function parseBatch(text: string): BatchSize {
  const m = /^(\d+)(%?)$/.exec(text.trim());
  if (m && m[2] === '%') {
    const percent = Number(m[1]);
    if (percent >= 1 && percent <= 100) return { kind: 'percent', percent };
  } else if (m) {
    const count = Number(m[1]);
    if (count >= 1 && count <= 10_000) return { kind: 'count', count };
  }
  throw new PlanError(
    `--batch must be a number of servers (1 or more) or a percentage from 1% to 100%, e.g. --batch 5 or --batch 20% (got '${text}')`,
  );
}

/** The fan-out window over `remaining` servers: servers in flight at most (a percentage rounds up, at least 1). */
export function batchWidth(batch: BatchSize, remaining: number): number {
  if (batch.kind === 'count') return batch.count;
  return Math.max(1, Math.ceil((remaining * batch.percent) / 100));
}

/** How the fan-out window takes its servers (workflows/batch-window.ts), as `km-hotfix plan` shows it. */
export interface FanoutOrder {
  /** Servers in flight at most (--batch). */
  window: number;
  /** Servers one window place patches one after another (domain/rollout.ts runLength). */
  runLength: number;
  /** Consecutive servers in inventory order, in the order the window's places take them: the first `window` at once. */
  runs: string[][];
  /** The order the servers start in when each takes as long as the others: each entry starts at once. */
  starts: string[][];
}

/**
 * The window cuts the servers into runs of runLength consecutive servers; each
 * of its places takes the next run when it is free and patches that run's
 * servers one after another. So with 4 servers and a window of 2 the first and
 * the third start at once, then the second and the fourth. `starts` assumes
 * equal times per server: a slow one delays only its own place. It is exact
 * for a window and fleet of one batch child (500 servers, the default slice);
 * on a larger fleet lanes of children take slices of 500 side by side.
 */
export function fanoutOrder(servers: readonly string[], window: number): FanoutOrder {
  const length = runLength(window, servers.length);
  const runs: string[][] = [];
  for (let i = 0; i < servers.length; i += length) runs.push(servers.slice(i, i + length));
  const starts: string[][] = [];
  runs.forEach((run, j) =>
    run.forEach((name, m) => {
      // Run j starts when its place has finished the runs before it in that place (all but the last are full).
      const at = Math.floor(j / window) * length + m;
      (starts[at] ??= []).push(name);
    }),
  );
  return { window, runLength: length, runs, starts };
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `--approval-timeout 30m`, `24h`, `90s`, `1h30m`: milliseconds. */
export function parseDuration(text: string, option = '--approval-timeout'): number {
  const t = text.trim();
  let total = 0;
  let rest = t;
  const re = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)/;
  while (rest.length > 0) {
    const m = re.exec(rest);
    if (!m) {
      total = NaN;
      break;
    }
    total += Number(m[1]) * UNITS[m[2]];
    rest = rest.slice(m[0].length);
  }
  if (!t || !Number.isFinite(total) || total < 1000 || total > 30 * 86_400_000) {
    throw new PlanError(`${option} must be a duration from 1s to 30d such as 90s, 30m, 24h or 1h30m (got '${text}')`);
  }
  return Math.round(total);
}

export interface CanaryChoice {
  server: string;
  reason: string;
}

/** Servers of the right role for a canary of this component. */
export function canaryCandidates(component: Component, servers: readonly FleetServer[]): FleetServer[] {
  if (component === 'frontend') return servers.filter((s) => servesFrontend(s.role));
  if (component === 'backend') return servers.filter((s) => servesBackend(s.role));
  return [...servers];
}

/**
 * The canary: the first server (inventory order) of the role the hotfix type
 * asks for that does not have the hotfix yet; a dedicated frontend or backend
 * is preferred over a 'both' server, so the verification isolates one role.
 */
export function chooseCanary(
  component: Component,
  unpatched: readonly FleetServer[],
  requested?: string,
): CanaryChoice {
  const candidates = canaryCandidates(component, unpatched);
  const roleWord = component === 'common' ? 'any server' : `a ${component} (role ${component} or both)`;
  if (requested !== undefined) {
    const s = unpatched.find((x) => x.name === requested);
    if (!s)
      throw new PlanError(
        `--canary ${requested} is not one of the servers this rollout would patch: choose one of ${unpatched.map((x) => x.name).join(', ') || '(none)'}`,
      );
    if (!candidates.includes(s))
      throw new PlanError(
        `--canary ${requested} has role ${s.role}, but a hotfix_${component}_* hotfix must be verified first on ${roleWord}: choose one of ${candidates.map((x) => x.name).join(', ') || '(none)'}`,
      );
    return { server: s.name, reason: `chosen with --canary (${s.role})` };
  }
  if (candidates.length === 0)
    throw new PlanError(
      `a hotfix_${component}_* hotfix is verified first on ${roleWord}, and none of the target servers without it is one: add one to --servers`,
    );
  if (component === 'common')
    return {
      server: candidates[0].name,
      reason: 'common hotfix: any server may be first; the first in inventory order',
    };
  const dedicated = candidates.find((s) => s.role === component);
  const pick = dedicated ?? candidates[0];
  const why =
    component === 'frontend'
      ? 'frontend hotfix: verified on a frontend, connecting to it directly rather than through the load balancer'
      : 'backend hotfix: verified on a backend while every other unpatched backend has Maximum Processes 0';
  return { server: pick.name, reason: `${why}; the first ${dedicated ? component : 'both'} server in inventory order` };
}

/**
 * Backends to drain (Maximum Processes 0) while a backend hotfix is verified:
 * every backend of the fleet except the canary that does not have the hotfix.
 */
export function backendsToDrain(
  component: Component,
  fleet: readonly FleetServer[],
  canary: string,
  hasHotfix: ReadonlySet<string>,
): string[] {
  if (component !== 'backend') return [];
  return fleet.filter((s) => servesBackend(s.role) && s.name !== canary && !hasHotfix.has(s.name)).map((s) => s.name);
}

export interface RolloutPlanInput {
  component: Component;
  /** The whole inventory, in inventory order. */
  fleet: readonly FleetServer[];
  /** Names to patch (default: the whole fleet); validated against the fleet. */
  servers?: readonly string[];
  /** Servers that already list the hotfix under "Hotfixes Applied". */
  hasHotfix: ReadonlySet<string>;
  canary?: string;
  batch: BatchSize;
}

export interface RolloutPlan {
  targets: string[];
  skipped: string[];
  /** Undefined when every target already has the hotfix. */
  canary?: CanaryChoice;
  drain: string[];
  /** The unpatched targets after the canary, in inventory order: the fan-out. */
  fanout: string[];
  /** Fan-out servers in flight at most (--batch over the fan-out's servers); 0 without a fan-out. */
  window: number;
}

export function planRollout(input: RolloutPlanInput): RolloutPlan {
  const byName = new Map(input.fleet.map((s) => [s.name, s]));
  let targets: FleetServer[];
  if (input.servers && input.servers.length > 0) {
    const unknown = input.servers.filter((n) => !byName.has(n));
    if (unknown.length)
      throw new PlanError(
        `--servers names ${unknown.join(', ')}, not in the inventory: run 'km-hotfix fleet list' for the names`,
      );
    const dup = input.servers.filter((n, i) => input.servers!.indexOf(n) !== i);
    if (dup.length) throw new PlanError(`--servers names ${dup.join(', ')} more than once`);
    const wanted = new Set(input.servers);
    targets = input.fleet.filter((s) => wanted.has(s.name)); // inventory order
  } else {
    targets = [...input.fleet];
  }
  if (targets.length === 0)
    throw new PlanError('there are no servers to patch: import an inventory first (km-hotfix fleet import FILE)');
  const skipped = targets.filter((s) => input.hasHotfix.has(s.name)).map((s) => s.name);
  const unpatched = targets.filter((s) => !input.hasHotfix.has(s.name));
  if (unpatched.length === 0) {
    if (input.canary !== undefined)
      throw new PlanError(`--canary ${input.canary}: every target server already has this hotfix`);
    return { targets: targets.map((s) => s.name), skipped, drain: [], fanout: [], window: 0 };
  }
  const verifiedOnRole =
    canaryCandidates(
      input.component,
      targets.filter((s) => input.hasHotfix.has(s.name)),
    ).length > 0;
  const canary =
    verifiedOnRole && input.canary === undefined && canaryCandidates(input.component, unpatched).length === 0
      ? // A re-run after every server of the canary's role got it: the role was verified then; the next server goes first.
        {
          server: unpatched[0].name,
          reason: `every ${input.component} target already has the hotfix (verified before); the first remaining server goes first`,
        }
      : chooseCanary(input.component, unpatched, input.canary);
  const rest = unpatched.filter((s) => s.name !== canary.server).map((s) => s.name);
  return {
    targets: targets.map((s) => s.name),
    skipped,
    canary,
    drain: backendsToDrain(input.component, input.fleet, canary.server, input.hasHotfix),
    fanout: rest,
    window: rest.length > 0 ? batchWidth(input.batch, rest.length) : 0,
  };
}

/** 86400000 → '24h', 5400000 → '1h30m', 2000 → '2s': the form --approval-timeout takes. */
export function formatDuration(ms: number): string {
  let rest = Math.round(ms / 1000);
  if (rest === 0) return `${ms}ms`;
  const parts: string[] = [];
  for (const [unit, size] of [
    ['d', 86_400],
    ['h', 3_600],
    ['m', 60],
    ['s', 1],
  ] as const) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  return parts.join('');
}

/**
 * Servers and their roles as an activity hands them to a workflow: names,
 * and one letter per role. 20,000 servers named like km3-be-12345 take
 * ~320 KiB this way instead of ~800 KiB as objects: one Temporal payload
 * must stay below its 512 KiB warning (2 MiB fails the workflow task).
 */
export interface PackedServers {
  names: string[];
  /** One letter per name: f frontend, b backend, 2 both. */
  roles: string;
}

const ROLE_LETTER: Record<Role, string> = { frontend: 'f', backend: 'b', both: '2' };
const LETTER_ROLE: Record<string, Role> = { f: 'frontend', b: 'backend', 2: 'both' };

export function packServers(servers: readonly { name: string; role: Role }[]): PackedServers {
  return { names: servers.map((s) => s.name), roles: servers.map((s) => ROLE_LETTER[s.role]).join('') };
}

export function unpackServers(p: PackedServers): { name: string; role: Role }[] {
  return p.names.map((name, i) => ({ name, role: LETTER_ROLE[p.roles[i] ?? '2'] ?? 'both' }));
}

/** A rollout plan as the preflight activity returns it: compact (see PackedServers), no batches (the workflow keeps a window). */
export interface CompactPlan {
  /** The targets in inventory order, with their roles. */
  targets: PackedServers;
  /** Positions in targets of the servers that already have it. */
  skipped: number[];
  canary?: CanaryChoice & { url?: string };
  drain: string[];
  /** Servers in flight at once in fan-out (the --batch width). */
  window: number;
}

export function compactPlan(plan: RolloutPlan, fleet: readonly FleetServer[]): CompactPlan {
  const byName = new Map(fleet.map((s) => [s.name, s]));
  const skipped = new Set(plan.skipped);
  const canaryUrl = plan.canary ? byName.get(plan.canary.server)?.url : undefined;
  return {
    targets: packServers(plan.targets.map((name) => ({ name, role: byName.get(name)?.role ?? 'both' }))),
    skipped: plan.targets.flatMap((n, i) => (skipped.has(n) ? [i] : [])),
    ...(plan.canary ? { canary: { ...plan.canary, ...(canaryUrl ? { url: canaryUrl } : {}) } } : {}),
    drain: plan.drain,
    window: Math.max(1, Math.min(plan.window, plan.fanout.length)),
  };
}

/** The plan as the workflow uses it: targets with roles, skipped names, and the rest (after the canary) in order. */
export function expandPlan(c: CompactPlan): {
  targets: { name: string; role: Role }[];
  skipped: string[];
  rest: string[];
} {
  const targets = unpackServers(c.targets);
  const skip = new Set(c.skipped);
  const skipped = c.skipped.map((i) => c.targets.names[i]);
  const rest = c.targets.names.filter((n, i) => !skip.has(i) && n !== c.canary?.server);
  return { targets, skipped, rest };
}
