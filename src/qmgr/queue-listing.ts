/**
 * qmgr/queue-listing.ts — what `tandem queue list` and `show` print, read from a spool folder.
 * Used by the admin API (running node) and by the CLI on a stopped node's spool, so both print
 * the same thing.
 * Also: which messages an operator action names (selectQueued, a QueueSelection) and the qshape
 * view (queueShape).
 *
 * list reads every queue file's envelope and status records, not its message (bounded by
 * `limit`); fine for operator use, not for scraping a queue of millions. Selections and the
 * shape of a running node's queue come from its queue manager's envelope index (no file read)
 * once that is complete; without one (a stopped node's spool) they read every file's envelope.
 */
import type { Spool } from '../spool/index.ts';
import type { QueueState } from '../spool/types.ts';
import { z } from 'zod';
import { headerBlock } from '../util/message-headers.ts';
import { parseDuration } from '../util/units.ts';
import { isSafeQueueId } from '../spool/index.ts';
import { QUEUE_STATES } from '../spool/types.ts';
import type { EnvelopeIndex, IndexFilter } from './envelope-index.ts';

export interface QueueListingRow {
  queueId: string;
  state: QueueState;
  size: number;
  arrivedAt?: number;
  sender?: string;
  recipients?: number;
  pending?: number;
  nextAttemptAt?: number;
  lastReply?: string;
  error?: string;
}

export async function listQueue(spool: Spool, limit = 1000): Promise<{ rows: QueueListingRow[]; total: number }> {
  const entries = await spool.list();
  const rows: QueueListingRow[] = [];
  for (const e of entries.slice(0, limit)) {
    if (e.state === 'corrupt') {
      rows.push({ queueId: e.queueId, state: e.state, size: e.size, error: 'damaged queue file (kept in corrupt/)' });
      continue;
    }
    try {
      const qf = await spool.readInfo(e.queueId, e.state);
      rows.push({
        queueId: e.queueId, state: e.state, size: qf.size, arrivedAt: qf.envelope.arrivedAt, sender: qf.envelope.sender,
        recipients: qf.envelope.recipients.length, pending: qf.pending.length,
        ...(qf.deferral ? { nextAttemptAt: qf.deferral.nextAttemptAt, lastReply: qf.deferral.lastReply } : {}),
      });
    } catch (err) {
      // moved or delivered while we looked, or damaged: say so, do not fail the listing
      rows.push({ queueId: e.queueId, state: e.state, size: e.size, error: (err as Error).message });
    }
  }
  return { rows, total: entries.length };
}

/**
 * The envelope, per-recipient status and headers of one message, or undefined; with `body`,
 * the whole message too (as `postcat`), as text: UTF-8, bytes that are not UTF-8 replaced.
 */
export async function showQueued(spool: Spool, queueId: string, opts: { body?: boolean } = {}) {
  const state = await spool.find(queueId);
  if (!state) return undefined;
  const qf = await spool.read(queueId, state);
  const { message, ...rest } = qf;
  return { ...rest, headers: headerBlock(message, 'utf8'), ...(opts.body ? { message: message.toString('utf8') } : {}) };
}

/**
 * Which messages an operator action applies to, as given on the command line or to the admin
 * API: queue ids (or `all`), narrowed by the filters. Every filter given must match.
 */
export interface QueueSelection {
  ids?: string[];
  all?: boolean;
  /** Envelope sender, exactly (case-insensitive); "" or "<>" is the null sender. */
  sender?: string;
  /** The envelope sender's domain. */
  senderDomain?: string;
  /** A recipient still pending, exactly (case-insensitive). */
  recipient?: string;
  /** The domain of a recipient still pending. */
  domain?: string;
  state?: QueueState;
  /** Arrived at least this many ms ago. */
  olderThanMs?: number;
}

/** A selection as JSON (admin API body, CLI): olderThan is a duration ("2h", or seconds). */
const selectionJson = z.object({
  ids: z.array(z.string().refine(isSafeQueueId, (v) => ({ message: `${JSON.stringify(v)} is not a queue id` }))).optional(),
  all: z.boolean().optional(),
  sender: z.string().optional(),
  senderDomain: z.string().min(1).optional(),
  recipient: z.string().optional(),
  domain: z.string().min(1).optional(),
  state: z.enum(QUEUE_STATES).optional(),
  olderThan: z.union([z.string(), z.number()]).optional(),
});

