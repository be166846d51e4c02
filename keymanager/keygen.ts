// ed25519 key pairs in OpenSSH format. ssh2's generateKeyPairSync drops a
// leading zero byte of the public key now and then (about 1 key in 300), and
// the result cannot be parsed back: keep only pairs that round-trip.
import { utils, type ParsedKey } from 'ssh2';

// ssh2's parseKey gives one key or, for a file of several, a list.
const first = (k: ParsedKey | ParsedKey[]): ParsedKey | undefined => (Array.isArray(k) ? k[0] : k);

export interface OpenSshKeyPair {
  /** "-----BEGIN OPENSSH PRIVATE KEY-----..." */
  private: string;
  /** "ssh-ed25519 AAAA... comment" */
  public: string;
}

export function generateEd25519KeyPair(comment?: string): OpenSshKeyPair {
  for (let i = 0; i < 20; i++) {
    const keys = utils.generateKeyPairSync('ed25519', comment ? { comment } : {});
    const priv = utils.parseKey(keys.private);
    const pub = utils.parseKey(keys.public);
    if (priv instanceof Error || pub instanceof Error) continue;
    const p = first(priv);
    const q = first(pub);
    if (p && q && p.getPublicSSH().equals(q.getPublicSSH())) return { private: keys.private, public: keys.public };
  }
  throw new Error('could not generate a valid ed25519 key pair');
}
