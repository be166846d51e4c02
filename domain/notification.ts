// What the team is told, in a Slack-compatible webhook's `{text}`, when a
// rollout needs a person or ends. Pure: built by the notify activity.
// Names, URLs and errors come from the inventory and from people: Slack's
// control characters (& < >) are escaped so a value cannot make a link or a
// mention, and each value is one line. A list that grows with the fleet
// (the drained backends) is a few names and a count.
import { NAMES_IN_A_LINE } from './rollout';

export const NOTIFY_EVENTS = ['waiting', 'completed', 'rolled_back', 'rollback_failed'] as const;
export type NotifyEvent = (typeof NOTIFY_EVENTS)[number];

export interface Notification {
  event: NotifyEvent;
  rolloutId: string;
  hotfix: string;
  requestedBy: string;
  canary?: string;
  /** The canary's direct URL, to verify on. */
  canaryUrl?: string;
  /** The first few drained backends ... */
  drained?: string[];
  /** ... and how many there are in all (absent: as many as named). */
  drainedCount?: number;
  /** Why it rolled back, or what needs a person. */
  error?: string;
  needsAttention?: string[];
  servers?: number;
}

/** Slack's escaping for text: &, < and > only; whitespace runs and controls become one space. */
export function slackText(value: string): string {
  return value
    .replace(/[\s\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ')
    .trim()
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;');
}

/** The page of a rollout on the web UI, when its address is known. */
export function rolloutPageUrl(webUrl: string | undefined, rolloutId: string): string | undefined {
  return webUrl ? `${webUrl.replace(/\/+$/, '')}/rollouts/${encodeURIComponent(rolloutId)}` : undefined;
}

export function notificationText(n: Notification, webUrl?: string): string {
  const t = slackText;
  const page = rolloutPageUrl(webUrl, n.rolloutId);
  const link = page ? ` ${t(page)}` : ` (km-hotfix status ${t(n.rolloutId)})`;
  switch (n.event) {
    case 'waiting': {
      const where = n.canaryUrl ? ` directly on ${t(n.canaryUrl)} (not through the load balancer)` : '';
      const names = n.drained ?? [];
      const count = Math.max(n.drainedCount ?? 0, names.length);
      const shown = names.slice(0, NAMES_IN_A_LINE);
      const more = count - shown.length;
      const drained =
        count > 0 ? ` Backends ${t(shown.join(', '))}${more > 0 ? ` and ${more} more` : ''} are drained.` : '';
      return `${t(n.hotfix)} waits for verification: check canary ${t(n.canary ?? '?')}${where}, then approve or reject (not ${t(n.requestedBy)}, who started it):${link}.${drained}`;
    }
    case 'completed':
      return `${t(n.hotfix)} completed${n.servers !== undefined ? ` on ${n.servers} server(s)` : ''}:${link}`;
    case 'rolled_back':
      return `${t(n.hotfix)} rolled back${n.error ? `: ${t(n.error)}` : ''}.${link}`;
    case 'rollback_failed':
      return `${t(n.hotfix)} FAILED TO ROLL BACK; needs a person for ${t((n.needsAttention ?? []).join(', ') || '?')}${n.error ? ` (${t(n.error)})` : ''}.${link}`;
  }
}
