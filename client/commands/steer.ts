// `km-hotfix pause ID` / `resume ID` / `abort ID --reason T`: signals to a
// running rollout or removal. Pause holds the fan-out between batches (the
// servers being patched finish); abort rolls a rollout back.
import type { Command } from 'commander';
import { isFinalPhase } from '../../domain/rollout';
import { abortSignal, pauseSignal, resumeSignal } from '../../workflows/definitions';
import { CliError, EXIT } from '../errors';
import { MessageError, steerRequest } from '../../domain/messages';
import { config, describeWorkflow, identity, readStatus, withIdentity, withTemporal } from './common';

type Steer = 'pause' | 'resume' | 'abort';
const SIGNALS = { pause: pauseSignal, resume: resumeSignal, abort: abortSignal } as const;

async function steer(id: string, what: Steer, by: string, reason?: string): Promise<string> {
  return withTemporal(config(), async (client) => {
    const d = await describeWorkflow(client, id);
    if (d.kind === 'upload') throw new CliError(`${id} is an upload: only rollouts and removals can be ${what === 'abort' ? 'aborted' : `${what}d`}`, EXIT.refused);
    const st = await readStatus(client, d);
    if (!d.running || isFinalPhase(st.phase)) {
      throw new CliError(`${id} has ended (${st.phase}): there is nothing to ${what}`, EXIT.refused);
    }
    if (what === 'abort' && st.phase === 'rolling_back') throw new CliError(`${id} is already rolling back: follow it with 'km-hotfix status ${id} --watch'`, EXIT.refused);
    if (what === 'pause' && st.paused) return `${id} is already paused (km-hotfix resume ${id})`;
    if (what === 'resume' && !st.paused) return `${id} is not paused: nothing to resume`;
    // The workflow ignores a Signal its validator refuses: refuse it here first, with the same rule.
    let req;
    try {
      req = steerRequest({ by, ...(reason ? { reason } : {}) }, what);
    } catch (err) {
      if (err instanceof MessageError) throw new CliError(err.message, EXIT.refused);
      throw err;
    }
    await d.handle.signal(SIGNALS[what], req);
    if (what === 'pause') return `paused ${id}: servers being patched finish, no new batch starts until 'km-hotfix resume ${id}'`;
    if (what === 'resume') return `resumed ${id}`;
    return d.kind === 'rollout'
      ? `aborting ${id}: running servers finish, then every server it patched is rolled back (km-hotfix status ${id} --watch)`
      : `aborting ${id}: no further server is touched (km-hotfix status ${id} --watch)`;
  });
}

export function registerSteer(program: Command): void {
  withIdentity(program
    .command('pause <id>')
    .summary('hold a rollout or removal between batches')
    .description('Pause rollout or removal ID: the servers being patched now finish, no new batch starts until resume. A rollout paused while it waits for verification holds its fan-out after the approval.'))
    .option('--reason <text>', 'why, for the ledger')
    .addHelpText('after', `
Example:
  km-hotfix pause rollout-hotfix_backend_fix_queue_stall-20250101T120000-a1b2c3 --reason "change freeze until 14:00"`)
    .action(async (id: string, o: { as?: string; reason?: string }) => {
      console.log(await steer(id, 'pause', identity(o.as), o.reason));
    });

  withIdentity(program
    .command('resume <id>')
    .summary('continue a paused rollout or removal')
    .description('Resume rollout or removal ID after a pause.'))
    .option('--reason <text>', 'why, for the ledger')
    .addHelpText('after', `
Example:
  km-hotfix resume rollout-hotfix_backend_fix_queue_stall-20250101T120000-a1b2c3`)
    .action(async (id: string, o: { as?: string; reason?: string }) => {
      console.log(await steer(id, 'resume', identity(o.as), o.reason));
    });

  withIdentity(program
    .command('abort <id>')
    .summary('stop a rollout and roll back everything it patched')
    .description(`Abort rollout ID: no new server is started, the running ones finish, then every server it patched is unapplied in reverse order and drained backends get their Maximum Processes back. Aborting a removal stops it; servers not reached keep the hotfix.`))
    .requiredOption('--reason <text>', 'why (required, for the ledger)')
    .addHelpText('after', `
Example:
  km-hotfix abort rollout-hotfix_backend_fix_queue_stall-20250101T120000-a1b2c3 --reason "support asked us to wait"`)
    .action(async (id: string, o: { as?: string; reason: string }) => {
      if (!o.reason.trim()) throw new CliError('--reason must say why', EXIT.refused);
      console.log(await steer(id, 'abort', identity(o.as), o.reason));
    });
}
