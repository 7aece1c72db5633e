/**
 * cli/exit-codes.ts — the exit codes of the `tandem` command, for scripts (after sysexits.h).
 */
export const EXIT = {
  OK: 0,
  /** the operation failed (e.g. no such message) */
  FAILED: 1,
  USAGE: 2,
  /** the node (its admin API) is not reachable */
  UNAVAILABLE: 69,
  /** the spool is busy: a running node owns it */
  TEMPFAIL: 75,
  /** configuration error */
  CONFIG: 78,
} as const;
