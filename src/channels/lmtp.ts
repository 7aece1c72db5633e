/**
 * lmtp.ts — the LMTP delivery channel (RFC 2033) for {type:'lmtp'} routes, e.g. to Dovecot.
 *
 * It is SmtpChannel with the protocol switched: LHLO instead of EHLO, and after DATA one reply
 * per accepted recipient, so one recipient may be delivered while another is deferred or failed.
 * Connections are cached and reused exactly as for SMTP. The route's host is resolved like a
 * relay host (no MX lookup).
 *
 * What can go wrong: as for SMTP (see smtp.ts); a connection lost after DATA keeps the outcomes of
 * the recipients already answered and defers the others.
 * Config read: none directly (see SmtpChannelOptions).
 */
import { SmtpChannel, type SmtpChannelOptions } from './smtp.ts';

export type LmtpChannelOptions = Omit<SmtpChannelOptions, 'lmtp' | 'resolveMx'>;

export class LmtpChannel extends SmtpChannel {
  constructor(opts: LmtpChannelOptions) {
    super({ ...opts, lmtp: true });
  }
}
