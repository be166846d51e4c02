// `km-hotfix audit ID [--signers FILE]`: re-verify every signed decision of a
// rollout, removal or upload from the ledger (SPEC §7), independently of the
// workflow that accepted them. Exit 0 all hold, 1 one does not, 2 bad input.
import type { Command } from 'commander';
import { decisionActionOf, recordedDecisions, recordedDrained } from '../../store/ledger-reads';
import { ledgerStatus } from '../../status/from-ledger';
import { GATE_ACTIONS } from '../../domain/decision';
import { readAllowedSigners, AllowedSignersError } from '../../signing/allowed-signers';
import { auditDecision } from '../../signing/audit';
import { CliError, EXIT } from '../errors';
import { config, ID_HELP, resolveWorkflowId, withOrchestrator } from './common';
import { signer } from '../render/status';

interface AuditedDecision {
  action: string;
  by: string;
  /** The delegate that signed for `by` (the web page), when one did: `key` is then the delegate's. */
  via?: string;
  key: string;
  recordedAt: string;
  ok: boolean;
  problems: string[];
  message: string;
  signature: string;
}

export function registerAudit(program: Command): void {
  program
    .command('audit')
    .argument('<id>', ID_HELP)
    .summary('re-verify every signed decision of a rollout from the ledger; exit 1 if one fails')
    .description(
      `Re-check each decision the ledger recorded for ID (the start, pauses, resumes, aborts, the approval or rejection): the SSH signature verifies over the recorded message, the key is the recorded one and belongs to the recorded person in the signers file, and the message is about this rollout and this action, and an approval or rejection names (by count and sha256) the drained backends the ledger recorded. Anyone can repeat one check with OpenSSH: ssh-keygen -Y verify -f allowed_signers -I NAME -n km-hotfix -s SIG < MSG (status --json holds NAME, MSG and SIG).`,
    )
    .option('--signers <file>', 'the allowed_signers file to check against (default: KM_HOTFIX_ALLOWED_SIGNERS)')
    .option('--json', 'one JSON document')
    .addHelpText(
      'after',
      `
Example:
  km-hotfix audit rollout-hotfix_backend_fix_queue_stall-20250101T120000-a1b2c3 --signers /etc/km-hotfix/allowed_signers`,
    )
    .action(async (typed: string, o: { signers?: string; json?: boolean }) => {
      const cfg = config();
      const file = o.signers ?? cfg.allowedSigners;
      if (!file)
        throw new CliError(
          'say which signers to check against: --signers FILE (an OpenSSH allowed_signers file) or KM_HOTFIX_ALLOWED_SIGNERS',
          EXIT.refused,
        );
      let signers;
      try {
        signers = await readAllowedSigners(file);
      } catch (err) {
        if (err instanceof AllowedSignersError) throw new CliError(err.message, EXIT.refused);
        throw err;
      }
      const id = await resolveWorkflowId(cfg, typed);
      const audited = await withOrchestrator(cfg, async (sql) => {
        const st = await ledgerStatus(sql, id, new Map());
        if (!st)
          throw new CliError(
            `the ledger has no rollout, removal or upload '${id}': 'km-hotfix list' shows recent ones`,
            EXIT.refused,
          );
        const out: AuditedDecision[] = [];
        // An answer at the gate names the drained backends by digest: re-computed from the ledger's list (none recorded: none drained).
        const drained = ((await recordedDrained(sql, id)) ?? []).map((b) => b.server);
        for (const d of await recordedDecisions(sql, id)) {
          const action = decisionActionOf(st.kind, d.kind);
          if (!action) continue;
          const expected = { rollout: id, action, ...(GATE_ACTIONS.includes(action) ? { drained } : {}) };
          const problems = auditDecision(
            {
              by: d.actor,
              key: d.key,
              ...(d.via ? { via: d.via } : {}),
              message: d.message,
              signature: d.signature,
              recordedAt: d.at,
            },
            expected,
            signers,
          );
          out.push({
            action,
            by: d.actor,
            ...(d.via ? { via: d.via } : {}),
            key: d.key,
            recordedAt: d.at.toISOString(),
            ok: problems.length === 0,
            problems,
            message: d.message,
            signature: d.signature,
          });
        }
        return out;
      });
      const ok = audited.length > 0 && audited.every((a) => a.ok);
      if (o.json) {
        console.log(JSON.stringify({ id, signers: file, ok, decisions: audited }, null, 2));
      } else {
        if (audited.length === 0) console.log(`${id}: no signed decision is recorded`);
        for (const a of audited) {
          const head = `${a.action.padEnd(8)} by ${signer(a.by, a.key, a.via)}, recorded ${a.recordedAt}`;
          console.log(a.ok ? `ok    ${head}` : `FAIL  ${head}: ${a.problems.join('; ')}`);
        }
        console.log(
          ok
            ? `${audited.length} decision(s) verified against ${file}`
            : `${audited.filter((a) => !a.ok).length || 'no'} decision(s) failed the check against ${file}`,
        );
      }
      process.exitCode = ok ? EXIT.ok : EXIT.failed;
    });
}
