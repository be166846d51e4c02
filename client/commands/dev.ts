// `km-hotfix dev`: the embedded stack in the foreground (SPEC §4). stdout
// carries only the export lines and `ready`; progress goes to stderr.
import * as path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { CliError, EXIT } from '../errors';
import { NameMatchingError, parseNameMatching } from '../../domain/people';
import type { DevStack } from '../../stack/dev-stack';

function parsePort(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < 1 || n > 65535)
      throw new InvalidArgumentError(`${flag} must be a port number from 1 to 65535`);
    return n;
  };
}

export function parseSim(value: string): { frontends: number; backends: number } {
  const m = /^(\d+):(\d+)$/.exec(value);
  if (!m) throw new InvalidArgumentError('--sim takes FRONTENDS:BACKENDS, e.g. --sim 2:3');
  const frontends = Number(m[1]);
  const backends = Number(m[2]);
  if (frontends + backends < 1 || frontends > 50 || backends > 50)
    throw new InvalidArgumentError('--sim needs 1 to 50 frontends and backends in all, e.g. --sim 2:3');
  return { frontends, backends };
}

/** `export NAME=VALUE`, quoted for the shell when the value needs it. */
export function exportLine(name: string, value: string): string {
  const safe = /^[A-Za-z0-9_@%+=:,./-]*$/.test(value);
  return `export ${name}=${safe ? value : `'${value.replace(/'/g, `'\\''`)}'`}`;
}

interface DevOptions {
  sim?: { frontends: number; backends: number };
  data: string;
  temporalPort?: number;
  uiPort?: number;
  postgresPort?: number;
  webPort?: number;
}

export function registerDev(program: Command): void {
  program
    .command('dev')
    .description(
      'run the embedded stack in the foreground: Temporal dev server, PostgreSQL, a worker (and with --sim a simulated fleet); prints the environment for the other commands',
    )
    .option('--sim <F:B>', 'start a simulated fleet of F frontends and B backends and import it', parseSim)
    .option('--data <dir>', 'data folder (Temporal SQLite file, PostgreSQL, SSH key)', '.km-hotfix')
    .option('--temporal-port <n>', 'Temporal gRPC port (default 7233)', parsePort('--temporal-port'))
    .option('--ui-port <n>', 'Temporal Web UI port (default: Temporal port + 1000)', parsePort('--ui-port'))
    .option('--postgres-port <n>', 'PostgreSQL port (default 5433, or a free one)', parsePort('--postgres-port'))
    .option('--web-port <n>', "the approvers' web page (default 8080, or a free one)", parsePort('--web-port'))
    .action(async (opts: DevOptions) => runDev(opts));
}

async function runDev(opts: DevOptions): Promise<void> {
  const log = (line: string) => process.stderr.write(`km-hotfix dev: ${line}\n`);
  // Bad input is refused before anything starts.
  try {
    parseNameMatching(process.env.KM_HOTFIX_WEB_NAMES);
  } catch (err) {
    if (err instanceof NameMatchingError) throw new CliError(err.message, EXIT.refused);
    throw err;
  }
  // Loaded here, not at the top: the other commands need not load the SDK's worker.
  const { installWorkerLogger } = await import('../../worker/log');
  const { startDevStack } = await import('../../stack/dev-stack');
  let sdkLog: { stopping: () => void } | undefined;

  // Signals that arrive while starting stop the stack as soon as it is up.
  let signalled: NodeJS.Signals | undefined;
  let wake: () => void = () => undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      log(`${signal} again: still stopping`);
      return;
    }
    signalled = signal;
    sdkLog?.stopping();
    log(`${signal}: stopping`);
    wake();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let workerError: Error | undefined;
  let stack: DevStack;
  const started = Date.now();
  try {
    stack = await startDevStack({
      dataDir: path.resolve(opts.data),
      sim: opts.sim,
      temporalPort: opts.temporalPort,
      uiPort: opts.uiPort,
      postgresPort: opts.postgresPort,
      webPort: opts.webPort,
      log,
      // The in-process worker logs through the SDK runtime: one line per event on stderr (KM_HOTFIX_DEBUG=1: the SDK's log).
      beforeWorker: () => {
        sdkLog = installWorkerLogger((line) => log(`worker: ${line}`));
      },
      onWorkerError: (err) => {
        workerError = err;
        log(`the worker stopped: ${err.message.split('\n')[0]}`);
        wake();
      },
    });
  } catch (err) {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (signalled) {
      // Interrupted while starting: what had started is stopped; a clean exit.
      log('stopped');
      return;
    }
    throw err;
  }

  if (!signalled) {
    const lines = Object.entries(stack.env).map(([k, v]) => exportLine(k, v));
    process.stdout.write(lines.join('\n') + '\nready\n');
    log(
      `ready in ${((Date.now() - started) / 1000).toFixed(1)} s${stack.uiUrl ? `; Temporal Web UI ${stack.uiUrl}` : ''}${stack.webUrl ? `; approvers' page ${stack.webUrl}` : ''}; Ctrl-C stops everything`,
    );
    await new Promise<void>((resolve) => {
      wake = resolve;
    });
  }
  await stack.stop();
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  log('stopped');
  if (workerError && !signalled) {
    throw new CliError(
      `the worker stopped (${workerError.message.split('\n')[0]}); everything was stopped: start 'km-hotfix dev' again`,
      EXIT.failed,
    );
  }
}
