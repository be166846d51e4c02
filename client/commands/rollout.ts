// `km-hotfix rollout HOTFIX`: validate everything the workflow's preflight
// would refuse (without SSH), then start the rollout workflow and print its id.
import { Command, Option } from 'commander';
import type { Client } from '@temporalio/client';
import { storeHotfixFile } from '../../store/hotfix-files';
import type { RolloutInput, RolloutStatus, RolloutTiming } from '../../domain/messages/rollout';
import { hotfixRollout } from '../../workflows/rollout';
import type { Config } from '../../platform/config';
import {
  awaitStartAccepted,
  config,
  duration,
  nameList,
  newWorkflowId,
  wholeNumber,
  withDatabases,
  withTemporal,
} from './common';
import { localSignerName, signDecision, strangerApprover } from './signing';
import { signer } from '../render/status';
import { CliError, EXIT } from '../errors';
import { signatureKeyFingerprint } from '../../signing/sshsig';
import { prepareRollout, PreparedRollout, readHotfixArg, refuseConflicts } from './prepare';
import { followWorkflow } from './status';
import { approversRefusal } from '../../domain/people';

export interface RolloutRequest {
  hotfix: string;
  servers?: string[];
  canary?: string;
  batch: string;
  maxFailures: number;
  approvers: string[];
  approvalTimeoutMs: number;
  timing?: Partial<RolloutTiming>;
  followSymlinks?: boolean;
}

export interface StartedRollout {
  id: string;
  prepared: PreparedRollout;
  /** "alice (SHA256:…)" once the workflow has accepted the start signature. */
  requestedBy: string;
}

/** Validate and start; nothing is started (and nothing stored) unless every check passes. */
export async function startRollout(cfg: Config, req: RolloutRequest): Promise<StartedRollout> {
  const hotfix = await readHotfixArg(req.hotfix, { followSymlinks: req.followSymlinks });
  const approvers = [...new Set(req.approvers)];
  const stranger = await strangerApprover(cfg, approvers);
  if (stranger)
    throw new CliError(`--approvers: ${stranger}: name approvers as the signers file spells them`, EXIT.refused);
  return withDatabases(cfg, async (db) => {
    const prepared = await prepareRollout(db, hotfix, { servers: req.servers, canary: req.canary, batch: req.batch });
    return withTemporal(cfg, async (client: Client) => {
      await refuseConflicts(db.orchestrator, client, prepared.conflicts);
      // The id is chosen here so that the signature can name it: a signature for one rollout starts no other.
      const id = newWorkflowId('rollout', hotfix.name);
      const signed = await signDecision(cfg, {
        action: 'rollout',
        rollout: id,
        hotfix: hotfix.name,
        sha256: prepared.sha256,
      });
      const me = await localSignerName(cfg, signed);
      const onlyMe = me ? approversRefusal(approvers, me) : null;
      if (onlyMe) throw new CliError(onlyMe, EXIT.refused);
      // Stored only now, keyed by (sha256, file name): storing it again is harmless.
      const stored = hotfix.file
        ? await storeHotfixFile(
            db.orchestrator,
            hotfix.file.fileName,
            hotfix.file.bytes,
            signatureKeyFingerprint(signed.signature),
          )
        : undefined;
      const upload = stored ? { sha256: stored.sha256, fileName: stored.fileName } : undefined;
      const input: RolloutInput = {
        hotfix: hotfix.name,
        signed,
        servers: req.servers ?? [],
        batch: req.batch,
        maxFailures: req.maxFailures,
        approvers,
        approvalTimeoutMs: req.approvalTimeoutMs,
        ...(req.canary ? { canary: req.canary } : {}),
        ...(upload ? { upload } : {}),
        ...(req.timing ? { timing: req.timing } : {}),
      };
      await client.workflow.start(hotfixRollout, { taskQueue: cfg.taskQueue, workflowId: id, args: [input] });
      const st = await awaitStartAccepted(client, id, 'rollout');
      return { id, prepared, requestedBy: st ? signer(st.requestedBy, st.requestedKey) : '(not yet verified)' };
    });
  });
}

interface RolloutFlags {
  servers?: string[];
  canary?: string;
  batch: string;
  maxFailures: number;
  approvers?: string[];
  approvalTimeout: number;
  servicesTimeout?: number;
  followSymlinks?: boolean;
  wait?: boolean;
  json?: boolean;
}

