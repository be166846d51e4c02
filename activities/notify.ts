// Notifications (issue 12): one POST of `{text}` to a Slack-compatible webhook
// (KM_HOTFIX_WEBHOOK_URL). A short timeout, and a failure is thrown so that
// Temporal retries it a few times; the workflow never waits on it for long
// and never fails because of it (workflows/notify.ts).
import { notificationText, Notification } from '../domain/notification';

/** A webhook that does not answer within this is given up on (the attempt; Temporal may retry). */
export const WEBHOOK_TIMEOUT_MS = 5_000;

export function notifyActivities(deps: { webhookUrl?: string; webUrl?: string }) {
  return {
    async notify(n: Notification): Promise<'sent' | 'off'> {
      if (!deps.webhookUrl) return 'off';
      const res = await fetch(deps.webhookUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ text: notificationText(n, deps.webUrl) }),
        signal: AbortSignal.timeout(WEBHOOK_TIMEOUT_MS),
        redirect: 'error',
      });
      await res.arrayBuffer().catch(() => undefined);
      if (!res.ok) throw new Error(`the webhook answered HTTP ${res.status}`);
      return 'sent';
    },
  };
}
