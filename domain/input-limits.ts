// Limits on what km-hotfix reads from a person's files, and the checks that
// need only the bytes. Documented in README "Configuration" and docs/SECURITY.md.

const MIB = 1024 * 1024;

export interface InputLimits {
  /** A hotfix file larger than this is refused before it is read (vendor hotfixes are a few MiB). */
  hotfixFileBytes: number;
  /** An inventory file larger than this is refused before it is parsed (~1,000 bytes per server in YAML). */
  inventoryBytes: number;
}

export const DEFAULT_LIMITS: InputLimits = { hotfixFileBytes: 256 * MIB, inventoryBytes: 4 * MIB };

/** PostgreSQL's bytea holds at most 1 GiB: no setting may go past it. */
export const HARD_MAX_BYTES = 1023 * MIB;

export class LimitError extends Error {
  override name = 'LimitError';
}

function mib(env: Record<string, string | undefined>, variable: string, fallback: number): number {
  const raw = env[variable];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || n < 1 || n * MIB > HARD_MAX_BYTES)
    throw new LimitError(`${variable} must be a whole number of MiB from 1 to ${HARD_MAX_BYTES / MIB} (got '${raw}')`);
  return n * MIB;
}

/** KM_HOTFIX_MAX_FILE_MIB, KM_HOTFIX_MAX_INVENTORY_MIB. */
export function inputLimits(env: Record<string, string | undefined>): InputLimits {
  return {
    hotfixFileBytes: mib(env, 'KM_HOTFIX_MAX_FILE_MIB', DEFAULT_LIMITS.hotfixFileBytes),
    inventoryBytes: mib(env, 'KM_HOTFIX_MAX_INVENTORY_MIB', DEFAULT_LIMITS.inventoryBytes),
  };
}

export function formatBytes(n: number): string {
  return n >= MIB && n % MIB === 0 ? `${n / MIB} MiB` : `${n} bytes`;
}

/** Vendor hotfixes are gzip files: the first two bytes are 1f 8b (RFC 1952). */
export function isGzip(head: Uint8Array): boolean {
  return head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b;
}
