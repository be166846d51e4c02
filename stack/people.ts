// Demo people for `km-hotfix dev` (SPEC §7): alice, bob and dana, an ed25519
// key each under DIR/keys/NAME, listed in DIR/allowed_signers. Made once and
// reused, so a restarted dev stack keeps the same people.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { generateEd25519KeyPair } from '../keymanager/keygen';

export const DEMO_PEOPLE = ['alice', 'bob', 'dana'] as const;
/** The web page's own key: a delegate that signs for the person the proxy names (README "Signed decisions"). */
export const WEB_DELEGATE = 'km-hotfix-web@delegate';

export interface People {
  /** Path of the allowed_signers file. */
  allowedSigners: string;
  /** Private key file of each person. */
  keys: Record<string, string>;
}

async function exists(p: string): Promise<boolean> {
  return fs.stat(p).then(
    () => true,
    () => false,
  );
}

/** Keys for these people (and delegates) under DIR/keys (made when missing) and DIR/allowed_signers listing them all. */
export async function ensurePeople(
  dataDir: string,
  names: readonly string[] = DEMO_PEOPLE,
  delegates: readonly string[] = [],
): Promise<People> {
  const dir = path.join(dataDir, 'keys');
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const keys: Record<string, string> = {};
  const lines = ['# km-hotfix dev: demo people; a decision signed by one of these keys is made by that person'];
  for (const name of [...names, ...delegates]) {
    const file = path.join(dir, name);
    if (!(await exists(file)) || !(await exists(`${file}.pub`))) {
      const pair = generateEd25519KeyPair(`${name}@km-hotfix-dev`);
      // ssh-keygen refuses a private key that others can read.
      await fs.writeFile(file, pair.private, { mode: 0o600 });
      await fs.writeFile(`${file}.pub`, `${pair.public.trim()}\n`, { mode: 0o644 });
    }
    const [type, b64] = (await fs.readFile(`${file}.pub`, 'utf8')).trim().split(/\s+/);
    lines.push(`${name} ${type} ${b64}`);
    keys[name] = file;
  }
  const allowedSigners = path.join(dataDir, 'allowed_signers');
  await fs.writeFile(allowedSigners, `${lines.join('\n')}\n`, { mode: 0o644 });
  return { allowedSigners, keys };
}
