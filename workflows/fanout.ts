// Runs a window of servers through child workflows (serverBatches), one
// child per slice of at most `sliceServers` servers, so that every
// execution's history stays bounded on a large fleet.
//
// The window is split across "lanes": children that run at once (never more
// than the window's places), each with its share of the window: at most
// CHILD_SHARE_MAX while there are slices enough, and small enough that each
// child runs at least two rounds of its share (LANE_ROUNDS). A lane starts its
// next slice when its child ends. So at most `window` servers are in flight. At a slice's
// end the window does not drain: once the child has started its last server
// and half its share is free for good, it says so (one signal) and the lane
// starts the next child in those places; when the first child ends, the next
// one gets the whole share (one signal). At most two children per lane, never
// more than the share in flight. The failure budget: each child
// gets what is left of it when it starts and stops starting servers once it is
// spent; the parent then stops its other children and starts no new one (a
// failure among a child's last servers is known when that child ends: within
// one server's time, as with several lanes).
//
// What each part is kept for (issue 22 asks that only measured figures keep
// them): slices bound every history (20,000 servers: 530 events, 3.7 MiB at
// most; bench/results/issue-22-engine.md); slices of 500 with CHILD_SHARE_MAX
// places took 2,000/200 from 19.68 s to ~17 s (issue-11e-slices.md); lanes of
// at least two rounds and the hand-off and widen signals took 2,000/200 from
// 21.0 s to 19.4 s and its rollback from 19.75 s to 18.87 s (issue-11b-speed.md).
import { ChildWorkflowHandle, condition, ParentClosePolicy, setHandler, startChild } from '@temporalio/workflow';
import type { RolloutTiming } from '../domain/messages/rollout';
import { DEFAULT_TIMING } from './steps';
import {
  type BatchAction,
  batchFreedSignal,
  type BatchesResult,
  type BatchServerResult,
  NO_FAILURE_LIMIT,
  pauseBatchesSignal,
  stopBatchesSignal,
  widenBatchesSignal,
} from '../domain/messages/batches';
import { serverBatches } from './batches';
import { lostSlice } from './lost';

/** Consecutive slices of at most `size` servers. */
export function slicesOf(servers: string[], size: number): string[][] {
  const out: string[][] = [];
  for (let i = 0; i < servers.length; i += size) out.push(servers.slice(i, i + size));
  return out;
}

/**
 * Rounds of its window a child runs at least: a child whose share equals its
 * slice starts all its servers at once and ends with its slowest, in lock-step
 * (children of 100 holding 100 places each: every child a lock-step round). With two rounds
 * per child, the window slides inside each child.
 */
const LANE_ROUNDS = 2;

/**
 * The most servers one child has in flight by default. Each running activity
 * is part of its execution's state, which Temporal rewrites on every event of
 * that execution: one child holding 200 cost the Temporal server 16 s of CPU
 * where four holding 50 cost 11 s (bench/results/issue-11b-speed.md). With
 * slices of 500, four lanes of 50 run a 2,000/200 fan-out with one child
 * each and no hand-off between slices (bench/results/issue-11e-slices.md).
 */
export const CHILD_SHARE_MAX = 50;

/** Slice size and the cap per child for this workflow: an explicit timing.sliceServers wins (tests use small slices). */
function shape(t: Partial<RolloutTiming> | undefined): { slice: number; childMax?: number } {
  if (t?.sliceServers !== undefined) return { slice: t.sliceServers };
  return { slice: DEFAULT_TIMING.sliceServers, childMax: CHILD_SHARE_MAX };
}

/**
 * How a window of `window` servers is shared by the lanes (children at once)
 * over slices of `slice`: enough lanes for LANE_ROUNDS rounds per child, and
 * (with `childMax`) at most that many servers per child while there are
 * slices enough.
 */
export function laneShares(window: number, slice: number, slices: number, childMax?: number): number[] {
  const wanted = Math.max(Math.ceil((LANE_ROUNDS * window) / slice), childMax ? Math.ceil(window / childMax) : 1);
  // Never more lanes than places in the window: each lane holds at least one.
  const lanes = Math.max(1, Math.min(slices, window, wanted));
  return Array.from({ length: lanes }, (_, i) => Math.floor(window / lanes) + (i < window % lanes ? 1 : 0));
}

export interface FanoutControl {
  isPaused(): boolean;
  shouldStop(): boolean;
  /** Called with the ids of the children that run now. */
  onChildren(ids: string[]): void;
  onResult(r: BatchServerResult): void;
  /** Called as soon as a child's start is requested, before it has started (pause/abort may arrive now). */
  onStarting?(workflowId: string): void;
}

export class Fanout {
  private readonly running = new Map<string, ChildWorkflowHandle<typeof serverBatches>>();
  /** Places each child has freed for good, as it reported them (batchFreedSignal). */
  private readonly freed = new Map<string, number>();
  private seq = 0;

  constructor(
    private readonly rolloutId: string,
    private readonly hotfix: string,
    private readonly timing: Partial<RolloutTiming> | undefined,
  ) {}

