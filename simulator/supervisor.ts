// supervisord on a simulated server. No timers: a program's state is
// computed from timestamps when someone looks (idle servers cost nothing).
import type { Role } from '../domain/fleet';

export type ServiceState = 'RUNNING' | 'STOPPED' | 'FATAL';

// Shared, immutable per role; supervisorctl lists programs alphabetically.
const PROGRAMS: Record<Role, readonly string[]> = {
  frontend: ['nginx', 'sshmgr-api', 'sshmgr-frontend'],
  backend: ['sshmgr-api', 'sshmgr-backend'],
  both: ['nginx', 'sshmgr-api', 'sshmgr-backend', 'sshmgr-frontend'],
};

export function programsFor(role: Role): readonly string[] {
  return PROGRAMS[role];
}

export class Supervisor {
  private startedAt = Date.now();
  /** Programs are STOPPED until this time after a restart. */
  private stoppedUntil = 0;
  private generation = 0;
  private fatal?: string;

  constructor(
    readonly role: Role,
    private readonly pidBase: number,
  ) {}

  programs(): readonly string[] {
    return PROGRAMS[this.role];
  }

  state(program: string, now = Date.now()): ServiceState {
    if (now < this.stoppedUntil) return 'STOPPED';
    return program === this.fatal ? 'FATAL' : 'RUNNING';
  }

  states(now = Date.now()): { name: string; state: ServiceState }[] {
    return this.programs().map((name) => ({ name, state: this.state(name, now) }));
  }

  /** Stop everything now; it is RUNNING again after restartMs (except a fatal program). */
  restart(restartMs: number, fatal: string | undefined): void {
    const now = Date.now();
    this.stoppedUntil = now + restartMs;
    this.startedAt = now + restartMs;
    this.generation++;
    this.fatal = fatal && this.programs().includes(fatal) ? fatal : undefined;
  }

  /** The cause of a FATAL program went away (faults cleared). */
  clearFatal(): void {
    this.fatal = undefined;
  }

  /** One line of `supervisorctl status`, in supervisor's own layout. */
  statusLine(program: string, now = Date.now()): string {
    const state = this.state(program, now);
    let desc: string;
    if (state === 'RUNNING') {
      const pid = this.pidBase + this.generation * 10 + this.programs().indexOf(program);
      desc = `pid ${pid}, uptime ${uptime(now - this.startedAt)}`;
    } else if (state === 'FATAL') {
      desc = 'Exited too quickly (process log may have details)';
    } else {
      desc = new Date(now).toUTCString().slice(5, 22);
    }
    return `${program.padEnd(32)} ${state.padEnd(10)}${desc}`;
  }
}

function uptime(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const days = Math.floor(h / 24);
  const hm = `${h % 24}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}`;
  return days > 0 ? `${days} day${days > 1 ? 's' : ''}, ${hm}` : hm;
}
