// OpenSSH's SSHSIG format (PROTOCOL.sshsig), as `ssh-keygen -Y sign/verify`
// write and read it. Only the framing is ours; the cryptography is Node's.
//
// Signed data:  "SSHSIG" string(namespace) string(reserved) string(hash_algorithm) string(H(message))
// Blob:         "SSHSIG" uint32(1) string(publickey) string(namespace) string(reserved)
//               string(hash_algorithm) string(signature)
// Armor:        -----BEGIN SSH SIGNATURE----- / base64 in lines of 70 / -----END SSH SIGNATURE-----
import { createHash } from 'node:crypto';
import { sshString, uint32, WireReader, WireFormatError } from './wire';
import { parsePublicKeyBlob, verifySshSignature, PublicKey, KeyFormatError, fingerprint } from './keys';

export const NAMESPACE = 'km-hotfix';
const MAGIC = Buffer.from('SSHSIG');
const VERSION = 1;
const BEGIN = '-----BEGIN SSH SIGNATURE-----';
const END = '-----END SSH SIGNATURE-----';
export type HashAlgorithm = 'sha256' | 'sha512';

export class SignatureFormatError extends Error {
  override name = 'SignatureFormatError';
}

export interface SshSig {
  publicKey: PublicKey;
  namespace: string;
  hashAlgorithm: HashAlgorithm;
  /** "string algorithm, string blob[, FIDO flags and counter]". */
  signature: Buffer;
}

/** What the key signs: the message is hashed, then framed with the namespace. */
export function signedData(namespace: string, hashAlgorithm: HashAlgorithm, message: Buffer | string): Buffer {
  const digest = createHash(hashAlgorithm).update(message).digest();
  return Buffer.concat([MAGIC, sshString(namespace), sshString(''), sshString(hashAlgorithm), sshString(digest)]);
}

export function encodeSshSig(
  publicKeyBlob: Buffer,
  namespace: string,
  hashAlgorithm: HashAlgorithm,
  signature: Buffer,
): Buffer {
  return Buffer.concat([
    MAGIC,
    uint32(VERSION),
    sshString(publicKeyBlob),
    sshString(namespace),
    sshString(''),
    sshString(hashAlgorithm),
    sshString(signature),
  ]);
}

export function armor(blob: Buffer): string {
  const b64 = blob.toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 70) lines.push(b64.slice(i, i + 70));
  return `${BEGIN}\n${lines.join('\n')}\n${END}\n`;
}

/** Parse an armored signature (text of a .sig file). Throws SignatureFormatError. */
export function parseArmoredSignature(text: string): SshSig {
  const trimmed = text.trim();
  if (!trimmed.startsWith(BEGIN) || !trimmed.endsWith(END)) {
    throw new SignatureFormatError(
      `not an SSH signature: expected the '${BEGIN}' block that ssh-keygen -Y sign writes`,
    );
  }
  const b64 = trimmed.slice(BEGIN.length, -END.length).replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) throw new SignatureFormatError('the SSH signature is not valid base64');
  return parseSshSigBlob(Buffer.from(b64, 'base64'));
}

export function parseSshSigBlob(blob: Buffer): SshSig {
  try {
    const r = new WireReader(blob, 'the SSH signature');
    if (!r.bytes(6).equals(MAGIC)) throw new SignatureFormatError('not an SSH signature (no SSHSIG preamble)');
    const version = r.uint32();
    if (version !== VERSION) throw new SignatureFormatError(`SSH signature version ${version} is not supported`);
    const publicKey = parsePublicKeyBlob(r.string());
    const namespace = r.text();
    r.string(); // reserved
    const hashAlgorithm = r.text();
    if (hashAlgorithm !== 'sha256' && hashAlgorithm !== 'sha512')
      throw new SignatureFormatError(`hash algorithm '${hashAlgorithm}' is not sha256 or sha512`);
    const signature = r.string();
    r.end();
    return { publicKey, namespace, hashAlgorithm, signature };
  } catch (e) {
    if (e instanceof WireFormatError || e instanceof KeyFormatError)
      throw new SignatureFormatError(`not a valid SSH signature: ${e.message}`);
    throw e;
  }
}

/** Does the signature verify over message in namespace? (Who the key belongs to is the signers file's business.) */
export function verifySshSig(sig: SshSig, message: Buffer | string, namespace = NAMESPACE): boolean {
  if (sig.namespace !== namespace) return false;
  return verifySshSignature(sig.publicKey, sig.signature, signedData(namespace, sig.hashAlgorithm, message));
}

/** Something that holds a private key: a key file or an ssh-agent identity. */
export interface Signer {
  /** The public key's wire blob. */
  publicKey: Buffer;
  /** Sign data; resolves to "string algorithm, string blob" (the SSH signature encoding). */
  sign(data: Buffer): Promise<Buffer>;
}

/** Sign a message as `ssh-keygen -Y sign -n NAMESPACE` does (sha512); returns the armored text. */
export async function signMessage(signer: Signer, message: Buffer | string, namespace = NAMESPACE): Promise<string> {
  const signature = await signer.sign(signedData(namespace, 'sha512', message));
  return armor(encodeSshSig(signer.publicKey, namespace, 'sha512', signature));
}

/** The fingerprint of the key inside an armored signature, for messages that say who tried. */
export function signatureKeyFingerprint(armored: string): string {
  return fingerprint(parseArmoredSignature(armored).publicKey.blob);
}
