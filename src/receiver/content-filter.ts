/**
 * receiver/content-filter.ts — spam and virus scanning before the 250, over Rspamd's HTTP
 * protocol (POST /checkv2 to the normal worker, port 11333 by default).
 *
 * The message goes to Rspamd with the envelope as request headers (IP, Helo, From, Rcpt,
 * Queue-Id, User); its JSON answer's `action` is applied:
 *   reject → 550 5.7.1; soft reject, greylist → 451 4.7.1;
 *   add header, rewrite subject → accepted with "X-Spam: Yes", or held (on_spam: hold);
 *   no action → accepted.
 * Every scanned message gets X-Spam-Action and X-Spam-Score ("score / required") on top.
 * Rspamd unreachable, an HTTP error, unparsable JSON, or no answer within `timeout`:
 * fail_open true → accepted unscanned (logged, counted); false → 451 4.7.1 (the client retries).
 * Config keys: content_filter.* (read by the caller).
 */
import { SmtpReplyError } from '../util/errors.ts';

export interface FilterVerdict {
  /** Header fields to put on top of the message (CRLF-terminated); "" when unscanned. */
  headers: string;
  hold: boolean;
  /** For logs: "reject 15.0/15.0", "unscanned (timeout)". */
  summary: string;
}

export interface RspamdOptions {
  url: string;
  timeoutMs: number;
  failOpen: boolean;
  onSpam: 'header' | 'hold';
  onFailure?(err: string): void;
}

export interface ScanContext {
  ip: string;
  helo: string;
  sender: string;
  recipients: string[];
  queueId: string;
  user?: string;
}

export class RspamdFilter {
  constructor(private readonly o: RspamdOptions) {}

  async scan(message: Buffer, ctx: ScanContext): Promise<FilterVerdict> {
    let answer: { action?: string; score?: number; required_score?: number };
    try {
      const headers: [string, string][] = [['IP', ctx.ip], ['Helo', ctx.helo || 'unknown'], ['From', ctx.sender], ['Queue-Id', ctx.queueId], ...ctx.recipients.map((r): [string, string] => ['Rcpt', r])];
      if (ctx.user) headers.push(['User', ctx.user]);
      const res = await fetch(new URL('/checkv2', this.o.url), { method: 'POST', headers, body: message as unknown as Blob, signal: AbortSignal.timeout(this.o.timeoutMs) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      answer = (await res.json()) as typeof answer;
      if (typeof answer.action !== 'string') throw new Error('no action in the answer');
    } catch (err) {
      const why = (err as Error).name === 'TimeoutError' ? `no answer within ${this.o.timeoutMs} ms` : (err as Error).message;
      this.o.onFailure?.(why);
      if (this.o.failOpen) return { headers: '', hold: false, summary: `unscanned (${why})` };
      throw new SmtpReplyError(451, '4.7.1', 'Error: content scanner unavailable; try again later');
    }
    const score = `${(answer.score ?? 0).toFixed(2)} / ${(answer.required_score ?? 0).toFixed(2)}`;
    const summary = `${answer.action} ${score}`;
    switch (answer.action) {
      case 'reject':
        throw new SmtpReplyError(550, '5.7.1', 'Error: message rejected as spam');
      case 'soft reject':
      case 'greylist':
        throw new SmtpReplyError(451, '4.7.1', 'Error: message deferred by the content filter; try again later');
    }
    const spam = answer.action === 'add header' || answer.action === 'rewrite subject';
    const headers = `X-Spam-Action: ${answer.action}\r\nX-Spam-Score: ${score}\r\n${spam ? 'X-Spam: Yes\r\n' : ''}`;
    return { headers, hold: spam && this.o.onSpam === 'hold', summary };
  }
}
