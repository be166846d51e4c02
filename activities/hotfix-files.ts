// Upload: stream the stored bytes to a Key Manager server's hotfix folder,
// make them the sshmgr user's, register the hotfix, and check that Key
// Manager's registry lists the Name with the same sha256.
import type { Sql } from 'postgres';
import type { Role } from '../domain/fleet';
import type { KeyManagerDatabase } from '../keymanager/database';
import type { KeyManagerSsh } from '../keymanager/key-manager-ssh';
import { ApplicationFailure } from '@temporalio/activity';
import type { FleetServer } from '../domain/fleet';
import { deleteHotfixFile, hotfixFileContent, hotfixFileInfo } from '../store/hotfix-files';
import { appendEvent } from '../store/ledger-writes';
import { fleetServer } from './inventory';
import { listInventory } from '../store/inventory';
import { classified, nonRetryable } from './failures';
import { FAILURE } from '../domain/failures';
import { activityExecOptions } from './heartbeat';
import { COMMAND_TIMEOUT_MS } from './server-step';

export function hotfixFileActivities(deps: { orchestrator: Sql; kmDb: KeyManagerDatabase; kmSsh: KeyManagerSsh }) {
  const { orchestrator, kmDb, kmSsh } = deps;

  async function forgetRefusedFile(
    target: FleetServer,
    remotePath: string,
    sha256: string,
    fileName: string,
    rolloutId: string,
  ): Promise<void> {
    let removed = true;
    try {
      await kmSsh.removeHotfixFile(target, remotePath, activityExecOptions(COMMAND_TIMEOUT_MS.status));
    } catch {
      removed = false; // the registration error matters more; the ledger says the copy may remain
    }
    await deleteHotfixFile(orchestrator, sha256, fileName);
    await appendEvent(orchestrator, {
      rolloutId,
      key: `upload-refused:${sha256}:${fileName}`,
      kind: 'upload-refused',
      server: target.name,
      detail: { fileName, sha256, path: remotePath, removedFromServer: removed },
    });
  }

  return {
    async uploadHotfix(u: {
      rolloutId: string;
      sha256: string;
      fileName?: string;
      via?: string;
      commandTimeoutMs?: number;
    }): Promise<{ name: string; server?: { name: string; role: Role }; result: 'registered' | 'already-registered' }> {
      const file = await hotfixFileInfo(orchestrator, u.sha256, u.fileName);
      if (!file)
        throw nonRetryable(FAILURE.invalid, `hotfix file ${u.sha256} is not stored: run 'km-hotfix upload FILE' again`);
      const registered = await kmDb.hotfix(file.name);
      if (registered && registered.sha256 === file.sha256) return { name: file.name, result: 'already-registered' };
      if (registered) {
        throw nonRetryable(
          FAILURE.conflict,
          `Key Manager already has a different file registered as ${file.name} (${registered.fileName}, sha256 ${registered.sha256.slice(0, 12)}…): remove it first with 'km-hotfix remove ${file.name}'`,
        );
      }
      const target = u.via ? await fleetServer(orchestrator, u.via) : (await listInventory(orchestrator))[0];
      if (!target)
        throw nonRetryable(FAILURE.invalid, "the inventory is empty: import one with 'km-hotfix fleet import FILE'");
      const content = await hotfixFileContent(orchestrator, u.sha256);
      const opts = activityExecOptions(
        u.commandTimeoutMs && u.commandTimeoutMs > 0
          ? Math.min(u.commandTimeoutMs, COMMAND_TIMEOUT_MS.apply)
          : COMMAND_TIMEOUT_MS.apply,
      );
      const remotePath = await classified(target.name, () =>
        kmSsh.uploadHotfixFile(target, file.fileName, content, opts),
      );
      try {
        await classified(target.name, () => kmSsh.registerHotfix(target, remotePath, opts));
        const row = await kmDb.hotfix(file.name);
        if (!row || row.sha256 !== file.sha256) {
          throw nonRetryable(
            FAILURE.notApplied,
            `${target.name}: ssh-mgr-controller --upload-hotfix succeeded but Key Manager ${row ? `lists ${file.name} with sha256 ${row.sha256}` : `does not list ${file.name}`}: check the server`,
          );
        }
      } catch (err) {
        // Refused for good (no retry follows): leave nothing behind, neither the copy on the server nor the stored file.
        if (err instanceof ApplicationFailure && err.nonRetryable)
          await forgetRefusedFile(target, remotePath, file.sha256, file.fileName, u.rolloutId);
        throw err;
      }
      await appendEvent(orchestrator, {
        rolloutId: u.rolloutId,
        key: `upload:${file.sha256}`,
        kind: 'upload',
        server: target.name,
        detail: { name: file.name, fileName: file.fileName, sha256: file.sha256, path: remotePath },
      });
      return { name: file.name, server: { name: target.name, role: target.role }, result: 'registered' };
    },
  };
}
