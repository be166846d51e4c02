// mocha root hooks: the real Temporal dev server and embedded PostgreSQL,
// once per run.
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { startTestStack, stopTestStack } from './helpers/stack';

// Workers log every state change at INFO; tests only want real problems.
const level = process.env.KM_HOTFIX_TEST_LOG ? 'INFO' : 'ERROR';
// The core's own WARNs (e.g. an activity completing after its workflow was terminated) are expected in tests.
Runtime.install({
  logger: new DefaultLogger(level),
  telemetryOptions: { logging: { filter: { core: level, other: level } } },
});

// Ctrl-C or `timeout` on a test run: stop the servers, then exit.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void stopTestStack().finally(() => process.exit(130));
  });
}

export const mochaHooks = {
  async beforeAll(this: Mocha.Context) {
    this.timeout(180_000);
    await startTestStack();
  },
  async afterAll(this: Mocha.Context) {
    this.timeout(60_000);
    await stopTestStack();
  },
};
