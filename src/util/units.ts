/**
 * units.ts — parse durations ("300s", "5d", "250ms") and sizes ("10MiB", "4096", "10MB").
 *
 * Throws a plain Error naming what is allowed; the config loader wraps it with the key.
 */

const DURATION_UNITS: Record<string, number> = {
  ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000,
};
const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1000, kb: 1000, kib: 1024, m: 1e6, mb: 1e6, mib: 1024 ** 2, g: 1e9, gb: 1e9, gib: 1024 ** 3,
};

/** "300s" → 300000. A bare number is taken as seconds, as Postfix does. */
export function parseDuration(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isFinite(text) || text < 0) throw new Error(`${text} is not a duration; use a number of seconds of 0 or more, or a number with a unit: ms, s, m, h, d, w (e.g. "300s", "5d")`);
    return text * 1000;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$/i.exec(text);
  if (!m) throw new Error(`"${text}" is not a duration; use a number with a unit: ms, s, m, h, d, w (e.g. "300s", "5d")`);
  return Math.round(Number(m[1]) * DURATION_UNITS[(m[2] ?? 's').toLowerCase()]);
}

/** "10MiB" → 10485760. A bare number is bytes. */
export function parseSize(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isFinite(text) || text < 0) throw new Error(`${text} is not a size; use a number of bytes of 0 or more, or a unit: KiB, MiB, GiB, kB, MB, GB (e.g. "10MiB")`);
    return text;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m?.[2].toLowerCase() ?? 'x';
  if (!m || !(unit in SIZE_UNITS)) throw new Error(`"${text}" is not a size; use bytes or a unit: KiB, MiB, GiB, kB, MB, GB (e.g. "10MiB")`);
  return Math.round(Number(m[1]) * SIZE_UNITS[unit]);
}

/** 90061000 → "1d1h1m1s" (for messages and DSNs). */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  let s = Math.floor(ms / 1000);
  const parts: string[] = [];
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]] as const) {
    if (s >= size) { parts.push(`${Math.floor(s / size)}${unit}`); s %= size; }
  }
  return parts.join('');
}
