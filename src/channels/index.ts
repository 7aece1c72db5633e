/**
 * channels/index.ts — the delivery channels, and ChannelSet which picks one per route.
 *
 * Reply strings in RecipientResult are either a server's reply ("250 2.0.0 Ok: queued as X",
 * multi-line replies joined on one line), a locally made status and text ("5.1.10 Domain x
 * accepts no mail (null MX record, RFC 7505)", "2.0.0 Delivered to maildir as new/…"), or a
 * network error ("connect ECONNREFUSED 127.0.0.1:25"). The first two start with an RFC 3463
 * status that the DSN builder can report.
 *
 * What can go wrong: channelFor never fails; close() waits (bounded) for cached connections to
 * say QUIT.
 * Config read: none directly; the caller maps config keys to ChannelSetOptions.
 */
import type { Route } from '../router/types.ts';
import type { Channel } from './types.ts';
import { SmtpChannel, type SmtpChannelOptions } from './smtp.ts';
import { LmtpChannel, type LmtpChannelOptions } from './lmtp.ts';
import { MaildirChannel, type MaildirChannelOptions } from './maildir.ts';
import { ErrorChannel } from './error.ts';

export type { Channel, DeliveryJob, DeliveryRecipient, RecipientOutcome, RecipientResult } from './types.ts';
export { SmtpChannel, LmtpChannel, MaildirChannel, ErrorChannel };
export type { SmtpChannelOptions, LmtpChannelOptions, MaildirChannelOptions };
export type { MxRecord, ResolveHost, ResolveMx } from './smtp-nexthop.ts';

/** The SMTP channel's options at the top level; LMTP uses them too unless `lmtp` is given. */
export type ChannelSetOptions = Omit<SmtpChannelOptions, 'lmtp'> & {
  lmtp?: LmtpChannelOptions;
  maildir?: MaildirChannelOptions;
};

/** One channel instance per route type, created when first needed. */
export class ChannelSet {
  private smtp?: SmtpChannel;
  private lmtp?: LmtpChannel;
  private maildir?: MaildirChannel;
  private readonly error = new ErrorChannel();

  private readonly smtpOptions: Omit<SmtpChannelOptions, 'lmtp'>;

  constructor(private readonly opts: ChannelSetOptions) {
    const { lmtp: _lmtp, maildir: _maildir, ...smtp } = opts;
    this.smtpOptions = smtp;
  }

  /** The channel that delivers this route. */
  channelFor(route: Route): Channel {
    switch (route.type) {
      case 'smtp': return (this.smtp ??= new SmtpChannel(this.smtpOptions));
      case 'lmtp': return (this.lmtp ??= new LmtpChannel(this.opts.lmtp ?? this.smtpOptions));
      case 'maildir': return (this.maildir ??= new MaildirChannel(this.opts.maildir));
      case 'error': return this.error;
    }
  }

  /** Close every channel's cached connections. */
  async close(): Promise<void> {
    await Promise.all([this.smtp?.close(), this.lmtp?.close()]);
  }
}