/** Parse a selection given as JSON; throws an Error saying what is wrong. */
export function selectionFromJson(body: unknown): QueueSelection {
  const r = selectionJson.safeParse(body ?? {});
  if (!r.success) throw new Error(r.error.issues.map((i) => `${i.path.join('.') || 'selection'}: ${i.message}`).join('; '));
  const { olderThan, ...rest } = r.data;
  return { ...rest, ...(olderThan !== undefined ? { olderThanMs: parseDuration(olderThan) } : {}) };
}

/** The JSON form of a selection (what selectionFromJson reads). */
export function selectionToJson(sel: QueueSelection): Record<string, unknown> {
  const { olderThanMs, ...rest } = sel;
  return { ...rest, ...(olderThanMs !== undefined ? { olderThan: `${olderThanMs}ms` } : {}) };
}

/**
 * A bulk delete must be confirmed with the number of messages it removes: any selection by
 * ALL or a filter, or of more than one message.
 */
export function deleteNeedsConfirmation(sel: QueueSelection, matched: number): boolean {
  return !!sel.all || hasFilter(sel) || matched > 1;
}

export function hasFilter(sel: QueueSelection): boolean {
  return sel.sender !== undefined || sel.senderDomain !== undefined || sel.recipient !== undefined || sel.domain !== undefined || sel.state !== undefined || sel.olderThanMs !== undefined;
}

/** What a selection names: nothing at all is a usage error for the caller to report. */
export function isEmptySelection(sel: QueueSelection): boolean {
  return !sel.all && !(sel.ids && sel.ids.length) && !hasFilter(sel);
}

/** A selection as the envelope index's filter. */
function indexFilter(sel: QueueSelection): IndexFilter {
  const { ids, all, ...rest } = sel;
  return { ...rest, ...(!all && ids?.length ? { ids } : {}) };
}

/** How many messages selectQueued would name (from the index without making their ids). */
export async function countQueued(spool: Spool, sel: QueueSelection, now = Date.now(), index?: EnvelopeIndex): Promise<{ matched: number; missing: string[] }> {
  if (index?.complete && !sel.ids?.length) return { matched: index.count(indexFilter(sel), now), missing: [] };
  const { selected, missing } = await selectQueued(spool, sel, now, index);
  return { matched: selected.length, missing };
}

/**
 * The messages of `spool` the selection names, with their state (corrupt/ never: those are
 * kept aside for a person to look at). Named ids that are not queued are in `missing`. With a
 * complete `index` (the running queue manager's), no file is read.
 */
export async function selectQueued(spool: Spool, sel: QueueSelection, now = Date.now(), index?: EnvelopeIndex): Promise<{ selected: Array<{ queueId: string; state: QueueState }>; missing: string[] }> {
  if (index?.complete) return index.select(indexFilter(sel), now);
  // a state filter without ids: list only that folder (ids in another state are "not selected", not missing)
  const entries = (await spool.list(sel.state && (sel.all || !sel.ids?.length) ? sel.state : undefined)).filter((e) => e.state !== 'corrupt');
  const byId = new Map(entries.map((e) => [e.queueId, e]));
  const missing: string[] = [];
  let candidates = entries;
  if (!sel.all && sel.ids?.length) {
    candidates = [];
    for (const id of new Set(sel.ids)) {
      const e = byId.get(id);
      if (e) candidates.push(e);
      else missing.push(id);
    }
  }
  if (sel.state) candidates = candidates.filter((e) => e.state === sel.state);
  const byEnvelope = sel.sender !== undefined || sel.senderDomain !== undefined || sel.recipient !== undefined || sel.domain !== undefined || sel.olderThanMs !== undefined;
  if (!byEnvelope) return { selected: candidates.map((e) => ({ queueId: e.queueId, state: e.state })), missing };
  const lower = (s: string) => s.toLowerCase();
  const sender = sel.sender === undefined ? undefined : lower(sel.sender === '<>' ? '' : sel.sender.replace(/^<(.*)>$/, '$1'));
  const matches = async (e: { queueId: string; state: QueueState }): Promise<boolean> => {
    let info;
    try {
      info = await spool.readInfo(e.queueId, e.state);
    } catch {
      return false; // delivered or moved meanwhile
    }
    const env = info.envelope;
    const pending = info.pending.map((i) => lower(env.recipients[i].address));
    if (sender !== undefined && lower(env.sender) !== sender) return false;
    if (sel.senderDomain !== undefined && (!env.sender.includes('@') || lower(env.sender.slice(env.sender.lastIndexOf('@') + 1)) !== lower(sel.senderDomain.replace(/^@/, '')))) return false;
    if (sel.recipient !== undefined && !pending.includes(lower(sel.recipient))) return false;
    if (sel.domain !== undefined && !pending.some((a) => a.slice(a.lastIndexOf('@') + 1) === lower(sel.domain!))) return false;
    if (sel.olderThanMs !== undefined && now - env.arrivedAt < sel.olderThanMs) return false;
    return true;
  };
  // files read SELECT_READS at a time (one after the other, 100,000 took minutes)
  const keep = new Array<boolean>(candidates.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(SELECT_READS, candidates.length) }, async () => {
    while (next < candidates.length) {
      const i = next++;
      keep[i] = await matches(candidates[i]);
    }
  }));
  return { selected: candidates.filter((_, i) => keep[i]).map((e) => ({ queueId: e.queueId, state: e.state })), missing };
}

