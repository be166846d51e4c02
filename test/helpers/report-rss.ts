// Preloaded into a km-hotfix child (NODE_OPTIONS=--require) by tests that
// bound its memory: at exit it writes its peak resident set size (KiB).
import { writeFileSync } from 'node:fs';

const out = process.env.KM_HOTFIX_TEST_RSS_FILE;
if (out) process.on('exit', () => writeFileSync(out, String(process.resourceUsage().maxRSS)));