/** Print the id of a started workflow, then follow it with --wait; sets the exit code. */
export async function announceStarted(
  cfg: Config,
  id: string,
  flags: { wait?: boolean; json?: boolean },
): Promise<RolloutStatus | undefined> {
  if (!flags.wait) {
    console.log(flags.json ? JSON.stringify({ id }) : id);
    if (!flags.json) process.stderr.write(`follow it with: km-hotfix status ${id} --watch\n`);
    return undefined;
  }
  if (!flags.json) console.log(id);
  return followWorkflow(cfg, id, { json: flags.json });
}

export function registerRollout(program: Command): void {
  program
    .command('rollout <hotfix>')
    .summary('start a rollout: canary, verification by a person, fan-out; prints its id')
    .description(
      `Start a rollout of HOTFIX: a registered hotfix Name (hotfix_<component>_<description>) or a hotfix file (sshmgr-<version>-hotfix_<component>_<description>_<issue>.gz), which is uploaded first. Prints the rollout's id.

The procedure, as the vendor recommends it:
  1. preflight: every target answers SSH with its pinned host key and runs
     all services; nothing is changed
  2. canary, chosen by the hotfix type: a frontend for hotfix_frontend_*,
     a backend for hotfix_backend_* (every other unpatched backend gets
     Maximum Processes 0 meanwhile), any server for hotfix_common_*;
     apply, restart services, verify
  3. someone other than you verifies the canary, then runs
     'km-hotfix approve ID' or 'km-hotfix reject ID --reason ...'
  4. Maximum Processes restored; the rest of the fleet, at most --batch at once

A failure, a rejection, the approval timeout or an abort rolls back every server this rollout patched. Everything is checked before the rollout starts: a bad input changes nothing (exit 2).

The start is signed with your SSH key (KM_HOTFIX_SIGNING_KEY, else ssh-agent); the workflow checks it against the worker's signers file, which gives your name: you become the requester, who may not approve.`,
    )
    .option('--servers <a,b>', 'patch only these servers (default: the whole inventory)', nameList('--servers'))
    .option('--canary <server>', 'verify on this server first (it must have the role the hotfix type needs)')
    .option(
      '--batch <N|P%>',
      'fan-out window: servers patched at once at most, a number or a percentage of the rest (km-hotfix plan shows the order)',
      '1',
    )
    .option(
      '--max-failures <n>',
      'servers that may fail in fan-out before it stops and rolls back',
      wholeNumber('--max-failures'),
      0,
    )
    .option(
      '--approvers <a,b>',
      'only these people may approve or reject (never the requester)',
      nameList('--approvers'),
    )
    .addOption(
      new Option(
        '--approval-timeout <dur>',
        'how long to wait for a verdict; no answer counts as a rejection (e.g. 30m, 24h)',
      )
        .argParser(duration('--approval-timeout'))
        .default(24 * 3_600_000, '24h'),
    )
    .option(
      '--services-timeout <dur>',
      'how long services may take to be RUNNING again after a restart (default 5m)',
      duration('--services-timeout'),
    )
    .option('--follow-symlinks', 'read a hotfix file given as a symbolic link (refused otherwise)')
    .option('--wait', 'follow the rollout until it ends; exit 0 completed, 1 rolled back or failed')
    .option('--json', 'print {"id": ...} (with --wait: the final status document)')
    .addHelpText(
      'after',
      `
Examples:
  km-hotfix plan hotfix_backend_fix_queue_stall               # see what would happen first
  km-hotfix rollout hotfix_backend_fix_queue_stall --approvers dana,eve --batch 2 --wait
  km-hotfix rollout ./sshmgr-3.0.0-hotfix_common_fix_tags_and_stats_UKM-1291.gz --servers km-fe-1,km-be-1
  km-hotfix rollout hotfix_frontend_fix_login --canary km-fe-2 --batch 25% --max-failures 1

Exit codes: 0 started (with --wait: completed), 1 rolled back or failed, 2 refused, 3 Temporal or a database unreachable.`,
    )
    .action(async (hotfix: string, o: RolloutFlags) => {
      const cfg = config();
      const started = await startRollout(cfg, {
        hotfix,
        servers: o.servers,
        canary: o.canary,
        batch: o.batch,
        maxFailures: o.maxFailures,
        approvers: o.approvers ?? [],
        approvalTimeoutMs: o.approvalTimeout,
        followSymlinks: o.followSymlinks,
        ...(o.servicesTimeout ? { timing: { servicesTimeoutMs: o.servicesTimeout } } : {}),
      });
      await announceStarted(cfg, started.id, o);
    });
}
