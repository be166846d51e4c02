// How fan-out shares its window among child workflows (workflows/fanout.ts):
// never more servers in flight than --batch, at most CHILD_SHARE_MAX per
// child where there are slices enough, and no lane without a place.
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { CHILD_SHARE_MAX, laneShares, slicesOf } from '../workflows/fanout';
import { runLength, RUN_SERVERS_MAX } from '../domain/rollout';

describe('fan-out lanes (window shares per child workflow)', () => {
  it('splits the benchmark windows over slices of 500: 2,000/200 in four children of 50 (one slice each), 200/50 in one, 20,000/2,000 in forty', () => {
    assert.deepEqual(laneShares(200, 500, 4, CHILD_SHARE_MAX), [50, 50, 50, 50]);
    assert.deepEqual(laneShares(50, 500, 1, CHILD_SHARE_MAX), [50]);
    assert.deepEqual(laneShares(2000, 500, 40, CHILD_SHARE_MAX), Array(40).fill(50));
    assert.deepEqual(laneShares(200, 500, 4), [200], 'without the cap: one child holds the whole window');
  });

  it('keeps the shape of workflows started with slices of 100 (they replay so)', () => {
    assert.deepEqual(laneShares(200, 100, 20), [50, 50, 50, 50]);
    assert.deepEqual(laneShares(50, 100, 2), [50]);
    assert.deepEqual(laneShares(2000, 100, 200), Array(40).fill(50));
  });

  it('keeps the small-slice shapes the tests and recorded histories use', () => {
    assert.deepEqual(laneShares(2, 4, 3), [2], 'one lane: the hand-off between children is exercised');
    assert.deepEqual(laneShares(7, 6, 3), [3, 2, 2]);
  });

  it('never runs two lanes for a window of one (slices of one server used to)', () => {
    assert.deepEqual(laneShares(1, 1, 5), [1]);
    assert.deepEqual(laneShares(3, 1, 10), [1, 1, 1]);
  });

  it('never puts more servers in flight than the window, and gives every lane a place', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5000 }),
        fc.integer({ min: 1, max: 1000 }),
        fc.integer({ min: 1, max: 20000 }),
        fc.boolean(),
        (window, slice, servers, capped) => {
          const slices = slicesOf(
            Array.from({ length: servers }, (_, i) => `s${i}`),
            slice,
          ).length;
          const shares = laneShares(window, slice, slices, capped ? CHILD_SHARE_MAX : undefined);
          assert.equal(
            shares.reduce((a, b) => a + b, 0),
            window,
          );
          assert.ok(shares.every((s) => s >= 1));
          assert.ok(shares.length <= slices);
          if (capped && slices * CHILD_SHARE_MAX >= window)
            assert.ok(
              shares.every((s) => s <= CHILD_SHARE_MAX),
              `${window}/${slice}/${slices}: ${shares.join(',')}`,
            );
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('runs (servers one window place runs in turn, in one activity)', () => {
  it('gives each place about one round of the servers: 4 at 200/50, 10 for a child of 500 with 50 places', () => {
    assert.equal(runLength(50, 199), 4);
    assert.equal(runLength(50, 500), 10);
    assert.equal(runLength(2, 8), 4);
  });

  it('runs one server per activity when the window is as wide as the servers, and never more than RUN_SERVERS_MAX', () => {
    assert.equal(runLength(500, 500), 1);
    assert.equal(runLength(600, 500), 1);
    assert.equal(runLength(1, 500), RUN_SERVERS_MAX);
  });

  it('takes every server in at most a round of runs when it can, and never a run of zero', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5000 }), fc.integer({ min: 1, max: 5000 }), (window, servers) => {
        const n = runLength(window, servers);
        assert.ok(n >= 1 && n <= RUN_SERVERS_MAX);
        if (Math.ceil(servers / window) <= RUN_SERVERS_MAX)
          assert.ok(n * window >= servers, `${window}/${servers}: runs of ${n}`);
      }),
      { numRuns: 500 },
    );
    assert.equal(runLength(0, 10), 1, 'nonsense in, one server per run out');
  });
});
