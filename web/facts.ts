// What the page shows about a rollout that its status does not carry, from
// what was recorded: the hotfix file (its name and so the Key Manager
// version, from the start's record or the hotfix files table), the canary's
// URL as the gate showed it (recorded in the ledger the first time the page
// saw the gate: the inventory's URL may have changed since), and the
// Maximum Processes put back.
import type { Sql } from 'postgres';
import { parseHotfixFileName } from '../domain/hotfix';
import type { DrainedBackend, RolloutStatus } from '../domain/messages/rollout';
import type { StoredEvent } from '../store/ledger-reads';
import { hotfixFileOf } from '../store/hotfix-files';
import { appendEvent } from '../store/ledger-writes';

export interface RolloutFacts {
  /** The hotfix file's name, when known. */
  fileName?: string;
  /** The Key Manager version the file is for (from its name). */
  version?: string;
  /** The canary's direct URL as the gate gave it (live, or as recorded when the page saw the gate). */
  canaryUrl?: string;
  /** The drained backends' Maximum Processes as restored, when the restore was recorded. */
  restored?: DrainedBackend[];
}

const GATE_SHOWN = 'gate:shown';

function uploadFileName(events: readonly StoredEvent[]): string | undefined {
  const options = events.find((e) => e.kind === 'started')?.detail.options as
    { upload?: { fileName?: unknown } } | undefined;
  return typeof options?.upload?.fileName === 'string' ? options.upload.fileName : undefined;
}

export async function rolloutFacts(sql: Sql, st: RolloutStatus, events: readonly StoredEvent[]): Promise<RolloutFacts> {
  const out: RolloutFacts = {};
  let fileName = uploadFileName(events);
  if (!fileName && st.sha256 && st.sha256 !== 'none')
    fileName = (await hotfixFileOf(sql, st.sha256, st.hotfix).catch(() => undefined))?.fileName;
  if (fileName) {
    out.fileName = fileName;
    try {
      out.version = parseHotfixFileName(fileName).version;
    } catch {
      // A name that does not parse names no version.
    }
  }
  const shown = events.find((e) => e.kind === 'gate' && typeof e.detail.url === 'string');
  const url = st.gate?.url ?? (shown?.detail.url as string | undefined);
  if (url) out.canaryUrl = url;
  const restored = events.find((e) => e.kind === 'restore')?.detail.restored;
  if (Array.isArray(restored)) out.restored = restored as DrainedBackend[];
  return out;
}

/** Rollouts whose gate this process has recorded (the write is idempotent; this saves the round trip). */
const recorded = new Set<string>();

/**
 * The gate as the page shows it (a rollout's page or the list), into the
 * ledger once: a finished rollout's page then names the canary's URL as it
 * was, not the inventory's today. `events` already read spare the write when
 * it is there; the write itself is idempotent (keyed). Bookkeeping: a failed
 * write costs only that.
 */
export async function recordGateShown(sql: Sql, st: RolloutStatus, events: readonly StoredEvent[]): Promise<void> {
  const gate = st.gate;
  if (st.phase !== 'verifying' || !gate || recorded.has(st.id)) return;
  if (events.some((e) => e.kind === 'gate')) {
    recorded.add(st.id);
    return;
  }
  try {
    await appendEvent(sql, {
      rolloutId: st.id,
      key: GATE_SHOWN,
      kind: 'gate',
      server: gate.canary,
      detail: { ...(gate.url ? { url: gate.url } : {}), deadline: gate.deadline, approvers: gate.approvers },
    });
    recorded.add(st.id);
    if (recorded.size > 10_000) recorded.clear();
  } catch {
    // The ledger is unreachable: the live page still shows the gate.
  }
}
