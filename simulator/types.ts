// The simulator's public types: a fleet's options, its servers, their
// faults and command logs. Their own module so the simulator's files share
// them without importing simulator/index.ts (the entry for its users).
import type { FleetServer, Role } from '../domain/fleet';

export interface SimFleetOptions {
  frontends: number;
  backends: number;
  /** Extra servers of role 'both'. */
  both?: number;
  /** Key Manager database; tables are created IF NOT EXISTS and km_server rows registered. */
  kmDatabaseUrl: string;
  /** OpenSSH public key line ("ssh-ed25519 AAAA... comment") the servers accept. */
  authorizedKey: string;
  /** Installed Key Manager version on every server (default '3.0.0'). */
  kmVersion?: string;
  /** Name prefix (default 'km'): km-fe-1.., km-be-1.., km-both-1.. */
  namePrefix?: string;
  /** Maximum Processes per server; default distinct values (backends 4,5,6,...). */
  maxProcesses?: (name: string, role: Role, index: number) => number;
  /** Milliseconds services stay STOPPED after `supervisorctl restart all` (default 200). */
  restartMs?: number;
  /** Extra latency for --apply-hotfix/--unapply-hotfix (default 0). */
  applyMs?: number;
  /** Servers whose entries say sudo: true (login user 'kmadmin' instead of root). */
  sudoServers?: string[];
  /** Host for listening (default 127.0.0.1). */
  host?: string;
  /** Start a loopback HTTP control API for faults (port 0 = random). Off when undefined. */
  controlPort?: number;
  /** Accept `a && b` lists (each part one simple command, run while the previous exits 0), as a login
   *  shell does: the benchmarks' peers send `apply && restart && status` as one command. Default off. */
  andLists?: boolean;
}

export interface CommandLogEntry {
  at: string;
  /** The command line exactly as the client sent it. */
  command: string;
  exitCode: number;
  /** 'exec' or 'sftp' (an SFTP write/open is logged as e.g. "sftp:write /var/lib/sshmgr/x.gz"). */
  channel: 'exec' | 'sftp';
  /** How long it ran (exec only). `at` is when it started; entries are in completion order. */
  durationMs?: number;
  /** The connection was dropped (fault) after the command took effect, before its exit status was sent. */
  dropped?: boolean;
  /** The command ran on the server (not stopped by a fault before it, nor cut off by the client during a hang). */
  ran?: boolean;
}

/** The commands a fault can target: --apply-hotfix, --unapply-hotfix, supervisorctl restart/status, --upload-hotfix. */
export type FaultCommand = 'apply' | 'unapply' | 'restart' | 'status' | 'upload' | 'any';

export interface FaultSpec {
  /** Fail the next N --apply-hotfix (exit 1, transient error message). */
  failApplies?: number;
  /** Fail the next N --unapply-hotfix. */
  failUnapplies?: number;
  /** Drop the TCP connection in the middle of the next N commands matching `dropOn` (default: apply).
   *  The drop comes AFTER the command took effect (e.g. the hotfix IS applied), before the exit status. */
  dropConnection?: number;
  dropOn?: FaultCommand;
  /** 'before': drop the connection instead of running the command (it never runs; logged with exit 255). Default 'after'. */
  dropWhen?: 'before' | 'after';
  /** Fail the next N commands matching `failOn` (default any) with exit 1 and a transient error, without running them. */
  failNext?: number;
  failOn?: FaultCommand;
  /** Hang the next matching command (default 'any') for this many ms before running it; if the client
   *  gives up meanwhile, the command never runs (logged with exit 129, like SIGHUP). */
  hangMs?: number;
  hangOn?: FaultCommand;
  /** How many matching commands hang (default 1). */
  hangCount?: number;
  /** Every restart from now on leaves this program FATAL (restart exits 1, status exits 3) until clearFaults(). */
  fatalService?: string;
  /** Refuse TCP connections (ECONNREFUSED) for this many ms, then accept again; open connections stay. */
  refuseMs?: number;
  /** Unreachable for this many ms: open connections are cut and new ones refused, then accepted again.
   *  With `unreachableOn`, from when the next matching command arrives (it does not run). */
  unreachableMs?: number;
  unreachableOn?: FaultCommand;
  /** Latencies. */
  applyMs?: number;
  restartMs?: number;
  /** Installed Key Manager version (changes checksum behaviour). */
  kmVersion?: string;
}

/** A simulated server is an inventory entry (name, role, host, port, user, sudo, pinned hostKey, url) that runs. */
export interface SimServer extends Required<FleetServer> {
  /** OpenSSH known_hosts line for it ("[127.0.0.1]:PORT ssh-ed25519 AAAA..."). */
  knownHostsLine: string;
  /** Ordered log of commands it ran. */
  log(): CommandLogEntry[];
  clearLog(): void;
  /** Add faults (merged with pending ones). */
  fault(spec: FaultSpec): void;
  clearFaults(): void;
  /** supervisor programs and their states now. */
  services(): { name: string; state: string }[];
  /** A file on its virtual disk, if any. */
  file(path: string): { content: Buffer; owner: string; group: string; mode: number } | undefined;
  /** Faults still pending (counters left, latencies, refuseMs = ms left). */
  pendingFaults(): FaultSpec;
  /** Put a file on its virtual disk directly (tests, benchmarks). */
  putFile(path: string, content: Buffer, owner?: string, mode?: number): void;
  /** Installed Key Manager version now (the kmVersion fault overrides it). */
  kmVersion(): string;
}

export interface SimFleet {
  servers: SimServer[];
  server(name: string): SimServer;
  /** Inventory entries with pinned host keys, in inventory order (frontends, backends, both). */
  inventory(): FleetServer[];
  /** Base URL of the control API, when started. */
  controlUrl?: string;
  stop(): Promise<void>;
}
