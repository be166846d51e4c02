// Faults pending on one simulated server (FaultSpec). Counters are consumed
// by the commands they affect; latencies and version overrides persist
// until cleared. Allocated only for servers that were given a fault.
import type { FaultSpec } from './types';

export type CommandKind = 'apply' | 'unapply' | 'restart' | 'status' | 'upload' | 'other';

type Counter = 'failApplies' | 'failUnapplies' | 'failNext';

export class Faults {
  private spec?: FaultSpec;

  add(spec: FaultSpec): void {
    validateFaultSpec(spec);
    const cur = (this.spec ??= {});
    for (const k of ['failApplies', 'failUnapplies', 'dropConnection', 'failNext'] as const) {
      if (spec[k] !== undefined) cur[k] = (cur[k] ?? 0) + spec[k];
    }
    if (spec.dropConnection !== undefined) cur.dropOn = spec.dropOn ?? cur.dropOn ?? 'apply';
    else if (spec.dropOn !== undefined) cur.dropOn = spec.dropOn;
    if (spec.dropWhen !== undefined) cur.dropWhen = spec.dropWhen;
    if (spec.unreachableOn !== undefined) {
      cur.unreachableOn = spec.unreachableOn;
      cur.unreachableMs = spec.unreachableMs ?? 2_000;
    }
    if (spec.failNext !== undefined) cur.failOn = spec.failOn ?? cur.failOn ?? 'any';
    else if (spec.failOn !== undefined) cur.failOn = spec.failOn;
    if (spec.hangMs !== undefined) {
      cur.hangMs = spec.hangMs;
      cur.hangOn = spec.hangOn ?? 'any';
      cur.hangCount = spec.hangCount ?? 1;
    }
    for (const k of ['fatalService', 'applyMs', 'restartMs', 'kmVersion'] as const) {
      if (spec[k] !== undefined) (cur as Record<string, unknown>)[k] = spec[k];
    }
  }

  clear(): void {
    this.spec = undefined;
  }

  /** What is pending now (a copy); refuseMs is reported by the server. */
  pending(): FaultSpec {
    const out: FaultSpec = { ...(this.spec ?? {}) };
    for (const k of ['failApplies', 'failUnapplies', 'dropConnection', 'failNext'] as const)
      if (out[k] === 0) delete out[k];
    if (!out.dropConnection) {
      delete out.dropOn;
      delete out.dropWhen;
    }
    if (!out.failNext) delete out.failOn;
    return out;
  }

  /** Consume one unit of a counter; true when the fault fires. */
  take(counter: Counter): boolean {
    const n = this.spec?.[counter] ?? 0;
    if (n <= 0 || !this.spec) return false;
    this.spec[counter] = n - 1;
    return true;
  }

  /** A drop due on this command: before it runs, or after it took effect (the default). */
  takeDrop(kind: CommandKind, when: 'before' | 'after'): boolean {
    const s = this.spec;
    if (!s || !s.dropConnection || (s.dropWhen ?? 'after') !== when || !matches(s.dropOn ?? 'apply', kind))
      return false;
    s.dropConnection--;
    return true;
  }

  /** Unreachable from this command on (unreachableOn): ms to stay unreachable, or 0. One-shot. */
  takeUnreachable(kind: CommandKind): number {
    const s = this.spec;
    if (!s || !s.unreachableOn || !matches(s.unreachableOn, kind)) return 0;
    const ms = s.unreachableMs ?? 2_000;
    delete s.unreachableOn;
    delete s.unreachableMs;
    return ms;
  }

  /** A generic transient failure due on this command (failNext/failOn). */
  takeFail(kind: CommandKind): boolean {
    const s = this.spec;
    if (!s || !s.failNext || !matches(s.failOn ?? 'any', kind)) return false;
    s.failNext--;
    return true;
  }

  /** Hang (the next hangCount matching commands): ms to wait before running this command, or 0. */
  takeHang(kind: CommandKind): number {
    const s = this.spec;
    if (!s || !s.hangMs || !matches(s.hangOn ?? 'any', kind)) return 0;
    const ms = s.hangMs;
    s.hangCount = (s.hangCount ?? 1) - 1;
    if (s.hangCount <= 0) {
      delete s.hangMs;
      delete s.hangOn;
      delete s.hangCount;
    }
    return ms;
  }

  get fatalService(): string | undefined {
    return this.spec?.fatalService;
  }
  get applyMs(): number | undefined {
    return this.spec?.applyMs;
  }
  get restartMs(): number | undefined {
    return this.spec?.restartMs;
  }
  get kmVersion(): string | undefined {
    return this.spec?.kmVersion;
  }
}

function matches(on: string, kind: CommandKind): boolean {
  return on === 'any' || on === kind;
}

export class FaultSpecError extends Error {
  override name = 'FaultSpecError';
}

const COUNTS = [
  'failApplies',
  'failUnapplies',
  'failNext',
  'dropConnection',
  'hangMs',
  'hangCount',
  'refuseMs',
  'unreachableMs',
  'applyMs',
  'restartMs',
] as const;
const KNOWN = new Set<string>([
  ...COUNTS,
  'dropOn',
  'dropWhen',
  'failOn',
  'hangOn',
  'unreachableOn',
  'fatalService',
  'kmVersion',
]);
const KINDS = ['apply', 'unapply', 'restart', 'status', 'upload', 'any'];

/** Throws FaultSpecError naming the bad field (the control API answers 400 with it). */
export function validateFaultSpec(spec: unknown): asserts spec is FaultSpec {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec))
    throw new FaultSpecError('a fault must be a JSON object');
  const s = spec as Record<string, unknown>;
  for (const k of Object.keys(s))
    if (!KNOWN.has(k)) throw new FaultSpecError(`unknown fault '${k}' (known: ${[...KNOWN].join(', ')})`);
  for (const k of COUNTS) {
    const v = s[k];
    if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < 0))
      throw new FaultSpecError(`'${k}' must be a whole number >= 0`);
  }
  for (const k of ['dropOn', 'failOn', 'hangOn', 'unreachableOn'] as const) {
    if (s[k] !== undefined && !KINDS.includes(s[k] as string))
      throw new FaultSpecError(`'${k}' must be one of ${KINDS.join(', ')}`);
  }
  if (s.dropWhen !== undefined && s.dropWhen !== 'before' && s.dropWhen !== 'after')
    throw new FaultSpecError("'dropWhen' must be before or after");
  if (s.fatalService !== undefined && (typeof s.fatalService !== 'string' || !s.fatalService))
    throw new FaultSpecError("'fatalService' must be a program name such as sshmgr-backend");
  if (s.kmVersion !== undefined && (typeof s.kmVersion !== 'string' || !/^\d+(?:\.\d+){1,3}$/.test(s.kmVersion)))
    throw new FaultSpecError("'kmVersion' must be a version such as 3.0.1");
}
