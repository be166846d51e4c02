// `km-hotfix plan`: the dry run as a document (--json) and as text. The
// commands are rendered with keymanager/ssh's commandLine, so `sudo -n` and
// quoting are exactly what the worker will send.
import * as path from 'node:path';
import { commandLine } from '../../keymanager/ssh';
import type { FleetServer, Role } from '../../domain/fleet';
import type { DrainedBackend } from '../../domain/messages/rollout';
import type { PreparedRollout } from '../commands/prepare';
import { inert } from '../../domain/terminal';
import { fanoutOrder, type FanoutOrder } from '../../domain/plan';

/** Where the worker copies hotfix files (KeyManagerSsh's default, the vendor's suggestion). */
export const HOTFIX_DIR = '/var/lib/sshmgr';

export interface ServerPlan {
  name: string;
  role: Role;
  /** canary, fan-out, or skipped (has it already). */
  step: 'canary' | 'fanout' | 'skipped';
  /** When it starts: 1 the canary, 2 the first servers of the fan-out (at once), …; null when skipped. */
  start: number | null;
  commands: { apply: string[]; rollback: string[] };
}

export interface PlanDocument {
  hotfix: string;
  component: string;
  file: { fileName: string; version: string; sha256: string } | null;
  registered: boolean;
  upload: { via: string; commands: string[] } | null;
  targets: string[];
  skipped: string[];
  canary: { server: string; reason: string; url: string | null } | null;
  drained: DrainedBackend[];
  /** --batch as given. */
  batch: string;
  /** Every server to patch in the order they start (the canary first; the fan-out as in fanout.starts). */
  order: string[];
  /** The fan-out window (see domain/plan.ts fanoutOrder); null when no server is left after the canary. */
  fanout: FanoutOrder | null;
  servers: ServerPlan[];
  conflicts: { id: string; reason: string }[];
}

function applyCommands(s: FleetServer, name: string): string[] {
  return [
    commandLine(s, ['ssh-mgr-controller', `--apply-hotfix=${name}`]),
    commandLine(s, ['supervisorctl', 'restart', 'all']),
    commandLine(s, ['supervisorctl', 'status']),
  ];
}

function rollbackCommands(s: FleetServer, name: string): string[] {
  return [
    commandLine(s, ['ssh-mgr-controller', `--unapply-hotfix=${name}`]),
    commandLine(s, ['supervisorctl', 'restart', 'all']),
    commandLine(s, ['supervisorctl', 'status']),
  ];
}

function uploadCommands(s: FleetServer, fileName: string): string[] {
  const remote = path.posix.join(HOTFIX_DIR, fileName);
  return [
    commandLine(s, ['mkdir', '-p', HOTFIX_DIR]),
    `(SFTP) write ${remote}${s.sudo ? ' (staged in the login home, then moved with sudo -n mv -f)' : ''}`,
    commandLine(s, ['chown', 'sshmgr:sshmgr', remote]),
    commandLine(s, ['chmod', '0750', remote]),
    commandLine(s, ['ssh-mgr-controller', `--upload-hotfix=${remote}`]),
  ];
}

export function planDocument(p: PreparedRollout, batch: string, via?: string): PlanDocument {
  const byName = new Map(p.fleet.map((s) => [s.name, s]));
  const fanout =
    p.plan.fanout.length > 0 ? fanoutOrder(p.plan.fanout, Math.min(p.plan.window, p.plan.fanout.length)) : null;
  const canary = p.plan.canary?.server;
  const startOf = new Map<string, number>(canary ? [[canary, 1]] : []);
  fanout?.starts.forEach((names, i) => names.forEach((n) => startOf.set(n, i + 2)));
  const uploadVia = p.hotfix.file ? byName.get(via ?? canary ?? p.plan.targets[0]) : undefined;
  const servers: ServerPlan[] = p.plan.targets.map((name) => {
    const s = byName.get(name)!;
    const skipped = p.plan.skipped.includes(name);
    return {
      name,
      role: s.role,
      step: skipped ? 'skipped' : name === canary ? 'canary' : 'fanout',
      start: startOf.get(name) ?? null,
      commands: skipped
        ? { apply: [], rollback: [] }
        : { apply: applyCommands(s, p.hotfix.name), rollback: rollbackCommands(s, p.hotfix.name) },
    };
  });
  return {
    hotfix: p.hotfix.name,
    component: p.hotfix.component,
    file: p.hotfix.file
      ? { fileName: p.hotfix.file.fileName, version: p.hotfix.file.version, sha256: p.hotfix.file.sha256 }
      : null,
    registered: p.registered,
    upload:
      uploadVia && p.hotfix.file && !p.registered
        ? { via: uploadVia.name, commands: uploadCommands(uploadVia, p.hotfix.file.fileName) }
        : null,
    targets: p.plan.targets,
    skipped: p.plan.skipped,
    canary: p.plan.canary ? { ...p.plan.canary, url: byName.get(p.plan.canary.server)?.url ?? null } : null,
    drained: p.drained,
    batch,
    order: [...(canary ? [canary] : []), ...(fanout?.starts.flat() ?? [])],
    fanout,
    servers,
    conflicts: p.conflicts,
  };
}