/** Queue files whose envelope selectQueued reads at once. */
const SELECT_READS = 32;

/** The age buckets of the shape view, in minutes (as Postfix's qshape). */
export const SHAPE_BUCKETS_MIN = [5, 10, 20, 40, 80, 160, 320, 640, 1280];

/**
 * The queue's shape, as Postfix's qshape: pending recipients by destination domain and age
 * (rows sorted by total, largest first). Bucket i counts ages up to SHAPE_BUCKETS_MIN[i]
 * minutes; the last bucket is everything older.
 */
export async function queueShape(spool: Spool, opts: { state?: QueueState; now?: number; index?: EnvelopeIndex } = {}): Promise<{ buckets: string[]; rows: Array<{ domain: string; total: number; counts: number[] }>; total: number[] }> {
  const now = opts.now ?? Date.now();
  const labels = [...SHAPE_BUCKETS_MIN.map((m) => `${m}m`), `${SHAPE_BUCKETS_MIN[SHAPE_BUCKETS_MIN.length - 1]}m+`];
  const rows = opts.index?.complete
    ? opts.index.shape({ edgesMin: SHAPE_BUCKETS_MIN, perRecipient: true, now, ...(opts.state ? { state: opts.state } : {}) }).rows
    : await shapeFromFiles(spool, labels.length, opts.state, now);
  const out = [...rows].map(([domain, counts]) => ({ domain, counts, total: counts.reduce((x, y) => x + y, 0) }))
    .sort((x, y) => y.total - x.total || x.domain.localeCompare(y.domain));
  const total = labels.map((_, i) => out.reduce((s, r) => s + r.counts[i], 0));
  return { buckets: labels, rows: out, total };
}

/** queueShape's counts read from every queue file (a stopped node's spool). */
async function shapeFromFiles(spool: Spool, buckets: number, state: QueueState | undefined, now: number): Promise<Map<string, number[]>> {
  const rows = new Map<string, number[]>();
  for (const e of await spool.list()) {
    if (e.state === 'corrupt' || (state && e.state !== state)) continue;
    let info;
    try {
      info = await spool.readInfo(e.queueId, e.state);
    } catch {
      continue;
    }
    const ageMin = Math.max(0, now - info.envelope.arrivedAt) / 60_000;
    let b = SHAPE_BUCKETS_MIN.findIndex((m) => ageMin <= m);
    if (b < 0) b = SHAPE_BUCKETS_MIN.length;
    for (const i of info.pending) {
      const a = info.envelope.recipients[i].address.toLowerCase();
      const domain = a.includes('@') ? a.slice(a.lastIndexOf('@') + 1) : '(no domain)';
      let counts = rows.get(domain);
      if (!counts) rows.set(domain, (counts = new Array<number>(buckets).fill(0)));
      counts[b]++;
    }
  }
  return rows;
}
