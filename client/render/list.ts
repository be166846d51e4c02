// `km-hotfix list` for people: one table line per workflow when the table
// fits the width (a wide terminal, a pipe), else a block per workflow whose
// first line is its id, alone and whole, so it can be copied.
import type { RolloutSummary } from '../../store/ledger-reads';
import { inert } from '../../domain/terminal';
import { formatTable } from '../commands/fleet';
import { elapsed } from './status';
import { cut, wrap } from './fit';

function when(d: Date): string {
  return d.toISOString().replace('T', ' ').slice(0, 19) + 'Z';
}

const took = (r: RolloutSummary) => (r.endedAt ? elapsed(r.endedAt.getTime() - r.startedAt.getTime()) : '-');
const firstLine = (error: string | null) => (error ?? '').split('\n')[0];

export function listText(rows: readonly RolloutSummary[], width: number): string {
  const table = formatTable(
    ['ID', 'KIND', 'HOTFIX', 'BY', 'PHASE', 'OUTCOME', 'SERVERS', 'STARTED', 'TOOK', 'ERROR'],
    rows.map((r) => [
      r.id,
      r.kind,
      r.hotfix,
      r.requestedBy,
      r.phase,
      r.outcome ?? '(running)',
      String(r.servers),
      when(r.startedAt),
      took(r),
      firstLine(r.error).slice(0, 80),
    ]),
  );
  if (table.split('\n').every((l) => l.length <= width)) return table;
  const out: string[] = [];
  for (const r of rows) {
    if (out.length) out.push('');
    out.push(inert(r.id));
    out.push(
      ...wrap(
        inert(
          `  ${r.kind} of ${r.hotfix} by ${r.requestedBy}: ${r.outcome ?? `running, ${r.phase}`}` +
            `${r.outcome && r.outcome !== r.phase ? ` (phase ${r.phase})` : ''}, ${r.servers} server${r.servers === 1 ? '' : 's'}` +
            `, started ${when(r.startedAt)}${r.endedAt ? `, took ${took(r)}` : ''}`,
        ),
        width,
        4,
      ),
    );
    // The error's first line, cut: 'km-hotfix status ID' shows it whole.
    if (r.error) out.push(cut(inert(`  error: ${firstLine(r.error)}`), width));
  }
  return out.join('\n');
}
