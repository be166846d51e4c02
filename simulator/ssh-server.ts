// One simulated Key Manager server: a real SSH server (ssh2) on loopback with
// its own ed25519 host key, public-key authentication against one key, exec
// and SFTP on a virtual filesystem, and faults. The ssh2 Server object is
// created on the first connection: an idle server is one listening socket.
// Running an exec request (faults, logging) is in exec-channel.ts.
import { createHash, timingSafeEqual } from 'node:crypto';
import * as net from 'node:net';
import { Server as SshServer, type Connection, type ParsedKey } from 'ssh2';
import type { FleetServer, Role } from '../domain/fleet';
import { runExec, type ExecHost } from './exec-channel';
import type { ServerRuntime } from './exec-context';
import { Faults } from './faults';
import type { CommandLogEntry, FaultSpec, SimServer } from './types';
import type { KmDatabase } from './km-database';
import { serveSftp } from './sftp';
import { Supervisor } from './supervisor';
import { USERS, Vfs } from './vfs';
import { generateEd25519KeyPair } from '../keymanager/keygen';

export interface SimServerConfig {
  name: string;
  role: Role;
  index: number;
  host: string;
  sudo: boolean;
  kmVersion: string;
  restartMs: number;
  applyMs: number;
  db: KmDatabase;
  authorizedKey: ParsedKey;
  /** Base for the server's direct `url` (the control API), if any. */
  urlBase?: string;
  /** Accept `a && b` lists (benchmarks). */
  andLists?: boolean;
}

/** Keep the newest entries only: a long benchmark must not grow without bound. */
const LOG_LIMIT = 10_000;

/** OpenSSH fingerprint of a public key blob: SHA256:<base64 without padding>. */
export function fingerprint(publicKeyBlob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(publicKeyBlob).digest('base64').replace(/=+$/, '');
}

export class SimServerImpl implements SimServer, ServerRuntime {
  readonly name: string;
  readonly role: Role;
  readonly host: string;
  port = 0;
  readonly user: string;
  readonly sudo: boolean;
  readonly hostKey: string;
  readonly vfs = new Vfs();
  readonly supervisor: Supervisor;
  readonly faults = new Faults();
  readonly db: KmDatabase;

  private readonly hostPrivateKey: string;
  private readonly hostPublicLine: string;
  private listener?: net.Server;
  private ssh?: SshServer;
  private readonly sockets = new Set<net.Socket>();
  private entries?: CommandLogEntry[];
  private refuseUntil = 0;
  private refuseTimer?: NodeJS.Timeout;
  private stopped = false;

  constructor(private readonly cfg: SimServerConfig) {
    this.name = cfg.name;
    this.role = cfg.role;
    this.host = cfg.host;
    this.sudo = cfg.sudo;
    this.user = cfg.sudo ? 'kmadmin' : 'root';
    this.db = cfg.db;
    this.supervisor = new Supervisor(cfg.role, 1000 + cfg.index * 7);
    const keys = generateEd25519KeyPair();
    this.hostPrivateKey = keys.private;
    this.hostPublicLine = keys.public.split(' ').slice(0, 2).join(' ');
    this.hostKey = fingerprint(Buffer.from(this.hostPublicLine.split(' ')[1], 'base64'));
  }

  get knownHostsLine(): string {
    const h = this.port === 22 ? this.host : `[${this.host}]:${this.port}`;
    return `${h} ${this.hostPublicLine}`;
  }

  get url(): string {
    return this.cfg.urlBase ? `${this.cfg.urlBase}/servers/${this.name}/` : `https://${this.name}.km.invalid/`;
  }

  kmVersion(): string {
    return this.faults.kmVersion ?? this.cfg.kmVersion;
  }

  /** This server as an inventory row (SPEC §3). */
  inventoryEntry(): Required<FleetServer> {
    const { name, role, host, port, user, sudo, hostKey, url } = this;
    return { name, role, host, port, user, sudo, hostKey, url };
  }
  applyMs(): number {
    return this.faults.applyMs ?? this.cfg.applyMs;
  }
  restartMs(): number {
    return this.faults.restartMs ?? this.cfg.restartMs;
  }

