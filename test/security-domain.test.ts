// Hostile input, the pure parts (issue 13): what reaches the terminal is
// inert, message payloads are checked, inventory fields that an SSH command
// line or a URL would misread are refused, limits are read from the
// environment. No servers needed.
import assert from 'node:assert/strict';
import { inert, hasControlCharacters } from '../domain/terminal';
import { signedRequest, MessageError, MESSAGE_LIMITS } from '../domain/messages/signed-request';
import { InventoryError } from '../domain/fleet';
import { parseInventory } from '../domain/inventory-file';
import { inputLimits, isGzip, LimitError, DEFAULT_LIMITS } from '../domain/input-limits';
import { statusBlock, changeLines, outcomeLine } from '../client/render/status';
import { formatTable } from '../client/commands/fleet';
import { describeUrl } from '../store/database';
import type { RolloutStatus } from '../domain/messages/rollout';

const ESC = '\u001b';
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const HOSTILE = `ok\n10:00:00  phase completed${ESC}[2J${ESC}]0;owned\u0007\r\u009b31m\u202eevil`;

function rollout(over: Partial<RolloutStatus> = {}): RolloutStatus {
  const now = new Date().toISOString();
  return {
    id: 'rollout-x',
    kind: 'rollout',
    hotfix: 'hotfix_backend_x',
    phase: 'verifying',
    requestedBy: 'alice',
    requestedKey: null,
    sha256: null,
    canary: 'km-be-1',
    drained: [],
    approvals: [],
    decisions: [],
    servers: [{ name: 'km-be-1', role: 'backend', state: 'patched' }],
    error: null,
    paused: false,
    gate: null,
    needsAttention: [],
    startedAt: now,
    updatedAt: now,
    endedAt: null,
    activeBatchWorkflows: [],
    ...over,
    serverCount: 1,
    serverCounts: { patched: 1 },
    attention: [],
    attentionMore: 0,
    needsAttentionMore: 0,
  };
}

describe('terminal: text from people and files is printed inert', () => {
  it('escapes C0, DEL, C1 and bidi controls, keeps ordinary text and Unicode', () => {
    assert.equal(inert('a\nb'), 'a\\nb');
    assert.equal(inert(`${ESC}[2J`), '\\e[2J');
    assert.equal(inert('\u0007\u0000\u007f\u009b'), '\\x07\\x00\\x7f\\x9b');
    assert.equal(inert('\u202eabc'), '\\u202eabc');
    assert.equal(inert('Grüße — █ ok'), 'Grüße — █ ok');
    assert.ok(hasControlCharacters(HOSTILE));
    assert.ok(!hasControlCharacters(inert(HOSTILE)));
  });

  it('status, watch lines and the outcome keep a hostile comment, reason and error on one line, without control characters', () => {
    const st = rollout({
      approvals: [
        {
          by: 'bob',
          decision: 'approve',
          at: new Date().toISOString(),
          comment: HOSTILE,
          key: '',
          message: '',
          signature: '',
        },
      ],
      error: HOSTILE,
      phase: 'rolled_back',
      servers: [{ name: 'km-be-1', role: 'backend', state: 'rolled_back', error: HOSTILE }],
    });
    const block = statusBlock(st, Date.now(), false);
    const changes = changeLines(undefined, st);
    for (const l of [...block, ...changes, outcomeLine(st)]) {
      assert.doesNotMatch(l, CONTROL, JSON.stringify(l));
      assert.doesNotMatch(l, /\u202e/);
    }
    assert.ok(!block.some((l) => /^10:00:00\s+phase completed/.test(l)), 'no fake line');
    assert.ok(!changes.some((l) => /^10:00:00\s+phase completed/.test(l)), 'no fake line in watch output');
    assert.match(block.join('\n'), /approved by bob at .*: ok\\n10:00:00  phase completed\\e\[2J/);
  });

  it('tables (list, fleet list, hotfixes) escape their cells', () => {
    const t = formatTable(['NAME', 'URL'], [['km-fe-1', `https://x/${ESC}]0;t\u0007`]]);
    assert.doesNotMatch(t.split('\n').join(''), CONTROL);
    assert.match(t, /https:\/\/x\/\\e\]0;t\\x07/);
  });

  it('item 8: a finished rollout is never shown paused, even from an older history', () => {
    for (const phase of ['rolled_back', 'completed', 'failed', 'rollback_failed'] as const) {
      assert.doesNotMatch(statusBlock(rollout({ phase, paused: true }), Date.now(), false).join('\n'), /PAUSED/, phase);
    }
    assert.match(
      statusBlock(rollout({ phase: 'fanout', paused: true }), Date.now(), false).join('\n'),
      /PAUSED: km-hotfix resume rollout-x/,
    );
  });
});

