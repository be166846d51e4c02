// mocha root hooks of the production topology suite (`npm run test:production`,
// test/production/mocharc.json): build the pinned Temporal server when it is
// not built yet, then start PostgreSQL, the schema and the server once per run.
import { startProductionStack, stopProductionStack } from './stack';

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void stopProductionStack().finally(() => process.exit(130));
  });
}

export const mochaHooks = {
  async beforeAll(this: Mocha.Context) {
    // A cold Go build of the server is about 10 minutes on 2 cores.
    this.timeout(30 * 60_000);
    await startProductionStack();
  },
  async afterAll(this: Mocha.Context) {
    this.timeout(60_000);
    await stopProductionStack();
  },
};
