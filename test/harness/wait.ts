/**
 * test/harness/wait.ts — wait for a condition that no event announces (a file appearing, a
 * count reaching a number), polling briefly, with a bound.
 *
 * Exports: eventually.
 */

/** Poll until fn() is truthy and return its value; fails with `what` after timeoutMs. */
export async function eventually<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15_000, intervalMs = 25): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
