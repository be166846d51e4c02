#!/usr/bin/env node
// The km-hotfix command. TypeScript sources are compiled to dist/ by `npm install` (prepare).
'use strict';
const path = require('node:path');
const fs = require('node:fs');
const entry = path.join(__dirname, '..', 'dist', 'client', 'cli.js');
if (!fs.existsSync(entry)) {
  console.error("km-hotfix: not built yet: run 'npm install' (or 'npm run build') in " + path.join(__dirname, '..'));
  process.exit(2);
}
require(entry).main(process.argv);
