// The plan of a rollout as its phases use it: the canary, the rest in plan
// order, the window and the rollback's scope (from the preflight's plan).
import { expandPlan } from '../domain/plan';
import type { RolloutContext } from '../domain/messages/preflight';

/** The plan as the phases use it: the canary, the rest in plan order, the window, the rollback's scope. */
export interface RolloutPlan {
  canary: string;
  canaryUrl?: string;
  canaryReason: string;
  /** Backends to drain while the canary is verified. */
  drain: string[];
  rest: string[];
  /** --batch is a window: at most this many servers at once, the next starts when one finishes. */
  window: number;
  /** The rollback's scope is every target (skipped ones excepted), in reverse plan order: never a list kept in memory. */
  scope: string[];
}

/** The plan of a rollout that has a canary, as the phases use it. */
export function rolloutPlan(ctx: RolloutContext): { plan?: RolloutPlan; targets: ReturnType<typeof expandPlan> } {
  const targets = expandPlan(ctx.plan);
  const c = ctx.plan.canary;
  if (!c) return { targets };
  const { rest } = targets;
  return {
    targets,
    plan: {
      canary: c.server,
      ...(c.url ? { canaryUrl: c.url } : {}),
      canaryReason: c.reason,
      drain: ctx.plan.drain,
      rest,
      window: ctx.plan.window,
      scope: [c.server, ...rest].reverse(),
    },
  };
}
