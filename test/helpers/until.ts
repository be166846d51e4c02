// Waiting in tests: for a condition, polled, with a deadline that names what was awaited.

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The first truthy value of `fn` (its errors count as "not yet"), polled every `everyMs`; throws after `timeoutMs`. */
export async function until<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 60_000,
  everyMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}
