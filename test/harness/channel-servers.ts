/**
 * test/harness/channel-servers.ts — next-hop servers for the channel tests (not used in production).
 *
 * Exports: startSmtpServer (smtp-server on 127.0.0.1, port 0, SMTP or LMTP, with per-recipient
 * and DATA verdicts), startScriptedServer (a raw TCP server speaking just enough SMTP to
 * misbehave: drop the connection at a chosen command), makeJob.
 *
 * Every server binds 127.0.0.1 on port 0 and must be closed by the test (close() also drops
 * connections still open after a short grace time).
 * What can go wrong: nothing beyond a failed bind, which rejects.
 * Config read: none.
 */
import net from 'node:net';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import type { DeliveryJob } from '../../src/channels/types.ts';
import { bufferSource } from '../../src/message/source.ts';
import type { Route } from '../../src/router/types.ts';

export interface ReceivedMessage {
  from: string;
  to: string[];
  mailArgs: Record<string, unknown>;
  data: Buffer;
  secure: boolean;
  /** RCPT TO DSN parameters as received (NOTIFY, ORCPT), per recipient. */
  rcptDsn: Array<{ address: string; notify?: string[]; orcpt?: string }>;
}

export interface TestSmtpServer {
  port: number;
  /** Connections accepted so far. */
  connections: number;
  messages: ReceivedMessage[];
  close(): Promise<void>;
}

/** An SMTP reply chosen by the test: `code` and text (smtp-server adds the enhanced status). */
export interface Verdict { code: number; message: string }

export async function startSmtpServer(opts: {
  lmtp?: boolean;
  /** Verdict for one RCPT; undefined accepts. */
  rcpt?: (address: string) => Verdict | undefined;
  /** SMTP: one verdict for the message; undefined accepts with "Ok: queued as Q<n>". */
  data?: (message: ReceivedMessage) => Verdict | undefined;
  /** LMTP: a verdict per accepted recipient; undefined accepts. */
  lmtpData?: (address: string) => Verdict | undefined;
  /** Greeting refusal (e.g. 421). */
  refuseConnection?: Verdict;
  server?: Partial<SMTPServerOptions>;
} = {}): Promise<TestSmtpServer> {
  const state: TestSmtpServer = { port: 0, connections: 0, messages: [], close: async () => undefined };
  const verdictError = (v: Verdict) => Object.assign(new Error(v.message), { responseCode: v.code });
  const server = new SMTPServer({
    lmtp: opts.lmtp ?? false,
    authOptional: true,
    hideDSN: false,
    disableReverseLookup: true,
    closeTimeout: 200,
    logger: false,
    onConnect(_session, cb) {
      state.connections += 1;
      cb(opts.refuseConnection ? verdictError(opts.refuseConnection) : undefined);
    },
    onRcptTo(address, _session, cb) {
      const v = opts.rcpt?.(address.address);
      cb(v ? verdictError(v) : undefined);
    },
    onData(stream, session: SMTPServerSession, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const from = session.envelope.mailFrom === false ? '' : session.envelope.mailFrom.address;
        const mailArgs = session.envelope.mailFrom === false ? {} : (session.envelope.mailFrom.args || {}) as Record<string, unknown>;
        const message: ReceivedMessage = {
          from, to: session.envelope.rcptTo.map((r) => r.address), mailArgs, data: Buffer.concat(chunks), secure: session.secure,
          rcptDsn: session.envelope.rcptTo.map((r) => ({ address: r.address, ...(r.dsn?.notify ? { notify: r.dsn.notify } : {}), ...(r.dsn?.orcpt ? { orcpt: r.dsn.orcpt } : {}) })),
        };
        if (opts.lmtp) {
          const replies = message.to.map((a) => {
            const v = opts.lmtpData?.(a);
            return v ? verdictError(v) : `Ok: delivered to ${a}`;
          });
          if (replies.some((r) => typeof r === 'string')) state.messages.push(message);
          cb(null, replies as unknown as string);
          return;
        }
        const v = opts.data?.(message);
        if (v) return cb(verdictError(v));
        state.messages.push(message);
        cb(null, `Ok: queued as Q${state.messages.length}`);
      });
    },
    ...opts.server,
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  server.on('error', () => undefined);
  state.port = (server.server.address() as net.AddressInfo).port;
  state.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return state;
}

/**
 * A raw server for failures smtp-server cannot produce: it answers greeting, EHLO, MAIL, RCPT
 * with success and destroys the socket when `dropAt(command, transactionOnThisConnection)` says so.
 */
export async function startScriptedServer(dropAt: (command: string, transaction: number) => boolean): Promise<TestSmtpServer> {
  const state: TestSmtpServer = { port: 0, connections: 0, messages: [], close: async () => undefined };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    state.connections += 1;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let transaction = 0;
    let inData = false;
    let buffer = '';
    socket.write('220 scripted ESMTP\r\n');
    socket.on('data', (chunk) => {
      buffer += chunk.toString('latin1');
      let i: number;
      while ((i = buffer.indexOf('\r\n')) >= 0) {
        const line = buffer.slice(0, i);
        buffer = buffer.slice(i + 2);
        if (inData) {
          if (line === '.') {
            inData = false;
            socket.write('250 2.0.0 Ok: queued\r\n');
          }
          continue;
        }
        const command = line.split(/[ :]/)[0].toUpperCase();
        if (command === 'MAIL') transaction += 1;
        if (dropAt(command, transaction)) {
          socket.destroy();
          return;
        }
        if (command === 'EHLO') socket.write('250-scripted\r\n250 PIPELINING\r\n');
        else if (command === 'DATA') { inData = true; socket.write('354 go ahead\r\n'); }
        else if (command === 'QUIT') { socket.end('221 bye\r\n'); return; }
        else socket.write('250 2.0.0 Ok\r\n');
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  state.port = (server.address() as net.AddressInfo).port;
  state.close = () => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  });
  return state;
}

/** A delivery job with recipients a@…, b@… and a small message. */
export function makeJob(route: Route, recipients: string[], extra: Partial<DeliveryJob> = {}): DeliveryJob {
  return {
    queueId: 'TESTQ1',
    sender: 'sender@example.org',
    recipients: recipients.map((address, index) => ({ index, address, original: address })),
    route,
    message: bufferSource(Buffer.from('From: sender@example.org\r\nTo: someone@example.com\r\nSubject: test\r\n\r\nHello.\r\n')),
    ...extra,
  };
}
