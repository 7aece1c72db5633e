/**
 * qmgr/outcomes.ts — what the queue manager writes once an attempt's deliveries are over: the
 * recipients' status records (appended to the queue file by the caller, or by defer()), the
 * tracking-log lines (`delivered`, `bounced`, `deferred`, `expired`, `dsn`), the delivery
 * metrics of expiry, and the DSNs (RFC 3464, built by dsn.ts), each committed to the spool
 * and handed to the queue manager like any new message before the failure it reports is recorded.
 *
 * Exports OutcomeRecorder and Outcome. What can go wrong: a DSN that cannot be committed (disk
 * full) leaves the failed recipients pending (they fail again at the next attempt, and the DSN
 * is tried again), so the delivered ones are still recorded and never sent twice; a delay DSN
 * that cannot be committed is tried at the next deferral. Never a DSN to the null sender.
 * Reads config keys: queue.min_backoff, queue.max_backoff, queue.max_lifetime,
 * queue.delay_warning, node.id, node.hostname.
 */
import type { DeliveryFile } from '../spool/index.ts';
import type { QueueState, RecipientStatus, DeferralRecord, Envelope, EnvelopeRecipient } from '../spool/types.ts';
import type { Route } from '../router/types.ts';
import type { RecipientResult } from '../channels/types.ts';
import { nextBackoff } from './backoff.ts';
import { buildDsn } from './dsn.ts';
import { formatDuration } from '../util/units.ts';
import type { QueueManagerDeps } from './queue-manager.ts';

/** A recipient's result in an attempt, with the route it was delivered by (none when routing failed). */
export type Outcome = RecipientResult & { route?: Route };

export interface OutcomeRecorderDeps extends Pick<QueueManagerDeps, 'config' | 'spool' | 'tracking' | 'logger' | 'metrics' | 'random'> {
  now: () => number;
  /** Queue a DSN just committed to incoming/ (QueueManager.enqueue). */
  enqueue(queueId: string, size: number, fresh: { envelope: Envelope; message: Buffer }): void;
}

export class OutcomeRecorder {
  constructor(private readonly deps: OutcomeRecorderDeps) {}

  /**
   * The final outcomes of an attempt as status records (not yet written), after queueing the
   * DSN for the failures. If the DSN cannot be queued (disk full), the failed recipients stay
   * pending — they fail again at the next attempt and the DSN is tried again — so that the
   * delivered ones are still recorded and not sent twice.
   */
  async record(qf: DeliveryFile, outcomes: Outcome[]): Promise<RecipientStatus[]> {
    const env = qf.envelope;
    const at = this.deps.now();
    const failed = outcomes.filter((o) => o.outcome === 'failed');
    let dsnSent = false;
    let dsnError: unknown;
    if (failed.length > 0) {
      try {
        dsnSent = await this.sendDsn(qf, 'failure', failed.map((o) => ({ index: o.index, reply: o.reply, via: o.via })));
      } catch (err) {
        dsnError = err;
        this.deps.logger.error({ queueId: env.queueId, err: String(err) }, 'cannot queue the DSN; the failed recipients stay queued and are tried again');
      }
    }
    // NOTIFY=SUCCESS: a final delivery here (Maildir, LMTP) is reported; a relay to the next hop
    // passes the request on with the recipient (XXX: no "relayed" DSN for a next hop without DSN)
    const final = outcomes.filter((o) => o.outcome === 'delivered' && (o.route?.type === 'maildir' || o.route?.type === 'lmtp'));
    if (final.length > 0) {
      await this.sendDsn(qf, 'success', final.map((o) => ({ index: o.index, reply: o.reply, via: o.via }))).catch((err) => {
        this.deps.logger.error({ queueId: env.queueId, err: String(err) }, 'cannot queue the success DSN (the message was delivered)');
      });
    }
    const records: RecipientStatus[] = [];
    for (const o of outcomes) {
      const r = env.recipients[o.index];
      const common = { queueId: env.queueId, messageId: env.messageId, sender: env.sender, recipient: r.address, ...(r.original !== r.address ? { original: r.original } : {}), nexthop: o.via, reply: o.reply };
      if (o.outcome === 'delivered') {
        records.push({ index: o.index, type: 'delivered', at, reply: o.reply, via: o.via });
        this.deps.tracking.record({ event: 'delivered', ...common, delay: (at - env.arrivedAt) / 1000 });
      } else if (o.outcome === 'failed' && !dsnError) {
        records.push({ index: o.index, type: 'failed', at, reply: o.reply, via: o.via, dsnSent });
        this.deps.tracking.record({ event: 'bounced', ...common });
      } else {
        this.deps.tracking.record({ event: 'deferred', ...common });
      }
    }
    return records;
  }

