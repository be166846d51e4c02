// Calls made in the same turn of the event loop, answered together. Under a
// wide window, many server steps ask the same database at once; one query for
// all of them costs one round trip's system calls instead of one each, which
// on a busy worker is most of a query's cost (bench/results/issue-11c-cpu.md).
// The batch goes out right after the current turn (setImmediate), so a lone
// call waits for nothing but that.

/** At most this many calls share one batch (bounds the size of one query). */
export const MAX_BATCH = 1000;

interface Waiting<I, O> {
  input: I;
  resolve: (out: O) => void;
  reject: (err: unknown) => void;
}

export class Coalescer<I, O> {
  private waiting: Waiting<I, O>[] = [];
  private scheduled = false;

  /** `run` answers every input of a batch, in order; if it fails, every caller in the batch gets its error. */
  constructor(
    private readonly run: (inputs: I[]) => Promise<O[]>,
    private readonly maxBatch = MAX_BATCH,
  ) {}

  call(input: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.waiting.push({ input, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    while (this.waiting.length > 0) {
      const batch = this.waiting.splice(0, this.maxBatch);
      Promise.resolve()
        .then(() => this.run(batch.map((w) => w.input)))
        .then((outs) => {
          if (outs.length !== batch.length) throw new Error(`a batch of ${batch.length} got ${outs.length} answers`);
          batch.forEach((w, i) => w.resolve(outs[i]));
        })
        .catch((err: unknown) => batch.forEach((w) => w.reject(err)));
    }
  }
}
