/*
 * timings.ts - the cluster timing profiles the benchmarks run with (docs/ha.md "Timings and how
 * to tune them"), in milliseconds.
 * Exports: DEFAULT_TIMINGS (the config defaults), FAST_TIMINGS (the fast profile: dead_after 1 s;
 * fence_after and heartbeat_interval as the config's rules then require: fence_after at least
 * three intervals, dead_after at least fence_after + two intervals), timingsConfig().
 */
export interface Timings { heartbeat_interval: number; fence_after: number; dead_after: number }

export const DEFAULT_TIMINGS: Timings = { heartbeat_interval: 250, fence_after: 1500, dead_after: 2500 };
export const FAST_TIMINGS: Timings = { heartbeat_interval: 100, fence_after: 700, dead_after: 1000 };

/** The profile as cluster.* config values. */
export function timingsConfig(t: Timings): Record<keyof Timings, string> {
  return { heartbeat_interval: `${t.heartbeat_interval}ms`, fence_after: `${t.fence_after}ms`, dead_after: `${t.dead_after}ms` };
}
