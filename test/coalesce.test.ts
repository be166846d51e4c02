// platform/coalesce.ts: calls made in the same turn of the event loop are
// answered by one batch; each caller gets its own answer or its batch's error.
import { strict as assert } from 'node:assert';
import { Coalescer } from '../platform/coalesce';

describe('Coalescer (one query for a turn of the event loop)', () => {
  it('answers the calls of one turn with one batch, each caller its own answer, in order', async () => {
    const batches: number[][] = [];
    const c = new Coalescer<number, number>(async (xs) => {
      batches.push(xs);
      return xs.map((x) => x * 10);
    });
    const answers = await Promise.all([1, 2, 3].map((x) => c.call(x)));
    assert.deepEqual(answers, [10, 20, 30]);
    assert.deepEqual(batches, [[1, 2, 3]]);
  });

  it('starts a new batch for a call made after the last one went out', async () => {
    const batches: number[][] = [];
    const c = new Coalescer<number, number>(async (xs) => {
      batches.push(xs);
      return xs;
    });
    assert.equal(await c.call(1), 1);
    assert.equal(await c.call(2), 2);
    assert.deepEqual(batches, [[1], [2]]);
  });

  it("gives a failed batch's error to every caller in it, and to no one else", async () => {
    const c = new Coalescer<number, number>(async (xs) => {
      if (xs.includes(13)) throw new Error('the database is down');
      return xs;
    });
    const failed = [c.call(12), c.call(13)];
    await assert.rejects(failed[0], /the database is down/);
    await assert.rejects(failed[1], /the database is down/);
    assert.equal(await c.call(14), 14);
  });

  it("splits a turn's calls into batches of at most maxBatch", async () => {
    const batches: number[][] = [];
    const c = new Coalescer<number, number>(async (xs) => {
      batches.push(xs);
      return xs;
    }, 2);
    assert.deepEqual(await Promise.all([1, 2, 3, 4, 5].map((x) => c.call(x))), [1, 2, 3, 4, 5]);
    assert.deepEqual(batches, [[1, 2], [3, 4], [5]]);
  });

  it('refuses a batch that returns the wrong number of answers instead of mixing them up', async () => {
    const c = new Coalescer<number, number>(async (xs) => xs.slice(1));
    await assert.rejects(Promise.all([c.call(1), c.call(2)]), /a batch of 2 got 1 answers/);
  });
});
