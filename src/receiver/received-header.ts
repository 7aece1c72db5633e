/**
 * receiver/received-header.ts — the Received: trace header (RFC 5321 §4.4).
 *
 * The header is text to be written as UTF-8: with SMTPUTF8 the `for` address may be UTF-8
 * (RFC 6532), and the protocol is then labelled UTF8SMTP, UTF8SMTPS, UTF8SMTPA or UTF8SMTPSA
 * (RFC 6531 §3.7.3, the IANA "WITH protocol types" registry), as Postfix does.
 */
import { rfc5322Date } from '../util/message-headers.ts';

export interface ReceivedInfo {
  helo: string;
  clientAddress: string;
  clientHostname?: string;
  byHostname: string;
  queueId: string;
  /** ESMTP, ESMTPS (TLS), ESMTPA (auth), ESMTPSA, SMTP for HELO; UTF8SMTP… with SMTPUTF8 (receivedProtocol) */
  protocol: string;
  /** Single recipient: named in the `for` clause (as Postfix does); none for several. */
  forRecipient?: string;
  date: Date;
}

/** Build the header, folded over three lines, ending in CRLF. */
export function receivedHeader(info: ReceivedInfo): string {
  const from = `from ${info.helo || 'unknown'} (${info.clientHostname ?? 'unknown'} [${info.clientAddress}])`;
  const by = `by ${info.byHostname} (Tandem) with ${info.protocol} id ${info.queueId}`;
  const forPart = info.forRecipient ? `\r\n\tfor <${info.forRecipient}>` : '';
  return `Received: ${from}\r\n\t${by}${forPart};\r\n\t${rfc5322Date(info.date)}\r\n`;
}

/** smtp-server's transmission type ("ESMTPSA") with SMTPUTF8 → "UTF8SMTPSA" (RFC 6531 §3.7.3). */
export function receivedProtocol(transmissionType: string, smtpUtf8: boolean): string {
  if (!smtpUtf8) return transmissionType;
  const m = /^E?SMTP(S?A?)$/.exec(transmissionType);
  return m ? `UTF8SMTP${m[1]}` : transmissionType;
}
