// What a simulated command sees: the server it runs on and who runs it.
import type { Role } from '../domain/fleet';
import type { Faults } from './faults';
import type { KmDatabase } from './km-database';
import type { Supervisor } from './supervisor';
import type { Vfs } from './vfs';

export interface ServerRuntime {
  readonly name: string;
  readonly role: Role;
  readonly vfs: Vfs;
  readonly supervisor: Supervisor;
  readonly db: KmDatabase;
  readonly faults: Faults;
  kmVersion(): string;
  applyMs(): number;
  restartMs(): number;
}

export interface ExecContext {
  server: ServerRuntime;
  /** Effective user (root after `sudo -n`). */
  user: string;
  cwd: string;
  /** True once the client's connection or channel is gone (a real command would get SIGHUP). */
  aborted(): boolean;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}
