// The pure helpers of the fan-out benchmark: what the published numbers are computed with.
import { strict as assert } from 'node:assert';
import { idealMs, lineChartSvg, maxInFlight, percentile, perServerOverheadMs, spanMs } from '../bench/fanout-stats';
import { splitAndList } from '../simulator/and-list';

describe('fan-out benchmark helpers', () => {
  it('the ideal is whole rounds of apply + restart', () => {
    assert.equal(idealMs(200, 50, 1500), 6000);
    assert.equal(idealMs(201, 50, 1500), 7500);
    assert.equal(idealMs(20, 5, 0), 0);
    assert.equal(idealMs(0, 5, 1500), 0);
  });

  it('percentiles are nearest-rank', () => {
    const v = [5, 1, 4, 2, 3, 6, 7, 8, 9, 10];
    assert.equal(percentile(v, 50), 5);
    assert.equal(percentile(v, 95), 10);
    assert.equal(percentile(v, 0), 1);
    assert.ok(Number.isNaN(percentile([], 50)));
  });

  it('a window that hands each slot on at once has no overhead; an idle slot and a slow server show', () => {
    // Window 2, 1 s per server: a and b at 0, c when a ends, d when b ends.
    const perfect = [
      { name: 'a', start: 0, end: 1000 },
      { name: 'b', start: 0, end: 1000 },
      { name: 'c', start: 1000, end: 2000 },
      { name: 'd', start: 1000, end: 2000 },
    ];
    assert.deepEqual(perServerOverheadMs(perfect, 2, 1000), [0, 0, 0, 0]);
    assert.equal(maxInFlight(perfect), 2);
    assert.equal(spanMs(perfect), 2000);
    // c starts 300 ms after its slot freed; d runs 200 ms longer than the servers' latency.
    const slow = [
      { name: 'a', start: 0, end: 1000 },
      { name: 'b', start: 0, end: 1000 },
      { name: 'c', start: 1300, end: 2300 },
      { name: 'd', start: 1000, end: 2200 },
    ];
    assert.deepEqual(perServerOverheadMs(slow, 2, 1000), [0, 0, 200, 300]);
    assert.equal(maxInFlight([...perfect, { name: 'e', start: 500, end: 600 }]), 3);
  });

  it('the chart has one line per series, a legend entry each, and escapes names', () => {
    const svg = lineChartSvg(
      [
        {
          name: 'km-hotfix',
          color: '#c00',
          points: [
            { x: 20, y: 6 },
            { x: 200, y: 10 },
          ],
        },
        {
          name: 'ideal <servers>',
          color: '#000',
          dashed: true,
          points: [
            { x: 20, y: 6 },
            { x: 200, y: 6 },
          ],
        },
      ],
      { title: 'fan-out', xLabel: 'servers', yLabel: 's' },
    );
    assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.equal((svg.match(/<polyline/g) ?? []).length, 2);
    assert.ok(svg.includes('ideal &lt;servers&gt;'));
    assert.ok(!svg.includes('NaN'));
  });

  it('splits `&&` lists outside quotes only', () => {
    assert.deepEqual(splitAndList('a --x=1 && supervisorctl restart all && supervisorctl status'), [
      'a --x=1',
      'supervisorctl restart all',
      'supervisorctl status',
    ]);
    assert.equal(splitAndList("echo 'a && b'"), undefined);
    assert.equal(splitAndList('echo a & b'), undefined);
  });
});
