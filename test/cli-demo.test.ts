// `km-hotfix demo` (what `npm run demo` runs after building): the whole
// procedure on embedded defaults, as a child process. It must finish with
// exit 0 in under two minutes and leave no Temporal or PostgreSQL behind.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { runCli } from './helpers/cli-process';

const MARK = 'km-hotfix-demo-';

/** pid → command line of every process whose command line names a demo folder. */
async function demoProcesses(): Promise<Map<number, string>> {
  const found = new Map<number, string>();
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = (await fs.readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0').join(' ');
      if (cmd.includes(MARK)) found.set(Number(entry), cmd);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

describe('km-hotfix demo', function () {
  this.timeout(240_000);

  it('runs the whole procedure to exit 0 in under two minutes and stops everything it started', async () => {
    const before = await demoProcesses();
    // While it runs, its Temporal dev server and PostgreSQL are seen (so the check below can fail).
    const seen = new Map<number, string>();
    let running = true;
    const spy = (async () => {
      while (running) {
        for (const [pid, cmd] of await demoProcesses()) if (!before.has(pid)) seen.set(pid, cmd);
        await new Promise((r) => setTimeout(r, 250));
      }
    })();
    const t0 = Date.now();
    const r = await runCli(['demo'], { USER: 'erin' }, 180_000).finally(() => {
      running = false;
    });
    const took = Date.now() - t0;
    await spy;

    assert.equal(r.code, 0, `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
    assert.ok(took < 120_000, `took ${took} ms`);
    const out = r.stdout;
    assert.match(out, /phase verifying/);
    assert.match(
      out,
      /the gate asks dana to verify canary km-be-1 .*km-be-2 \(Maximum Processes \d+ -> 0\), km-be-3 \(Maximum Processes \d+ -> 0\)/,
    );
    assert.match(
      out,
      /refused by the workflow, nothing changed: approve refused: alice \(SHA256:[^)]+\) started this rollout/,
    );
    assert.match(out, /approved by dana \(SHA256:[A-Za-z0-9+/]{43}\)/);
    assert.match(out, /completed: hotfix_backend_fix_queue_stall applied on 5 server\(s\)/);
    assert.match(out, /Maximum Processes restored exactly/);
    assert.match(out, /rolled back: .*SHA checksum on disk [0-9a-f]+ does not match what we expected to override/);
    assert.match(out, /Maximum Processes are back to their values/);
    assert.match(out, /Temporal Web UI while it ran: http:\/\/127\.0\.0\.1:\d+/);
    assert.match(out, /km-hotfix dev --sim 2:3/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');

    assert.ok(
      [...seen.values()].some((c) => /temporal/.test(c)),
      `the demo's Temporal dev server was seen running: ${[...seen.values()].join('\n')}`,
    );
    assert.ok(
      [...seen.values()].some((c) => /postgres/.test(c)),
      "the demo's PostgreSQL was seen running",
    );
    const left = [...(await demoProcesses())].filter(([pid]) => !before.has(pid));
    assert.deepEqual(left, [], 'no process of the demo is left');
  });
});
