// `km-hotfix pause ID` / `resume ID` / `abort ID --reason T`: signed decisions
// sent as Updates to a running rollout or removal, so a refusal (a bad
// signature, nothing to pause) reaches the caller. Pause holds the fan-out
// between batches (the servers being patched finish); abort rolls a rollout back.
import type { Command } from 'commander';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import type { RolloutStatus } from '../../domain/messages/rollout';
import { abortUpdate, pauseUpdate, resumeUpdate } from '../../domain/messages/rollout';
import { CliError, EXIT } from '../errors';
import {
  config,
  ID_HELP,
  describeWorkflow,
  firstLine,
  isFinal,
  readStatus,
  resolveWorkflowId,
  withTemporal,
} from './common';
import { signDecision, signerOf } from './signing';

type Steer = 'pause' | 'resume' | 'abort';
const UPDATES = { pause: pauseUpdate, resume: resumeUpdate, abort: abortUpdate } as const;

async function steer(typed: string, what: Steer, reason?: string): Promise<string> {
  const cfg = config();
  const id = await resolveWorkflowId(cfg, typed, ['rollout', 'removal']);
  return withTemporal(cfg, async (client) => {
    const d = await describeWorkflow(client, id);
    if (d.kind === 'upload')
      throw new CliError(
        `${id} is an upload: only rollouts and removals can be ${what === 'abort' ? 'aborted' : `${what}d`}`,
        EXIT.refused,
      );
    const st: RolloutStatus = await readStatus(client, d);
    if (!d.running || isFinal(st)) {
      throw new CliError(`${id} has ended (${st.phase}): there is nothing to ${what}`, EXIT.refused);
    }
    if (what === 'abort' && st.phase === 'rolling_back')
      throw new CliError(
        `${id} is already rolling back: follow it with 'km-hotfix status ${id} --watch'`,
        EXIT.refused,
      );
    if (what === 'pause' && st.paused) return `${id} is already paused (km-hotfix resume ${id})`;
    if (what === 'resume' && !st.paused) return `${id} is not paused: nothing to resume`;
    if (!st.sha256) throw new CliError(`${id} is still in preflight: try again in a moment`, EXIT.refused);
    const signed = await signDecision(cfg, {
      action: what,
      rollout: id,
      hotfix: st.hotfix,
      sha256: st.sha256,
      comment: reason,
    });
    let after: RolloutStatus;
    try {
      after = await d.handle.executeUpdate(UPDATES[what], { args: [signed] });
    } catch (err) {
      if (err instanceof WorkflowUpdateFailedError)
        throw new CliError(`${what} refused: ${firstLine(err.cause ?? err)}`, EXIT.refused);
      throw err;
    }
    const by = signerOf(after, signed);
    if (what === 'pause')
      return `paused ${id} by ${by}: servers being patched finish, no new batch starts until 'km-hotfix resume ${id}'`;
    if (what === 'resume') return `resumed ${id} by ${by}`;
    return d.kind === 'rollout'
      ? `aborting ${id} by ${by}: running servers finish, then every server it patched is rolled back (km-hotfix status ${id} --watch)`
      : `aborting ${id} by ${by}: no further server is touched (km-hotfix status ${id} --watch)`;
  });
}

export function registerSteer(program: Command): void {
  program
    .command('pause')
    .argument('<id>', ID_HELP)
    .summary('hold a rollout or removal between batches')
    .description(
      'Pause rollout or removal ID: the servers being patched now finish, no new batch starts until resume. A rollout paused while it waits for verification holds its fan-out after the approval. Signed with your SSH key, like every change.',
    )
    .option('--reason <text>', 'why, for the ledger')
    .addHelpText(
      'after',
      `
Example:
  km-hotfix pause rollout-hotfix_backend_fix_queue_stall-20250101T120000-a1b2c3 --reason "change freeze until 14:00"`,
    )
    .action(async (id: string, o: { reason?: string }) => {
      console.log(await steer(id, 'pause', o.reason));
    });

  program
    .command('resume')
    .argument('<id>', ID_HELP)
    .summary('continue a paused rollout or removal')
    .description('Resume rollout or removal ID after a pause. Signed with your SSH key.')
    .option('--reason <text>', 'why, for the ledger')
    .addHelpText(
      'after',
      `
Example:
  km-hotfix resume rollout-hotfix_backend_fix_queue_stall-20250101T120000-a1b2c3`,
    )
    .action(async (id: string, o: { reason?: string }) => {
      console.log(await steer(id, 'resume', o.reason));
    });

  program
    .command('abort')
    .argument('<id>', ID_HELP)
    .summary('stop a rollout and roll back everything it patched')
    .description(
      `Abort rollout ID: no new server is started, the running ones finish, then every server it patched is unapplied in reverse order and drained backends get their Maximum Processes back. Aborting a removal stops it; servers not reached keep the hotfix. Signed with your SSH key.`,
    )
    .requiredOption('--reason <text>', 'why (required, for the ledger)')
    .addHelpText(
      'after',
      `
Example:
  km-hotfix abort rollout-hotfix_backend_fix_queue_stall-20250101T120000-a1b2c3 --reason "support asked us to wait"`,
    )
    .action(async (id: string, o: { reason: string }) => {
      if (!o.reason.trim()) throw new CliError('--reason must say why', EXIT.refused);
      console.log(await steer(id, 'abort', o.reason));
    });
}
