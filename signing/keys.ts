// SSH public keys: their wire blob, their OpenSSH text form ("ssh-ed25519 AAAA..."),
// their fingerprint, and verifying a raw SSH signature with Node's crypto.
// ed25519 is what km-hotfix asks people to use; RSA (rsa-sha2-256/512), ECDSA
// (nistp256/384/521) and the FIDO keys of hardware tokens (sk-ssh-ed25519,
// sk-ecdsa-sha2-nistp256) verify too.
import { createHash, createPublicKey, verify as cryptoVerify, KeyObject } from 'node:crypto';
import { WireReader, WireFormatError, sshString, uint32 } from './wire';

export const KEY_TYPES = [
  'ssh-ed25519',
  'ssh-rsa',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
] as const;
export type KeyType = (typeof KEY_TYPES)[number];

export function isKeyType(t: string): t is KeyType {
  return (KEY_TYPES as readonly string[]).includes(t);
}

const CURVES: Record<string, { jwk: string; hash: string; size: number }> = {
  nistp256: { jwk: 'P-256', hash: 'sha256', size: 32 },
  nistp384: { jwk: 'P-384', hash: 'sha384', size: 48 },
  nistp521: { jwk: 'P-521', hash: 'sha512', size: 66 },
};

export interface PublicKey {
  type: KeyType;
  /** The wire blob: what fingerprints, allowed_signers lines and SSHSIG carry. */
  blob: Buffer;
  /** The key for Node's crypto. */
  key: KeyObject;
  /** ECDSA: the curve; FIDO: the application string (usually "ssh:"). */
  curve?: string;
  application?: string;
}

export class KeyFormatError extends Error {
  override name = 'KeyFormatError';
}

const b64url = (b: Buffer): string => b.toString('base64url');

function ecKey(curve: string, point: Buffer): KeyObject {
  const c = CURVES[curve];
  if (!c) throw new KeyFormatError(`unsupported ECDSA curve '${curve}'`);
  if (point.length !== 1 + 2 * c.size || point[0] !== 4)
    throw new KeyFormatError(`ECDSA ${curve} point is not uncompressed`);
  return createPublicKey({
    key: { kty: 'EC', crv: c.jwk, x: b64url(point.subarray(1, 1 + c.size)), y: b64url(point.subarray(1 + c.size)) },
    format: 'jwk',
  });
}

function ed25519Key(raw: Buffer): KeyObject {
  if (raw.length !== 32) throw new KeyFormatError('an ed25519 public key is 32 bytes');
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64url(raw) }, format: 'jwk' });
}

/** Parse a public key's wire blob. Throws KeyFormatError. */
export function parsePublicKeyBlob(blob: Buffer): PublicKey {
  try {
    const r = new WireReader(blob, 'the public key');
    const type = r.text();
    let out: PublicKey;
    switch (type) {
      case 'ssh-ed25519':
        out = { type, blob, key: ed25519Key(r.string()) };
        break;
      case 'ssh-rsa': {
        const e = r.unsigned();
        const n = r.unsigned();
        if (n.length * 8 < 2048 - 8) throw new KeyFormatError('RSA keys shorter than 2048 bits are refused');
        out = { type, blob, key: createPublicKey({ key: { kty: 'RSA', n: b64url(n), e: b64url(e) }, format: 'jwk' }) };
        break;
      }
      case 'ecdsa-sha2-nistp256':
      case 'ecdsa-sha2-nistp384':
      case 'ecdsa-sha2-nistp521': {
        const curve = r.text();
        if (`ecdsa-sha2-${curve}` !== type) throw new KeyFormatError(`key type ${type} names curve ${curve}`);
        out = { type, blob, key: ecKey(curve, r.string()), curve };
        break;
      }
      case 'sk-ssh-ed25519@openssh.com':
        out = { type, blob, key: ed25519Key(r.string()), application: r.text() };
        break;
      case 'sk-ecdsa-sha2-nistp256@openssh.com': {
        const curve = r.text();
        if (curve !== 'nistp256') throw new KeyFormatError(`key type ${type} names curve ${curve}`);
        out = { type, blob, key: ecKey(curve, r.string()), curve, application: r.text() };
        break;
      }
      default:
        throw new KeyFormatError(`unsupported key type '${type}'; use ssh-ed25519`);
    }
    r.end();
    return out;
  } catch (e) {
    if (e instanceof WireFormatError) throw new KeyFormatError(e.message);
    if (e instanceof KeyFormatError) throw e;
    throw new KeyFormatError(`not a valid public key: ${(e as Error).message}`);
  }
}

