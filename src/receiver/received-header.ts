/**
 * receiver/received-header.ts — the Received: trace header (RFC 5321 §4.4).
 */
import { rfc5322Date } from '../util/message-headers.ts';

export interface ReceivedInfo {
  helo: string;
  clientAddress: string;
  clientHostname?: string;
  byHostname: string;
  queueId: string;
  /** ESMTP, ESMTPS (TLS), ESMTPA (auth), ESMTPSA, or SMTP for HELO */
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