/** Start steps a text plan lists (the JSON has them all). */
const STARTS_SHOWN = 8;

/** The fan-out as it will run: the window, what each place patches in turn, the start order. */
function fanoutText(f: FanoutOrder, batch: string, step: number): string[] {
  const n = f.runs.reduce((a, r) => a + r.length, 0);
  const out = [
    `${step}. Fan-out: ${n} server${n === 1 ? '' : 's'} in a window of ${f.window} (--batch ${batch}): at most ${f.window} at once, never in batches.`,
  ];
  if (f.runs.length <= f.window) {
    out.push(`   Each place patches its servers one after another, and the places work side by side:`);
    f.runs.forEach((r, i) => out.push(`     place ${i + 1}: ${r.join(', ')}`));
  } else {
    out.push(
      `   In runs of ${f.runLength}: the first ${f.window} start at once, one per place; a place patches its run's servers one after another, then takes the next run:`,
    );
    f.runs.forEach((r, i) => out.push(`     run ${i + 1}${i < f.window ? ` (place ${i + 1})` : ''}: ${r.join(', ')}`));
  }
  const shown = f.starts.slice(0, STARTS_SHOWN).map((s) => s.join(' + '));
  out.push(
    `   Start order (servers joined by + start at once; a slow server delays only its own place): ${shown.join(', then ')}${f.starts.length > STARTS_SHOWN ? ', …' : ''}`,
  );
  if (n > 500)
    out.push(
      '   Above 500 servers the window is shared by batch children that take slices of 500 side by side: a later slice may start before an earlier one ends.',
    );
  return out;
}

export function planText(d: PlanDocument): string {
  const out: string[] = [];
  out.push(`Plan for ${d.hotfix} (${d.component} hotfix) — a dry run: nothing was changed.`);
  if (d.file)
    out.push(
      `File: ${d.file.fileName} (Key Manager ${d.file.version}, sha256 ${d.file.sha256.slice(0, 16)}…)${d.registered ? ', already registered' : ''}`,
    );
  out.push(
    `Servers: ${d.targets.length} targeted${d.skipped.length ? `; skipped, already applied: ${d.skipped.join(', ')}` : ''}`,
  );
  if (!d.canary) {
    out.push('Every target already has this hotfix: a rollout would only record that and complete.');
    return out.join('\n');
  }
  out.push('');
  let step = 1;
  out.push(
    `${step++}. Preflight (changes nothing): every target answers SSH with its pinned host key and all services are RUNNING; no other rollout holds these servers.`,
  );
  if (d.upload) {
    out.push(`${step++}. Upload through ${d.upload.via}:`);
    for (const c of d.upload.commands) out.push(`     ${c}`);
  }
  if (d.drained.length > 0) {
    out.push(
      `${step++}. Drain: set Maximum Processes to 0 on the other unpatched backends, so only the canary runs operations (restored exactly after the verification, and in any rollback):`,
    );
    for (const x of d.drained)
      out.push(
        `     ${x.server.padEnd(Math.max(...d.drained.map((y) => y.server.length)))}  Maximum Processes ${x.maxProcesses} -> 0`,
      );
  }
  out.push(`${step++}. Canary: ${d.canary.server} — ${d.canary.reason}.`);
  out.push(
    `${step++}. Verification: an approver checks ${d.canary.url ? `${inert(d.canary.url)} directly (not through the load balancer)` : `${d.canary.server} directly`}, then 'km-hotfix approve ID' or 'km-hotfix reject ID --reason ...'.`,
  );
  if (d.fanout) out.push(...fanoutText(d.fanout, d.batch, step++));
  else out.push(`${step++}. Fan-out: no other server to patch.`);
  out.push('');
  out.push(
    'Commands per server (over SSH; a rollback runs the unapply commands on every server this rollout patched, in reverse order):',
  );
  // Servers with the same commands (all but sudo ones, usually) are listed once: a plan for 2,000 servers stays readable.
  const groups = new Map<string, { names: string[]; apply: string[]; rollback: string[] }>();
  const skipped: string[] = [];
  for (const s of d.servers) {
    if (s.step === 'skipped') {
      skipped.push(s.name);
      continue;
    }
    const key = JSON.stringify(s.commands);
    const g = groups.get(key) ?? { names: [], apply: s.commands.apply, rollback: s.commands.rollback };
    g.names.push(s.step === 'canary' ? `${s.name} (canary)` : s.name);
    groups.set(key, g);
  }
  for (const g of groups.values()) {
    out.push(`  ${g.names.join(', ')}`);
    out.push(`    apply:     ${g.apply.join('\n               ')}`);
    out.push(`    rollback:  ${g.rollback.join('\n               ')}`);
  }
  if (skipped.length > 0) out.push(`  skipped (have it already): ${skipped.join(', ')}`);
  if (d.conflicts.length > 0) {
    out.push('');
    for (const c of d.conflicts)
      out.push(`Note: rollout ${c.id} is still active on ${c.reason}: a rollout would be refused until it ends.`);
  }
  return out.join('\n');
}
