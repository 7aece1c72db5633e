/**
 * test/harness/smtp-client.ts — send one message with nodemailer's SMTP client and report the
 * server's answer (for end-to-end tests that check replies, not load).
 *
 * Exports: sendMail.
 */
import SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';

export interface SendResult {
  ok: boolean;
  /** Final reply text, e.g. "250 2.0.0 Ok: queued as X" or the error response. */
  response: string;
  accepted: string[];
  rejected: string[];
  queueId?: string;
}

export async function sendMail(port: number, from: string, to: string[], message: string | Buffer, host = '127.0.0.1', dsn?: SMTPConnection.DSNOptions): Promise<SendResult> {
  const conn = new SMTPConnection({ host, port, ignoreTLS: true, connectionTimeout: 10_000, name: 'client.test' } as any);
  await new Promise<void>((res, rej) => {
    conn.once('error', rej);
    conn.connect(() => res());
  });
  try {
    return await new Promise<SendResult>((resolve) => {
      conn.send({ from, to, ...(dsn ? { dsn } : {}) } as SMTPConnection.Envelope, message, (err: any, info: any) => {
        if (err) resolve({ ok: false, response: String(err.response ?? err.message), accepted: [], rejected: err.rejected ?? to });
        else resolve({ ok: true, response: info.response, accepted: info.accepted, rejected: info.rejected, queueId: /queued as (\S+)/.exec(info.response)?.[1] });
      });
    });
  } finally {
    conn.quit();
    conn.close();
  }
}
