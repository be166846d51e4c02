// HTML for the approvers' page, rendered on the server. Everything that came
// from a person or a file (inventory names and URLs, comments, reasons,
// errors quoting them) goes through `esc`: it is text, never markup.
import { inert } from '../domain/terminal';
import { isFinalPhase, Phase, ServerState } from '../domain/rollout';
import { RolloutStatus } from '../domain/messages/rollout';
import type { DrainedPage, RolloutSummary, StoredEvent } from '../store/ledger-reads';
import type { ServerPage } from '../store/server-states';

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Text made safe for an element's content or a quoted attribute; control characters shown as escapes. */
export function esc(text: unknown): string {
  return inert(
    typeof text === 'string' ? text : text === undefined || text === null ? '' : JSON.stringify(text),
  ).replace(/[&<>"']/g, (c) => ENTITIES[c] ?? c);
}

/** A link target that is only http(s); anything else (javascript:, data:) is shown as text, not linked. */
export function safeHref(url: string): string | null {
  try {
    const u = new URL(url);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.toString() : null;
  } catch {
    return null;
  }
}

/** JSON inside a <script> block: `<` escaped so no value can close the element. */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

const STYLE = `
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222;max-width:70rem}
h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:1.5rem}
table{border-collapse:collapse}td,th{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
code{font-size:12px}.muted{color:#666}.nowrap{white-space:nowrap}
.grid{display:flex;flex-wrap:wrap;gap:4px}
.srv{width:9rem;padding:.3rem;border-radius:4px;font-size:12px;background:#eee;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.s-pending,.s-untouched,.s-skipped{background:#e4e4e4}.s-patching,.s-rolling_back,.s-removing{background:#ffe08a}
.s-patched,.s-removed{background:#9be29b}.s-failed,.s-rollback_failed{background:#f28b82}.s-rolled_back{background:#aecbfa}
.notice{padding:.6rem;border-radius:4px;margin:1rem 0}.ok{background:#e6f4ea}.refused{background:#fce8e6;border-left:4px solid #c5221f}.warn{background:#fef7e0;border-left:4px solid #e37400}
form{display:inline-block;margin-right:1rem;vertical-align:top}textarea{width:22rem;height:3rem}
#gate{border:2px solid #1a73e8;border-radius:6px;padding:.2rem 1rem 1rem;margin:1rem 0}#gate-facts th,#report-facts th{white-space:nowrap;color:#555;font-weight:normal}
pre{background:#f6f8fa;border:1px solid #ddd;padding:.6rem;font-size:12px;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
button{font-size:14px;padding:.4rem 1rem;border-radius:4px;cursor:pointer}.btn-approve{background:#188038;color:#fff;border:1px solid #0d652d}.btn-reject{background:#fff;color:#c5221f;border:2px solid #c5221f}
.decide.reject textarea{border-color:#c5221f}.confirm{padding:.6rem 1rem;border-radius:6px}.confirm-approve{border:2px solid #188038}.confirm-reject{border:2px solid #c5221f;background:#fce8e6}
.waiting-you{background:#fef7e0;font-weight:bold;padding:0 .3rem;border-radius:3px}#phase-counts span{margin-right:1rem}
`;

export function layout(title: string, body: string, script = '', nonce = ''): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<meta name="viewport" content="width=device-width">
<style>${STYLE}</style></head><body>${body}${script ? `<script nonce="${esc(nonce)}">${script}</script>` : ''}</body></html>`;
}

export function when(d: Date | string | null | undefined): string {
  if (!d) return '-';
  return new Date(d).toISOString().replace('T', ' ').slice(0, 19) + 'Z';
}

/** Who is at the keyboard: the name the proxy sent, and the signers file's person it is (or why none). */
export interface Visitor {
  /** The name in the proxy's identity header; null when no trusted proxy named anyone. */
  named: string | null;
  /** The person of the signers file, spelled as the file spells them; null when the name is nobody's. */
  person: string | null;
  /** Fingerprints of the person's keys in the file. */
  keys: readonly string[];
  /** Why the name is nobody's (e.g. "mallory is not in the signers file"). */
  why?: string;
}

export function userLine(v: Visitor): string {
  if (v.person !== null) {
    const as = v.named !== null && v.named !== v.person ? ` (the proxy says ${esc(v.named)})` : '';
    return `<p class="muted">Signed in as <b id="person">${esc(v.person)}</b>${as} (named by the proxy).</p>`;
  }
  return v.named !== null
    ? `<p class="muted" id="read-only">Read-only: the proxy names ${esc(v.named)}, and ${esc(v.why ?? 'that is nobody here')}.</p>`
    : '<p class="muted" id="read-only">Read-only: no person is named by a trusted proxy.</p>';
}

/** What the list says of a rollout waiting at its gate: until when, and whether it waits for the visitor. */
export interface Waiting {
  deadline: string;
  /** The visitor may answer it now. */
  forYou: boolean;
  /** Who may answer, as a person reads it. */
  who: string;
}

function phaseCell(r: RolloutSummary, w: Waiting | undefined): string {
  if (!w) return esc(r.phase);
  const cue = w.forYou
    ? `<span class="waiting-you">waiting for you</span>`
    : `<span class="muted">waiting for ${esc(w.who)}</span>`;
  return `${esc(r.phase)}<br>${cue}<br><span class="muted">until ${when(w.deadline)}</span>`;
}

export function rolloutsPage(
  rows: RolloutSummary[],
  visitor: Visitor,
  waiting: ReadonlyMap<string, Waiting> = new Map(),
): string {
  const active = rows.filter((r) => !r.outcome);
  const recent = rows.filter((r) => r.outcome);
  const byPhase = new Map<string, number>();
  for (const r of rows) byPhase.set(r.phase, (byPhase.get(r.phase) ?? 0) + 1);
  const forYou = [...waiting.values()].filter((w) => w.forYou).length;
  const counts =
    rows.length === 0
      ? ''
      : `<p id="phase-counts">${forYou > 0 ? `<span class="waiting-you" id="waiting-count">${forYou} waiting for you</span>` : ''}${[
          ...byPhase,
        ]
          .map(([p, n]) => `<span data-phase="${esc(p)}">${esc(p)} ${n}</span>`)
          .join('')}</p>`;
  const table = (list: RolloutSummary[], empty: string) =>
    list.length === 0
      ? `<p class="muted">${empty}</p>`
      : `<table><tr><th>Hotfix</th><th>Kind</th><th>Phase</th><th>Requester</th><th>Started</th><th>Ended</th><th>Outcome</th></tr>${list
          .map(
            (r) => `
<tr class="rollout-row${waiting.get(r.id)?.forYou ? ' for-you' : ''}" data-rollout="${esc(r.id)}"><td><a href="/rollouts/${encodeURIComponent(r.id)}">${esc(r.hotfix)}</a><br><code class="muted">${esc(r.id)}</code></td>
<td>${esc(r.kind)}</td><td>${phaseCell(r, waiting.get(r.id))}</td><td>${esc(r.requestedBy)}</td><td>${when(r.startedAt)}</td><td>${when(r.endedAt)}</td>
<td>${esc(r.outcome ?? 'running')}${r.error ? `<br><span class="muted">${esc(r.error.split('\n')[0].slice(0, 160))}</span>` : ''}</td></tr>`,
          )
          .join('')}</table>`;
  return layout(
    'km-hotfix rollouts',
    `<h1>km-hotfix rollouts</h1>${userLine(visitor)}${counts}
<h2>Active</h2>${table(active, 'No rollout is running.')}
<h2>Recent</h2>${table(recent, 'None yet.')}`,
  );
}

export interface RolloutView {
  status: RolloutStatus;
  events: StoredEvent[];
  visitor: Visitor;
  /** Per-session token for the forms; absent = read-only. */
  csrf: string | null;
  /** Why there are no buttons though a person is named (e.g. no signing key). */
  readOnlyWhy?: string;
  notice?: { ok: boolean; text: string; warn?: boolean };
  /** Live: the page subscribes to server-sent events. */
  live: boolean;
  /** The Content-Security-Policy nonce of this response's script. */
  nonce: string;
  /** The canary's direct URL as the gate gave it (web/facts.ts). */
  canaryUrl?: string;
  /** While the gate waits: what is being approved, the message, the buttons (web/gate-html.ts gateSection). */
  gate?: string;
  /** A finished rollout's report (web/gate-html.ts reportSection). */
  report?: string;
  /** The drained backends' Maximum Processes were put back (the report says to what). */
  restored?: boolean;
  /** A large fleet (no per-server list in the status): one page of the per-server ledger. */
  serverPage?: { page: ServerPage; state?: ServerState };
  /** One page of the drained backends from the ledger (sorted by name). */
  drainedPage?: DrainedPage;
}

/**
 * The drained backends: what an answer signs about them (count and sha256 of
 * their sorted list, downloadable as drained.txt), and a page of the list;
 * a large fleet's are thousands.
 */
export function drainedSection(st: RolloutStatus, p: DrainedPage | undefined, restored = false): string {
  const count = st.gate?.drained.count ?? st.drainedCount ?? st.drained.length;
  if (count === 0) return '';
  const base = `/rollouts/${encodeURIComponent(st.id)}`;
  // The ledger's page; a status that the ledger has not caught up with shows its own (first) entries.
  const page: DrainedPage =
    p && p.total > 0
      ? p
      : {
          total: st.drained.length,
          page: 1,
          pageSize: Math.max(1, st.drained.length),
          drained: [...st.drained].sort((a, b) => (a.server < b.server ? -1 : a.server > b.server ? 1 : 0)),
        };
  const pages = Math.max(1, Math.ceil(page.total / page.pageSize));
  const href = (n: number) => `${base}?drained=${n}`;
  const nav = [
    page.page > 1 ? `<a id="drained-prev" href="${esc(href(page.page - 1))}">← previous</a>` : '',
    `page ${page.page} of ${pages} (${page.total} backend(s))`,
    page.page < pages ? `<a id="drained-next" href="${esc(href(page.page + 1))}">next →</a>` : '',
  ]
    .filter(Boolean)
    .join(' · ');
  const signs = st.gate
    ? `<p>An approval or rejection names them as <code id="drained-digest">drained: ${esc(st.gate.drained.count)} sha256:${esc(st.gate.drained.sha256)}</code>: the sha256 of their names sorted, one per line (<a id="drained-list" href="${esc(`${base}/drained.txt`)}">drained.txt</a>).</p>`
    : `<p class="muted">${esc(count)} backend(s) (<a id="drained-list" href="${esc(`${base}/drained.txt`)}">drained.txt</a>).</p>`;
  const column = restored ? 'Maximum Processes (restored)' : 'Saved Maximum Processes';
  return `<h2>Drained backends</h2>${signs}<p id="drained-nav">${nav}</p>
<table id="drained"><tr><th>Server</th><th>${column}</th></tr>${page.drained.map((d) => `<tr data-drained="${esc(d.server)}"><td>${esc(d.server)}</td><td>${esc(d.maxProcesses)}</td></tr>`).join('')}</table>`;
}

function serverCell(name: string, state: ServerState): string {
  return `<div class="srv s-${esc(state)}" data-server="${esc(name)}" data-state="${esc(state)}" title="${esc(name)}: ${esc(state)}">${esc(name)}<br><span class="st">${esc(state)}</span></div>`;
}

function eventLine(e: StoredEvent): string {
  const d = e.detail;
  const bits: string[] = [];
  if (typeof d.phase === 'string') bits.push(`phase ${esc(d.phase)}`);
  if (e.kind === 'gate' && typeof d.url === 'string') bits.push(`the page showed the canary at ${esc(d.url)}`);
  if (e.kind === 'restore' && Array.isArray(d.restored))
    bits.push(
      (d.restored as { server?: unknown; maxProcesses?: unknown }[])
        .slice(0, 20)
        .map((r) => `${esc(r.server)} restored to ${esc(r.maxProcesses)}`)
        .join(', '),
    );
  if (typeof d.error === 'string') bits.push(`<span class="muted">${esc(d.error)}</span>`);
  const isSigned = typeof d.key === 'string' && d.key !== '';
  const comment = typeof d.comment === 'string' ? d.comment : typeof d.reason === 'string' ? d.reason : '';
  // A person's words are quoted; the workflow's own reasons (e.g. why this canary) are not.
  if (comment) bits.push(isSigned ? `“${esc(comment)}”` : `<span class="muted">${esc(comment)}</span>`);
  // As status and audit say it: "approved by dana via km-hotfix-web@delegate (SHA256:…)", the key being the delegate's.
  const verb = e.kind === 'approve' ? 'approved' : e.kind === 'reject' ? 'rejected' : 'signed';
  const signed = isSigned
    ? ` <span class="signed">${verb} by <b>${esc(e.actor ?? '')}</b>${typeof d.via === 'string' ? ` via ${esc(d.via)}` : ''} (<code>${esc(d.key)}</code>)</span>`
    : e.actor
      ? ` by ${esc(e.actor)}`
      : '';
  return `<tr class="event"><td class="nowrap">${when(e.at)}</td><td>${esc(e.kind)}</td><td class="nowrap">${e.server ? esc(e.server) : ''}</td><td>${bits.join(' ')}${signed}</td></tr>`;
}

export function rolloutPage(v: RolloutView): string {
  const st = v.status;
  const final = isFinalPhase(st.phase);
  // While the gate waits it names the canary (gateSection); once finished, the report does.
  const canary =
    st.canary && !v.gate && !final
      ? `<p>Canary: <b id="canary">${esc(st.canary)}</b>${v.canaryUrl ? ` — ${canaryAddress(v.canaryUrl)}` : ''}</p>`
      : '';
  const drained = v.gate ? '' : drainedSection(st, v.drainedPage, v.restored);
  const notice = v.notice
    ? `<div class="notice ${v.notice.warn ? 'warn' : v.notice.ok ? 'ok' : 'refused'}" id="notice">${esc(v.notice.text)}</div>`
    : '';
  const body = `<p><a href="/">← rollouts</a></p>
<h1>${esc(st.hotfix)}</h1><p><code>${esc(st.id)}</code></p>${userLine(v.visitor)}${notice}
<p>Phase: <b id="phase">${esc(st.phase)}</b>${st.paused ? ' (paused)' : ''} · requested by ${esc(st.requestedBy || '(not yet verified)')}${st.requestedKey ? ` <code>${esc(st.requestedKey)}</code>` : ''}</p>
${v.report ?? ''}${st.error && !final ? `<p class="notice refused" id="error">${esc(st.error)}</p>` : ''}
${st.needsAttention.length && !final ? `<p class="notice refused">Needs a person: ${esc(st.needsAttention.join(', '))}${st.needsAttentionMore ? ` and ${st.needsAttentionMore} more` : ''}</p>` : ''}
${canary}${v.gate ?? ''}${drained}
<h2>Servers</h2>${st.servers ? `<div class="grid" id="grid">${st.servers.map((s) => serverCell(s.name, s.state)).join('')}</div>` : largeFleet(st, v.serverPage)}
<h2>Timeline</h2><table id="timeline">${v.events.map(eventLine).join('')}</table>`;
  return layout(`${st.hotfix} · km-hotfix`, body, v.live && !final ? liveScript(st.id, st.phase) : '', v.nonce);
}

/** The canary's address as a link (http(s) only). */
export function canaryAddress(url: string): string {
  const href = safeHref(url);
  return href ? `<a id="canary-url" href="${esc(href)}">${esc(url)}</a>` : `<code id="canary-url">${esc(url)}</code>`;
}

/** "patched 120 · pending 19,880": the counts by state of a status. */
export function countsText(st: RolloutStatus): string {
  return `${st.serverCount} servers: ${Object.entries(st.serverCounts)
    .map(([k, n]) => `${k} ${n}`)
    .join(' · ')}`;
}

/** Above FULL_SERVER_LIST_MAX servers: counts (live), the servers needing attention, and a page of the ledger. */
function largeFleet(st: RolloutStatus, p: RolloutView['serverPage']): string {
  const attention = st.attention.length
    ? `<h3>Needing attention</h3><table id="attention">${st.attention.map((s) => `<tr><td>${esc(s.name)}</td><td>${esc(s.state)}</td><td>${esc(s.error ?? '')}</td></tr>`).join('')}</table>${st.attentionMore ? `<p class="muted">and ${st.attentionMore} more (filter the list below by state)</p>` : ''}`
    : '';
  let list = '';
  if (p) {
    const pages = Math.max(1, Math.ceil(p.page.total / p.page.pageSize));
    const href = (n: number) =>
      `/rollouts/${encodeURIComponent(st.id)}?page=${n}${p.state ? `&state=${encodeURIComponent(p.state)}` : ''}`;
    const nav = [
      p.page.page > 1 ? `<a id="prev-page" href="${esc(href(p.page.page - 1))}">← previous</a>` : '',
      `page ${p.page.page} of ${pages} (${p.page.total} server(s)${p.state ? ` in state ${esc(p.state)}` : ''})`,
      p.page.page < pages ? `<a id="next-page" href="${esc(href(p.page.page + 1))}">next →</a>` : '',
    ]
      .filter(Boolean)
      .join(' · ');
    list = `<h3>Every server, from the ledger</h3><p id="server-page-nav">${nav}</p>
<table id="server-page"><tr><th>Server</th><th>Role</th><th>State</th><th>Note</th></tr>${p.page.servers.map((s) => `<tr data-ledger-server="${esc(s.name)}"><td>${esc(s.name)}</td><td>${esc(s.role ?? '')}</td><td>${esc(s.state)}</td><td>${esc(s.error ?? '')}</td></tr>`).join('')}</table>`;
  }
  return `<p id="counts">${esc(countsText(st))}</p>${attention}${list}`;
}

/** Follows the rollout: server states recoloured in place; a new phase reloads the page (gate, timeline). */
function liveScript(id: string, phase: Phase): string {
  return `(function(){var phase=${scriptJson(phase)};var es=new EventSource(${scriptJson(`/rollouts/${encodeURIComponent(id)}/events`)});
es.onmessage=function(m){var d=JSON.parse(m.data);
if(d.counts){var c=document.getElementById('counts');if(c)c.textContent=d.counts;}
(d.servers||[]).forEach(function(s){var el=document.querySelector('[data-server="'+CSS.escape(s.name)+'"]');if(!el)return;
if(el.dataset.state!==s.state){el.dataset.state=s.state;el.className='srv s-'+s.state;el.querySelector('.st').textContent=s.state;el.title=s.name+': '+s.state;}});
if(d.phase!==phase){es.close();location.replace(${scriptJson(`/rollouts/${encodeURIComponent(id)}`)});}};
es.onerror=function(){};})();`;
}
