// Activities, built by a factory that receives their clients (the SSH pool,
// the Key Manager database, the orchestrator database), so tests pass real
// ones. One module per outside system.
import type { Sql } from 'postgres';
import { SshPool } from '../keymanager/ssh';
import { KeyManagerSsh } from '../keymanager/key-manager-ssh';
import { KeyManagerDatabase } from '../keymanager/database';
import { ledgerActivities } from './ledger';
import { keyManagerSshActivities } from './key-manager-ssh';
import { keyManagerDatabaseActivities } from './key-manager-database';
import { preflightActivities } from './preflight';
import { hotfixFileActivities } from './hotfix-files';
import { signingActivities } from './signing';
import { notifyActivities } from './notify';

export interface ActivityDeps {
  /** The orchestrator's own database (inventory, hotfix files, ledger). */
  orchestrator: Sql;
  /** The Key Manager database (SPEC §2). */
  km: Sql;
  /** SSH credentials: a private key or an ssh-agent socket. Never in workflow history. */
  ssh: { privateKey?: Buffer; agent?: string };
  /** Path of the OpenSSH allowed_signers file that says whose signed decisions count (SPEC §7). */
  allowedSigners: string;
  /** Optional: a Slack-compatible webhook, and the web page's address for links in it. */
  notify?: { webhookUrl?: string; webUrl?: string };
}

function build(deps: ActivityDeps, pool: SshPool) {
  const kmSsh = new KeyManagerSsh(pool);
  const kmDb = new KeyManagerDatabase(deps.km);
  const orchestrator = deps.orchestrator;
  return {
    ...ledgerActivities(orchestrator),
    ...keyManagerSshActivities({ orchestrator, kmSsh, kmDb }),
    ...keyManagerDatabaseActivities({ orchestrator, kmDb }),
    ...preflightActivities({ orchestrator, kmSsh, kmDb }),
    ...hotfixFileActivities({ orchestrator, kmSsh, kmDb }),
    ...signingActivities({ allowedSigners: deps.allowedSigners }),
    ...notifyActivities(deps.notify ?? {}),
  };
}

export type KmHotfixActivities = ReturnType<typeof build>;

export function createActivities(deps: ActivityDeps): { activities: KmHotfixActivities; close: () => Promise<void> } {
  const pool = new SshPool(deps.ssh);
  return { activities: build(deps, pool), close: () => pool.close() };
}
