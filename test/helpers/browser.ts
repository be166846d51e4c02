// A real headless browser for the web page's tests: Debian's chromium driven
// by playwright-core, nothing phoning home. playwright gives each launch a
// fresh temporary --user-data-dir (it refuses one passed in args) and each
// context its own cookies.
import * as path from 'node:path';
import { chromium, Browser, BrowserContext } from 'playwright-core';

export const CHROMIUM = process.env.KM_HOTFIX_CHROMIUM ?? '/usr/bin/chromium';
/** Screenshots from test runs: gitignored. */
export const SCREENSHOTS = path.resolve(__dirname, '../../../test-output/screenshots');

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export interface TestBrowser {
  /** A new browser context; `person` makes the (simulated) proxy name them on every request. */
  context(person?: string): Promise<BrowserContext>;
  close(): Promise<void>;
}

export async function launchBrowser(): Promise<TestBrowser> {
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  return {
    context: (person) => browser.newContext(person ? { extraHTTPHeaders: { 'X-Forwarded-User': person } } : {}),
    close: () => browser.close(),
  };
}
