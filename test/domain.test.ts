// Pure domain logic: hotfix names, the inventory, canary choice, drain list,
// the fan-out window and its start order, and durations. No servers needed.
import assert from 'node:assert/strict';
import {
  descriptionProblem,
  parseHotfixFileName,
  parseHotfixName,
  HotfixNameError,
  hotfixFileName,
} from '../domain/hotfix';
import { InventoryError, FleetServer } from '../domain/fleet';
import { parseInventory, inventoryToYaml } from '../domain/inventory-file';
import {
  parseBatch,
  parseDuration,
  planRollout,
  batchWidth,
  fanoutOrder,
  chooseCanary,
  PlanError,
  formatDuration,
} from '../domain/plan';

const KEY = `SHA256:${'a'.repeat(43)}`;
const server = (name: string, role: FleetServer['role']): FleetServer => ({
  name,
  role,
  host: '10.0.0.1',
  port: 22,
  user: 'root',
  sudo: false,
  hostKey: KEY,
});
const FLEET = [
  server('fe-1', 'frontend'),
  server('fe-2', 'frontend'),
  server('both-1', 'both'),
  server('be-1', 'backend'),
  server('be-2', 'backend'),
];

describe('hotfix file names and Names (vendor grammar)', () => {
  it('parses the vendor example', () => {
    assert.deepEqual(parseHotfixFileName('/tmp/x/sshmgr-3.0.0-hotfix_common_fix_tags_and_stats_UKM-1291.gz'), {
      fileName: 'sshmgr-3.0.0-hotfix_common_fix_tags_and_stats_UKM-1291.gz',
      version: '3.0.0',
      name: 'hotfix_common_fix_tags_and_stats',
      component: 'common',
      description: 'fix_tags_and_stats',
      issueId: 'UKM-1291',
    });
  });
  const bad: [string, RegExp][] = [
    ['hotfix_common_fix_UKM-1.gz', /start with 'sshmgr-'/],
    ['sshmgr-3.0.0-hotfix_common_fix_UKM-1.tar', /end with '.gz'/],
    ['sshmgr-3.0.0-hotfix_database_fix_UKM-1.gz', /component 'database'/],
    ['sshmgr-3.0.0-hotfix_common_fix_tags.gz', /issue id/],
    ['sshmgr-x.y-hotfix_common_fix_UKM-1.gz', /version/],
    ['sshmgr-3.0.0-hotfix_common_UKM-1.gz', /component, a description and an issue id/],
    ['sshmgr-3.0.0-hotfix_common_a;rm -rf_UKM-1.gz', /description/],
  ];
  for (const [name, why] of bad) {
    it(`rejects ${name} saying what is wrong and what is expected`, () => {
      assert.throws(
        () => parseHotfixFileName(name),
        (e: unknown) =>
          e instanceof HotfixNameError && why.test(e.message) && /expected sshmgr-<version>-hotfix_/.test(e.message),
      );
    });
  }
  it('accepts only strict Names (they reach a shell)', () => {
    assert.equal(parseHotfixName('hotfix_backend_fix_queue_stall').component, 'backend');
    for (const n of [
      'hotfix_backend_x;rm -rf /',
      'hotfix_backend_$(id)',
      "hotfix_backend_a'b",
      'hotfix_web_x',
      'hotfix_backend_',
      'fix_backend_x',
    ]) {
      assert.throws(() => parseHotfixName(n), HotfixNameError, n);
    }
  });
  it('a description ending (or starting) with _ says so and what to do', () => {
    assert.throws(
      () =>
        parseHotfixFileName(
          hotfixFileName({ version: '3.0.0', component: 'backend', description: 'fix_queue_', issueId: 'UKM-2001' }),
        ),
      (e: unknown) =>
        e instanceof HotfixNameError &&
        /description 'fix_queue_' ends with '_': '_' only goes between two words, so drop it \(fix_queue\)/.test(
          e.message,
        ),
    );
    assert.throws(
      () => parseHotfixName('hotfix_backend_fix_queue_'),
      /'hotfix_backend_fix_queue_' is not a hotfix Name: its description 'fix_queue_' ends with '_'.*drop it \(fix_queue\)/,
    );
    assert.throws(() => parseHotfixName('hotfix_backend__fix'), /description '_fix' starts with '_'/);
    assert.throws(() => parseHotfixName('hotfix_backend_fix__queue'), /has '__'.*\(fix_queue\)/);
    assert.throws(
      () => parseHotfixName('hotfix_backend_fix_-queue'),
      /the word '-queue'.*start with a letter or a digit/,
    );
    assert.throws(
      () => parseHotfixName('hotfix_backend_fix;queue'),
      /description 'fix;queue' has ";": use only letters/,
    );
    assert.equal(descriptionProblem('fix_queue_stall'), undefined);
  });
  it('formats a file name that parses back', () => {
    const f = hotfixFileName({ version: '3.1.2', component: 'frontend', description: 'fix_login', issueId: 'UKM-7' });
    assert.equal(parseHotfixFileName(f).name, 'hotfix_frontend_fix_login');
  });
});

