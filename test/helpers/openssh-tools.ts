// OpenSSH's client tools (ssh-keygen, ssh-agent, ssh-add) for interoperability
// tests, always as asynchronous children: a test process may host SSH servers.
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a command to completion; never rejects on a non-zero exit. */
export function run(
  cmd: string,
  args: string[],
  opts: { input?: string | Buffer; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
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
      reject(new Error(`${cmd} ${args.join(' ')} did not finish; stderr: ${stderr}`));
    }, opts.timeoutMs ?? 20_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    // A command that exits without reading its input closes the pipe first: that is no error of ours.
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

/** Skip (locally) or fail (CI) when ssh-keygen is missing. */
export async function requireSshKeygen(ctx: Mocha.Context): Promise<void> {
  const ok = await run('ssh-keygen', ['-Y', 'sign', '-?']).then(
    () => true,
    () => false,
  );
  if (ok) return;
  const why = 'ssh-keygen not found: apt-get install openssh-client';
  if (process.env.CI) throw new Error(why);
  console.warn(`skipping: ${why}`);
  ctx.skip();
}

/** ssh-keygen -t TYPE: a key pair at DIR/NAME and DIR/NAME.pub; returns the private key path. */
export async function makeKey(dir: string, name: string, type = 'ed25519', bits?: number): Promise<string> {
  const file = path.join(dir, name);
  const r = await run('ssh-keygen', [
    '-q',
    '-t',
    type,
    ...(bits ? ['-b', String(bits)] : []),
    '-N',
    '',
    '-C',
    name,
    '-f',
    file,
  ]);
  if (r.code !== 0) throw new Error(`ssh-keygen -t ${type}: ${r.stderr}`);
  return file;
}

export async function publicKeyLine(privateKeyPath: string): Promise<string> {
  return (await fs.readFile(`${privateKeyPath}.pub`, 'utf8')).trim();
}

/** `ssh-keygen -Y sign -n NAMESPACE`: the armored signature of message. */
export async function keygenSign(dir: string, key: string, message: string, namespace = 'km-hotfix'): Promise<string> {
  const file = path.join(dir, `msg-${Math.random().toString(36).slice(2)}`);
  await fs.writeFile(file, message);
  const r = await run('ssh-keygen', ['-Y', 'sign', '-f', key, '-n', namespace, file]);
  if (r.code !== 0) throw new Error(`ssh-keygen -Y sign: ${r.stderr}`);
  return fs.readFile(`${file}.sig`, 'utf8');
}

/** `ssh-keygen -Y verify`: true when OpenSSH accepts the signature for principal. */
export async function keygenVerify(
  dir: string,
  allowedSigners: string,
  principal: string,
  message: string,
  signature: string,
  namespace = 'km-hotfix',
): Promise<RunResult> {
  const sigFile = path.join(dir, `sig-${Math.random().toString(36).slice(2)}`);
  await fs.writeFile(sigFile, signature);
  return run('ssh-keygen', ['-Y', 'verify', '-f', allowedSigners, '-I', principal, '-n', namespace, '-s', sigFile], {
    input: message,
  });
}

export interface TestAgent {
  socket: string;
  add(privateKeyPath: string): Promise<void>;
  stop(): Promise<void>;
}

/** A real ssh-agent in the foreground (-D) on its own socket; stop() kills exactly it. */
export async function startAgent(dir: string): Promise<TestAgent> {
  const socket = path.join(dir, 'agent.sock');
  const child = spawn('ssh-agent', ['-D', '-a', socket], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  for (let i = 0; i < 100; i++) {
    if (
      await fs.stat(socket).then(
        () => true,
        () => false,
      )
    )
      break;
    if (child.exitCode !== null) throw new Error(`ssh-agent exited: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    socket,
    async add(key) {
      const r = await run('ssh-add', [key], { env: { ...process.env, SSH_AUTH_SOCK: socket } });
      if (r.code !== 0) throw new Error(`ssh-add ${key}: ${r.stderr}`);
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
