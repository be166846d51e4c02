// The SSH wire encoding (RFC 4251 §5) that keys and SSHSIG blobs are made of:
// big-endian uint32 lengths before byte strings.

export class WireFormatError extends Error {
  override name = 'WireFormatError';
}

export function sshString(data: Buffer | string): Buffer {
  const body = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

export function uint32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** An mpint from an unsigned big-endian integer: no leading zeros, one 0x00 when the top bit is set. */
export function mpint(unsigned: Buffer): Buffer {
  let i = 0;
  while (i < unsigned.length && unsigned[i] === 0) i++;
  const v = unsigned.subarray(i);
  return sshString(v.length > 0 && v[0] & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v);
}

/** Reads one field after another; every read checks the bounds. */
export class WireReader {
  private pos = 0;
  constructor(
    private readonly buf: Buffer,
    private readonly what: string,
  ) {}

  private take(n: number): Buffer {
    if (n < 0 || this.pos + n > this.buf.length) throw new WireFormatError(`${this.what} is truncated`);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  bytes(n: number): Buffer {
    return this.take(n);
  }
  byte(): number {
    return this.take(1)[0];
  }
  uint32(): number {
    return this.take(4).readUInt32BE(0);
  }
  string(): Buffer {
    return this.take(this.uint32());
  }
  text(): string {
    return this.string().toString('utf8');
  }
  /** An mpint as an unsigned big-endian integer without leading zeros. */
  unsigned(): Buffer {
    const v = this.string();
    if (v.length > 0 && v[0] & 0x80) throw new WireFormatError(`${this.what} holds a negative integer`);
    let i = 0;
    while (i < v.length && v[i] === 0) i++;
    return v.subarray(i);
  }
  end(): void {
    if (this.pos !== this.buf.length)
      throw new WireFormatError(`${this.what} has ${this.buf.length - this.pos} bytes too many`);
  }
}
