// `km-hotfix plan`: the dry run as a document (--json) and as text. The
// commands are rendered with keymanager/ssh's commandLine, so `sudo -n` and
// quoting are exactly what the worker will send.
import * as path from 'node:path';
import { commandLine } from '../../keymanager/ssh';
import type { FleetServer, Role } from '../../domain/fleet';
import type { DrainedBackend } from '../../domain/messages/rollout';
import type { PreparedRollout } from '../commands/prepare';
import { inert } from '../../domain/terminal';

/** Where the worker copies hotfix files (KeyManagerSsh's default, the vendor's suggestion). */
export const HOTFIX_DIR = '/var/lib/sshmgr';

export interface ServerPlan {
  name: string;
  role: Role;
  /** canary, batch N, skipped (has it already), or not targeted but drained. */
  step: 'canary' | 'fanout' | 'skipped';
  batch: number | null;
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
  batch: string;
  batches: string[][];
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
  const batchOf = new Map<string, number>();
  p.plan.batches.forEach((b, i) => b.forEach((n) => batchOf.set(n, i + 1)));
  const canary = p.plan.canary?.server;
  const uploadVia = p.hotfix.file ? byName.get(via ?? canary ?? p.plan.targets[0]) : undefined;
  const servers: ServerPlan[] = p.plan.targets.map((name) => {
    const s = byName.get(name)!;
    const skipped = p.plan.skipped.includes(name);
    return {
      name,
      role: s.role,
      step: skipped ? 'skipped' : name === canary ? 'canary' : 'fanout',
      batch: batchOf.get(name) ?? null,
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
    batches: p.plan.batches,
    servers,
    conflicts: p.conflicts,
  };
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
  if (d.batches.length > 0) {
    out.push(
      `${step++}. Fan-out in ${d.batches.length} batch${d.batches.length === 1 ? '' : 'es'} of ${d.batch} (inventory order):`,
    );
    d.batches.forEach((b, i) => out.push(`     batch ${i + 1}: ${b.join(', ')}`));
  } else {
    out.push(`${step++}. Fan-out: no other server to patch.`);
  }
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
