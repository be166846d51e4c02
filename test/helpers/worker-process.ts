// `km-hotfix worker` as its own process (spawned asynchronously: this test
// process hosts simulated SSH servers), so a test can SIGKILL it.
import { spawn, ChildProcess } from 'node:child_process';
import type { Client } from '@temporalio/client';
import { BIN, cliEnv } from './cli-process';

export interface WorkerProcess {
  child: ChildProcess;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  /** SIGKILL, no goodbye; resolves once it has exited. */
  kill(): Promise<void>;
}

export interface WorkerProcessOptions {
  temporalAddress: string;
  taskQueue: string;
  orchestratorUrl: string;
  kmUrl: string;
  sshKeyFile: string;
  /** KM_HOTFIX_ALLOWED_SIGNERS: the worker refuses to start without it. */
  allowedSigners: string;
  extraEnv?: Record<string, string | undefined>;
}

/** Start a worker and wait until Temporal lists it as a poller of the task queue. */
export async function startWorkerProcess(
  client: Client,
  o: WorkerProcessOptions,
  started: WorkerProcess[] = [],
): Promise<WorkerProcess> {
  const child = spawn(process.execPath, [BIN, 'worker'], {
    env: cliEnv({
      TEMPORAL_ADDRESS: o.temporalAddress,
      KM_HOTFIX_TASK_QUEUE: o.taskQueue,
      DATABASE_URL: o.orchestratorUrl,
      KM_DATABASE_URL: o.kmUrl,
      KM_SSH_KEY: o.sshKeyFile,
      KM_HOTFIX_ALLOWED_SIGNERS: o.allowedSigners,
      ...(o.extraEnv ?? {}),
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const wp: WorkerProcess = {
    child,
    output: () => out,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
  started.push(wp);
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`worker exited ${child.exitCode}: ${out}`);
    const pollers = await client.workflowService
      .describeTaskQueue({ namespace: 'default', taskQueue: { name: o.taskQueue }, taskQueueType: 1 })
      .catch(() => undefined);
    if ((pollers?.pollers ?? []).some((p) => p.identity?.startsWith(`${child.pid}@`))) return wp;
    if (Date.now() > deadline) {
      await wp.kill();
      throw new Error(`worker did not poll within 90 s: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}
