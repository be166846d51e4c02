// Pure helpers of the fan-out benchmark (bench/fanout.ts): the ideal time,
// percentiles, the per-server overhead read from the servers' own command
// logs, and a small SVG line chart. No I/O here (test/bench-stats.test.ts).

/** One server's part of a fan-out, from its command log: apply start → last command end (ms since epoch). */
export interface ServerSpan {
  name: string;
  start: number;
  end: number;
}

/** The servers set the limit: ceil(N / window) rounds of apply + restart. */
export function idealMs(servers: number, window: number, perServerMs: number): number {
  if (servers <= 0) return 0;
  return Math.ceil(servers / Math.max(1, window)) * perServerMs;
}

/** Nearest-rank percentile (p in 0..100) of the values; NaN for none. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** The most servers whose spans overlap at one instant. */
export function maxInFlight(spans: readonly ServerSpan[]): number {
  const edges: [number, number][] = [];
  for (const s of spans) edges.push([s.start, 1], [s.end, -1]);
  // An end before a start at the same instant: a slot handed over is not two in flight.
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let now = 0;
  let most = 0;
  for (const [, d] of edges) most = Math.max(most, (now += d));
  return most;
}

/**
 * Per-server overhead with at most `window` in flight: the time the server's
 * slot stood idle before it started (its start minus the end that freed the
 * slot: the (i - window)-th end in time order; for the first `window`
 * servers, the first start of the fan-out) plus its own wall time beyond
 * `latencyMs` (the simulated apply + restart). Zero means "at the speed of
 * the servers"; a lock-step batch shows its wait for the batch's slowest.
 */
export function perServerOverheadMs(spans: readonly ServerSpan[], window: number, latencyMs: number): number[] {
  if (spans.length === 0) return [];
  const starts = [...spans].sort((a, b) => a.start - b.start);
  const ends = spans.map((s) => s.end).sort((a, b) => a - b);
  const first = starts[0].start;
  return starts.map((s, i) => {
    const slotFree = i < window ? first : ends[i - window];
    return Math.max(0, s.start - slotFree) + Math.max(0, s.end - s.start - latencyMs);
  });
}

/** First start to last end of the spans (ms). */
export function spanMs(spans: readonly ServerSpan[]): number {
  if (spans.length === 0) return 0;
  return Math.max(...spans.map((s) => s.end)) - Math.min(...spans.map((s) => s.start));
}

// ---- SVG ---------------------------------------------------------------------

export interface ChartSeries {
  name: string;
  color: string;
  /** x: fleet size, y: seconds. */
  points: { x: number; y: number }[];
  dashed?: boolean;
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  width?: number;
  height?: number;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const fmt = (n: number) => (Math.round(n * 10) / 10).toString();

/** A "nice" step (1, 2 or 5 × 10^k) giving about `count` ticks up to max. */
export function niceStep(max: number, count = 5): number {
  if (!(max > 0)) return 1;
  const raw = max / count;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const m = raw / pow;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * pow;
}

/** A line chart: x on a log scale (fleet sizes span decades), y linear from 0. */
export function lineChartSvg(series: readonly ChartSeries[], o: ChartOptions): string {
  const W = o.width ?? 720;
  const H = o.height ?? 420;
  const m = { left: 64, right: 180, top: 40, bottom: 56 };
  const pts = series.flatMap((s) => s.points).filter((p) => p.x > 0 && Number.isFinite(p.y));
  const xs = pts.map((p) => p.x);
  let x0 = Math.log10(Math.min(...xs, 10));
  let x1 = Math.log10(Math.max(...xs, 100));
  x0 = Math.floor(x0);
  x1 = Math.ceil(x1);
  if (x1 === x0) x1 = x0 + 1;
  const step = niceStep(Math.max(...pts.map((p) => p.y), 1));
  const yMax = Math.ceil(Math.max(...pts.map((p) => p.y), 1) / step) * step;
  const px = (x: number) => m.left + ((Math.log10(x) - x0) / (x1 - x0)) * (W - m.left - m.right);
  const py = (y: number) => H - m.bottom - (y / yMax) * (H - m.top - m.bottom);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2 - m.right / 2}" y="22" text-anchor="middle" font-size="15">${esc(o.title)}</text>`);
  // Grid and axes.
  for (let y = 0; y <= yMax + 1e-9; y += step) {
    out.push(`<line x1="${m.left}" y1="${fmt(py(y))}" x2="${W - m.right}" y2="${fmt(py(y))}" stroke="#ddd"/>`);
    out.push(`<text x="${m.left - 6}" y="${fmt(py(y) + 4)}" text-anchor="end">${fmt(y)}</text>`);
  }
  for (let k = x0; k <= x1; k++) {
    const x = 10 ** k;
    out.push(`<line x1="${fmt(px(x))}" y1="${m.top}" x2="${fmt(px(x))}" y2="${H - m.bottom}" stroke="#ddd"/>`);
    out.push(
      `<text x="${fmt(px(x))}" y="${H - m.bottom + 18}" text-anchor="middle">${x.toLocaleString('en-US')}</text>`,
    );
  }
  out.push(`<line x1="${m.left}" y1="${H - m.bottom}" x2="${W - m.right}" y2="${H - m.bottom}" stroke="black"/>`);
  out.push(`<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${H - m.bottom}" stroke="black"/>`);
  out.push(`<text x="${(m.left + W - m.right) / 2}" y="${H - 14}" text-anchor="middle">${esc(o.xLabel)}</text>`);
  out.push(
    `<text x="16" y="${(m.top + H - m.bottom) / 2}" text-anchor="middle" transform="rotate(-90 16 ${(m.top + H - m.bottom) / 2})">${esc(o.yLabel)}</text>`,
  );
  // Series and legend.
  series.forEach((s, i) => {
    const ps = s.points.filter((p) => p.x > 0 && Number.isFinite(p.y)).sort((a, b) => a.x - b.x);
    if (ps.length > 1) {
      out.push(
        `<polyline fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''} points="${ps.map((p) => `${fmt(px(p.x))},${fmt(py(p.y))}`).join(' ')}"/>`,
      );
    }
    for (const p of ps)
      out.push(
        `<circle cx="${fmt(px(p.x))}" cy="${fmt(py(p.y))}" r="3.5" fill="${s.color}"><title>${esc(`${s.name}: ${p.x} servers, ${fmt(p.y)} s`)}</title></circle>`,
      );
    const ly = m.top + 10 + i * 22;
    out.push(
      `<line x1="${W - m.right + 16}" y1="${ly}" x2="${W - m.right + 40}" y2="${ly}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`,
    );
    out.push(`<text x="${W - m.right + 46}" y="${ly + 4}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
