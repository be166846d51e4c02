// Where a person's private key is: a key file (KM_HOTFIX_SIGNING_KEY) or an
// ssh-agent (SSH_AUTH_SOCK). ssh2 parses OpenSSH key files and speaks the agent
// protocol; Node's crypto signs. The private key never leaves this module.
import { readFile } from 'node:fs/promises';
import { createPrivateKey, sign as cryptoSign } from 'node:crypto';
import { utils, OpenSSHAgent, ParsedKey, KnownPublicKeys } from 'ssh2';
import { Signer } from './sshsig';
import { sshSignature } from './keys';
import { mpint } from './wire';

export class SigningKeyError extends Error {
  override name = 'SigningKeyError';
}

const EC_HASH: Record<string, { hash: string; size: number }> = {
  'ecdsa-sha2-nistp256': { hash: 'sha256', size: 32 },
  'ecdsa-sha2-nistp384': { hash: 'sha384', size: 48 },
  'ecdsa-sha2-nistp521': { hash: 'sha512', size: 66 },
};

/** The SSH signature algorithm a key signs SSHSIG data with (RSA: SHA-512, as ssh-keygen does). */
function algorithmOf(type: string): string {
  return type === 'ssh-rsa' ? 'rsa-sha2-512' : type;
}

function one(parsed: ParsedKey | ParsedKey[] | Error, path: string): ParsedKey {
  if (parsed instanceof Error) {
    if (/encrypted|passphrase/i.test(parsed.message)) {
      throw new SigningKeyError(
        `the signing key ${path} is protected by a passphrase: add it to your ssh-agent (ssh-add ${path}) and unset KM_HOTFIX_SIGNING_KEY`,
      );
    }
    throw new SigningKeyError(
      `${path} is not an OpenSSH private key (${parsed.message}); create one with ssh-keygen -t ed25519`,
    );
  }
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key || !key.isPrivateKey())
    throw new SigningKeyError(
      `${path} holds no private key; KM_HOTFIX_SIGNING_KEY names the private key file, not the .pub`,
    );
  return key;
}

/** A signer from a private key's text (OpenSSH or PEM format, unencrypted). */
export function keyTextSigner(text: string, source = 'the signing key'): Signer {
  const key = one(utils.parseKey(text), source);
  const privateKey = createPrivateKey(key.getPrivatePEM());
  const algorithm = algorithmOf(key.type);
  const ec = EC_HASH[key.type];
  if (key.type !== 'ssh-ed25519' && key.type !== 'ssh-rsa' && !ec) {
    throw new SigningKeyError(
      `${source} is a ${key.type} key; km-hotfix signs with ed25519 (ssh-keygen -t ed25519), RSA or ECDSA keys`,
    );
  }
  return {
    publicKey: key.getPublicSSH(),
    // A key file signs at once; the Signer interface is async for the ssh-agent's sake.
    sign(data) {
      if (ec) {
        const rs = cryptoSign(ec.hash, data, { key: privateKey, dsaEncoding: 'ieee-p1363' });
        return Promise.resolve(
          sshSignature(algorithm, Buffer.concat([mpint(rs.subarray(0, ec.size)), mpint(rs.subarray(ec.size))])),
        );
      }
      return Promise.resolve(
        sshSignature(algorithm, cryptoSign(key.type === 'ssh-rsa' ? 'sha512' : null, data, privateKey)),
      );
    },
  };
}

/** A signer from a private key file such as ~/.ssh/id_ed25519. */
export async function keyFileSigner(path: string): Promise<Signer> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new SigningKeyError(
      `cannot read the signing key ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); set KM_HOTFIX_SIGNING_KEY to your private key file`,
    );
  }
  return keyTextSigner(text, path);
}

function agentCall<T>(
  fn: (cb: (err: Error | null | undefined, value?: T) => void) => void,
  socket: string,
): Promise<T> {
  return new Promise((resolve, reject) => {
    fn((err, value) => {
      if (err || value === undefined) {
        reject(
          new SigningKeyError(
            `the ssh-agent at ${socket} did not answer (${err?.message ?? 'no reply'}); start one (eval $(ssh-agent)) and ssh-add your key, or set KM_HOTFIX_SIGNING_KEY`,
          ),
        );
      } else {
        resolve(value);
      }
    });
  });
}

/** The public keys an ssh-agent holds, in its order. */
export async function agentKeys(socket: string): Promise<Buffer[]> {
  const agent = new OpenSSHAgent(socket);
  const keys = await agentCall<KnownPublicKeys<ParsedKey>>((cb) => agent.getIdentities(cb), socket);
  // The OpenSSH agent client answers with parsed keys; the type also allows wrapped entries.
  return keys
    .map((k) => ('getPublicSSH' in k ? k : null))
    .filter((k): k is ParsedKey => k !== null)
    .map((k) => k.getPublicSSH());
}

/** A signer for one key held by the ssh-agent at socket. */
export function agentSigner(socket: string, publicKey: Buffer): Signer {
  const parsed = utils.parseKey(publicKey);
  if (parsed instanceof Error)
    throw new SigningKeyError(`the ssh-agent holds a key that cannot be used (${parsed.message})`);
  const key: ParsedKey | undefined = Array.isArray(parsed) ? (parsed as ParsedKey[])[0] : parsed;
  if (!key) throw new SigningKeyError('the ssh-agent holds a key that cannot be used (no key in it)');
  const type = key.type;
  return {
    publicKey,
    async sign(data) {
      const agent = new OpenSSHAgent(socket);
      // ssh2 strips the algorithm name from the agent's answer; for RSA it is the one asked for.
      const raw = await agentCall<Buffer>((cb) => agent.sign(publicKey, data, { hash: 'sha512' }, cb), socket);
      return sshSignature(algorithmOf(type), raw);
    },
  };
}
