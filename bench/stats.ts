/*
 * stats.ts - the benchmarks' percentile: the nearest-rank quantile of a sorted sample.
 *
 *   quantile(sorted, q)   q in [0, 1]; the smallest value with at least q of the sample at or
 *                         below it (NaN for an empty sample). `sorted` must be ascending.
 */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}
