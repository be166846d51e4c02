// Stream helpers of the SSH pool: racing a cancellation, and keeping a
// command's output within a limit.

/** Why a signal aborted, as an Error (callers abort with one; anything else is wrapped). */
export function abortReason(cancel: AbortSignal): Error {
  const r: unknown = cancel.reason;
  return r instanceof Error ? r : new Error(typeof r === 'string' ? r : 'aborted');
}

/** Reject with the abort reason when cancel fires first; `discard` cleans up a value that arrives too late. */
export function raceAbort<T>(p: Promise<T>, cancel: AbortSignal, discard?: (v: T) => void): Promise<T> {
  if (cancel.aborted) {
    p.then(
      (v) => discard?.(v),
      () => undefined,
    );
    return Promise.reject(abortReason(cancel));
  }
  return new Promise<T>((resolve, reject) => {
    let done = false;
    const onAbort = () => {
      done = true;
      reject(abortReason(cancel));
    };
    cancel.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        cancel.removeEventListener('abort', onAbort);
        if (done) discard?.(v);
        else resolve(v);
      },
      (e) => {
        cancel.removeEventListener('abort', onAbort);
        // p's own rejection, passed through as it is.
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
        if (!done) reject(e);
      },
    );
  });
}

/** Collects a stream's bytes up to a limit; decodes once at the end so multi-byte characters are never split. */
export class OutputBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  private dropped = 0;
  constructor(private readonly max: number) {}
  push(d: Buffer): void {
    if (this.size >= this.max) {
      this.dropped += d.length;
      return;
    }
    const part = d.length > this.max - this.size ? d.subarray(0, this.max - this.size) : d;
    this.chunks.push(part);
    this.size += part.length;
    this.dropped += d.length - part.length;
  }
  text(): string {
    const s = Buffer.concat(this.chunks).toString('utf8');
    return this.dropped ? `${s}\n[… ${this.dropped} more bytes not kept]` : s;
  }
}
