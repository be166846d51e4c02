// A rollout's timeline in the order things happened, not the order the
// ledger received its rows. Two writers fill rollout_event:
//
// - a step writes its own rows as it happens (sent, apply, unapply, restart,
//   verified, restore, delete, upload), and so does the web page the first
//   time it shows the gate (gate): their `at` is their own time;
// - the workflow writes the rest (started, phases, canary, drain, decisions)
//   through one ordered queue in the background: among themselves they are
//   in order, but a write may trail behind the steps the workflow started
//   after it (the drain's record landing after the canary's `apply`).
//
// So the workflow's rows keep their own order, a step's row never comes
// before the phase its step runs in, and the two are merged by time.
// Pure: the web page and the ledger's status use it.

/** What the order needs of a ledger row. */
export interface TimelineRow {
  seq: number;
  at: Date;
  kind: string;
  server: string | null;
  /** The row's key (e.g. `restart:apply:km-be-1:…`), when read. */
  key?: string;
  detail: Record<string, unknown>;
}

/** Rows a step writes itself, as it happens. */
const STEP_KINDS = new Set([
  'sent',
  'apply',
  'unapply',
  'restart',
  'verified',
  'restore',
  'delete',
  'upload',
  'upload-refused',
  'gate',
]);

export function isStepRow(r: TimelineRow): boolean {
  return STEP_KINDS.has(r.kind);
}

/** Whether a step row is part of putting the hotfix on (else taking it off), when it says. */
function applying(r: TimelineRow): boolean | undefined {
  if (r.kind === 'apply') return true;
  if (r.kind === 'unapply') return false;
  if (r.kind === 'sent') return r.detail.action === 'apply' ? true : r.detail.action === 'unapply' ? false : undefined;
  if (r.kind === 'verified') return typeof r.detail.applied === 'boolean' ? r.detail.applied : undefined;
  if (r.kind === 'restart' && r.key)
    return r.key.startsWith('restart:apply:') ? true : r.key.startsWith('restart:unapply:') ? false : undefined;
  return undefined;
}

/** The phases a step's row runs in, first choice first (the workflow's phase rows name them). */
function phasesOf(r: TimelineRow, canary: string | null, removal: boolean): string[] {
  if (r.kind === 'upload' || r.kind === 'upload-refused') return ['upload'];
  if (r.kind === 'restore') return ['restore', 'rolling_back'];
  if (r.kind === 'delete') return ['deleting'];
  if (r.kind === 'gate') return ['verifying'];
  const on = applying(r);
  if (on === true) return r.server !== null && r.server === canary ? ['canary'] : ['fanout'];
  if (on === false) return removal ? ['removing'] : ['rolling_back'];
  return [];
}

/**
 * The rows in event order: the workflow's rows in their own order; each
 * step's row after the phase row it runs in (when there is one), and
 * otherwise by time (then by the database's numbering) among the others.
 */
export function inEventOrder<T extends TimelineRow>(rows: readonly T[]): T[] {
  const bySeq = [...rows].sort((a, b) => a.seq - b.seq);
  const own = bySeq.filter((r) => !isStepRow(r));
  const steps = bySeq.filter(isStepRow).sort((a, b) => a.at.getTime() - b.at.getTime() || a.seq - b.seq);
  const canary = own.find((r) => r.kind === 'canary')?.server ?? null;
  const removal = own.some(
    (r) => r.kind === 'phase' && (r.detail.phase === 'removing' || r.detail.phase === 'deleting'),
  );
  // The first phase row of each phase, by its place among the workflow's rows.
  const phaseAt = new Map<string, number>();
  own.forEach((r, i) => {
    if (r.kind === 'phase' && typeof r.detail.phase === 'string' && !phaseAt.has(r.detail.phase))
      phaseAt.set(r.detail.phase, i);
  });
  const after = (r: T): number => {
    for (const p of phasesOf(r, canary, removal)) {
      const i = phaseAt.get(p);
      if (i !== undefined) return i;
    }
    return -1;
  };
  const out: T[] = [];
  let i = 0;
  let j = 0;
  while (i < own.length || j < steps.length) {
    const c = own[i];
    const s = steps[j];
    const ready = s !== undefined && after(s) < i;
    if (
      ready &&
      (c === undefined || s.at.getTime() < c.at.getTime() || (s.at.getTime() === c.at.getTime() && s.seq < c.seq))
    ) {
      out.push(s);
      j++;
    } else if (c !== undefined) {
      out.push(c);
      i++;
    } else {
      out.push(s);
      j++;
    }
  }
  return out;
}