describe('fleet inventory', () => {
  it('applies defaults and keeps file order; YAML round-trips', () => {
    const inv = parseInventory(
      `servers:\n  - {name: a, role: frontend, host: 10.0.0.1, hostKey: "${KEY}"}\n  - {name: b, role: backend, host: h, port: 2222, user: km, sudo: true, hostKey: "${KEY}", url: "https://b/"}\n`,
    );
    assert.deepEqual(
      inv.map((s) => [s.name, s.port, s.user, s.sudo]),
      [
        ['a', 22, 'root', false],
        ['b', 2222, 'km', true],
      ],
    );
    assert.deepEqual(parseInventory(inventoryToYaml(inv)), inv);
  });
  const bad: [string, RegExp][] = [
    ['servers: []', /lists no servers/],
    ['nothing: 1', /must have a 'servers:' list/],
    [
      `servers:\n  - {name: a, role: frontend, host: h, hostKey: "${KEY}"}\n  - {name: a, role: backend, host: h, hostKey: "${KEY}"}`,
      /listed twice/,
    ],
    ['servers:\n  - {name: a, role: frontend, host: h}', /has no 'hostKey'.*ssh-keyscan/],
    [`servers:\n  - {name: a, role: web, host: h, hostKey: "${KEY}"}`, /'role' must be frontend, backend or both/],
    [`servers:\n  - {name: "a b", role: frontend, host: h, hostKey: "${KEY}"}`, /'name' must be/],
    [`servers:\n  - {name: a, role: frontend, host: h, hostKey: "${KEY}", color: red}`, /unknown field 'color'/],
    ['servers: [', /not valid YAML or JSON/],
  ];
  for (const [text, why] of bad)
    it(`refuses: ${why.source}`, () =>
      assert.throws(
        () => parseInventory(text),
        (e: unknown) => e instanceof InventoryError && why.test(e.message),
      ));
});

