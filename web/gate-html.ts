// The parts of a rollout's page that are about a decision: the gate (what is
// being approved, above the buttons, with the exact message the page signs),
// the confirmation step, and a finished rollout's report. Everything from a
// person or a file goes through `esc`.
import { formatDuration } from '../domain/plan';
import { isFinalPhase } from '../domain/rollout';
import type { RolloutStatus } from '../domain/messages/rollout';
import { canaryAddress, esc, layout, userLine, Visitor, when } from './html';
import type { RolloutFacts } from './facts';
import type { Action } from './decide';
import { sha256Hex } from '../domain/sha256';

/** The sha256 a confirmation page carries of the message it showed. */
export function messageDigest(message: string): string {
  return sha256Hex(message);
}

/** A message of several lines, each escaped (esc alone shows a line break as an escape). */
function lines(text: string): string {
  return text.split('\n').map(esc).join('\n');
}

/** Who may answer, as a person reads it: one answer decides. */
function whoAnswers(st: RolloutStatus, visitor: Visitor): string {
  const gate = st.gate;
  if (!gate) return '';
  const you = visitor.person;
  if (gate.approvers.length === 0)
    return `any one person of the signers file but ${esc(st.requestedBy)} (who started it); one answer decides`;
  const others = gate.approvers.filter((a) => a !== you);
  const list = gate.approvers.map((a) => (a === you ? `<b>${esc(a)} (you)</b>` : esc(a))).join(', ');
  return others.length === 0 ? `${list}; one answer decides` : `one of ${list}; one answer decides`;
}

function until(deadline: string): string {
  const left = Date.parse(deadline) - Date.now();
  return left > 0 ? `in ${formatDuration(Math.round(left / 60_000) * 60_000 || 60_000)}` : 'now';
}

export interface GateView {
  status: RolloutStatus;
  facts: RolloutFacts;
  visitor: Visitor;
  /** The drained backends' section (count, digest, their saved Maximum Processes). */
  drained: string;
  /** The message the page would sign now with an empty comment; absent when it cannot sign for this visitor. */
  message?: string;
  /** The forms, or why there are none. */
  decide: string;
}

/** The gate: what is being approved, where to check it, who answers by when, what is signed; then the buttons. */
export function gateSection(v: GateView): string {
  const st = v.status;
  const gate = st.gate;
  if (!gate) return '';
  const f = v.facts;
  const row = (label: string, id: string, value: string) => `<tr><th>${label}</th><td id="${id}">${value}</td></tr>`;
  const drainedCount = gate.drained.count;
  const check = `Open <b>${esc(gate.canary)}</b> directly${f.canaryUrl ? ` at ${esc(f.canaryUrl)}` : ''}, not through the load balancer, and check that Key Manager works with the hotfix.${
    drainedCount > 0
      ? ` Meanwhile only ${esc(gate.canary)} runs backend operations: the ${drainedCount} drained backend(s) below have Maximum Processes 0, and get their saved values back whatever you answer.`
      : ''
  } Then approve or reject below.`;
  const sign = v.message
    ? `<h3>What you sign</h3><p class="muted">The page signs this message for you with its own key (on behalf of you); your comment goes on the <code>comment:</code> line and <code>at:</code> is the time you confirm.</p><pre id="sign-message">${lines(v.message)}</pre>`
    : '';
  return `<section id="gate"><h2>Verify the canary, then decide</h2><p id="gate-check">${check}</p>
<table id="gate-facts">${row('Hotfix', 'gate-hotfix', esc(st.hotfix))}${row('File', 'file', f.fileName ? `<code>${esc(f.fileName)}</code>` : '<span class="muted">not stored here</span>')}${row('sha256', 'sha256', `<code>${esc(st.sha256 ?? '')}</code>`)}${row('Key Manager version', 'version', f.version ? esc(f.version) : '<span class="muted">unknown</span>')}${row('Canary', 'canary-row', `<b id="canary">${esc(gate.canary)}</b>${f.canaryUrl ? ` — ${canaryAddress(f.canaryUrl)}` : ''}`)}${row('Drained backends', 'drained-count', drainedCount > 0 ? `${drainedCount} (listed below with their saved Maximum Processes)` : 'none')}${row('Deadline', 'deadline', `${when(gate.deadline)} (${until(gate.deadline)}); no answer by then counts as a rejection`)}${row('Who answers', 'approvers', whoAnswers(st, v.visitor))}</table>
${v.drained}${sign}${v.decide}</section>`;
}

/** Approve and Reject: different colours, each leading to a confirmation step before anything is signed. */
export function gateForms(id: string, csrf: string): string {
  const action = (a: string) => `/rollouts/${encodeURIComponent(id)}/${a}`;
  return `<div id="decide">
<form method="post" action="${action('approve')}" id="approve-form" class="decide approve"><input type="hidden" name="csrf" value="${esc(csrf)}">
<label>Comment (optional)<br><textarea name="comment" maxlength="2000"></textarea></label><br><button type="submit" id="approve" class="btn-approve">Approve…</button></form>
<form method="post" action="${action('reject')}" id="reject-form" class="decide reject"><input type="hidden" name="csrf" value="${esc(csrf)}">
<label>Reason (required)<br><textarea name="reason" required maxlength="2000"></textarea></label><br><button type="submit" id="reject" class="btn-reject">Reject…</button></form>
<p class="muted">Nothing is signed until you confirm on the next page.</p></div>`;
}