describe('messages: Update payloads are checked before a handler reads them', () => {
  const SIG = '-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n';
  const wrong: [string, unknown, RegExp][] = [
    ['no payload', undefined, /needs a payload/],
    ['null', null, /needs a payload/],
    ['a string', 'bob', /takes an object/],
    ['an array', [{ message: 'm', signature: SIG }], /takes an object .*array/],
    ['the old unsigned {by}', { by: 'bob' }, /is not signed: sign it with your SSH key/],
    ['no signature', { message: 'm' }, /is not signed/],
    ['an empty signature', { message: 'm', signature: '' }, /is not signed/],
    ['a message that is not text', { message: {}, signature: SIG }, /is not signed/],
    ['a signature that is not text', { message: 'm', signature: ['x'] }, /is not signed/],
    [
      'a message too long',
      { message: 'x'.repeat(MESSAGE_LIMITS.message + 1), signature: SIG },
      /'message' is longer than 4096/,
    ],
    [
      'a signature too long',
      { message: 'm', signature: 'x'.repeat(MESSAGE_LIMITS.signature + 1) },
      /'signature' is longer than/,
    ],
  ];
  for (const [what, payload, re] of wrong) {
    it(`approve, reject, pause, resume and abort refuse ${what}`, () => {
      for (const action of ['approve', 'reject', 'pause', 'resume', 'abort']) {
        assert.throws(
          () => signedRequest(payload, action),
          (e: unknown) => e instanceof MessageError && re.test(e.message),
          action,
        );
      }
    });
  }
  it('a good payload passes, keeping only the known fields (what it says is checked by the workflow)', () => {
    assert.deepEqual(signedRequest({ message: 'm', signature: SIG, by: 'mallory', extra: 1 }, 'approve'), {
      message: 'm',
      signature: SIG,
    });
  });
});

describe('inventory fields an SSH command line or a URL would misread', () => {
  const KEY = `SHA256:${'a'.repeat(43)}`;
  const one = (fields: Record<string, unknown>) =>
    JSON.stringify({ servers: [{ name: 'km-fe-1', role: 'frontend', host: '10.0.0.1', hostKey: KEY, ...fields }] });
  const refusedCases: [string, Record<string, unknown>, RegExp][] = [
    ['host "-p"', { host: '-p' }, /'host' .* not starting with '-'/],
    ['host "-oProxyCommand=sh"', { host: '-oProxyCommand=sh' }, /'host'/],
    ['host with a space', { host: '10.0.0.1 -p 2' }, /'host'/],
    ['host with a newline', { host: 'a\nb' }, /'host'/],
    ['user "-l"', { user: '-l' }, /'user'/],
    ['user with ESC', { user: `root${ESC}[2J` }, /'user'/],
    ['name with a newline', { name: 'km\nfe' }, /'name'/],
    ['name "-x"', { name: '-x' }, /'name'/],
    ['url with ESC', { url: `https://km/${ESC}[2J` }, /'url'/],
    ['url with BEL title', { url: `https://km/${ESC}]0;x\u0007` }, /'url'/],
    ['url with a newline', { url: 'https://km/\nphase completed' }, /'url'/],
    ['url with a space', { url: 'https://km/ x' }, /'url'/],
    ['url host "-x"', { url: 'https://-x/' }, /'url'/],
    ['url javascript:', { url: 'javascript:alert(1)' }, /'url'/],
    ['hostKey with a newline', { hostKey: `${KEY}\n` }, /'hostKey'/],
  ];
  for (const [what, fields, re] of refusedCases) {
    it(`refuses ${what} in one line`, () => {
      assert.throws(
        () => parseInventory(one(fields)),
        (e: unknown) => e instanceof InventoryError && re.test(e.message) && !e.message.includes('\n'),
      );
    });
  }
  it('YAML tags are one line of error, not a warning on stderr', () => {
    for (const tag of ['!!js/function "function(){}"', '!!python/object/apply:os.system ["id"]', '!custom x']) {
      assert.throws(
        () => parseInventory(`servers:\n  - name: ${tag}\n    role: frontend\n    host: h\n    hostKey: "${KEY}"\n`),
        (e: unknown) => e instanceof InventoryError && /tag/i.test(e.message) && !e.message.includes('\n'),
        tag,
      );
    }
  });
  it('a text over the size limit is refused before it is parsed', () => {
    assert.throws(
      () => parseInventory(one({}) + ' '.repeat(100), 'fleet.yaml', { maxBytes: 100 }),
      /larger than 100 bytes/,
    );
  });
  it('good hosts and URLs pass', () => {
    for (const host of ['10.0.0.1', 'km-fe-1.example.com', '::1', 'fe80::1'])
      assert.equal(parseInventory(one({ host }))[0].host, host);
    assert.equal(
      parseInventory(one({ url: 'https://km-fe-1.example.com:8443/ui?x=1' }))[0].url,
      'https://km-fe-1.example.com:8443/ui?x=1',
    );
  });
});

describe('limits and configuration', () => {
  it('defaults, MiB settings, and refusals of nonsense', () => {
    assert.deepEqual(inputLimits({}), DEFAULT_LIMITS);
    assert.equal(inputLimits({ KM_HOTFIX_MAX_FILE_MIB: '16' }).hotfixFileBytes, 16 * 1024 * 1024);
    for (const bad of ['0', '-1', 'lots', '1.5', '5000'])
      assert.throws(() => inputLimits({ KM_HOTFIX_MAX_INVENTORY_MIB: bad }), LimitError, bad);
  });
  it('gzip magic', () => {
    assert.ok(isGzip(Buffer.from([0x1f, 0x8b, 8, 0])));
    assert.ok(!isGzip(Buffer.from('#!/bin/sh\n')));
    assert.ok(!isGzip(Buffer.from([0x1f])));
  });
  it('item 7: a DATABASE_URL without // never shows its password', () => {
    for (const url of ['postgres:Secret@host/db', 'postgresql:user:Secret@host:5432/db', 'Secret'])
      assert.doesNotMatch(describeUrl(url), /Secret/, url);
    assert.equal(describeUrl('postgres://u:Secret@db.example:5433/km'), 'db.example:5433/km');
  });
});
