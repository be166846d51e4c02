// `npm run screenshot`: regenerates docs/web-gate.png and docs/web-rollout.png,
// the README's pictures of a rollout page, with the same headless chromium as
// the tests: a backend hotfix on a simulated fleet (real Temporal,
// PostgreSQL, SSH) at its gate as dana sees it (what she approves, the
// message the page signs), then approved by her through the page and
// photographed mid fan-out.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { startTestStack, stopTestStack } from './helpers/stack';
import { rolloutEnv } from './helpers/rollout-env';
import { launchBrowser } from './helpers/browser';
import { startWebServer } from '../web/server';
import { generateEd25519KeyPair } from '../keymanager/keygen';
import { WEB_DELEGATE } from '../stack/people';

const OUT = path.resolve(__dirname, '../../docs/web-rollout.png');
const GATE = path.resolve(__dirname, '../../docs/web-gate.png');

async function main(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  await startTestStack();
  const env = await rolloutEnv({ frontends: 2, backends: 4, restartMs: 2500 });
  const browser = await launchBrowser();
  let web;
  try {
    const dir = await fs.mkdtemp(path.join(path.dirname(env.people.allowedSigners), 'web-'));
    const pair = generateEd25519KeyPair(WEB_DELEGATE);
    const keyFile = path.join(dir, 'web_ed25519');
    await fs.writeFile(keyFile, pair.private, { mode: 0o600 });
    const [type, b64] = pair.public.trim().split(/\s+/);
    await fs.appendFile(env.people.allowedSigners, `${WEB_DELEGATE} ${type} ${b64}\n`);
    web = await startWebServer({
      client: env.client,
      orchestrator: env.orchestrator,
      trustedProxies: ['127.0.0.1'],
      signingKey: keyFile,
      allowedSigners: env.people.allowedSigners,
      pollMs: 300,
    });

    const hf = await env.hotfix('backend', { description: 'fix_queue_stall', issue: 'UKM-2001' });
    const h = await env.startRollout({ hotfix: hf.name, as: 'alice', approvers: ['dana'], batch: '2' });
    await env.waitForPhase(h, 'verifying', 60_000);
    const ctx = await browser.context('dana');
    const page = await ctx.newPage();
    await page.setViewportSize({ width: 1000, height: 900 });
    await page.goto(`${web.url}/rollouts/${encodeURIComponent(h.workflowId)}`);
    await page.locator('#sign-message').waitFor();
    await page.screenshot({ path: GATE, fullPage: true });
    console.log(`wrote ${GATE} (${(await fs.stat(GATE)).size} bytes)`);
    await page.fill('#approve-form textarea[name=comment]', 'operations run on km-be-1 only; looks good');
    await page.click('#approve');
    await page.click('#confirm');
    await page.locator('#phase', { hasText: 'fanout' }).waitFor({ timeout: 60_000 });
    await page.locator('[data-state="patching"]').first().waitFor({ timeout: 60_000 });
    await page.screenshot({ path: OUT, fullPage: true });
    console.log(`wrote ${OUT} (${(await fs.stat(OUT)).size} bytes)`);
    await ctx.close();
    await h.result();
  } finally {
    await browser.close();
    await web?.close();
    await env.close();
    await stopTestStack();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