  /** Forward pause/resume to the children that run now (children still starting get it once started). */
  async setPaused(paused: boolean): Promise<void> {
    await Promise.all(
      [...this.running.values()].map((h) => h.signal(pauseBatchesSignal, paused).catch(() => undefined)),
    );
  }

  /** Ask running children to start no new server. */
  async stop(): Promise<void> {
    await Promise.all([...this.running.values()].map((h) => h.signal(stopBatchesSignal).catch(() => undefined)));
  }

  /** Run the servers in a window; maxFailures NO_FAILURE_LIMIT = keep going whatever fails. */
  async run(
    action: BatchAction,
    servers: string[],
    window: number,
    maxFailures: number,
    ctl: FanoutControl,
    finishOnly = false,
  ): Promise<{ failures: number; stopped: boolean; lost: string[] }> {
    const { slice, childMax } = shape(this.timing);
    const slices = slicesOf(servers, slice);
    let next = 0;
    let failures = 0;
    const lost: string[] = [];
    let stopped = false;
    const spent = () => maxFailures !== NO_FAILURE_LIMIT && failures > maxFailures;
    setHandler(batchFreedSignal, (m) => {
      if (m && typeof m.workflowId === 'string' && Number.isInteger(m.freed) && m.freed > 0)
        this.freed.set(m.workflowId, m.freed);
    });
    const lane = async (share: number): Promise<void> => {
      const ending: Promise<void>[] = [];
      // The lane's previous child, while it runs: the next one starts in the places it has freed.
      let prev: { id: string; ended: boolean; done: Promise<void> } | undefined;
      for (;;) {
        const p = prev;
        if (p) await condition(() => p.ended || this.freed.has(p.id) || ctl.shouldStop() || stopped);
        await condition(() => !ctl.isPaused() || ctl.shouldStop() || stopped);
        if (next >= slices.length) break;
        if (ctl.shouldStop() || spent() || stopped) {
          stopped = true;
          break;
        }
        const slice = slices[next++];
        const budget = maxFailures === NO_FAILURE_LIMIT ? NO_FAILURE_LIMIT : maxFailures - failures;
        const full = Math.min(share, slice.length);
        const handed = p && !p.ended ? Math.min(full, this.freed.get(p.id) ?? full) : full;
        const workflowId = `${this.rolloutId}/${action}-${++this.seq}`;
        const cur = { id: workflowId, ended: false, done: Promise.resolve() };
        cur.done = this.child(
          workflowId,
          action,
          slice,
          { window: handed, fullWindow: full, handOff: next < slices.length, finishOnly },
          budget,
          ctl,
          handed < full ? p?.done : undefined,
        ).then(async (r) => {
          cur.ended = true;
          this.freed.delete(workflowId);
          if ('lost' in r) lost.push(...r.lost);
          for (const s of r.servers) ctl.onResult(s);
          failures += r.failures;
          if (r.stopped || spent()) {
            stopped = true;
            await this.stop();
          }
        });
        ending.push(cur.done);
        prev = cur;
      }
      await Promise.all(ending);
    };
    await Promise.all(laneShares(window, slice, slices.length, childMax).map(lane));
    return { failures, stopped: stopped || next < slices.length, lost };
  }

  /** One child; started with part of the lane's share, it gets the whole share once `predecessor` has ended. */
  private async child(
    workflowId: string,
    action: BatchAction,
    servers: string[],
    w: { window: number; fullWindow: number; handOff: boolean; finishOnly: boolean },
    maxFailures: number,
    ctl: FanoutControl,
    predecessor?: Promise<void>,
  ): Promise<BatchesResult | (BatchesResult & { lost: string[] })> {
    const pausedAtStart = ctl.isPaused();
    try {
      const starting = startChild(serverBatches, {
        workflowId,
        args: [
          {
            rolloutId: this.rolloutId,
            hotfix: this.hotfix,
            action,
            servers,
            window: w.window,
            maxFailures,
            timing: this.timing,
            paused: pausedAtStart,
            ...(w.fullWindow > w.window ? { fullWindow: w.fullWindow } : {}),
            ...(w.handOff ? { handOff: true } : {}),
            ...(w.finishOnly ? { finishOnly: true } : {}),
          },
        ],
        // The children are the parent's hands: they end with it.
        parentClosePolicy: ParentClosePolicy.TERMINATE,
      });
      ctl.onStarting?.(workflowId);
      const h = await starting;
      this.running.set(workflowId, h);
      ctl.onChildren([...this.running.keys()]);
      // A pause or abort that arrived while it was starting reached no child: deliver the state now.
      if (ctl.shouldStop()) await h.signal(stopBatchesSignal).catch(() => undefined);
      else if (ctl.isPaused() !== pausedAtStart)
        await h.signal(pauseBatchesSignal, ctl.isPaused()).catch(() => undefined);
      if (predecessor) void predecessor.then(() => h.signal(widenBatchesSignal, w.fullWindow).catch(() => undefined));
      return await h.result();
    } catch (err) {
      return lostSlice(action, servers, err);
    } finally {
      this.running.delete(workflowId);
      ctl.onChildren([...this.running.keys()]);
    }
  }
}
