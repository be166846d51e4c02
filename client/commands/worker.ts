// `km-hotfix worker`: the production worker for the configured Temporal and
// databases; SIGINT/SIGTERM drain it and close every client.
import { Command } from 'commander';
import type { NativeConnection } from '@temporalio/worker';
import { loadConfig } from '../../platform/config';
import { CliError, EXIT } from '../errors';
import type { KmHotfixWorker } from '../../worker/worker';

export function registerWorker(program: Command): void {
  program
    .command('worker')
    .description(
      'run a worker for the configured Temporal (TEMPORAL_ADDRESS, TLS/API key) and databases (DATABASE_URL, KM_DATABASE_URL), with KM_SSH_KEY or the ssh-agent; migrates the orchestrator database at start. It prints one line per event on stderr; KM_HOTFIX_DEBUG=1 prints the SDK log with stacks (KM_HOTFIX_LOG_LEVEL, default INFO)',
    )
    .action(async () => {
      const log = (line: string) => process.stderr.write(`km-hotfix worker: ${line}\n`);
      const config = loadConfig();
      // Loaded here, not at the top: the other commands need not load the SDK's worker.
      const { installWorkerLogger } = await import('../../worker/log');
      const { connectNativeConnection } = await import('../../platform/temporal');
      const { createKmHotfixWorker, openActivityDeps, runWorkerUntilSignal } = await import('../../worker/worker');
      const opened = await openActivityDeps(config, { requireSsh: true });
      // Just before the first connection, which the SDK and its core then log through: installed any
      // earlier, the Runtime would keep a process that refused its settings from exiting.
      const sdkLog = installWorkerLogger(log);
      let connection: NativeConnection | undefined;
      let w: KmHotfixWorker;
      try {
        connection = await connectNativeConnection(config);
        w = await createKmHotfixWorker({
          connection,
          namespace: config.temporalNamespace,
          taskQueue: config.taskQueue,
          activityDeps: opened.deps,
        });
      } catch (err) {
        await connection?.close().catch(() => undefined);
        await opened.close();
        const message = err instanceof Error ? err.message : String(err);
        if (/namespace/i.test(message) && /not found/i.test(message)) {
          throw new CliError(
            `namespace '${config.temporalNamespace}' does not exist at ${config.temporalAddress}: create it (temporal operator namespace create) or set TEMPORAL_NAMESPACE`,
            EXIT.refused,
          );
        }
        throw err;
      }
      const conn = connection;
      const { worker, closeActivities } = w;
      log(
        `polling task queue '${config.taskQueue}' in namespace '${config.temporalNamespace}' at ${config.temporalAddress}`,
      );
      await runWorkerUntilSignal(
        worker,
        async () => {
          await closeActivities().catch(() => undefined);
          await conn.close().catch(() => undefined);
          await opened.close();
          log('stopped');
        },
        log,
        sdkLog.stopping,
      );
    });
}
