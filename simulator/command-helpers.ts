// What the simulated commands share: the Command signature, stdout/stderr
// results, GNU-style short-flag parsing and path resolution against the cwd.
import type { ExecContext, ExecResult } from './exec-context';
import { Vfs } from './vfs';

export type Command = (ctx: ExecContext, args: string[]) => ExecResult | Promise<ExecResult>;

export const out = (stdout: string, code = 0): ExecResult => ({ stdout, stderr: '', code });
export const err = (stderr: string, code = 1): ExecResult => ({ stdout: '', stderr, code });

export function splitFlags(args: string[], known: string): { flags: Set<string>; rest: string[]; bad?: string } {
  const flags = new Set<string>();
  const rest: string[] = [];
  let done = false;
  for (const a of args) {
    if (!done && a === '--') {
      done = true;
      continue;
    }
    if (!done && a.startsWith('-') && a.length > 1 && !/^-[0-7]+$/.test(a)) {
      for (const f of a.slice(1)) {
        if (!known.includes(f)) return { flags, rest, bad: f };
        flags.add(f);
      }
    } else rest.push(a);
  }
  return { flags, rest };
}

export const resolve = (ctx: ExecContext, p: string) => Vfs.normalize(p, ctx.cwd);
