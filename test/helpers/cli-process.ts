// Run the real `km-hotfix` command as a child process (always asynchronous).
import { spawn, ChildProcess } from 'node:child_process';
import assert from 'node:assert/strict';
import * as path from 'node:path';

export const BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'km-hotfix.js');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run `km-hotfix ARGS` to completion with extra environment; never rejects on a non-zero exit. */
export function runCli(
  args: string[],
  env: Record<string, string | undefined> = {},
  timeoutMs = 30_000,
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: cliEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`km-hotfix ${args.join(' ')} did not finish within ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** The test process's environment minus km-hotfix/Temporal/SSH settings (TEMPORAL_CLI kept), plus `env` (undefined removes). */
export function cliEnv(env: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(TEMPORAL_|KM_|DATABASE_URL$|SSH_AUTH_SOCK$)/.test(k) && k !== 'TEMPORAL_CLI') continue;
    out[k] = v;
  }
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete out[k];
    else out[k] = v;
  }
  return out;
}

/** Non-empty lines of a text. */
export function lines(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l.length > 0);
}

export type { ChildProcess };

/** Exit 0, or the command's whole output in the failure message. */
export function assertOk(r: CliResult, what: string): void {
  assert.equal(r.code, 0, `${what}: exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
}

/** Bad input: this exit code and exactly one stderr line matching `re`, no stack trace. */
export function assertRefused(r: CliResult, code: number, re: RegExp, what: string): void {
  assert.equal(r.code, code, `${what}: exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  const err = lines(r.stderr);
  assert.equal(err.length, 1, `${what}: one line on stderr, got:\n${r.stderr}`);
  assert.match(err[0], re, what);
  assert.doesNotMatch(r.stderr, /\n\s+at /, `${what}: no stack trace`);
}
