// A step whose worker was starved for seconds may have been timed out and
// replaced by Temporal: it must not send apply, unapply or restart then.
import assert from 'node:assert/strict';
import { attemptMayBeStale, MAX_HEARTBEAT_THROTTLE_MS } from '../activities/heartbeat';
import { HEARTBEAT_TIMEOUT } from '../workflows/steps';

describe('a server step that went too long without a heartbeat sends nothing', () => {
  const timeoutMs = Number(HEARTBEAT_TIMEOUT.replace(/s$/, '')) * 1000;

  it('a step that heartbeat within the timeout less the throttle interval goes on', () => {
    assert.equal(attemptMayBeStale(10_000, 10_000, timeoutMs), false);
    assert.equal(attemptMayBeStale(10_000, 10_000 + timeoutMs - MAX_HEARTBEAT_THROTTLE_MS, timeoutMs), false);
  });

  it('a step whose last heartbeat may not have reached Temporal within the timeout stops', () => {
    // The last heartbeat can leave up to the throttle interval late: past timeout − throttle, Temporal may have given up on it.
    assert.equal(attemptMayBeStale(10_000, 10_001 + timeoutMs - MAX_HEARTBEAT_THROTTLE_MS, timeoutMs), true);
    assert.equal(attemptMayBeStale(10_000, 10_000 + 60_000, timeoutMs), true);
  });

  it('an activity without a heartbeat timeout is never fenced', () => {
    assert.equal(attemptMayBeStale(0, 1e9, undefined), false);
    assert.equal(attemptMayBeStale(0, 1e9, 0), false);
  });
});
