/**
 * queueid.ts — queue ids: unique across a cluster and restarts, filename-safe, roughly time-sorted.
 *
 * Format: `TTTTTTTTT.CCCCRRRR.<nodeId>`, e.g. `0MI5Z3K2Q.07FQ9X2A.mx1`
 *   T  arrival time, ms since the epoch, base36 upper case, 9 digits (zero padded; lasts to year 5138)
 *   C  per-process counter, base36, 4 digits, starting at a random value and wrapping
 *   R  4 random base36 digits (covers a restart within the same millisecond, or a clock step back)
 *   nodeId  the receiving node (util/names.ts: 1-32 of a-z, 0-9, "_", "-", starting with a letter or digit)
 * Fixed widths make the ids of one node sort by arrival time as plain strings; the node id at the
 * end makes ids from different nodes distinct. Only upper-case letters are used before the node id
 * and node ids are lower case, so ids stay distinct on case-insensitive file systems too.
 *
 * What can go wrong: an invalid node id throws (a configuration bug, caught at Spool.open).
 */
import { randomInt } from 'node:crypto';
import { NODE_ID, NODE_ID_PATTERN, NODE_ID_RULE } from '../util/names.ts';

const QUEUE_ID_PATTERN = new RegExp(`^([0-9A-Z]{9})\\.([0-9A-Z]{8})\\.(${NODE_ID})$`);
/** Any name we accept as a queue file name: no path separators, no leading dot. */
const SAFE_QUEUE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const COUNTER_RANGE = 36 ** 4;

function assertNodeId(nodeId: string): void {
  if (!NODE_ID_PATTERN.test(nodeId)) {
    throw new Error(`node id ${JSON.stringify(nodeId)} is not valid: ${NODE_ID_RULE}`);
  }
}

/** True if `name` can be used as a queue file name (ours, or a well-formed foreign one). */
export function isSafeQueueId(name: string): boolean {
  return SAFE_QUEUE_ID.test(name);
}

function base36(n: number, width: number): string {
  return n.toString(36).toUpperCase().padStart(width, '0');
}

/** A generator of fresh queue ids for one node in this process. */
export function makeQueueIdGenerator(nodeId: string, now: () => number = Date.now): () => string {
  assertNodeId(nodeId);
  let counter = randomInt(COUNTER_RANGE);
  return () => {
    counter = (counter + 1) % COUNTER_RANGE;
    return `${base36(now(), 9)}.${base36(counter, 4)}${base36(randomInt(COUNTER_RANGE), 4)}.${nodeId}`;
  };
}

/** Arrival time and node of a queue id in our format; undefined for anything else. */
export function parseQueueId(queueId: string): { arrivedAt: number; nodeId: string } | undefined {
  const m = QUEUE_ID_PATTERN.exec(queueId);
  if (!m) return undefined;
  return { arrivedAt: parseInt(m[1], 36), nodeId: m[3] };
}
