/*
 * stats.ts - the benchmarks' statistics, one definition each, so that every benchmark's p50,
 * p99 and median mean the same thing:
 *
 *   quantile(sorted, q)     q in [0, 1]; nearest rank: the smallest value with at least q of the
 *                           sample at or below it (NaN for an empty sample). `sorted` must be
 *                           ascending.
 *   quantileOf(values, q)   the same of a sample in any order (sorts a copy).
 *   median(values)          the middle of the finite values, any order: the mean of the two
 *                           middle ones for an even count (NaN when there are none). A run that
 *                           did not produce a figure (NaN, Infinity) is left out, not counted.
 */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

export function quantileOf(values: readonly number[], q: number): number {
  return quantile([...values].sort((a, b) => a - b), q);
}

export function median(values: readonly number[]): number {
  const s = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}
