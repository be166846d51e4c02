// `km-hotfix sim`: the Key Manager simulator on its own (for a Temporal and
// databases started elsewhere), sample hotfix files, and faults/logs of a
// running simulator through its loopback control API.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Command } from 'commander';
import { COMPONENTS, Component, descriptionProblem, HotfixNameError } from '../../domain/hotfix';
import { inventoryToYaml } from '../../domain/inventory-file';
import {
  makeHotfix,
  startSimFleet,
  SimConfigError,
  type CommandLogEntry,
  type FaultSpec,
  type SimFleet,
} from '../../simulator';
import { CliError, EXIT } from '../errors';

const CONTROL_ENV = 'KM_SIM_CONTROL';

function count(name: string, min = 0): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min)
      throw new CliError(`${name} must be a whole number >= ${min} (got '${v}')`, EXIT.refused);
    return n;
  };
}

export interface SimRunOptions {
  frontends: number;
  backends: number;
  both?: number;
  kmDatabaseUrl?: string;
  authorizedKey: string;
  inventoryOut?: string;
  controlPort?: number;
  restartMs?: number;
  applyMs?: number;
  kmVersion?: string;
  sudo?: string;
}

const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'CONNECT_TIMEOUT',
  '28P01',
  '28000',
  '3D000',
]);

/** Run a fleet until `until` settles; returns the fleet's stop result. */
export async function simRun(
  opts: SimRunOptions,
  until: Promise<unknown>,
  print: (line: string) => void = (l) => console.log(l),
): Promise<void> {
  const kmDatabaseUrl = opts.kmDatabaseUrl ?? process.env.KM_DATABASE_URL;
  if (!kmDatabaseUrl)
    throw new CliError('no Key Manager database: pass --km-database-url or set KM_DATABASE_URL', EXIT.refused);
  let authorizedKey: string;
  try {
    authorizedKey = (await fs.readFile(opts.authorizedKey, 'utf8')).trim();
  } catch (err) {
    throw new CliError(
      `cannot read --authorized-key ${opts.authorizedKey} (${(err as NodeJS.ErrnoException).code ?? 'error'}): give an OpenSSH public key file such as ~/.ssh/id_ed25519.pub`,
      EXIT.refused,
    );
  }
  let fleet: SimFleet;
  try {
    fleet = await startSimFleet({
      frontends: opts.frontends,
      backends: opts.backends,
      both: opts.both,
      kmDatabaseUrl,
      authorizedKey,
      controlPort: opts.controlPort ?? 0,
      restartMs: opts.restartMs,
      applyMs: opts.applyMs,
      kmVersion: opts.kmVersion,
      sudoServers: opts.sudo
        ? opts.sudo
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean)
        : undefined,
    });
  } catch (err) {
    if (err instanceof SimConfigError) throw new CliError(`${err.message}`, EXIT.refused);
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && UNREACHABLE_CODES.has(code))
      throw new CliError(
        `cannot reach the Key Manager database (${code}: ${(err as Error).message.split('\n')[0]}): check --km-database-url / KM_DATABASE_URL`,
        EXIT.unreachable,
      );
    throw err;
  }
  try {
    const yaml = inventoryToYaml(fleet.inventory());
    if (opts.inventoryOut) {
      await fs.writeFile(opts.inventoryOut, yaml);
      print(
        `# inventory of ${fleet.servers.length} servers written to ${opts.inventoryOut} (km-hotfix fleet import ${opts.inventoryOut})`,
      );
    }
    print(`export ${CONTROL_ENV}=${fleet.controlUrl}`);
    print('ready');
    await until;
  } finally {
    await fleet.stop();
  }
}

async function control(url: string, method: string, pathname: string, body?: unknown): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(new URL(pathname, url.endsWith('/') ? url : url + '/'), {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new CliError(
      `cannot reach the simulator control API at ${url}: start 'km-hotfix sim run' and pass the URL it prints with --control (or set ${CONTROL_ENV})`,
      EXIT.unreachable,
    );
  }
  const doc = (await res.json().catch(() => ({}))) as { error?: string };
  if (!res.ok) throw new CliError(doc.error ?? `the simulator answered HTTP ${res.status}`, EXIT.refused);
  return doc;
}

function controlUrl(given: string | undefined): string {
  const url = given ?? process.env[CONTROL_ENV];
  if (!url)
    throw new CliError(
      `no simulator given: pass --control URL (printed by 'km-hotfix sim run') or set ${CONTROL_ENV}`,
      EXIT.refused,
    );
  if (!/^https?:\/\/\S+$/.test(url))
    throw new CliError(`--control must be an http:// URL such as http://127.0.0.1:8123 (got '${url}')`, EXIT.refused);
  return url;
}

interface FaultFlags {
  control?: string;
  failApplies?: number;
  failUnapplies?: number;
  dropConnection?: number;
  dropOn?: string;
  hangMs?: number;
  hangOn?: string;
  fatalService?: string;
  refuseMs?: number;
  applyMs?: number;
  restartMs?: number;
  kmVersion?: string;
  clear?: boolean;
}

