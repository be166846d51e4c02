// mocha root hooks: the real Temporal dev server and embedded PostgreSQL,
// once per run.
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { startTestStack, stopTestStack } from './helpers/stack';

// Workers log every state change at INFO; tests only want real problems.
Runtime.install({ logger: new DefaultLogger(process.env.KM_HOTFIX_TEST_LOG ? 'INFO' : 'ERROR') });

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
