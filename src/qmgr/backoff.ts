/**
 * qmgr/backoff.ts — when to try a deferred message again.
 *
 * Exponential from queue.min_backoff, doubling per attempt, capped at
 * queue.max_backoff, with ±25 % jitter so that messages deferred together do not all come
 * back together (a thundering herd against a next hop that just recovered).
 */
export function nextBackoff(attempts: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  const base = Math.min(maxMs, minMs * 2 ** Math.max(0, Math.min(attempts - 1, 30)));
  const jitter = 0.75 + random() * 0.5;
  return Math.max(1, Math.round(Math.min(maxMs * 1.25, base * jitter)));
}
