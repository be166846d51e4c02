// Telling the team (issue 12), without ever holding up or failing a rollout:
// each notification is an activity started without awaiting it, with few,
// quick retries; its failure is caught here. The workflow waits for those
// still in flight only once, just before it returns, so that the last message
// ("completed", "rolled back") is not cut off; bounded by the retry policy.
import { proxyActivities } from '@temporalio/workflow';
import type { KmHotfixActivities } from '../activities';
import type { Notification } from '../domain/notification';

const { notify } = proxyActivities<Pick<KmHotfixActivities, 'notify'>>({
  startToCloseTimeout: '10s',
  scheduleToCloseTimeout: '45s',
  retry: { maximumAttempts: 3, initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '5s' },
});

export class Notifier {
  private readonly pending: Promise<unknown>[] = [];

  send(n: Notification): void {
    this.pending.push(notify(n).catch(() => undefined));
  }

  /** Every notification sent or given up on. */
  async settled(): Promise<void> {
    await Promise.all(this.pending);
  }
}