  async listen(port = 0): Promise<void> {
    const srv = net.createServer((socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, this.host, () => {
        srv.off('error', reject);
        resolve();
      });
    });
    srv.on('error', () => undefined); // after listening, errors are per-connection
    this.listener = srv;
    this.port = (srv.address() as net.AddressInfo).port;
  }

  private accept(socket: net.Socket): void {
    socket.setNoDelay(true); // ssh2 leaves Nagle on: every round trip would stall ~40 ms
    socket.on('error', () => undefined);
    if (this.stopped) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    this.sshServer().injectSocket(socket);
  }

  private sshServer(): SshServer {
    if (this.ssh) return this.ssh;
    this.ssh = new SshServer({ hostKeys: [this.hostPrivateKey] }, (client, info) => this.onClient(client, info.port));
    return this.ssh;
  }

  private onClient(client: Connection, remotePort: number): void {
    client.on('error', () => undefined); // a client that vanishes must not crash the fleet
    const socket = [...this.sockets].find((s) => s.remotePort === remotePort);
    const wanted = this.cfg.authorizedKey;
    const wantedBlob = wanted.getPublicSSH();
    client.on('authentication', (ctx) => {
      if (ctx.method !== 'publickey' || ctx.username !== this.user) return ctx.reject(['publickey']);
      const blob = ctx.key.data;
      if (ctx.key.algo !== wanted.type || blob.length !== wantedBlob.length || !timingSafeEqual(blob, wantedBlob))
        return ctx.reject(['publickey']);
      // Without a signature the client only asks whether this key would do.
      if (!ctx.signature || !ctx.blob) return ctx.accept();
      if (wanted.verify(ctx.blob, ctx.signature, ctx.hashAlgo) === true) return ctx.accept();
      return ctx.reject(['publickey']);
    });
    client.on('ready', () => {
      client.on('session', (acceptSession) => {
        const session = acceptSession();
        let channelClosed = false;
        const aborted = () => channelClosed || this.stopped || (socket?.destroyed ?? false);
        session.on('pty', (accept) => accept?.());
        session.on('env', (accept) => accept?.());
        session.on('shell', (_accept, reject) => reject?.()); // commands only: Key Manager logins are exec
        session.on('exec', (accept, _reject, info) => {
          const stream = accept();
          stream.on('close', () => {
            channelClosed = true;
          });
          void runExec(this.execHost(), info.command, stream, aborted, socket);
        });
        session.on('sftp', (accept) => {
          const sftp = accept();
          serveSftp(sftp, {
            vfs: this.vfs,
            user: this.user,
            home: USERS[this.user].home,
            log: (command, exitCode) =>
              this.record({ at: new Date().toISOString(), command, exitCode, channel: 'sftp' }),
          });
        });
      });
    });
  }

  /** What an exec request (exec-channel.ts) needs of this server. */
  private execHost(): ExecHost {
    return {
      server: this,
      user: this.user,
      faults: this.faults,
      andLists: this.cfg.andLists,
      sockets: this.sockets,
      record: (entry) => this.record(entry),
      refuse: (ms) => this.refuse(ms),
    };
  }

  private record(entry: CommandLogEntry): void {
    const log = (this.entries ??= []);
    log.push(entry);
    if (log.length > LOG_LIMIT) log.splice(0, log.length - LOG_LIMIT);
  }

  log(): CommandLogEntry[] {
    return (this.entries ?? []).map((e) => ({ ...e }));
  }

  clearLog(): void {
    this.entries = undefined;
  }

  fault(spec: FaultSpec): void {
    this.faults.add(spec);
    if (spec.refuseMs) this.refuse(spec.refuseMs);
    if (spec.unreachableMs && !spec.unreachableOn) {
      this.refuse(spec.unreachableMs);
      for (const s of this.sockets) s.destroy();
    }
  }

  clearFaults(): void {
    this.faults.clear();
    this.supervisor.clearFatal();
    if (this.refuseTimer) {
      clearTimeout(this.refuseTimer);
      this.refuseTimer = undefined;
      this.refuseUntil = 0;
      void this.reopen();
    }
  }

  pendingFaults(): FaultSpec {
    const f = this.faults.pending();
    const left = this.refuseUntil - Date.now();
    if (left > 0) f.refuseMs = left;
    return f;
  }

  services(): { name: string; state: string }[] {
    return this.supervisor.states();
  }

  file(path: string): { content: Buffer; owner: string; group: string; mode: number } | undefined {
    const node = this.vfs.get(Vfs.normalize(path));
    return node?.kind === 'file'
      ? { content: Buffer.from(node.content), owner: node.owner, group: node.group, mode: node.mode }
      : undefined;
  }

  /** Put a file on its disk (tests, benchmarks). */
  putFile(path: string, content: Buffer, owner = this.user, mode = 0o644): void {
    const node = this.vfs.writeFile(Vfs.normalize(path), content, owner, mode);
    Object.assign(this.vfs.mutable(Vfs.normalize(path)) ?? node, { owner, group: owner, mode });
  }

  /** Close the listening socket: new connections get ECONNREFUSED, existing ones carry on. */
  private refuse(ms: number): void {
    this.refuseUntil = Math.max(this.refuseUntil, Date.now() + ms);
    if (this.refuseTimer) clearTimeout(this.refuseTimer);
    this.listener?.close();
    this.listener = undefined;
    this.refuseTimer = setTimeout(() => {
      this.refuseTimer = undefined;
      this.refuseUntil = 0;
      void this.reopen();
    }, this.refuseUntil - Date.now());
  }

  private async reopen(): Promise<void> {
    if (this.stopped || this.listener) return;
    // Same port again; retry briefly in case the kernel still holds it.
    for (let attempt = 0; attempt < 50 && !this.stopped; attempt++) {
      try {
        await this.listen(this.port);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.refuseTimer) clearTimeout(this.refuseTimer);
    for (const s of this.sockets) s.destroy();
    const l = this.listener;
    this.listener = undefined;
    if (l) await new Promise<void>((resolve) => l.close(() => resolve()));
  }
}
