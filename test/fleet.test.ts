// `km-hotfix fleet import|list`: the real command against a fresh database.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { lines, runCli } from './helpers/cli-process';
import { freshDatabase, scratchDir } from './helpers/stack';
import { freePort } from '../stack/process';
import type { FleetServer } from '../domain/fleet';

const KEY = (c: string) => `SHA256:${c.repeat(43)}`;

const THREE: FleetServer[] = [
  {
    name: 'km-fe-1',
    role: 'frontend',
    host: '10.0.0.11',
    port: 22,
    user: 'root',
    sudo: false,
    hostKey: KEY('A'),
    url: 'https://km-fe-1.example.com/',
  },
  { name: 'km-be-1', role: 'backend', host: '10.0.0.21', port: 2222, user: 'kmadmin', sudo: true, hostKey: KEY('B') },
  {
    name: 'km-both-1',
    role: 'both',
    host: 'km-both-1.example.com',
    port: 22,
    user: 'root',
    sudo: false,
    hostKey: KEY('C'),
    url: 'https://km-both-1.example.com/',
  },
];

describe('km-hotfix fleet import / list', function () {
  this.timeout(60_000);
  let dir: string;
  let env: Record<string, string>;

  before(async () => {
    dir = await scratchDir('fleet');
    env = { DATABASE_URL: await freshDatabase('fleet') };
  });

  async function write(name: string, text: string): Promise<string> {
    const file = path.join(dir, name);
    await fs.writeFile(file, text);
    return file;
  }

  async function listed(): Promise<FleetServer[]> {
    const r = await runCli(['fleet', 'list', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { servers: FleetServer[] }).servers;
  }

  it('imports a YAML inventory (defaults applied) and lists it in file order', async () => {
    const yaml = `servers:
  - name: km-fe-1
    role: frontend
    host: 10.0.0.11
    hostKey: "${KEY('A')}"
    url: https://km-fe-1.example.com/
  - name: km-be-1
    role: backend
    host: 10.0.0.21
    port: 2222
    user: kmadmin
    sudo: true
    hostKey: "${KEY('B')}"
  - { name: km-both-1, role: both, host: km-both-1.example.com, hostKey: "${KEY('C')}", url: "https://km-both-1.example.com/" }
`;
    const r = await runCli(['fleet', 'import', await write('fleet.yaml', yaml)], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /imported 3 servers/);
    assert.deepEqual(await listed(), THREE);

    const table = await runCli(['fleet', 'list'], env);
    assert.equal(table.code, 0, table.stderr);
    const rows = lines(table.stdout);
    assert.equal(rows.length, 4, table.stdout);
    assert.match(rows[0], /^NAME\s+ROLE\s+HOST:PORT\s+USER\s+SUDO\s+URL$/);
    assert.match(rows[1], /^km-fe-1\s+frontend\s+10\.0\.0\.11:22\s+root\s+no\s+https:\/\/km-fe-1\.example\.com\/$/);
    assert.match(rows[2], /^km-be-1\s+backend\s+10\.0\.0\.21:2222\s+kmadmin\s+yes\s+-$/);
    assert.match(rows[3], /^km-both-1\s+both\s+km-both-1\.example\.com:22\s+root\s+no\s+https:/);
  });

  it('replaces the inventory on a second import (JSON), and `list --json` output imports again', async () => {
    const two = { servers: [THREE[2], THREE[0]] };
    const r = await runCli(['fleet', 'import', await write('two.json', JSON.stringify(two))], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /imported 2 servers/);
    assert.deepEqual(await listed(), two.servers);

    // Round trip: what list --json prints is an inventory file.
    const again = await runCli(['fleet', 'import', await write('three.json', JSON.stringify({ servers: THREE }))], env);
    assert.equal(again.code, 0, again.stderr);
    const dump = await runCli(['fleet', 'list', '--json'], env);
    const r2 = await runCli(['fleet', 'import', await write('dump.json', dump.stdout)], env);
    assert.equal(r2.code, 0, r2.stderr);
    assert.deepEqual(await listed(), THREE);
  });

  const bad: [string, string, RegExp][] = [
    ['an empty list', 'servers: []\n', /lists no servers/],
    ['no servers key', 'hosts: []\n', /must have a 'servers:' list/],
    [
      'duplicate names',
      YAML.stringify({ servers: [THREE[0], { ...THREE[1], name: 'km-fe-1' }] }),
      /'km-fe-1' is listed twice/,
    ],
    [
      'a missing hostKey',
      YAML.stringify({ servers: [THREE[0], { name: 'km-be-9', role: 'backend', host: '10.0.0.29' }] }),
      /'km-be-9' has no 'hostKey'/,
    ],
    [
      'a bad role',
      YAML.stringify({ servers: [{ ...THREE[0], role: 'db' }] }),
      /'role' must be frontend, backend or both/,
    ],
    ['not YAML', 'servers: [\n', /not valid YAML or JSON/],
  ];
  for (const [what, text, message] of bad) {
    it(`refuses ${what}: exit 2, one line, inventory unchanged`, async () => {
      const before = await listed();
      const r = await runCli(['fleet', 'import', await write(`bad-${what.replace(/\W+/g, '-')}.yaml`, text)], env);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stdout, '');
      const err = lines(r.stderr);
      assert.equal(err.length, 1, r.stderr);
      assert.match(err[0], message);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      assert.deepEqual(await listed(), before);
    });
  }

  it('refuses a missing file with exit 2', async () => {
    const r = await runCli(['fleet', 'import', path.join(dir, 'nope.yaml')], env);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(lines(r.stderr).length, 1, r.stderr);
    assert.match(r.stderr, /cannot read .*nope\.yaml/);
  });

  it('without DATABASE_URL: exit 2 naming the variable', async () => {
    const r = await runCli(['fleet', 'list'], {});
    assert.equal(r.code, 2, r.stderr);
    assert.equal(lines(r.stderr).length, 1, r.stderr);
    assert.match(r.stderr, /DATABASE_URL is not set/);
  });

  it('with an unreachable database: exit 3 naming the orchestrator database', async () => {
    const port = await freePort();
    const r = await runCli(['fleet', 'list'], {
      DATABASE_URL: `postgres://postgres:postgres@127.0.0.1:${port}/km_hotfix`,
    });
    assert.equal(r.code, 3, r.stderr);
    assert.equal(lines(r.stderr).length, 1, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`cannot reach the orchestrator database at 127\\.0\\.0\\.1:${port}/km_hotfix.*DATABASE_URL`),
    );
    assert.doesNotMatch(r.stderr, /postgres:postgres@/, 'no password in messages');
  });
});