export function registerSim(program: Command): void {
  const sim = program
    .command('sim')
    .description('the Key Manager simulator: real SSH servers on loopback that behave like a Key Manager fleet');

  sim
    .command('make-hotfix')
    .description('write a sample hotfix file that the simulator accepts; prints its path')
    .requiredOption('--component <component>', `frontend, backend or common`)
    .requiredOption('--version <version>', 'Key Manager version it is built for, e.g. 3.0.0')
    .requiredOption('--description <words>', 'description, e.g. fix_queue_stall')
    .requiredOption('--issue <id>', 'issue id, e.g. UKM-2001')
    .option('--out <dir>', 'folder to write into', '.')
    .action(async (o: { component: string; version: string; description: string; issue: string; out: string }) => {
      if (!(COMPONENTS as readonly string[]).includes(o.component))
        throw new CliError(`--component must be frontend, backend or common (got '${o.component}')`, EXIT.refused);
      const why = descriptionProblem(o.description);
      if (why) throw new CliError(`--description: ${why}`, EXIT.refused);
      try {
        const made = await makeHotfix({
          component: o.component as Component,
          version: o.version,
          description: o.description,
          issueId: o.issue,
          outDir: path.resolve(o.out),
        });
        console.log(made.path);
      } catch (err) {
        if (err instanceof HotfixNameError) throw new CliError(err.message, EXIT.refused);
        throw err;
      }
    });

  sim
    .command('run')
    .description('run a simulated fleet in the foreground until SIGINT/SIGTERM; prints the control API URL')
    .requiredOption('--frontends <n>', 'number of frontends', count('--frontends'))
    .requiredOption('--backends <n>', 'number of backends', count('--backends'))
    .option('--both <n>', "number of servers with role 'both'", count('--both'))
    .option('--km-database-url <url>', 'Key Manager database (default: $KM_DATABASE_URL)')
    .requiredOption('--authorized-key <file>', 'OpenSSH public key file the servers accept')
    .option('--inventory-out <file>', 'write the inventory (YAML, pinned host keys) here')
    .option('--control-port <n>', 'port of the loopback control API (default: any free port)', count('--control-port'))
    .option('--restart-ms <ms>', 'how long services stay STOPPED on restart (default 200)', count('--restart-ms'))
    .option('--apply-ms <ms>', 'latency of --apply-hotfix/--unapply-hotfix (default 0)', count('--apply-ms'))
    .option('--km-version <v>', 'installed Key Manager version (default 3.0.0)')
    .option('--sudo <servers>', 'comma-separated servers whose login user needs sudo -n')
    .action(async (o: SimRunOptions) => {
      const until = new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
      await simRun(o, until);
    });

  sim
    .command('fault <server>')
    .description('add faults to a server of a running simulator (or --clear them); prints what is pending')
    .option('--control <url>', `control API URL (default: $${CONTROL_ENV})`)
    .option('--fail-applies <n>', 'fail the next N --apply-hotfix (transient)', count('--fail-applies'))
    .option('--fail-unapplies <n>', 'fail the next N --unapply-hotfix (transient)', count('--fail-unapplies'))
    .option(
      '--drop-connection <n>',
      'drop the connection after the next N matching commands took effect',
      count('--drop-connection'),
    )
    .option('--drop-on <kind>', 'apply (default), unapply, restart or any')
    .option('--hang-ms <ms>', 'hang the next matching command this long', count('--hang-ms'))
    .option('--hang-on <kind>', 'apply, unapply, restart, status or any (default)')
    .option('--fatal-service <name>', 'every restart leaves this program FATAL, until --clear')
    .option('--refuse-ms <ms>', 'refuse connections this long', count('--refuse-ms'))
    .option('--apply-ms <ms>', 'apply/unapply latency', count('--apply-ms'))
    .option('--restart-ms <ms>', 'restart latency', count('--restart-ms'))
    .option('--km-version <v>', 'installed Key Manager version')
    .option('--clear', 'clear every fault of this server first')
    .action(async (server: string, o: FaultFlags) => {
      const url = controlUrl(o.control);
      const spec: FaultSpec = {};
      for (const k of [
        'failApplies',
        'failUnapplies',
        'dropConnection',
        'hangMs',
        'refuseMs',
        'applyMs',
        'restartMs',
      ] as const)
        if (o[k] !== undefined) spec[k] = o[k];
      if (o.dropOn !== undefined) spec.dropOn = o.dropOn as FaultSpec['dropOn'];
      if (o.hangOn !== undefined) spec.hangOn = o.hangOn as FaultSpec['hangOn'];
      if (o.fatalService !== undefined) spec.fatalService = o.fatalService;
      if (o.kmVersion !== undefined) spec.kmVersion = o.kmVersion;
      const any = Object.keys(spec).length > 0;
      if (!any && !o.clear)
        throw new CliError('give at least one fault (e.g. --fail-applies 1) or --clear', EXIT.refused);
      let doc: unknown;
      if (o.clear) doc = await control(url, 'DELETE', `servers/${encodeURIComponent(server)}/faults`);
      if (any) doc = await control(url, 'POST', `servers/${encodeURIComponent(server)}/faults`, spec);
      const faults = (doc as { faults?: FaultSpec }).faults ?? {};
      console.log(`${server}: ${Object.keys(faults).length ? JSON.stringify(faults) : 'no faults pending'}`);
    });

  sim
    .command('log <server>')
    .description('the commands a server of a running simulator ran, with exit codes')
    .option('--control <url>', `control API URL (default: $${CONTROL_ENV})`)
    .option('--json', 'one JSON document')
    .action(async (server: string, o: { control?: string; json?: boolean }) => {
      const doc = (await control(controlUrl(o.control), 'GET', `servers/${encodeURIComponent(server)}/log`)) as {
        log: CommandLogEntry[];
      };
      if (o.json) {
        console.log(JSON.stringify({ server, log: doc.log }));
        return;
      }
      for (const e of doc.log)
        console.log(`${e.at}  ${String(e.exitCode).padStart(3)}${e.dropped ? ' dropped' : ''}  ${e.command}`);
    });
}
