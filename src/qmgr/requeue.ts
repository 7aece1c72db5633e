/**
 * qmgr/requeue.ts — `tandem queue requeue` (Postfix's `postsuper -r`): route a queued message
 * again with the tables of now, alias and list expansion included.
 *
 * Used by the queue manager of a running node (QueueManager.requeue) and by the CLI on a stopped
 * node's spool (`tandem queue requeue --spool`, under the spool lock), so both do the same.
 *
 * Routing (transport, relay host, mailbox) is redone at every attempt anyway; what a table change
 * cannot reach by itself is the alias/list expansion done at RCPT time, whose result is the
 * envelope's recipient list. planRequeue expands each pending recipient's `original` (the address
 * the client gave) again, as the receiver does at RCPT time: every address it yields inherits that
 * recipient's `original`, ORCPT and NOTIFY (RFC 3461: what the client asked of the address it
 * gave); addresses are deduplicated, case-insensitively, over the whole message. A recipient that
 * is already done (delivered, failed or expired, with its DSN) is never sent again, whatever the
 * new expansion. A member no longer in the expansion is dropped (the operator changed the list);
 * an original that no longer resolves (unknown user, bad alias) keeps its queued addresses, which
 * then meet the delivery-time routing (a 5.1.1 bounce, say) rather than vanish.
 * A lookup that cannot be answered now (directory down) throws TempLookupError: nothing changes.
 *
 * rewriteQueued writes the new envelope as Postfix does, under a new queue id: commit the new
 * queue file (fsync), then remove the old one. A crash between the two leaves both, so the
 * pending recipients may get the message twice (at-least-once; never none).
 */
import type { Router } from '../router/types.ts';
import type { Spool, QueueFile } from '../spool/index.ts';
import type { EnvelopeRecipient } from '../spool/types.ts';
import type { TrackingLog } from '../track/tracking-log.ts';

/** Start of the operator's result line when a lookup failed now (the message is left as it was). */
export const NOT_REQUEUED = 'not requeued (left as it was)';

/**
 * Requeue one message, read as `qf`: expand again; when that changes the recipients, rewrite it
 * (new queue id, in incoming/) and record a `requeued` tracking line with `by` (who asked).
 * `result` is the line for the operator. Throws TempLookupError (nothing changed) when a
 * lookup cannot be answered now.
 */
export async function requeueMessage(
  deps: { spool: Spool; router: Router; tracking: TrackingLog }, qf: QueueFile, by: string, now: number,
): Promise<{ changed: boolean; newQueueId?: string; result: string }> {
  const plan = await planRequeue(deps.router, qf);
  const kept = plan.kept.map((k) => `; ${k.original} no longer resolves (${k.reason}): kept as queued`).join('');
  if (!plan.changed) return { changed: false, result: `expansion unchanged${kept}` };
  const newQueueId = await rewriteQueued(deps.spool, qf, plan.recipients, now);
  const env = qf.envelope;
  deps.tracking.record({
    event: 'requeued', queueId: qf.queueId, by, messageId: env.messageId, sender: env.sender,
    recipients: plan.recipients.map((r) => r.address), ...(newQueueId ? { newQueueId } : {}),
    ...(plan.dropped.length ? { dropped: plan.dropped } : {}),
  });
  const note = (plan.dropped.length ? `; no longer expanded to ${plan.dropped.join(', ')}` : '') + kept;
  if (!newQueueId) return { changed: true, result: `removed: every address of the new expansion is already done${note}` };
  return { changed: true, newQueueId, result: `requeued as ${newQueueId} (${plan.recipients.length} recipient(s))${note}` };
}

export interface RequeuePlan {
  /** The pending recipients after expanding again (what the new queue file lists). */
  recipients: EnvelopeRecipient[];
  /** Whether that differs from the queued pending recipients (else nothing need be rewritten). */
  changed: boolean;
  /** Queued pending addresses no longer in their original's expansion. */
  dropped: string[];
  /** Originals that no longer resolve, with the reason: their queued addresses are kept. */
  kept: Array<{ original: string; reason: string }>;
}

/** Expand the pending recipients of `qf` again (see the header). */
export async function planRequeue(router: Router, qf: Pick<QueueFile, 'envelope' | 'pending'>): Promise<RequeuePlan> {
  const env = qf.envelope;
  const pendingSet = new Set(qf.pending);
  const done = new Set(env.recipients.filter((_, i) => !pendingSet.has(i)).map((r) => r.address.toLowerCase()));
  // pending recipients by what the client gave at RCPT (address and DSN parameters), in order
  const groups = new Map<string, EnvelopeRecipient[]>();
  for (const i of qf.pending) {
    const r = env.recipients[i];
    const key = JSON.stringify([r.original, r.orcpt ?? null, r.notify ?? null]);
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  const seen = new Set(done);
  const recipients: EnvelopeRecipient[] = [];
  const kept: RequeuePlan['kept'] = [];
  for (const queued of groups.values()) {
    const { original, orcpt, notify } = queued[0];
    const res = await router.resolveRecipient(original);
    let addresses: string[];
    if (res.type === 'local' || res.type === 'relay') addresses = res.addresses;
    else {
      kept.push({ original, reason: res.type === 'invalid' ? res.reason : 'unknown user' });
      addresses = queued.map((r) => r.address);
    }
    for (const address of addresses) {
      const key = address.toLowerCase();
      if (seen.has(key)) continue;
      seen.add(key);
      recipients.push({ address, original, ...(orcpt ? { orcpt } : {}), ...(notify ? { notify } : {}) });
    }
  }
  const now = new Set(recipients.map((r) => r.address.toLowerCase()));
  const before = qf.pending.map((i) => env.recipients[i]);
  const dropped = before.filter((r) => !now.has(r.address.toLowerCase())).map((r) => r.address);
  const changed = recipients.length !== before.length || recipients.some((r, i) => r.address !== before[i].address || r.original !== before[i].original);
  return { recipients, changed, dropped, kept };
}

/**
 * Replace the queued message `qf` by one with `recipients` under a new queue id (see the
 * header); the retry history (attempts, delay warning sent) goes with it, due now. Returns the
 * new id; the new file is in incoming/, or in hold/ when the old one was held (committed, then
 * moved: a crash in between releases it, as the receiver's quarantine). With no recipients
 * left, only the old file is removed.
 */
export async function rewriteQueued(spool: Spool, qf: QueueFile, recipients: EnvelopeRecipient[], now: number): Promise<string | undefined> {
  let newId: string | undefined;
  if (recipients.length > 0) {
    newId = spool.newQueueId();
    await spool.commit({ ...qf.envelope, queueId: newId, nodeId: spool.nodeId, recipients }, qf.message);
    if (qf.deferral) await spool.appendStatus(newId, 'incoming', [{ ...qf.deferral, at: now, nextAttemptAt: now }]);
    if (qf.state === 'hold') await spool.move(newId, 'incoming', 'hold');
  }
  await spool.remove(qf.queueId, qf.state);
  return newId;
}
