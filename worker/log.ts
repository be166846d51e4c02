// What a worker prints for its operator: one line per event that matters (an
// activity that failed, a worker that failed, a core warning), never a stack
// or a task token; with KM_HOTFIX_DEBUG=1 the SDK's own logger instead, stacks
// and metadata included (level KM_HOTFIX_LOG_LEVEL, default INFO).
//
// Installed on the SDK Runtime before the first connection or worker: the
// Runtime is what the SDK and its core (gRPC polls, retries) log through.
import { DefaultLogger, Runtime, type LogLevel, type LogMetadata, type Logger } from '@temporalio/worker';

const RANK: Record<LogLevel, number> = { TRACE: 0, DEBUG: 1, INFO: 2, WARN: 3, ERROR: 4 };

/** The same core message within this long is counted, not printed again (a poll retried on every poller). */
const REPEAT_WINDOW_MS = 60_000;

function firstLine(text: string): string {
  return text.split('\n')[0].trim();
}

function errorText(e: unknown): string | undefined {
  if (e === undefined || e === null) return undefined;
  if (e instanceof Error) {
    // A Temporal failure wraps the one that explains it: say the innermost one.
    const cause = (e as Error & { cause?: unknown }).cause;
    const inner = cause instanceof Error ? errorText(cause) : undefined;
    const own = firstLine(e.message) || e.name;
    return inner && inner !== own ? `${own}: ${inner}` : own;
  }
  return typeof e === 'string' || typeof e === 'number' ? firstLine(String(e)) : firstLine(JSON.stringify(e) ?? '');
}

/** One line for an SDK log entry: what happened, to which activity or workflow, and why. */
export function operatorLine(level: LogLevel, message: string, meta: LogMetadata = {}): string {
  const m = meta as Record<string, unknown>;
  const str = (k: string) => (typeof m[k] === 'string' || typeof m[k] === 'number' ? String(m[k]) : undefined);
  const parts: string[] = [];
  const activity = str('activityType');
  if (message === 'Activity failed' && activity) {
    const attempt = str('attempt');
    // Whether Temporal tries again is its retry policy's call; an error marked non-retryable never is.
    const final = (m.error as { nonRetryable?: unknown } | undefined)?.nonRetryable === true ? ', not retried' : '';
    parts.push(`activity ${activity} failed${attempt ? ` (attempt ${attempt}${final})` : ''}`);
  } else {
    parts.push(firstLine(message));
    if (activity) parts.push(`activity ${activity}`);
  }
  const why = errorText(m.error ?? m.err);
  if (why) parts[0] += `: ${why}`;
  const workflow = str('workflowId');
  if (workflow) parts.push(`workflow ${workflow}`);
  const tag = level === 'ERROR' ? 'error' : level === 'WARN' ? 'warning' : 'info';
  return `${tag}: ${parts.join(' — ')}`;
}

export class OperatorLogger implements Logger {
  private quiet = false;
  private readonly seen = new Map<string, { at: number; repeats: number }>();

  constructor(
    private readonly write: (line: string) => void,
    private readonly now: () => number = Date.now,
  ) {}

  /** Stopping on a signal: the core's warnings (polls cut short, retries) are expected now, not news. */
  stopping(): void {
    this.quiet = true;
  }

  log(level: LogLevel, message: string, meta?: LogMetadata): void {
    const component: unknown = meta?.sdkComponent;
    const fromSdk = component === 'worker' || component === 'core' || component === undefined;
    // The SDK's INFO is its lifecycle (state changes, the bundle): the worker command says what matters itself.
    if (RANK[level] < RANK[fromSdk ? 'WARN' : 'INFO']) return;
    if (component === 'core' && level !== 'ERROR' && (this.quiet || this.repeated(message))) return;
    this.write(operatorLine(level, message, meta));
  }

  private repeated(message: string): boolean {
    const key = message.replace(/\d+/g, '#');
    const t = this.now();
    const s = this.seen.get(key);
    if (s && t - s.at < REPEAT_WINDOW_MS) {
      s.repeats++;
      return true;
    }
    this.seen.set(key, { at: t, repeats: 0 });
    return false;
  }

  trace(message: string, meta?: LogMetadata): void {
    this.log('TRACE', message, meta);
  }
  debug(message: string, meta?: LogMetadata): void {
    this.log('DEBUG', message, meta);
  }
  info(message: string, meta?: LogMetadata): void {
    this.log('INFO', message, meta);
  }
  warn(message: string, meta?: LogMetadata): void {
    this.log('WARN', message, meta);
  }
  error(message: string, meta?: LogMetadata): void {
    this.log('ERROR', message, meta);
  }
}

const LEVELS: readonly string[] = ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR'];

/** KM_HOTFIX_DEBUG set (not empty, not 0): the SDK's logger with stacks; else one line per event. */
export function debugLogging(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.KM_HOTFIX_DEBUG?.trim();
  return !!v && v !== '0';
}

/**
 * Install the worker's logger on the SDK Runtime (once per process: a Runtime
 * already installed, e.g. by a test harness, is kept). `stopping` quiets the
 * core's expected warnings once a stop was asked for.
 */
export function installWorkerLogger(
  write: (line: string) => void,
  env: NodeJS.ProcessEnv = process.env,
): { stopping: () => void } {
  const debug = debugLogging(env);
  const asked = env.KM_HOTFIX_LOG_LEVEL?.trim().toUpperCase() ?? '';
  const level = (LEVELS.includes(asked) ? asked : 'INFO') as LogLevel;
  const ours = new OperatorLogger(write);
  try {
    Runtime.install({
      logger: debug ? new DefaultLogger(level) : ours,
      // The core (Rust) prints its own lines to the console unless forwarded: forwarded, they go through the
      // logger above, one line each, repeats counted; when debugging they are printed as the core writes them.
      telemetryOptions: {
        logging: debug
          ? { filter: { core: level, other: level } }
          : { filter: { core: 'WARN', other: 'WARN' }, forward: {} },
      },
    });
  } catch {
    // Already installed (embedded use): keep it.
  }
  return { stopping: () => ours.stopping() };
}
