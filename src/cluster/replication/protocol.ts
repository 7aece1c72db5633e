/**
 * replication/protocol.ts — what origin and shadow holder say to each other (docs/replication.md).
 *
 * Transport: HTTP/2 over TLS 1.3 with mutual certificate authentication (both ends present a
 * certificate signed by the cluster CA; the certificate's CN is the node id). Two requests:
 *   POST /v1/copy     body: the queue file bytes as committed (queuefile.ts format)
 *                     headers: origin, spool id, queue id, per-connection sequence
 *                     200 {"result":"stored"|"duplicate"} only once the copy is fsynced
 *   POST /v1/discard  body: {"notices":[DiscardNotice…]} (JSON)
 *                     200 {"updated":n,"removed":n,"unknown":n} once applied durably
 * A refusal is a 4xx with {"error":<RefusalReason>,"detail":…}; a holder fault a 503.
 */
import { z } from 'zod';
import type { RecipientStatus } from '../../spool/types.ts';

export const PATHS = { copy: '/v1/copy', discard: '/v1/discard', reconcile: '/v1/reconcile' } as const;

export const HEADERS = {
  origin: 'tandem-origin',
  spoolId: 'tandem-spool-id',
  queueId: 'tandem-queue-id',
  /** Per-connection sequence, 1, 2, 3… in the order the requests are opened. */
  seq: 'tandem-seq',
} as const;

/** Why the holder refused something; each is counted (ShadowHolder.refusals). */
export const REFUSAL_REASONS = [
  'tls-no-client-certificate', // TLS: the peer sent no certificate
  'tls-untrusted-certificate', // TLS: a certificate not signed by the cluster CA (or expired)
  'tls-not-tls', // not a TLS handshake at all (garbage, plain HTTP, SMTP…)
  'tls-other', // any other handshake failure
  'not-http2', // TLS fine, but the peer does not speak HTTP/2 (ALPN)
  'bad-frame', // an HTTP/2 protocol error inside an authenticated session
  'unknown-origin', // authenticated node that is not one this holder keeps copies for
  'origin-mismatch', // the request (or the queue file) names another node than the certificate
  'bad-request', // unknown path or method, missing or malformed headers, malformed JSON
  'replayed', // a sequence number not above the last one on this connection
  'oversized', // a body over the configured limit
  'bad-queue-file', // the body is not a whole, self-checking queue file for that queue id
  'conflict', // that queue id is already stored with different content
  'retired-identity', // a spool identity the origin has since replaced (old disk come back?)
] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/** Default cap on one copy's body (the SMTP size limit plus the envelope, with room). */
export const DEFAULT_MAX_COPY_BYTES = 64 * 1024 * 1024;
/** Cap on one discard batch body. */
export const MAX_DISCARD_BYTES = 8 * 1024 * 1024;

/** The reply an origin using the `refuse` policy gives when no shadow copy could be made. */
export const SHADOW_REFUSE_REPLY = '451 4.4.0 Message could not be made redundant (shadow holder unreachable); try again later';

/**
 * One message's news from the origin: per-recipient outcomes to append to the copy, and/or
 * `finished` when the origin removed the message (every recipient done, or deleted by an
 * operator, or refused after a failed copy). A copy with no pending recipient left is removed.
 */
export interface DiscardNotice {
  queueId: string;
  statuses?: RecipientStatus[];
  finished?: boolean;
  /** Put on hold (true) or released (false) on the origin: the copy follows. */
  hold?: boolean;
}

const statusSchema = z.discriminatedUnion('type', [
  z.object({ index: z.number().int().min(0), type: z.literal('delivered'), at: z.number(), reply: z.string(), via: z.string() }).strict(),
  z.object({ index: z.number().int().min(0), type: z.literal('failed'), at: z.number(), reply: z.string(), via: z.string(), dsnSent: z.boolean() }).strict(),
  z.object({ index: z.number().int().min(0), type: z.literal('expired'), at: z.number(), reply: z.string(), dsnSent: z.boolean() }).strict(),
]);

const discardBodySchema = z.object({
  notices: z.array(z.object({
    queueId: z.string().min(1).max(200),
    statuses: z.array(statusSchema).max(10_000).optional(),
    finished: z.boolean().optional(),
    hold: z.boolean().optional(),
  }).strict()).max(100_000),
}).strict();

/** Parse a discard body; a reason string when it is malformed. */
export function parseDiscardBody(bytes: Buffer): { notices: DiscardNotice[] } | { error: string } {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    return { error: 'discard body is not JSON' };
  }
  const parsed = discardBodySchema.safeParse(value);
  if (!parsed.success) return { error: `discard body: ${parsed.error.issues[0]?.message ?? 'invalid'} at ${parsed.error.issues[0]?.path.join('.')}` };
  return { notices: parsed.data.notices as DiscardNotice[] };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** A spool identity is a lower-case UUID (crypto.randomUUID()). */
export function isSpoolId(value: unknown): value is string {
  return typeof value === 'string' && UUID.test(value);
}

/**
 * A returning origin's question before it delivers (POST /v1/reconcile, body {queueIds}): for
 * each of its queued messages, what the holder knows. `held`: the copy is still here, with the
 * per-recipient outcomes recorded on it (the origin's own, and those of a secondary that
 * delivered it meanwhile); `finished`: the copy was delivered to the end by the holder's
 * secondary during a takeover. Ids in neither were never copied, or the holder has nothing to
 * say: the origin delivers them. `identity`: "new" when this spool identity replaced another
 * (the origin came back with a new disk): the holder then delivers the old identity's copies.
 * The list is every message in the origin's spool (corrupt ones too): copies of messages not on
 * it, stored over a minute before, are stale (their discard notices were lost) and dropped.
 */
export interface ReconcileAnswer {
  identity: 'current' | 'new';
  held: Record<string, RecipientStatus[]>;
  finished: string[];
  /** Copies of messages the origin did not list (stored over a minute before): dropped as stale. */
  pruned?: number;
}

const reconcileBodySchema = z.object({ queueIds: z.array(z.string().min(1).max(200)).max(10_000_000) }).strict();

export function parseReconcileBody(bytes: Buffer): { queueIds: string[] } | { error: string } {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    return { error: 'reconcile body is not JSON' };
  }
  const parsed = reconcileBodySchema.safeParse(value);
  return parsed.success ? parsed.data : { error: `reconcile body: ${parsed.error.issues[0]?.message ?? 'invalid'}` };
}
