// A rollout's status for people: the block that `status` prints and that
// `status --watch` redraws, and the one-line changes printed instead when
// stdout is not a terminal.
import { isFinalPhase, ServerState } from '../../domain/rollout';
import { DrainedBackend, RolloutStatus, ServerStatus } from '../../domain/messages/rollout';
import { countByState } from '../../domain/status';
import { formatTable } from '../commands/fleet';
import { inert } from '../../domain/terminal';
import { commandLines, cut, wrap } from './fit';

export function clock(iso: string | Date): string {
  const d = typeof iso === 'string' ? new Date(iso) : iso;
  return d.toTimeString().slice(0, 8);
}

/** A local date and time, to the second: 2025-01-01 12:00:00. */
export function when(iso: string | Date): string {
  const d = typeof iso === 'string' ? new Date(iso) : iso;
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(d)}`;
}

/** 850ms, 12.3s, 3m04s, 1h02m. */
export function elapsed(ms: number): string {
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** The first line of an error, cut to fit a line among others. */
export function short(error: string, max = 110): string {
  const l = error.split('\n')[0];
  return l.length > max ? `${l.slice(0, max - 1)}…` : l;
}

export function serverElapsed(s: Pick<ServerStatus, 'startedAt' | 'endedAt'>, now: number): string {
  if (!s.startedAt) return '-';
  const end = s.endedAt ? Date.parse(s.endedAt) : now;
  return elapsed(end - Date.parse(s.startedAt));
}

const ROLLBACK_PHASES = new Set(['rolling_back', 'rolled_back', 'rollback_failed']);
const FORWARD_DONE: ReadonlySet<ServerState> = new Set(['patched', 'skipped', 'removed']);
const BACKWARD_DONE: ReadonlySet<ServerState> = new Set(['rolled_back', 'untouched', 'skipped', 'rollback_failed']);

export interface Progress {
  done: number;
  total: number;
  label: string;
}

/** Servers finished in the current direction: patched (or removed) going forward, undone in a rollback. */
export function progress(st: RolloutStatus): Progress {
  const back = ROLLBACK_PHASES.has(st.phase);
  const set = back ? BACKWARD_DONE : FORWARD_DONE;
  const label = back ? 'settled in rollback' : st.kind === 'removal' ? 'done' : 'patched or skipped';
  const counts = countsOf(st);
  const done = (Object.entries(counts) as [ServerState, number][])
    .filter(([k]) => set.has(k))
    .reduce((a, [, n]) => a + n, 0);
  return { done, total: totalOf(st), label };
}

/** Servers per state (a status from before bounded statuses has only its list). */
export function countsOf(st: RolloutStatus): Partial<Record<ServerState, number>> {
  return st.serverCounts ?? countByState(st.servers ?? []);
}

export function totalOf(st: RolloutStatus): number {
  return st.serverCount ?? st.servers?.length ?? 0;
}

/** "a, b and 3 more" for the needs-a-person list. */
function attentionNames(st: RolloutStatus): string {
  const more = st.needsAttentionMore ?? 0;
  return `${st.needsAttention.join(', ')}${more > 0 ? ` and ${more} more ('km-hotfix status ${st.id} --servers --state rollback_failed')` : ''}`;
}

export function bar(done: number, total: number, width = 24, fancy = true): string {
  const filled = total === 0 ? width : Math.round((done / total) * width);
  const [on, off] = fancy ? ['█', '░'] : ['#', '-'];
  return on.repeat(filled) + off.repeat(width - filled);
}

function stateCounts(st: RolloutStatus): string {
  return Object.entries(countsOf(st))
    .map(([k, n]) => `${k} ${n}`)
    .join(' · ');
}

/**
 * "bob (SHA256:…)": a person as the signers file names them, with the key that signed;
 * "dana via km-hotfix-web@delegate (SHA256:…)" when a delegate signed for her, the key then being the delegate's.
 */
export function signer(by: string, key: string | null | undefined, via?: string): string {
  if (!by) return '(start signature being checked)';
  const who = via ? `${by} via ${via}` : by;
  return key ? `${who} (${key})` : who;
}

function gateLine(st: RolloutStatus, now: number): string | undefined {
  const g = st.gate;
  if (!g) return undefined;
  const who = g.approvers.length > 0 ? `${g.approvers.join(' or ')}` : `any approver but ${st.requestedBy}`;
  return `waiting since ${clock(g.waitingSince)} (${elapsed(now - Date.parse(g.waitingSince))}) for ${who} to verify canary ${g.canary}`;
}

/** A line that names servers one by one is at most this long; past it, they are counted (a fleet's drained backends are thousands). */
export const NAMED_LINE_MAX = 160;

/** The drained backends by name while they fit a line, else how many and where the list is. */
export function drainedText(st: RolloutStatus, named: (d: DrainedBackend) => string): string {
  // A bounded status carries the first few hundred and the count.
  const count = st.drainedCount ?? st.drained.length;
  const byName = st.drained.map(named).join(', ');
  if (count === st.drained.length && byName.length <= NAMED_LINE_MAX) return byName;
  return `${count} backends ('km-hotfix status ${st.id} --drained' lists them)`;
}

/** States a person watching wants to see first when not every server fits. */
const URGENT = new Set(['failed', 'rollback_failed', 'patching', 'rolling_back', 'removing']);

/** At most `max` servers: the urgent ones and the canary first, in inventory order; the rest summed up. */
export function serversToShow(st: RolloutStatus, max: number): { shown: ServerStatus[]; hidden: string | undefined } {
  const all = st.servers;
  if (!all) {
    // A large fleet: the status names only the servers needing attention; the ledger pages the rest.
    const shown = (st.attention ?? []).slice(0, Math.max(1, max - 1));
    const rest = totalOf(st) - shown.length;
    return {
      shown,
      hidden: rest > 0 ? `… and ${rest} more: 'km-hotfix status ${st.id} --servers' pages every server` : undefined,
    };
  }
  if (all.length <= max) return { shown: all, hidden: undefined };
  const rank = (s: ServerStatus) => (URGENT.has(s.state) ? 0 : s.name === st.canary ? 1 : 2);
  const keep = new Set(
    [...all]
      .sort((a, b) => rank(a) - rank(b))
      .slice(0, Math.max(1, max - 1))
      .map((s) => s.name),
  );
  const shown = all.filter((s) => keep.has(s.name));
  const counts = new Map<string, number>();
  for (const s of all) if (!keep.has(s.name)) counts.set(s.state, (counts.get(s.state) ?? 0) + 1);
  return {
    shown,
    hidden: `… and ${all.length - shown.length} more (${[...counts].map(([k, n]) => `${k} ${n}`).join(' · ')}): 'km-hotfix status ${st.id}' lists them all`,
  };
}

/** Where a value starts after its key. */
const KEY = 9;

/**
 * The full status block; `maxServers` bounds the table (a live view must fit
 * the terminal) and `width` its lines (client/render/fit.ts): the id is the
 * first line, alone; values wrap under their key; a command with the id puts
 * the id on a line of its own when it does not fit.
 */
export function statusBlock(
  st: RolloutStatus,
  now = Date.now(),
  fancy = true,
  maxServers = Infinity,
  width = Infinity,
): string[] {
  const out: string[] = [];
  const kv = (k: string, v: string) => out.push(...wrap(inert(`${k.padEnd(KEY)}${v}`), width, KEY));
  const command = (c: string, after = '') => out.push(...commandLines(KEY, c, st.id, after, width));
  // The id alone, whole: a person copies it from here (its kind is its first word).
  out.push(inert(st.id));
  kv(
    'hotfix',
    `${st.hotfix}, started by ${signer(st.requestedBy, st.requestedKey)} at ${clock(st.startedAt)}${st.endedAt ? `, ended ${clock(st.endedAt)} after ${elapsed(Date.parse(st.endedAt) - Date.parse(st.startedAt))}` : ` (${elapsed(now - Date.parse(st.startedAt))} ago)`}`,
  );
  // A finished workflow is not paused, whatever an older history says.
  const paused = st.paused && !isFinalPhase(st.phase);
  const resume = `  [PAUSED: km-hotfix resume ${st.id}]`;
  if (!paused) kv('phase', st.phase);
  else if (KEY + st.phase.length + resume.length <= width) kv('phase', st.phase + resume);
  else {
    kv('phase', `${st.phase}  [PAUSED: resume with]`);
    command('km-hotfix resume');
  }
  if (st.kind === 'rollout') kv('canary', st.canary ?? '(not chosen yet)');
  if (st.drained.length > 0) {
    const restored = !['drain', 'canary', 'verifying'].includes(st.phase);
    kv(
      'drained',
      `${drainedText(st, (d) => `${d.server} (Maximum Processes ${d.maxProcesses})`)}${restored ? ' — restored' : ' — set to 0 now'}`,
    );
  }
  if (st.kind === 'upload') {
    if (st.servers?.[0]) kv('via', st.servers[0].name);
    if (st.error) kv('error', st.error.split('\n')[0]);
    return out.map(inert);
  }
  const p = progress(st);
  if (p.total === 0) kv('progress', 'servers are known once the preflight has run');
  else
    kv(
      'progress',
      `[${bar(p.done, p.total, 24, fancy)}] ${p.done}/${p.total} ${p.label}${p.total ? `  (${stateCounts(st)})` : ''}`,
    );
  const gate = gateLine(st, now);
  if (gate) {
    kv('gate', gate);
    // Its own line: with a canary's long name the gate line would not fit a terminal.
    if (st.gate) kv('', `deadline ${when(st.gate.deadline)} (no answer by then counts as a rejection)`);
    if (st.gate?.url) kv('', `check ${st.gate.url} directly, not through the load balancer`);
    if (st.gate && st.gate.drained.count > 0)
      kv('', `an answer signs  drained: ${st.gate.drained.count} sha256:${st.gate.drained.sha256}`);
    command('km-hotfix approve');
    command('km-hotfix reject', ' --reason "..."');
  }
  for (const a of st.approvals)
    kv(
      a.decision === 'approve' ? 'approved' : 'rejected',
      `by ${signer(a.by, a.key, a.via)} at ${clock(a.at)}${a.comment ? `: ${a.comment}` : ''}`,
    );
  for (const d of (st.decisions ?? []).filter((x) => x.action === 'abort'))
    kv('aborted', `by ${signer(d.by, d.key, d.via)}${d.comment ? `: ${d.comment}` : ''}`);
  // maxServers 0: no table (a live view on a short terminal; the progress line counts them).
  if (maxServers > 0 && (st.servers ? st.servers.length > 0 : (st.attention ?? []).length > 0)) {
    out.push('');
    if (!st.servers)
      out.push(
        ...wrap(
          `servers needing attention (the status of ${p.total} servers lists no more; 'km-hotfix status ${st.id} --servers' pages them all):`,
          width,
          2,
        ),
      );
    const { shown, hidden } = serversToShow(st, maxServers);
    const table = formatTable(
      ['SERVER', 'ROLE', 'STATE', 'ELAPSED', 'NOTE'],
      shown.map((s) => [
        s.name,
        s.role,
        s.state,
        serverElapsed(s, now),
        s.error ? short(s.error) : s.name === st.canary ? 'canary' : '',
      ]),
    );
    // The note (an error) is what gives way: the whole error is in --json and the ledger.
    out.push(...table.split('\n').map((l) => cut(l, width)));
    if (hidden) out.push(...wrap(inert(hidden), width, 2));
  }
  if (st.error) {
    out.push('');
    kv('error', st.error.split('\n')[0]);
  }
  if (st.needsAttention.length > 0) kv('ATTENTION', `needs a person: ${attentionNames(st)}`);
  // Comments, reasons, errors and names came from people and files: printed inert, one line each.
  return out.map(inert);
}

/** The one-line outcome printed when a workflow has ended. */
export function outcomeLine(st: RolloutStatus): string {
  return inert(outcome(st));
}

function outcome(st: RolloutStatus): string {
  const n = (state: ServerState) => countsOf(st)[state] ?? 0;
  switch (st.phase) {
    case 'completed':
      if (st.kind === 'removal') return `completed: ${st.hotfix} removed from ${n('removed')} server(s)`;
      if (st.kind === 'upload')
        return `completed: ${st.hotfix} is registered in Key Manager${st.servers?.[0] ? ` (uploaded via ${st.servers[0].name})` : ''}`;
      return `completed: ${st.hotfix} applied on ${n('patched')} server(s)${n('skipped') ? `, ${n('skipped')} had it already` : ''}`;
    case 'rolled_back':
      return `rolled back: ${st.error ?? 'stopped'}; every change was undone (${n('rolled_back')} server(s) rolled back)`;
    case 'rollback_failed':
      return `ROLLBACK FAILED: ${st.error ?? ''}; needs a person: ${attentionNames(st)}`;
    case 'failed':
      return `failed: ${st.error ?? 'unknown error'}`;
    default:
      return `${st.phase}`;
  }
}

/** What changed between two observations, as plain timestamped lines (for pipes and logs). */
export function changeLines(prev: RolloutStatus | undefined, cur: RolloutStatus, now = Date.now()): string[] {
  const t = clock(new Date(now));
  const out: string[] = [];
  const line = (s: string) => out.push(`${t}  ${s}`);
  if (!prev) line(`${cur.kind} ${cur.id}: ${cur.hotfix}, started by ${signer(cur.requestedBy, cur.requestedKey)}`);
  else if (!prev.requestedBy && cur.requestedBy)
    line(`started by ${signer(cur.requestedBy, cur.requestedKey)} (signature verified)`);
  // Answers first: they come before the phase they lead to.
  for (const a of cur.approvals.slice(prev?.approvals.length ?? 0))
    line(
      `${a.decision === 'approve' ? 'approved' : 'rejected'} by ${signer(a.by, a.key, a.via)}${a.comment ? `: ${a.comment}` : ''}`,
    );
  if (!prev || prev.phase !== cur.phase) {
    let extra = '';
    if (cur.phase === 'canary' && cur.canary) extra = `: ${cur.canary}`;
    if (cur.phase === 'drain' || (cur.phase === 'canary' && cur.drained.length && !prev?.drained.length))
      extra += cur.drained.length ? ` (drained ${drainedText(cur, (d) => `${d.server} from ${d.maxProcesses}`)})` : '';
    line(`phase ${cur.phase}${extra}`);
  }
  if (prev && prev.paused !== cur.paused) line(cur.paused ? `paused (km-hotfix resume ${cur.id})` : 'resumed');
  // A large fleet's status names only the servers needing attention: those are the changes shown (counts in the progress).
  const listed = (x: RolloutStatus) => x.servers ?? x.attention ?? [];
  const before = new Map(prev ? listed(prev).map((s) => [s.name, s]) : []);
  const p = progress(cur);
  // An upload's one "server" is where the file went, not a patched server.
  for (const s of cur.kind === 'upload' ? [] : listed(cur)) {
    const was = before.get(s.name);
    if (was?.state === s.state) continue;
    if (!was && s.state === 'pending') continue;
    const took = s.endedAt && s.startedAt ? ` in ${elapsed(Date.parse(s.endedAt) - Date.parse(s.startedAt))}` : '';
    line(`${s.name} ${s.state}${took}${s.error ? `: ${short(s.error)}` : ''}  [${p.done}/${p.total}]`);
  }
  if (!cur.servers && cur.kind !== 'upload' && prev && progress(prev).done !== p.done)
    line(`progress ${p.done}/${p.total} ${p.label} (${stateCounts(cur)})`);
  if (cur.gate && !prev?.gate) line(`waiting for verification: ${cur.gate.message}`);
  // A final phase prints the error in the outcome line: say it once.
  if (cur.error && cur.error !== prev?.error && !isFinalPhase(cur.phase)) line(`error: ${cur.error.split('\n')[0]}`);
  if (cur.needsAttention.length && cur.needsAttention.join() !== prev?.needsAttention.join())
    line(`needs a person: ${attentionNames(cur)}`);
  return out.map(inert);
}
