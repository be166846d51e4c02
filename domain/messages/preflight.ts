// Preflight as it crosses the workflow boundary: what a rollout or a
// removal asks to be planned and checked (activities/preflight.ts), and the
// plan, the servers and the health problems it hands back.
import type { Component } from '../hotfix';
import type { CompactPlan, PackedServers } from '../plan';
import type { Role } from '../fleet';

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
  uploadFileName?: string;
}

/** Compact (domain/plan.ts PackedServers): a 20,000-server answer stays ~350 KiB, below Temporal's 512 KiB payload warning. */
export interface RolloutContext {
  component: Component;
  plan: CompactPlan;
  registered: boolean;
  /** sha256 of the file registered in Key Manager under the Name, if any: what signed decisions name. */
  sha256: string | null;
}

export interface RemovalContext {
  component: Component;
  /** Every server in scope, in inventory order (compact, as for a rollout). */
  scope: PackedServers;
  /** Positions in scope of the servers that list the hotfix: the ones to remove it from. */
  targets: number[];
  registered: boolean;
  sha256: string | null;
}

export interface HealthProblem {
  server: string;
  type: string;
  message: string;
}

/** The problems found, at most HEALTH_PROBLEMS_SHOWN of them, and how many more: the answer stays small on a sick fleet. */
export interface HealthReport {
  problems: HealthProblem[];
  more: number;
}
export const HEALTH_PROBLEMS_SHOWN = 20;

/** A removal's scope, as the workflow asks for its plan. */
export interface PrepareRemovalInput {
  hotfix: string;
  servers: string[];
}

/** The servers whose health a preflight checks. */
export interface CheckServersInput {
  servers: string[];
}
