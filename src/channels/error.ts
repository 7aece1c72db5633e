/**
 * error.ts — the channel for {type:'error'} routes (a transport map entry `error:text`).
 *
 * Every recipient fails with the route's text, as Postfix' error(8) does. The text is kept as
 * written when it starts with a status ("550 5.7.1 …" or "5.7.1 …"); otherwise "5.0.0 " is put
 * in front so the DSN has a status to report.
 * What can go wrong: nothing; a route of another type is a bug and throws.
 * Config read: none.
 */
import type { Channel, DeliveryJob, RecipientResult } from './types.ts';

export class ErrorChannel implements Channel {
  async deliver(job: DeliveryJob): Promise<RecipientResult[]> {
    if (job.route.type !== 'error') throw new Error(`bug: error channel given a ${job.route.type} route for ${job.queueId}`);
    const text = job.route.message.trim() || 'mail for this destination is refused by configuration';
    const reply = /^(\d{3} )?[245]\.\d{1,3}\.\d{1,3}\b/.test(text) ? text : `5.0.0 ${text}`;
    return job.recipients.map((r) => ({ index: r.index, outcome: 'failed', reply, via: 'error' }));
  }
}
