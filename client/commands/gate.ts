// `km-hotfix approve ID` / `reject ID --reason T`: answer the verification
// gate with a signed decision (SPEC §7). They are Temporal Updates with
// validators, and the workflow checks the signature against its signers file:
// a refused answer (wrong phase, the requester, someone not listed, a bad or
// stale signature) changes nothing and says why (exit 2).
import type { Command } from 'commander';
import { Client, WorkflowUpdateFailedError } from '@temporalio/client';
import type { RolloutStatus, SignedDecision } from '../../domain/messages/rollout';
import { approveUpdate, rejectUpdate } from '../../domain/messages/rollout';
import type { Config } from '../../platform/config';
import { CliError, EXIT } from '../errors';
import {
  config,
  ID_HELP,
  describeWorkflow,
  firstLine,
  readStatus,
  resolveWorkflowId,
  withOrchestrator,
  withTemporal,
} from './common';
import { messageFor, readSignedDecision, signDecision, signerOf, UnsignedDecision } from './signing';
import { drainedFacts, drainedList, drainedMismatch } from '../../domain/decision';
import { recordedDrained } from '../../store/ledger-reads';

type GateAction = 'approve' | 'reject';

export interface Answer {
  decision: GateAction;
  /** The comment (approve) or the reason (reject). */
  comment?: string;
  /** A decision signed elsewhere; otherwise it is signed here. */
  signed?: SignedDecision;
}

/** The decision about this gate, as it is now: what a signature must state (the drained backends by the workflow's own digest). */
export function gateDecision(st: RolloutStatus, action: GateAction, comment?: string): UnsignedDecision {
  if (st.phase !== 'verifying' || !st.canary || !st.sha256 || !st.gate) {
    throw new CliError(
      `rollout ${st.id} is not waiting for verification (phase ${st.phase}): there is nothing to ${action}`,
      EXIT.refused,
    );
  }
  return {
    action,
    rollout: st.id,
    hotfix: st.hotfix,
    sha256: st.sha256,
    canary: st.canary,
    drained: { count: st.gate.drained.count, sha256: st.gate.drained.sha256 },
    comment,
  };
}

/**
 * The drained backends a gate message names by digest, as the approver reads
 * them: the ledger's list, checked against the workflow's digest, so what is
 * shown is what is signed. A list that does not match is refused.
 */
export async function drainedToSign(cfg: Config, st: RolloutStatus): Promise<string[] | undefined> {
  const named = st.gate?.drained;
  if (!named || named.count === 0 || !cfg.databaseUrl) return named?.count === 0 ? [] : undefined;
  const names = ((await withOrchestrator(cfg, (sql) => recordedDrained(sql, st.id))) ?? []).map((d) => d.server);
  const listed = drainedFacts(names);
  if (drainedMismatch(listed, named, "the workflow's")) {
    throw new CliError(
      `the ledger lists ${listed.count} drained backends (sha256:${listed.sha256}) but rollout ${st.id} names ${named.count} (sha256:${named.sha256}): not signing what cannot be shown; compare 'km-hotfix status ${st.id} --drained' with the Key Manager database`,
      EXIT.refused,
    );
  }
  return names;
}

/** What --print-message writes on stderr: the drained backends next to the message, then how to sign it. */
export function printedAlongside(st: RolloutStatus, action: GateAction, drained: string[] | undefined): string {
  const count = st.gate?.drained.count ?? 0;
  const sign = `sign it within 10 minutes: ssh-keygen -Y sign -f KEY -n km-hotfix FILE, then: km-hotfix ${action} ${st.id} --message FILE --signature FILE.sig\n`;
  if (count === 0) return sign;
  if (!drained) {
    return `the message names the ${count} drained backends by their sha256; to see them, set DATABASE_URL (the orchestrator database) and run: km-hotfix status ${st.id} --drained\n${sign}`;
  }
  return `drained: these ${count} backends (sorted, one per line; their sha256 is the message's: km-hotfix status ${st.id} --drained | sha256sum)\n${drainedList(drained)}${sign}`;
}

async function gateStatus(client: Client, id: string, action: GateAction) {
  const d = await describeWorkflow(client, id);
  if (d.kind !== 'rollout')
    throw new CliError(
      `${id} is a${d.kind === 'upload' ? 'n' : ''} ${d.kind}: only rollouts have a verification gate`,
      EXIT.refused,
    );
  const st = await readStatus(client, d);
  if (!d.running)
    throw new CliError(`rollout ${id} has ended (${st.phase}): there is nothing to ${action}`, EXIT.refused);
  return { d, st };
}

/** The message to sign elsewhere (`--print-message`), and what to show next to it. */
export async function gateMessage(
  cfg: Config,
  id: string,
  action: GateAction,
  comment?: string,
): Promise<{ message: string; alongside: string }> {
  const st = await withTemporal(cfg, async (client) => (await gateStatus(client, id, action)).st);
  const message = messageFor(gateDecision(st, action, comment));
  return { message, alongside: printedAlongside(st, action, await drainedToSign(cfg, st)) };
}

