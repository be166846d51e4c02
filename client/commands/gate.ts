// `km-hotfix approve ID` / `reject ID --reason T`: answer the verification
// gate. They are Temporal Updates with validators: a refused answer (wrong
// phase, the requester, someone not listed) changes nothing and says why.
import type { Command } from 'commander';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import type { RolloutStatus } from '../../domain/rollout';
import { approveUpdate, rejectUpdate } from '../../workflows/definitions';
import type { Config } from '../../platform/config';
import { CliError, EXIT } from '../errors';
import { config, describeWorkflow, firstLine, identity, readStatus, withIdentity, withTemporal } from './common';

export type Answer = { decision: 'approve'; by: string; comment?: string } | { decision: 'reject'; by: string; reason: string };

/** Send an answer; a refusal is exit 2 with the workflow's own reason. */
export async function answerGate(cfg: Config, id: string, answer: Answer): Promise<RolloutStatus> {
  return withTemporal(cfg, async (client) => {
    const d = await describeWorkflow(client, id);
    if (d.kind !== 'rollout') throw new CliError(`${id} is a${d.kind === 'upload' ? 'n' : ''} ${d.kind}: only rollouts have a verification gate`, EXIT.refused);
    if (!d.running) {
      const st = await readStatus(client, d);
      throw new CliError(`rollout ${id} has ended (${st.phase}): there is nothing to ${answer.decision}`, EXIT.refused);
    }
    try {
      if (answer.decision === 'approve') {
        return await d.handle.executeUpdate(approveUpdate, { args: [{ by: answer.by, ...(answer.comment ? { comment: answer.comment } : {}) }] });
      }
      return await d.handle.executeUpdate(rejectUpdate, { args: [{ by: answer.by, reason: answer.reason }] });
    } catch (err) {
      if (err instanceof WorkflowUpdateFailedError) {
        throw new CliError(`${answer.decision} refused: ${firstLine(err.cause ?? err)}`, EXIT.refused);
      }
      throw err;
    }
  });
}

export function registerGate(program: Command): void {
  withIdentity(program
    .command('approve <id>')
    .summary('approve the canary of a rollout waiting for verification: the rest of the fleet follows')
    .description(`Approve rollout ID after verifying its canary ('km-hotfix status ID' says which server, its direct URL and which backends are drained). Only while the rollout waits for verification, never by the person who started it, and only by a listed approver when the rollout has --approvers.`))
    .option('--comment <text>', 'what you checked, for the ledger')
    .addHelpText('after', `
Example:
  km-hotfix approve rollout-hotfix_backend_fix_queue_stall-20250101T120000-a1b2c3 --comment "queue drains again" --as dana`)
    .action(async (id: string, o: { as?: string; comment?: string }) => {
      const by = identity(o.as);
      const st = await answerGate(config(), id, { decision: 'approve', by, comment: o.comment });
      const restored = st.drained.length > 0 ? 'the drained backends get their Maximum Processes back and ' : '';
      console.log(`approved ${st.id} as ${by}: ${restored}the rest of the fleet follows (km-hotfix status ${st.id} --watch)`);
    });

  withIdentity(program
    .command('reject <id>')
    .summary('reject the canary of a rollout: it is rolled back')
    .description('Reject rollout ID: the canary is unapplied, Maximum Processes restored, nothing else is touched. Same rules as approve.'))
    .requiredOption('--reason <text>', 'what is wrong (required, for the ledger)')
    .addHelpText('after', `
Example:
  km-hotfix reject rollout-hotfix_frontend_fix_login-20250101T120000-a1b2c3 --reason "login page blank on km-fe-1"`)
    .action(async (id: string, o: { as?: string; reason: string }) => {
      const by = identity(o.as);
      if (!o.reason.trim()) throw new CliError('--reason must say what is wrong', EXIT.refused);
      const st = await answerGate(config(), id, { decision: 'reject', by, reason: o.reason });
      console.log(`rejected ${st.id} as ${by}: it rolls back now (km-hotfix status ${st.id} --watch)`);
    });
}