  /**
   * Append this attempt's records and the retry schedule (one fdatasync); move to deferred/
   * (`e.state` follows the file); set the file's due time. Returns when the message is due again
   * and its last reply (the caller sets its timer).
   */
  async defer(qf: DeliveryFile, e: { state: QueueState }, pending: Outcome[], records: RecipientStatus[]): Promise<{ nextAttemptAt: number; lastReply: string }> {
    const env = qf.envelope;
    const q = this.deps.config.queue;
    const attempts = (qf.deferral?.attempts ?? 0) + 1;
    const now = this.deps.now();
    let warned = qf.deferral?.warned ?? false;
    if (!warned && q.delay_warning > 0 && now - env.arrivedAt >= q.delay_warning) {
      const wanted = pending.filter((o) => wantsDsn(env.recipients[o.index], 'DELAY', true));
      try {
        if (wanted.length) await this.sendDsn(qf, 'delay', wanted.map((o) => ({ index: o.index, reply: o.reply, via: o.via })));
        warned = true;
      } catch (err) {
        // the outcomes below must still be recorded; the warning is tried at the next deferral
        this.deps.logger.error({ queueId: env.queueId, err: String(err) }, 'cannot queue the delay DSN; will try again');
      }
    }
    const nextAttemptAt = Math.min(now + nextBackoff(attempts, q.min_backoff, q.max_backoff, this.deps.random), env.arrivedAt + q.max_lifetime + 1);
    const record: DeferralRecord = { type: 'deferral', at: now, attempts, nextAttemptAt, lastReply: pending[0].reply, ...(warned ? { warned } : {}) };
    await this.deps.spool.appendStatus(env.queueId, e.state, [...records, record]);
    if (e.state !== 'deferred') {
      await this.deps.spool.move(env.queueId, e.state, 'deferred');
      e.state = 'deferred';
    }
    await this.deps.spool.setDueTime(env.queueId, nextAttemptAt);
    return { nextAttemptAt, lastReply: record.lastReply };
  }

  /** Expire the pending recipients with a DSN; the caller then removes the message (the record). */
  async expire(qf: DeliveryFile): Promise<void> {
    const env = qf.envelope;
    const age = formatDuration(this.deps.now() - env.arrivedAt);
    const reply = `4.4.7 message expired after ${age} in the queue; last problem: ${qf.deferral?.lastReply ?? 'none recorded'}`;
    const rcpts = qf.pending.map((index) => ({ index, reply, via: 'queue' }));
    await this.sendDsn(qf, 'failure', rcpts);
    for (const r of rcpts) {
      const rc = env.recipients[r.index];
      this.deps.tracking.record({ event: 'expired', queueId: env.queueId, messageId: env.messageId, sender: env.sender, recipient: rc.address, reply });
      this.deps.metrics?.delivery('expired', 'queue');
    }
  }

  /**
   * Commit a DSN for these recipients to the spool (it is then delivered like any message).
   * Never to the null sender; only to recipients whose NOTIFY asks for it. Returns whether one was sent.
   */
  private async sendDsn(qf: DeliveryFile, kind: 'failure' | 'delay' | 'success', rcpts: Array<{ index: number; reply: string; via: string }>): Promise<boolean> {
    const env = qf.envelope;
    if (env.sender === '') return false;
    const notify = kind === 'failure' ? 'FAILURE' : kind === 'delay' ? 'DELAY' : 'SUCCESS';
    const wanted = rcpts.filter((r) => wantsDsn(env.recipients[r.index], notify, kind === 'failure'));
    if (wanted.length === 0) return false;
    const dsn = buildDsn({
      reportingMta: this.deps.config.node.hostname,
      envelope: env,
      original: qf.message.whole ?? qf.message.head,
      originalSize: qf.message.size,
      kind,
      recipients: wanted.map((r) => ({
        recipient: env.recipients[r.index],
        status: enhancedOf(r.reply, kind === 'failure' ? '5.0.0' : kind === 'delay' ? '4.0.0' : '2.0.0'),
        diagnostic: r.reply,
        ...(r.via && r.via !== 'queue' && r.via !== 'router' ? { remoteMta: r.via } : {}),
        lastAttemptAt: this.deps.now(),
        ...(kind === 'delay' ? { willRetryUntil: env.arrivedAt + this.deps.config.queue.max_lifetime } : {}),
      })),
    });
    if (!dsn) return false;
    const queueId = this.deps.spool.newQueueId();
    const dsnEnvelope: Envelope = {
      queueId,
      nodeId: this.deps.config.node.id,
      sender: '',
      recipients: [{ address: dsn.recipient, original: dsn.recipient }],
      arrivedAt: this.deps.now(),
      messageId: `<${queueId}@${this.deps.config.node.hostname}>`,
      client: { address: '127.0.0.1', helo: 'localhost' },
      ...(dsn.body8bit ? { body8bit: true } : {}),
      ...(dsn.smtputf8 ? { smtputf8: true } : {}),
    };
    await this.deps.spool.commit(dsnEnvelope, dsn.message);
    this.deps.tracking.record({ event: 'dsn', queueId: env.queueId, dsnQueueId: queueId, kind, recipient: dsn.recipient, count: wanted.length });
    this.deps.metrics?.dsn(kind);
    this.deps.enqueue(queueId, dsn.message.length, { envelope: dsnEnvelope, message: dsn.message });
    return true;
  }
}

/** Does this recipient's NOTIFY ask for a DSN of this kind? Default: FAILURE (and DELAY when enabled). */
function wantsDsn(r: EnvelopeRecipient, kind: 'FAILURE' | 'DELAY' | 'SUCCESS', byDefault: boolean): boolean {
  if (!r.notify || r.notify.length === 0) return byDefault || kind === 'DELAY';
  if (r.notify.includes('NEVER')) return false;
  return r.notify.includes(kind);
}

/** "550 5.1.1 user unknown" → "5.1.1"; fallback when the reply has none. */
function enhancedOf(reply: string, fallback: string): string {
  return /\b([245]\.\d{1,3}\.\d{1,3})\b/.exec(reply)?.[1] ?? fallback;
}
