// Everything `rollout` and `plan` check before anything starts: the hotfix
// argument (a Name or a file), the options, and the same planRollout the
// workflow runs, on the inventory and the Key Manager database. Every refusal
// is a CliError with exit 2 and one line; nothing here changes anything.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { HotfixFileName, HotfixNameError, parseHotfixFileName, parseHotfixName, Component } from '../../domain/hotfix';
import { parseBatch, planRollout, PlanError, RolloutPlan } from '../../domain/plan';
import type { FleetServer } from '../../domain/fleet';
import { checkInventory, checkRegistration, PreflightError } from '../../domain/preflight';
import type { DrainedBackend } from '../../domain/messages/rollout';
import { listInventory } from '../../store/inventory';
import { conflictingRollouts, stillActiveConflicts } from '../../store/claims';
import type { Client } from '@temporalio/client';
import type { Sql } from 'postgres';
import { workflowRunning } from '../../platform/temporal';
import type { KeyManagerDatabase } from '../../keymanager/database';
import { CliError, EXIT } from '../errors';
import { limits, readLimitedFile } from '../files';
import { isGzip } from '../../domain/input-limits';
import type { Databases } from './common';

/** A hotfix file as read: its name parsed once (the Name, the component, ...), its bytes and digest. */
export interface HotfixFile extends HotfixFileName {
  path: string;
  bytes: Buffer;
  sha256: string;
}

export interface HotfixArg {
  name: string;
  component: Component;
  /** Given when HOTFIX was a file: it is stored and uploaded first. */
  file?: HotfixFile;
}

export function refuse(err: unknown): never {
  if (err instanceof HotfixNameError || err instanceof PlanError || err instanceof PreflightError)
    throw new CliError(err.message, EXIT.refused);
  throw err;
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isFile();
  } catch {
    return false;
  }
}

export interface FileOptions {
  /** Read a hotfix file through a symbolic link (refused otherwise). */
  followSymlinks?: boolean;
}

/** Read a hotfix file: its name must follow the vendor grammar, a regular gzip file within the limit; exit 2 otherwise. */
export async function readHotfixFile(p: string, o: FileOptions = {}): Promise<HotfixFile> {
  let parsed: HotfixFileName;
  try {
    parsed = parseHotfixFileName(path.basename(p));
  } catch (err) {
    refuse(err);
  }
  const { bytes, sha256 } = await readLimitedFile(p, {
    maxBytes: limits().hotfixFileBytes,
    followSymlinks: !!o.followSymlinks,
    what: 'the hotfix file from the vendor',
    limitVariable: 'KM_HOTFIX_MAX_FILE_MIB',
  });
  if (bytes.length === 0) throw new CliError(`${p} is empty: download the hotfix again`, EXIT.refused);
  if (!isGzip(bytes))
    throw new CliError(`${p} is not a gzip file, as vendor hotfixes are: download the hotfix again`, EXIT.refused);
  return { ...parsed, path: p, bytes, sha256 };
}

/**
 * HOTFIX is a file when it ends in .gz or names an existing file; otherwise a
 * Name, checked against the strict grammar (it reaches a shell on every server).
 */
export async function readHotfixArg(arg: string, o: FileOptions = {}): Promise<HotfixArg> {
  if (arg.endsWith('.gz') || (arg.includes('/') && (await isFile(arg)))) {
    const file = await readHotfixFile(arg, o);
    return { name: file.name, component: file.component, file };
  }
  try {
    const { name, component } = parseHotfixName(arg);
    return { name, component };
  } catch (err) {
    refuse(err);
  }
}

/** The inventory, checked against Key Manager's own server list. */
export async function checkedInventory(db: Databases): Promise<FleetServer[]> {
  try {
    return checkInventory(
      await listInventory(db.orchestrator),
      (await db.kmDb.servers()).map((s) => s.name),
    );
  } catch (err) {
    refuse(err);
  }
}

export interface PlanOptions {
  servers?: string[];
  canary?: string;
  batch: string;
}

export interface PreparedRollout {
  hotfix: HotfixArg;
  fleet: FleetServer[];
  plan: RolloutPlan;
  /** The backends that would be drained, with their Maximum Processes now. */
  drained: DrainedBackend[];
  registered: boolean;
  /** sha256 of the file the rollout is about (the given file, else the registered one): what the start signature names. */
  sha256: string;
  /** Active rollouts that touch the same servers or hotfix (a rollout is refused while any). */
  conflicts: { id: string; reason: string }[];
}

async function registration(
  kmDb: KeyManagerDatabase,
  hotfix: HotfixArg,
): Promise<{ registered: boolean; sha256: string }> {
  const row = await kmDb.hotfix(hotfix.name);
  try {
    const registered = checkRegistration(hotfix.name, row, hotfix.file?.sha256);
    return { registered, sha256: hotfix.file?.sha256 ?? row!.sha256 };
  } catch (err) {
    refuse(err);
  }
}

/** The plan the rollout workflow would make, from the same inputs; refuses (exit 2) what its preflight would refuse. */
export async function prepareRollout(db: Databases, hotfix: HotfixArg, opts: PlanOptions): Promise<PreparedRollout> {
  let batch;
  try {
    batch = parseBatch(opts.batch);
  } catch (err) {
    refuse(err);
  }
  const { registered, sha256 } = await registration(db.kmDb, hotfix);
  const fleet = await checkedInventory(db);
  const hasHotfix = new Set(await db.kmDb.appliedOn(hotfix.name));
  let plan: RolloutPlan;
  try {
    plan = planRollout({
      component: hotfix.component,
      fleet,
      servers: opts.servers,
      hasHotfix,
      canary: opts.canary,
      batch,
    });
  } catch (err) {
    refuse(err);
  }
  const max = await db.kmDb.maxProcesses(plan.drain);
  const drained = plan.drain.map((server) => ({ server, maxProcesses: max.get(server) ?? 0 }));
  const conflicts = await conflictingRollouts(db.orchestrator, hotfix.name, plan.targets);
  return { hotfix, fleet, plan, drained, registered, sha256, conflicts };
}

/**
 * Refuse when another rollout is active on these servers or this hotfix. A
 * holder whose workflow no longer runs (terminated) left stale claims: they
 * are released instead of blocking this rollout forever.
 */
export async function refuseConflicts(
  sql: Sql,
  client: Client,
  conflicts: { id: string; reason: string }[],
): Promise<void> {
  const [c] = await stillActiveConflicts(sql, conflicts, (id) => workflowRunning(client, id));
  if (c)
    throw new CliError(
      `rollout ${c.id} is still active on ${c.reason}: wait for it to end ('km-hotfix status ${c.id} --watch'), or abort it with 'km-hotfix abort ${c.id} --reason ...'`,
      EXIT.refused,
    );
}
