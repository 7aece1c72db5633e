/**
 * node/receivers.ts — the node's SMTP listeners built from the config: one SmtpReceiver per
 * listener (receiver/listeners.ts) with the defenses they share (AUTH throttle, sender
 * authentication, content filter, spool free space). Used in the node's own process
 * (smtp.workers: 1) and in each SMTP worker process (smtp-worker-main.ts); what differs between
 * the two comes in through ReceiverWiring (where the client limits live, who learns of a
 * committed message, the extra check before a commit).
 */
import path from 'node:path';
import { readFile } from 'node:fs/promises';
import { createSecureContext } from 'node:tls';
import type { Logger } from 'pino';
import type { TandemConfig } from '../config/schema.ts';
import type { Router } from '../router/types.ts';
import type { Spool } from '../spool/index.ts';
import type { TrackingLog } from '../track/tracking-log.ts';
import {
  SmtpReceiver, resolveListeners, createAuthThrottle, createSenderAuth, createContentFilter, SpoolSpace,
  type AcceptState, type ReceiverDeps, type ListenerSpec, type ClientLimitsApi,
} from '../receiver/index.ts';
import { directoryDkimLookup } from './wiring.ts';

export interface ReceiverMetrics {
  received(bytes: number): void;
  rejected(stage: string, code: number): void;
  limitRefused(limit: string): void;
  contentFilterFailed(): void;
}

export interface ReceiverWiring {
  config: TandemConfig;
  router: Router;
  spool: Spool;
  tracking: TrackingLog;
  logger: Logger;
  metrics: ReceiverMetrics;
  limits: ClientLimitsApi;
  isRelayClient(address: string): boolean;
  /** Check a password (AUTH); absent: no password table, AUTH not offered. */
  verifyPassword?: (user: string, password: string) => Promise<boolean>;
  acceptState(): AcceptState;
  mayCommit?: ReceiverDeps['mayCommit'];
  onQueued: ReceiverDeps['onQueued'];
  /** The listeners (default: resolveListeners(config)); a worker gets them with their ports resolved. */
  listeners?: ListenerSpec[];
}

export function buildReceivers(w: ReceiverWiring): SmtpReceiver[] {
  const c = w.config;
  const log = w.logger;
  const auth = w.verifyPassword ? createAuthThrottle(c, w.limits, w.verifyPassword, (limit) => w.metrics.limitRefused(limit)) : undefined;
  const senderAuth = createSenderAuth(c, directoryDkimLookup(w.router));
  const contentFilter = createContentFilter(c, (why) => {
    w.metrics.contentFilterFailed();
    log.warn({ event: 'content-filter-failed', err: why }, `content filter failed: ${why}; ${c.content_filter?.fail_open ? 'accepting unscanned' : 'answering 451'}`);
  });
  const spoolSpace = new SpoolSpace(path.join(c.spool.root, c.node.id), c.spool.min_free ?? Math.floor(1.5 * c.smtp.max_message_size));
  return (w.listeners ?? resolveListeners(c)).map((listener) => new SmtpReceiver({
    listener, limits: w.limits, spoolSpace, ...(auth ? { auth } : {}), ...(senderAuth ? { senderAuth } : {}), ...(contentFilter ? { contentFilter } : {}),
    config: c,
    router: w.router,
    beginMessage: (queueId) => w.spool.beginMessage(queueId, { refusable: true }),
    newQueueId: () => w.spool.newQueueId(),
    tracking: w.tracking,
    logger: log,
    isRelayClient: w.isRelayClient,
    acceptState: w.acceptState,
    ...(w.mayCommit ? { mayCommit: w.mayCommit } : {}),
    onQueued: w.onQueued,
    metrics: w.metrics,
  }));
}

/**
 * A reload's new TLS certificate and key, when TLS stays on (undefined otherwise: turning TLS on
 * or off needs a restart). Throws, before anything is changed, if they do not load together.
 */
export async function liveTls(current: TandemConfig, next: TandemConfig): Promise<{ key: Buffer; cert: Buffer } | undefined> {
  if (!current.smtp.tls || !next.smtp.tls) return undefined;
  const tls = { key: await readFile(next.smtp.tls.key), cert: await readFile(next.smtp.tls.cert) };
  createSecureContext(tls);
  return tls;
}
