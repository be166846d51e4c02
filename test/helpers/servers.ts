// A small fleet's status lists every server (domain/rollout.ts FULL_SERVER_LIST_MAX): tests read it here.
import assert from 'node:assert/strict';
import type { RolloutStatus, ServerStatus } from '../../domain/messages/rollout';

export function serversOf(st: RolloutStatus): ServerStatus[] {
  assert.ok(st.servers, `the status of ${st.id} (${st.serverCount} servers) should list every server`);
  return st.servers;
}