export interface ConfirmView {
  status: RolloutStatus;
  action: Action;
  visitor: Visitor;
  /** The exact message to be signed. */
  message: string;
  comment: string;
  csrf: string;
}

/** The second step: the exact message, and one button that signs it (or back to the rollout). */
export function confirmPage(v: ConfirmView): string {
  const st = v.status;
  const at = /\nat: (.*)\n$/.exec(v.message)?.[1] ?? '';
  const base = `/rollouts/${encodeURIComponent(st.id)}`;
  const field = v.action === 'approve' ? 'comment' : 'reason';
  const what =
    v.action === 'approve'
      ? `Approve ${esc(st.hotfix)} on canary ${esc(st.canary ?? '')}: the rest of the fleet follows.`
      : `Reject ${esc(st.hotfix)}: the canary ${esc(st.canary ?? '')} is rolled back.`;
  const body = `<p><a href="${esc(base)}">← back to the rollout, nothing signed</a></p>
<h1>${v.action === 'approve' ? 'Confirm approval' : 'Confirm rejection'}</h1>${userLine(v.visitor)}
<div class="confirm ${v.action === 'approve' ? 'confirm-approve' : 'confirm-reject'}" id="confirm-box"><p id="confirm-what"><b>${what}</b></p>
<p>The page signs exactly this message for you, and the workflow checks it:</p><pre id="confirm-message">${lines(v.message)}</pre>
<form method="post" action="${esc(`${base}/${v.action}`)}" id="confirm-form"><input type="hidden" name="csrf" value="${esc(v.csrf)}">
<input type="hidden" name="confirm" value="1"><input type="hidden" name="at" value="${esc(at)}"><input type="hidden" name="digest" value="${esc(messageDigest(v.message))}">
<input type="hidden" name="${field}" value="${esc(v.comment)}">
<button type="submit" id="confirm" class="${v.action === 'approve' ? 'btn-approve' : 'btn-reject'}">${v.action === 'approve' ? 'Sign and approve' : 'Sign and reject'}</button> <a id="cancel" href="${esc(base)}">Cancel</a></form></div>`;
  return layout(`${v.action === 'approve' ? 'Approve' : 'Reject'} ${st.hotfix} · km-hotfix`, body);
}

const OUTCOME: Record<string, { word: string; cls: string }> = {
  completed: { word: 'Completed', cls: 'ok' },
  rolled_back: { word: 'Rolled back', cls: 'warn' },
  rollback_failed: { word: 'Rollback failed', cls: 'refused' },
  failed: { word: 'Failed', cls: 'refused' },
};

/** A finished rollout's page is its report: outcome, duration, who decided, what was put back, who needs a person. */
export function reportSection(st: RolloutStatus, facts: RolloutFacts): string {
  if (!isFinalPhase(st.phase)) return '';
  const o = OUTCOME[st.phase] ?? { word: st.phase, cls: 'refused' };
  const patched = (st.serverCounts.patched ?? 0) + (st.serverCounts.removed ?? 0);
  const what =
    st.phase === 'completed'
      ? `${esc(st.hotfix)} is ${st.kind === 'removal' ? 'removed from' : 'on'} ${patched || st.serverCount} server(s).`
      : esc(st.error ?? '');
  const ended = st.endedAt ?? st.updatedAt;
  const took = Date.parse(ended) - Date.parse(st.startedAt);
  const answers = st.approvals.map(
    (a) =>
      `${a.decision === 'approve' ? 'approved' : 'rejected'} by <b>${esc(a.by)}</b>${a.via ? ` via ${esc(a.via)}` : ''} at ${when(a.at)}${a.comment ? `: “${esc(a.comment)}”` : ''}`,
  );
  const decided =
    answers.length > 0
      ? answers.join('; ')
      : st.kind === 'rollout' && st.canary
        ? 'nobody answered the gate'
        : 'no gate';
  const drained = st.drainedCount ?? st.drained.length;
  const restored = facts.restored
    ? facts.restored.map((d) => `${esc(d.server)} restored to ${esc(d.maxProcesses)}`).join(', ')
    : drained > 0
      ? `<b>not recorded</b>: check Maximum Processes on ${esc(st.drained.map((d) => d.server).join(', '))}`
      : 'nothing was drained';
  const needs = st.needsAttention.length
    ? `<b>${esc(st.needsAttention.join(', '))}${st.needsAttentionMore ? ` and ${st.needsAttentionMore} more` : ''}</b>`
    : 'none';
  const canary = st.canary
    ? `<tr><th>Canary</th><td><b id="canary">${esc(st.canary)}</b>${facts.canaryUrl ? ` — ${canaryAddress(facts.canaryUrl)} (as the gate gave it)` : ''}</td></tr>`
    : '';
  return `<section id="report"><p class="notice ${o.cls}" id="outcome"><b>${o.word}</b>: ${what}</p>
<table id="report-facts"><tr><th>Duration</th><td id="duration">${Number.isFinite(took) ? formatDuration(Math.max(0, took)) : '-'} (${when(st.startedAt)} to ${when(ended)})</td></tr>
<tr><th>Decided</th><td id="decided">${decided}</td></tr>${canary}
<tr><th>Maximum Processes</th><td id="restored">${restored}</td></tr>
<tr><th>Needs a person</th><td id="needs-person">${needs}</td></tr></table></section>`;
}
