// Scale of the Key Manager simulator: start N (default 2,000) simulated
// servers in one process against an embedded PostgreSQL, measure start time
// and memory, then connect to a sample with ssh2 (pinned host keys) and run
// `supervisorctl status`. Prints one JSON line.
//   node dist/bench/simulator-scale.js [--servers 2000] [--sample 50]
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client } from 'ssh2';
import { startSimFleet, type SimServer } from '../simulator';
import { startEmbeddedPostgres } from '../stack/postgres';
import { freePort } from '../stack/process';
import { generateEd25519KeyPair } from '../keymanager/keygen';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}

function statusOver(s: SimServer, privateKey: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const c = new Client();
    const sock = net.connect({ host: s.host, port: s.port });
    sock.setNoDelay(true);
    c.once('error', reject);
    c.once('ready', () => {
      c.exec('supervisorctl status', (err, stream) => {
        if (err) return reject(err);
        let code = -1;
        stream.on('exit', (x: number) => {
          code = x;
        });
        stream.resume();
        stream.on('close', () => {
          c.end();
          resolve(code);
        });
      });
    });
    c.connect({
      sock,
      username: s.user,
      privateKey,
      hostVerifier: (key: Buffer) =>
        'SHA256:' + createHash('sha256').update(key).digest('base64').replace(/=+$/, '') === s.hostKey,
    });
  });
}

async function main(): Promise<void> {
  const total = arg('servers', 2000);
  const sample = arg('sample', 50);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'km-sim-bench-'));
  await fs.chmod(dir, 0o755);
  const pg = await startEmbeddedPostgres({ dataDir: path.join(dir, 'pg'), port: await freePort() });
  try {
    await pg.ensureDatabase('km');
    const keys = generateEd25519KeyPair();
    global.gc?.();
    const rssBefore = process.memoryUsage().rss;
    const t0 = performance.now();
    const frontends = Math.floor(total / 4);
    const fleet = await startSimFleet({
      frontends,
      backends: total - frontends,
      kmDatabaseUrl: pg.url('km'),
      authorizedKey: keys.public,
    });
    const startMs = performance.now() - t0;
    global.gc?.();
    const rssAfterStart = process.memoryUsage().rss;
    // An evenly spread sample, connected 10 at a time.
    const picks = Array.from(
      { length: Math.min(sample, total) },
      (_, i) => fleet.servers[Math.floor((i * total) / Math.min(sample, total))],
    );
    const t1 = performance.now();
    const latencies: number[] = [];
    let ok = 0;
    for (let i = 0; i < picks.length; i += 10) {
      await Promise.all(
        picks.slice(i, i + 10).map(async (s) => {
          const t = performance.now();
          if ((await statusOver(s, keys.private)) === 0) ok++;
          latencies.push(performance.now() - t);
        }),
      );
    }
    const sampleMs = performance.now() - t1;
    const rssAfterSample = process.memoryUsage().rss;
    latencies.sort((a, b) => a - b);
    const t2 = performance.now();
    await fleet.stop();
    const stopMs = performance.now() - t2;
    console.log(
      JSON.stringify({
        bench: 'simulator-scale',
        servers: total,
        startMs: Math.round(startMs),
        rssBeforeMiB: +(rssBefore / 2 ** 20).toFixed(1),
        rssAfterStartMiB: +(rssAfterStart / 2 ** 20).toFixed(1),
        rssPerServerKiB: +((rssAfterStart - rssBefore) / 1024 / total).toFixed(1),
        sample: picks.length,
        sampleOk: ok,
        sampleMs: Math.round(sampleMs),
        connectExecP50Ms: Math.round(latencies[Math.floor(latencies.length / 2)]),
        connectExecMaxMs: Math.round(latencies[latencies.length - 1]),
        rssAfterSampleMiB: +(rssAfterSample / 2 ** 20).toFixed(1),
        stopMs: Math.round(stopMs),
        node: process.version,
      }),
    );
    if (ok !== picks.length) process.exitCode = 1;
  } finally {
    await pg.stop();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
