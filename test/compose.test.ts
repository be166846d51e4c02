// docker-compose.yml and the Dockerfile, checked without a Docker engine:
// services, pinned images, start-up wiring, and the worker's configuration.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';

const ROOT = path.resolve(__dirname, '..', '..');

interface Service {
  image?: string;
  build?: { context: string; dockerfile?: string } | string;
  depends_on?: Record<string, { condition: string }> | string[];
  environment?: Record<string, string> | string[];
  volumes?: string[];
  secrets?: string[];
  configs?: { source: string; target: string }[];
  command?: string | string[];
  entrypoint?: string | string[];
  deploy?: { replicas?: number };
  container_name?: string;
  ports?: string[];
}
interface Compose {
  services: Record<string, Service>;
  secrets?: Record<string, { file?: string }>;
  configs?: Record<string, { file?: string }>;
}

function env(s: Service): Record<string, string> {
  if (!s.environment) return {};
  if (!Array.isArray(s.environment)) return s.environment;
  return Object.fromEntries(s.environment.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
}

function dependsOn(s: Service): Record<string, string> {
  if (!s.depends_on) return {};
  if (Array.isArray(s.depends_on)) return Object.fromEntries(s.depends_on.map((d) => [d, 'service_started']));
  return Object.fromEntries(Object.entries(s.depends_on).map(([k, v]) => [k, v.condition]));
}

describe('docker-compose.yml and Dockerfile (parsed; no Docker engine here)', () => {
  let compose: Compose;
  let dockerfile: string;
  before(async () => {
    compose = YAML.parse(await fs.readFile(path.join(ROOT, 'docker-compose.yml'), 'utf8')) as Compose;
    dockerfile = await fs.readFile(path.join(ROOT, 'Dockerfile'), 'utf8');
  });

  it('has PostgreSQL, Temporal schema setup, the Temporal server, its UI and the km-hotfix worker', () => {
    const s = compose.services;
    assert.match(s.postgresql?.image ?? '', /^postgres:/);
    assert.match(s['temporal-schema-setup']?.image ?? '', /^temporalio\/admin-tools:/);
    assert.match(s.temporal?.image ?? '', /^temporalio\/server:/);
    assert.match(s['temporal-ui']?.image ?? '', /^temporalio\/ui:/);
    assert.ok(s['km-hotfix-worker']?.build, 'the worker is built from the repo');
  });

  it('pins every image to a version tag (no latest, no deprecated auto-setup)', () => {
    for (const [name, s] of Object.entries(compose.services)) {
      if (!s.image) continue;
      const m = /^([^:@]+):([^:@]+)$/.exec(s.image);
      assert.ok(m, `${name}: ${s.image} has a tag`);
      assert.match(m[2], /^\d+(\.\d+)+(-[a-z0-9.]+)?$/, `${name}: ${s.image} is pinned to a version`);
      assert.notEqual(m[2], 'latest');
      assert.doesNotMatch(s.image, /auto-setup/, `${name}: temporalio/auto-setup is deprecated`);
    }
    const versions = ['temporal', 'temporal-schema-setup', 'temporal-create-namespace'].map(
      (n) => compose.services[n].image!.split(':')[1],
    );
    assert.equal(new Set(versions).size, 1, `server and admin-tools share one version: ${versions}`);
  });

  it('runs Temporal on PostgreSQL after its schema is set up, and everything in order', () => {
    const s = compose.services;
    const t = env(s.temporal);
    assert.equal(t.DB, 'postgres12');
    assert.equal(t.POSTGRES_SEEDS, 'postgresql');
    assert.deepEqual(dependsOn(s['temporal-schema-setup']), { postgresql: 'service_healthy' });
    assert.deepEqual(dependsOn(s.temporal), { 'temporal-schema-setup': 'service_completed_successfully' });
    assert.equal(dependsOn(s['temporal-create-namespace']).temporal, 'service_healthy');
    assert.equal(dependsOn(s['temporal-ui']).temporal, 'service_healthy');
    assert.equal(env(s['temporal-ui']).TEMPORAL_ADDRESS, 'temporal:7233');
    // The mounted dynamic config file exists in the repo.
    const mount = (s.temporal.volumes ?? []).find((v) => v.includes('dynamicconfig'));
    assert.ok(mount, 'dynamic config mounted');
    const file = env(s.temporal).DYNAMIC_CONFIG_FILE_PATH.split('/').at(-1)!;
    return fs.access(path.join(ROOT, mount.split(':')[0], file));
  });

  it("sets up Temporal's schema with deploy/temporal/setup-schema.sh, the script the production topology test runs", async () => {
    const setup = compose.services['temporal-schema-setup'];
    const mount = (setup.volumes ?? []).find((v) => v.startsWith('./deploy/temporal/setup-schema.sh:'));
    assert.ok(mount, 'the script is mounted into admin-tools');
    const inContainer = mount.split(':')[1];
    assert.deepEqual(setup.entrypoint, ['/bin/sh', inContainer]);
    assert.equal(setup.command, undefined, 'no inline commands beside the script');
    const script = await fs.readFile(path.join(ROOT, 'deploy', 'temporal', 'setup-schema.sh'), 'utf8');
    assert.match(
      script,
      /create[\s\S]*setup-schema -v 0\.0[\s\S]*update-schema -d "\$SCHEMA_DIR\/postgresql\/v12\/\$schema\/versioned"/,
    );
    assert.match(script, /"\$DB:temporal" "\$VISIBILITY_DB:visibility"/, 'both databases');
    // Its defaults are what admin-tools and this compose file provide.
    assert.match(script, /SQL_TOOL=\$\{SQL_TOOL:-temporal-sql-tool\}/);
    assert.match(script, /SCHEMA_DIR=\$\{SCHEMA_DIR:-\/etc\/temporal\/schema\}/);
    assert.equal(env(setup).SQL_HOST, 'postgresql');
  });

  it('pins the Temporal version of deploy/temporal/VERSION, the one the production topology test builds', async () => {
    const version = (await fs.readFile(path.join(ROOT, 'deploy', 'temporal', 'VERSION'), 'utf8')).trim();
    for (const name of ['temporal', 'temporal-schema-setup', 'temporal-create-namespace']) {
      assert.equal(compose.services[name].image!.split(':')[1], version, `${name} runs Temporal ${version}`);
    }
  });

  it('runs two worker replicas (no fixed container name), so a rollout goes on when one dies', () => {
    const w = compose.services['km-hotfix-worker'];
    assert.equal(w.deploy?.replicas, 2);
    assert.equal(w.container_name, undefined, 'a container_name would forbid replicas');
  });

  it('wires the worker to the temporal service, both databases, the SSH key secret and the signers file', () => {
    const w = compose.services['km-hotfix-worker'];
    const deps = dependsOn(w);
    assert.equal(deps.postgresql, 'service_healthy');
    assert.equal(deps.temporal, 'service_healthy');
    assert.equal(deps['temporal-create-namespace'], 'service_completed_successfully');
    const e = env(w);
    assert.equal(e.TEMPORAL_ADDRESS, 'temporal:7233');
    assert.match(e.DATABASE_URL ?? '', /^postgres:\/\/.+@postgresql:5432\/km_hotfix$/);
    assert.equal(env(compose.services.postgresql).POSTGRES_DB, 'km_hotfix');
    assert.match(
      e.KM_DATABASE_URL ?? '',
      /^\$\{KM_DATABASE_URL:\?.+\}$/,
      'the site must name its Key Manager database',
    );
    assert.equal(e.KM_SSH_KEY, '/run/secrets/km_ssh_key');
    assert.deepEqual(w.secrets, ['km_ssh_key']);
    assert.ok(compose.secrets?.km_ssh_key?.file, 'the key comes from a file on the host');
    // The trust root of signed decisions: a file on the host, mounted where KM_HOTFIX_ALLOWED_SIGNERS points.
    assert.deepEqual(w.configs, [{ source: 'allowed_signers', target: e.KM_HOTFIX_ALLOWED_SIGNERS }]);
    assert.ok(compose.configs?.allowed_signers?.file, 'the signers file comes from the host');
    const build = typeof w.build === 'string' ? { context: w.build } : w.build!;
    assert.equal(path.resolve(ROOT, build.context, build.dockerfile ?? 'Dockerfile'), path.join(ROOT, 'Dockerfile'));
  });

  it("serves the approvers' page from the same image, with its delegate key as a secret and the proxy it trusts", () => {
    const w = compose.services['km-hotfix-web'];
    assert.equal(w.image, compose.services['km-hotfix-worker'].image);
    assert.deepEqual((w.command as string[]).slice(0, 3), ['node', 'bin/km-hotfix.js', 'web']);
    const e = env(w);
    assert.equal(e.TEMPORAL_ADDRESS, 'temporal:7233');
    assert.match(e.DATABASE_URL ?? '', /@postgresql:5432\/km_hotfix$/);
    assert.equal(e.KM_HOTFIX_WEB_SIGNING_KEY, '/run/secrets/km_hotfix_web_key');
    assert.ok('KM_HOTFIX_WEB_TRUSTED_PROXIES' in e);
    // The page acts only for people of the worker's signers file: the same file, mounted the same way.
    assert.deepEqual(w.configs, compose.services['km-hotfix-worker'].configs);
    assert.equal(e.KM_HOTFIX_ALLOWED_SIGNERS, env(compose.services['km-hotfix-worker']).KM_HOTFIX_ALLOWED_SIGNERS);
    assert.deepEqual(w.secrets, ['km_hotfix_web_key']);
    assert.ok(compose.secrets?.km_hotfix_web_key?.file);
    assert.equal(dependsOn(w).temporal, 'service_healthy');
  });

  it('builds the worker on Debian (not Alpine), with npm ci and a build, and runs `km-hotfix worker`', () => {
    const froms = [...dockerfile.matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1]);
    const image = /^ARG NODE_IMAGE=(\S+)/m.exec(dockerfile)?.[1];
    const bases = froms.map((f) => (f.startsWith('${NODE_IMAGE}') ? (image ?? f) : f));
    assert.ok(bases.length > 0);
    for (const b of bases) {
      assert.match(b, /^node:20[\w.-]*-(bookworm|bullseye)(-slim)?$/, `${b} is a Debian-based Node 20 image`);
      assert.doesNotMatch(b, /alpine/);
    }
    assert.match(dockerfile, /npm ci/);
    assert.match(dockerfile, /CMD \["node", "bin\/km-hotfix\.js", "worker"\]/);
    assert.doesNotMatch(dockerfile, /^USER root/m);
  });

  it('keeps local state and secrets out of the build context', async () => {
    const ignore = (await fs.readFile(path.join(ROOT, '.dockerignore'), 'utf8')).split('\n').map((l) => l.trim());
    for (const p of ['node_modules', 'dist', '.git', '.tools', '.km-hotfix', 'secrets'])
      assert.ok(ignore.includes(p), `.dockerignore lists ${p}`);
  });
});