describe('rollout plan: canary by hotfix type, drain, the fan-out window', () => {
  const none = new Set<string>();
  it('frontend → a dedicated frontend; backend → a dedicated backend; common → the first server', () => {
    assert.equal(chooseCanary('frontend', FLEET).server, 'fe-1');
    assert.equal(chooseCanary('backend', FLEET).server, 'be-1');
    assert.equal(chooseCanary('common', FLEET).server, 'fe-1');
    assert.equal(
      chooseCanary(
        'backend',
        FLEET.filter((s) => s.role !== 'backend'),
      ).server,
      'both-1',
      "a 'both' server when no dedicated backend",
    );
  });
  it('backend hotfix drains every other backend without the hotfix, including both-role servers', () => {
    const plan = planRollout({
      component: 'backend',
      fleet: FLEET,
      hasHotfix: new Set(['be-2']),
      batch: parseBatch('2'),
    });
    assert.equal(plan.canary?.server, 'be-1');
    assert.deepEqual(plan.drain, ['both-1']);
    assert.deepEqual(plan.skipped, ['be-2']);
    assert.deepEqual(plan.fanout, ['fe-1', 'fe-2', 'both-1']);
    assert.equal(plan.window, 2);
  });
  it('frontend and common hotfixes drain nothing', () => {
    assert.deepEqual(
      planRollout({ component: 'frontend', fleet: FLEET, hasHotfix: none, batch: parseBatch('1') }).drain,
      [],
    );
    assert.deepEqual(
      planRollout({ component: 'common', fleet: FLEET, hasHotfix: none, batch: parseBatch('1') }).drain,
      [],
    );
  });
  it('--servers keeps inventory order, refuses unknown and repeated names', () => {
    const plan = planRollout({
      component: 'common',
      fleet: FLEET,
      servers: ['be-2', 'fe-2'],
      hasHotfix: none,
      batch: parseBatch('1'),
    });
    assert.deepEqual(plan.targets, ['fe-2', 'be-2']);
    assert.throws(
      () =>
        planRollout({ component: 'common', fleet: FLEET, servers: ['nope'], hasHotfix: none, batch: parseBatch('1') }),
      /nope, not in the inventory/,
    );
    assert.throws(
      () =>
        planRollout({
          component: 'common',
          fleet: FLEET,
          servers: ['fe-1', 'fe-1'],
          hasHotfix: none,
          batch: parseBatch('1'),
        }),
      /more than once/,
    );
  });
  it('--canary must be a target without the hotfix and of the right role', () => {
    assert.equal(
      planRollout({ component: 'backend', fleet: FLEET, canary: 'both-1', hasHotfix: none, batch: parseBatch('1') })
        .canary?.server,
      'both-1',
    );
    assert.throws(
      () =>
        planRollout({ component: 'backend', fleet: FLEET, canary: 'fe-1', hasHotfix: none, batch: parseBatch('1') }),
      (e: unknown) => e instanceof PlanError && /role frontend.*both-1, be-1, be-2/.test(e.message),
    );
    assert.throws(
      () =>
        planRollout({
          component: 'common',
          fleet: FLEET,
          canary: 'be-1',
          hasHotfix: new Set(['be-1']),
          batch: parseBatch('1'),
        }),
      /not one of the servers this rollout would patch/,
    );
  });
  it('a frontend hotfix with no frontend among the targets is refused', () => {
    assert.throws(
      () =>
        planRollout({
          component: 'frontend',
          fleet: FLEET,
          servers: ['be-1'],
          hasHotfix: none,
          batch: parseBatch('1'),
        }),
      /verified first on a frontend/,
    );
  });
  it('everything already patched: no canary, nothing to do', () => {
    const plan = planRollout({
      component: 'common',
      fleet: FLEET,
      hasHotfix: new Set(FLEET.map((s) => s.name)),
      batch: parseBatch('1'),
    });
    assert.equal(plan.canary, undefined);
    assert.deepEqual(plan.fanout, []);
    assert.equal(plan.window, 0);
    assert.equal(plan.skipped.length, 5);
  });
  it('the window by count and by percentage (rounded up, at least 1)', () => {
    assert.equal(batchWidth(parseBatch('4'), 10), 4);
    assert.equal(batchWidth(parseBatch('25%'), 10), 3);
    assert.equal(batchWidth(parseBatch('1%'), 3), 1);
    for (const b of ['0', '-1', '0%', '101%', 'x', '1.5']) assert.throws(() => parseBatch(b), /--batch must be/);
  });
  it('the fan-out order: runs of consecutive servers, one per place, each patched in turn', () => {
    const s = (n: number) => Array.from({ length: n }, (_, i) => `s${i + 1}`);
    // 4 servers, window 2: places take s1-s2 and s3-s4; s1 and s3 start at once, then s2 and s4 (not s1+s2).
    const four = fanoutOrder(s(4), 2);
    assert.equal(four.runLength, 2);
    assert.deepEqual(four.runs, [
      ['s1', 's2'],
      ['s3', 's4'],
    ]);
    assert.deepEqual(four.starts, [
      ['s1', 's3'],
      ['s2', 's4'],
    ]);
    // A last, shorter run.
    assert.deepEqual(fanoutOrder(s(5), 2).starts, [['s1', 's4'], ['s2', 's5'], ['s3']]);
    // Window 1: inventory order, one at a time.
    assert.deepEqual(fanoutOrder(s(3), 1).starts, [['s1'], ['s2'], ['s3']]);
    // More runs than places (runs of at most 20): the third run starts when the first place is free.
    const many = fanoutOrder(s(60), 1);
    assert.deepEqual(
      many.runs.map((r) => r.length),
      [20, 20, 20],
    );
    assert.deepEqual(many.starts[20], ['s21']);
    const wide = fanoutOrder(s(90), 2);
    assert.equal(wide.runLength, 20);
    assert.deepEqual(wide.starts[0], ['s1', 's21']);
    assert.deepEqual(wide.starts[20], ['s41', 's61']);
    assert.deepEqual(wide.starts[40], ['s81']);
    assert.equal(wide.starts.flat().length, 90);
  });
  it('durations', () => {
    assert.equal(parseDuration('24h'), 86_400_000);
    assert.equal(parseDuration('1h30m'), 5_400_000);
    assert.equal(parseDuration('90s'), 90_000);
    for (const d of ['', '10', '0s', '500ms', '31d', 'soon'])
      assert.throws(() => parseDuration(d), /--approval-timeout must be a duration/);
    for (const d of ['24h', '1h30m', '90s', '2d3h', '45m'])
      assert.equal(parseDuration(formatDuration(parseDuration(d))), parseDuration(d));
    assert.equal(formatDuration(86_400_000), '1d');
    assert.equal(formatDuration(5_400_000), '1h30m');
  });
});