/** Parse "ssh-ed25519 AAAA... [comment]". */
export function parsePublicKeyText(text: string): PublicKey {
  const [type, b64] = text.trim().split(/\s+/);
  if (!type || !b64 || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64))
    throw new KeyFormatError(`'${text.slice(0, 40)}' is not an OpenSSH public key (KEYTYPE BASE64)`);
  const key = parsePublicKeyBlob(Buffer.from(b64, 'base64'));
  if (key.type !== type) throw new KeyFormatError(`the key says it is ${key.type}, not ${type}`);
  return key;
}

/** "ssh-ed25519 AAAA..." */
export function publicKeyText(blob: Buffer): string {
  return `${new WireReader(blob, 'the public key').text()} ${blob.toString('base64')}`;
}

/** OpenSSH's fingerprint, as `ssh-keygen -l` prints it: SHA256:<base64 without padding>. */
export function fingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** An ECDSA signature as SSH carries it (mpint r, mpint s) into the fixed-width r||s that Node verifies. */
function ecdsaSignature(sshSig: Buffer, size: number): Buffer {
  const r = new WireReader(sshSig, 'the ECDSA signature');
  const pad = (v: Buffer): Buffer => {
    if (v.length > size) throw new WireFormatError('the ECDSA signature is too long');
    return Buffer.concat([Buffer.alloc(size - v.length), v]);
  };
  const out = Buffer.concat([pad(r.unsigned()), pad(r.unsigned())]);
  r.end();
  return out;
}

/** The hash that a signature algorithm uses over the data (null: ed25519 hashes itself). */
function algorithmHash(key: PublicKey, algorithm: string): string | null {
  switch (key.type) {
    case 'ssh-ed25519':
      return algorithm === 'ssh-ed25519' ? null : '';
    case 'ssh-rsa':
      // ssh-rsa (SHA-1) is refused, as OpenSSH refuses it for SSHSIG.
      return algorithm === 'rsa-sha2-512' ? 'sha512' : algorithm === 'rsa-sha2-256' ? 'sha256' : '';
    case 'sk-ssh-ed25519@openssh.com':
      return algorithm === key.type ? null : '';
    default:
      return algorithm === key.type ? (CURVES[key.curve ?? '']?.hash ?? '') : '';
  }
}

/**
 * Verify an SSH signature (the "string algorithm, string blob[, FIDO flags, counter]"
 * encoding) over data. False when it does not verify or does not fit the key.
 */
export function verifySshSignature(key: PublicKey, signature: Buffer, data: Buffer): boolean {
  try {
    const r = new WireReader(signature, 'the signature');
    const algorithm = r.text();
    const raw = r.string();
    const hash = algorithmHash(key, algorithm);
    if (hash === '') return false;
    let signed = data;
    if (key.application !== undefined) {
      // FIDO: the token signs sha256(application) || flags || counter || sha256(data), and must have seen a touch.
      const flags = r.byte();
      const counter = r.uint32();
      if ((flags & 0x01) === 0) return false;
      signed = Buffer.concat([
        createHash('sha256').update(key.application).digest(),
        Buffer.from([flags]),
        uint32(counter),
        createHash('sha256').update(data).digest(),
      ]);
    }
    r.end();
    if (key.curve) {
      const size = CURVES[key.curve].size;
      return cryptoVerify(hash, signed, { key: key.key, dsaEncoding: 'ieee-p1363' }, ecdsaSignature(raw, size));
    }
    return cryptoVerify(hash, signed, key.key, raw);
  } catch {
    return false;
  }
}

/** Encode "string algorithm, string blob". */
export function sshSignature(algorithm: string, raw: Buffer): Buffer {
  return Buffer.concat([sshString(algorithm), sshString(raw)]);
}
