// `km-hotfix upload FILE [--via SERVER]`: store the file in the orchestrator
// database, then start the upload workflow (copy to a server, register).
import type { Command } from 'commander';
import { storeHotfixFile } from '../../store/hotfix-files';
import { conflictingRollouts } from '../../store/claims';
import { hotfixUpload } from '../../workflows/upload';
import type { Config } from '../../platform/config';
import { CliError, EXIT } from '../errors';
import { awaitStartAccepted, config, newWorkflowId, withDatabases, withTemporal } from './common';
import { signDecision } from './signing';
import { signatureKeyFingerprint } from '../../signing/sshsig';
import { checkedInventory, readHotfixFile, refuseConflicts } from './prepare';
import { announceStarted } from './rollout';

export interface UploadRequest {
  file: string;
  via?: string;
  followSymlinks?: boolean;
}

/** Validate, store and start the upload; returns the workflow id. */
export async function startUpload(
  cfg: Config,
  req: UploadRequest,
): Promise<{ id: string; name: string; alreadyRegistered: boolean }> {
  const file = await readHotfixFile(req.file, { followSymlinks: req.followSymlinks });
  const { name } = file;
  return withDatabases(cfg, async (db) => {
    const fleet = await checkedInventory(db);
    if (req.via && !fleet.some((s) => s.name === req.via)) {
      throw new CliError(
        `--via ${req.via} is not in the inventory: choose one of ${fleet.map((s) => s.name).join(', ')}`,
        EXIT.refused,
      );
    }
    const row = await db.kmDb.hotfix(name);
    if (row && row.sha256 !== file.sha256) {
      throw new CliError(
        `Key Manager already has a different file registered as ${name} (${row.fileName}): remove it first with 'km-hotfix remove ${name}'`,
        EXIT.refused,
      );
    }
    const conflicts = await conflictingRollouts(db.orchestrator, name, req.via ? [req.via] : []);
    return withTemporal(cfg, async (client) => {
      await refuseConflicts(db.orchestrator, client, conflicts);
      const id = newWorkflowId('upload', name);
      const signed = await signDecision(cfg, { action: 'upload', rollout: id, hotfix: name, sha256: file.sha256 });
      const stored = await storeHotfixFile(
        db.orchestrator,
        file.fileName,
        file.bytes,
        signatureKeyFingerprint(signed.signature),
      );
      await client.workflow.start(hotfixUpload, {
        taskQueue: cfg.taskQueue,
        workflowId: id,
        args: [{ signed, sha256: stored.sha256, fileName: stored.fileName, ...(req.via ? { via: req.via } : {}) }],
      });
      await awaitStartAccepted(client, id, 'upload');
      return { id, name, alreadyRegistered: !!row };
    });
  });
}

export function registerUpload(program: Command): void {
  program
    .command('upload <file>')
    .summary(
      'register a hotfix file in Key Manager (copied to one server, then --upload-hotfix); prints the workflow id',
    )
    .description(
      `Register a hotfix file in Key Manager, as the vendor describes: copy it to a Key Manager server (/var/lib/sshmgr, owned by and executable for sshmgr), then run ssh-mgr-controller --upload-hotfix there. The file is kept in the orchestrator database, so rollouts can refer to it by its Name afterwards. Its name must be sshmgr-<version>-hotfix_<component>_<description>_<issue_id>.gz. Signed with your SSH key (KM_HOTFIX_SIGNING_KEY, else ssh-agent).`,
    )
    .option('--via <server>', 'the server to copy it to (default: the first of the inventory)')
    .option('--follow-symlinks', 'read a hotfix file given as a symbolic link (refused otherwise)')
    .option('--wait', 'wait until it is registered; exit 0 registered, 1 failed')
    .option('--json', 'print {"id": ...} (with --wait: the final status document)')
    .addHelpText(
      'after',
      `
Examples:
  km-hotfix upload ./sshmgr-3.0.0-hotfix_backend_fix_queue_stall_UKM-2001.gz --wait
  km-hotfix upload ./sshmgr-3.0.0-hotfix_common_fix_tags_and_stats_UKM-1291.gz --via km-fe-2
Then: km-hotfix hotfixes    # lists it under its Name`,
    )
    .action(async (file: string, o: { via?: string; wait?: boolean; json?: boolean; followSymlinks?: boolean }) => {
      const cfg = config();
      const started = await startUpload(cfg, { file, via: o.via, followSymlinks: o.followSymlinks });
      if (started.alreadyRegistered && !o.json)
        process.stderr.write(
          `${started.name} is already registered with the same contents: the upload only confirms it\n`,
        );
      await announceStarted(cfg, started.id, o);
    });
}