/** Send an answer; a refusal is exit 2 with the workflow's own reason. */
export async function answerGate(
  cfg: Config,
  id: string,
  answer: Answer,
): Promise<{ status: RolloutStatus; signed: SignedDecision }> {
  return withTemporal(cfg, async (client) => {
    const { d, st } = await gateStatus(client, id, answer.decision);
    const signed = answer.signed ?? (await signDecision(cfg, gateDecision(st, answer.decision, answer.comment)));
    try {
      const status = await d.handle.executeUpdate(answer.decision === 'approve' ? approveUpdate : rejectUpdate, {
        args: [signed],
      });
      return { status, signed };
    } catch (err) {
      if (err instanceof WorkflowUpdateFailedError) {
        throw new CliError(`${answer.decision} refused: ${firstLine(err.cause ?? err)}`, EXIT.refused);
      }
      throw err;
    }
  });
}

interface GateFlags {
  comment?: string;
  reason?: string;
  printMessage?: boolean;
  message?: string;
  signature?: string;
}

/** --print-message, or --message with --signature, or sign here. */
async function run(
  typed: string,
  action: GateAction,
  o: GateFlags,
): Promise<{ status: RolloutStatus; signed: SignedDecision } | undefined> {
  const cfg = config();
  const comment = action === 'approve' ? o.comment : o.reason;
  if (o.printMessage) {
    if (o.message || o.signature)
      throw new CliError(
        '--print-message prints a message to sign; --message and --signature submit one: use one or the other',
        EXIT.refused,
      );
    // stdout is the exact bytes to sign; the list they name by digest goes next to them, on stderr.
    const printed = await gateMessage(cfg, await resolveWorkflowId(cfg, typed, ['rollout']), action, comment);
    process.stdout.write(printed.message);
    process.stderr.write(printed.alongside);
    return undefined;
  }
  if (!!o.message !== !!o.signature)
    throw new CliError(
      '--message and --signature go together: the message file and its ssh-keygen -Y sign signature',
      EXIT.refused,
    );
  const signed = o.message && o.signature ? await readSignedDecision(o.message, o.signature) : undefined;
  return answerGate(cfg, await resolveWorkflowId(cfg, typed, ['rollout']), {
    decision: action,
    comment,
    ...(signed ? { signed } : {}),
  });
}

export function registerGate(program: Command): void {
  program
    .command('approve')
    .argument('<id>', ID_HELP)
    .summary('approve the canary of a rollout waiting for verification: the rest of the fleet follows')
    .description(
      `Approve rollout ID after verifying its canary ('km-hotfix status ID' says which server, its direct URL and which backends are drained). The approval is signed with your SSH key (KM_HOTFIX_SIGNING_KEY, else ssh-agent) and names this rollout, file, canary and drained backends (by count and the sha256 of their sorted list: 'km-hotfix status ID --drained' prints it); your name is the one the worker's signers file gives your key. Only while the rollout waits for verification, never by the person who started it (by name or by key), and only by a listed approver when the rollout has --approvers.`,
    )
    .option('--comment <text>', 'what you checked, for the ledger (one line)')
    .option(
      '--print-message',
      'print the message to sign elsewhere (a hardware key, another machine) and exit; the drained backends it names by sha256 are listed on stderr',
    )
    .option('--message <file>', 'submit a message signed elsewhere (with --signature)')
    .option('--signature <file>', 'its signature, made with ssh-keygen -Y sign -n km-hotfix')
    .addHelpText(
      'after',
      `
Examples:
  km-hotfix approve rollout-hotfix_backend_fix_queue_stall-20250101T120000-a1b2c3 --comment "queue drains again"
  km-hotfix approve ID --print-message > approve.txt
  ssh-keygen -Y sign -f ~/.ssh/id_ed25519_sk -n km-hotfix approve.txt      # writes approve.txt.sig
  km-hotfix approve ID --message approve.txt --signature approve.txt.sig   # within 10 minutes`,
    )
    .action(async (id: string, o: GateFlags) => {
      const done = await run(id, 'approve', o);
      if (!done) return;
      const st = done.status;
      const restored = st.drained.length > 0 ? 'the drained backends get their Maximum Processes back and ' : '';
      console.log(
        `approved ${st.id} by ${signerOf(st, done.signed)}: ${restored}the rest of the fleet follows (km-hotfix status ${st.id} --watch)`,
      );
    });

  program
    .command('reject')
    .argument('<id>', ID_HELP)
    .summary('reject the canary of a rollout: it is rolled back')
    .description(
      'Reject rollout ID: the canary is unapplied, Maximum Processes restored, nothing else is touched. Signed and checked like approve, with the same rules.',
    )
    .option('--reason <text>', 'what is wrong (required, for the ledger; one line)')
    .option('--print-message', 'print the message to sign elsewhere and exit')
    .option('--message <file>', 'submit a message signed elsewhere (with --signature)')
    .option('--signature <file>', 'its signature, made with ssh-keygen -Y sign -n km-hotfix')
    .addHelpText(
      'after',
      `
Example:
  km-hotfix reject rollout-hotfix_frontend_fix_login-20250101T120000-a1b2c3 --reason "login page blank on km-fe-1"`,
    )
    .action(async (id: string, o: GateFlags) => {
      if (!o.message && !o.reason?.trim()) throw new CliError('--reason must say what is wrong', EXIT.refused);
      const done = await run(id, 'reject', o);
      if (!done) return;
      console.log(
        `rejected ${done.status.id} by ${signerOf(done.status, done.signed)}: it rolls back now (km-hotfix status ${done.status.id} --watch)`,
      );
    });
}
