// A worker per test, on its own task queue, against the shared dev server.
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { bundleWorkflowCode, NativeConnection, Worker, WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { testStack } from './stack';

const bundles = new Map<string, Promise<WorkflowBundleWithSourceMap>>();

/** Bundle a workflows module once per run (webpack takes seconds). */
export function workflowBundle(workflowsPath: string): Promise<WorkflowBundleWithSourceMap> {
  let b = bundles.get(workflowsPath);
  if (!b) {
    b = bundleWorkflowCode({ workflowsPath, logger: quietLogger });
    bundles.set(workflowsPath, b);
  }
  return b;
}

export const PROJECT_WORKFLOWS = path.resolve(__dirname, '..', '..', 'workflows', 'index.js');

const noop = () => undefined;
const quietLogger = { log: noop, trace: noop, debug: noop, info: noop, warn: noop, error: noop };

export interface TestWorker {
  client: Client;
  taskQueue: string;
  worker: Worker;
  /** Runs fn while the worker polls, then shuts the worker down. */
  run<T>(fn: () => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export async function testWorker(opts: {
  workflowsPath?: string;
  activities: object;
  taskQueue?: string;
}): Promise<TestWorker> {
  const { temporal } = testStack();
  const taskQueue = opts.taskQueue ?? `test-${randomBytes(4).toString('hex')}`;
  const nativeConnection = await NativeConnection.connect({ address: temporal.address });
  const worker = await Worker.create({
    connection: nativeConnection,
    taskQueue,
    workflowBundle: await workflowBundle(opts.workflowsPath ?? PROJECT_WORKFLOWS),
    activities: opts.activities,
  });
  const connection = await Connection.connect({ address: temporal.address });
  const client = new Client({ connection });
  return {
    client,
    taskQueue,
    worker,
    run: (fn) => worker.runUntil(fn),
    async close() {
      await connection.close();
      await nativeConnection.close();
    },
  };
}
