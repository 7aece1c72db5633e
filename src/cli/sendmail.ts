/**
 * cli/sendmail.ts — `tandem sendmail`: the sendmail(8) command line that cron, PHP's mail() and
 * monitoring tools call: a message on stdin, submitted by SMTP (nodemailer) to the local node
 * (its first listener that needs neither AUTH nor implicit TLS, see submissionListener; 0.0.0.0 /
 * :: mean loopback). A listener that expects the PROXY protocol from the address sendmail connects
 * from (HAProxy on the same host, `proxy_protocol: true`) gets a PROXY v1 header naming that
 * connection's own ends, so the node sees a local client, as it is. Install it as
 * /usr/sbin/sendmail with a two-line wrapper (docs/operations.md).
 *
 * Options (as Postfix's and Sendmail's): -t recipients from To:, Cc:, Bcc: (Bcc: removed), added
 * to those on the command line; -i / -oi a line with a lone "." does not end the message;
 * -f SENDER / -r SENDER the envelope sender (default: user@node.hostname); -F NAME the full name
 * in a From: header added when the message has none; --config FILE, --node-id ID; accepted and
 * ignored: -odb -odi -oem -oep -oeq -om -v -bm -N … -R … -B …, other -oX.
 * Headers added when missing, as Postfix's cleanup does for local submissions: From:, Date:
 * (and Message-ID:, by the node's receiver).
 * Exit codes (sysexits.h, what callers of sendmail test): 0 queued; 64 usage (bad option, no
 * recipient); 65 the node refused the message (5xx after RCPT); 67 a recipient refused (5xx at
 * RCPT); 75 cannot submit now (node not running, 4xx, timeout: the caller keeps the message and
 * retries); 78 configuration error.
 */
import net from 'node:net';
import os from 'node:os';
import nodemailer from 'nodemailer';
import addressparser from 'nodemailer/lib/addressparser/index.js';
import { isAddressAllowed } from 'smtp-server/lib/smtp-connection.js';
import type { TandemConfig } from '../config/schema.ts';
import { resolveListeners, type ListenerSpec, proxyV1Line } from '../receiver/index.ts';
import { ConfigError } from '../util/errors.ts';
import { rfc5322Date, headerEnd } from '../util/message-headers.ts';
import { loadCliConfig } from './cli-config.ts';

export const EX = { OK: 0, USAGE: 64, DATAERR: 65, NOUSER: 67, TEMPFAIL: 75, CONFIG: 78 } as const;

export interface SendmailArgs {
  extract: boolean;
  dotEnds: boolean;
  sender?: string;
  fullName?: string;
  recipients: string[];
  config?: string;
  nodeId?: string;
}

/** Options that take a value (as the next word or glued: -fuser@x). */
const WITH_VALUE = new Set(['f', 'r', 'F', 'N', 'R', 'B', 'C', 'L', 'O', 'V', 'X', 'h', 'p', 'q']);

export function parseSendmailArgs(argv: string[]): SendmailArgs {
  const a: SendmailArgs = { extract: false, dotEnds: true, recipients: [] };
  for (let i = 0; i < argv.length; i++) {
    const w = argv[i];
    if (w === '--') { a.recipients.push(...argv.slice(i + 1)); break; }
    if (w === '--config') { a.config = argv[++i]; continue; }
    if (w === '--node-id') { a.nodeId = argv[++i]; continue; }
    if (w.startsWith('--config=')) { a.config = w.slice(9); continue; }
    if (!w.startsWith('-') || w === '-') { a.recipients.push(w); continue; }
    const flag = w[1];
    if (flag === 't' && w.length === 2) a.extract = true;
    else if (flag === 'i' && w.length === 2) a.dotEnds = false;
    else if (flag === 'o') { if (w === '-oi') a.dotEnds = false; else if (w === '-o') i++; }
    else if (flag === 'b') {
      if (w !== '-bm') throw new Error(`${w}: only message submission (-bm) is supported; use tandem queue list for the queue`);
    } else if (flag === 'v' || flag === 'n' || flag === 'U' || flag === 'G') { /* accepted, no effect */ }
    else if (WITH_VALUE.has(flag)) {
      const value = w.length > 2 ? w.slice(2) : argv[++i];
      if (value === undefined) throw new Error(`${w} needs a value`);
      if (flag === 'f' || flag === 'r') a.sender = value.replace(/^<(.*)>$/, '$1');
      else if (flag === 'F') a.fullName = value;
    } else throw new Error(`unknown option ${w}`);
  }
  return a;
}

/** Read stdin; without -i a line of a lone "." ends the message (what follows is ignored). */
function messageFrom(input: Buffer, dotEnds: boolean): Buffer {
  let text = input.toString('latin1').replace(/\r?\n/g, '\r\n');
  if (dotEnds) {
    const m = /(^|\r\n)\.\r\n/.exec(text + (text.endsWith('\r\n') ? '' : '\r\n'));
    if (m) text = text.slice(0, m.index + m[1].length);
  }
  return Buffer.from(text, 'latin1');
}

/**
 * The message as submitted: Bcc: removed when recipients are extracted (-t), From: and Date:
 * added when missing. Returns the recipients found in the headers (-t).
 */
export function prepareMessage(input: Buffer, a: SendmailArgs, sender: string): { message: Buffer; headerRecipients: string[] } {
  const msg = messageFrom(input, a.dotEnds);
  const end = headerEnd(msg);
  const headText = end < 0 ? '' : msg.subarray(0, end).toString('latin1');
  const body = end < 0 ? msg : msg.subarray(end);
  const fields = headText.split(/\r\n(?![ \t])/).filter((f) => f.length > 0);
  const name = (f: string) => f.slice(0, f.indexOf(':')).trim().toLowerCase();
  const value = (f: string) => f.slice(f.indexOf(':') + 1).replace(/\r\n/g, '');
  const headerRecipients: string[] = [];
  if (a.extract) {
    for (const f of fields) {
      if (['to', 'cc', 'bcc'].includes(name(f))) {
        for (const addr of flatten(addressparser(value(f)))) headerRecipients.push(addr);
      }
    }
  }
  const kept = a.extract ? fields.filter((f) => name(f) !== 'bcc') : fields;
  const added: string[] = [];
  if (!kept.some((f) => name(f) === 'from')) added.push(`From: ${a.fullName ? `"${a.fullName.replace(/["\\\r\n]/g, '')}" ` : ''}<${sender}>`);
  if (!kept.some((f) => name(f) === 'date')) added.push(`Date: ${rfc5322Date(new Date())}`);
  const head = [...kept, ...added].join('\r\n');
  const sep = end < 0 ? '\r\n\r\n' : '';
  return { message: Buffer.concat([Buffer.from(head, 'latin1'), Buffer.from(sep), body]), headerRecipients };
}

function flatten(list: Array<{ address?: string; group?: unknown[] }>): string[] {
  return list.flatMap((x) => (x.group ? flatten(x.group as never) : x.address ? [x.address] : []));
}

export async function runSendmail(argv: string[]): Promise<number> {
  let a: SendmailArgs;
  try {
    a = parseSendmailArgs(argv);
  } catch (err) {
    console.error(`sendmail: ${(err as Error).message}`);
    return EX.USAGE;
  }
  let config;
  try {
    config = await loadCliConfig(a);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`sendmail: configuration error in ${err.message}`);
    return EX.CONFIG;
  }
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const sender = a.sender ?? `${os.userInfo().username}@${config.node.hostname}`;
  const { message, headerRecipients } = prepareMessage(Buffer.concat(chunks), a, sender);
  const recipients = [...new Set([...a.recipients, ...headerRecipients])];
  if (recipients.length === 0) {
    console.error(`sendmail: no recipients (give them as arguments${a.extract ? '' : ', or -t to read To:, Cc:, Bcc:'})`);
    return EX.USAGE;
  }
  const listener = submissionListener(config);
  if (!listener) {
    console.error('sendmail: every SMTP listener of the node requires AUTH or implicit TLS; add one for local submission (auth: none or offered, tls: none or starttls), e.g. on 127.0.0.1');
    return EX.CONFIG;
  }
  const { host, port } = listener.listen;
  const target = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  const transport = nodemailer.createTransport({
    host: target, port, secure: false, ignoreTLS: true, name: os.hostname(), connectionTimeout: 30_000, greetingTimeout: 30_000, socketTimeout: 120_000,
    getSocket: (_options: unknown, done: (err: Error | null, socket?: { connection: net.Socket }) => void) => connectWithProxyHeader(target, port, listener.proxyProtocol, 30_000, done),
  } as nodemailer.TransportOptions);
  try {
    await transport.sendMail({ envelope: { from: sender, to: recipients }, raw: message });
    return EX.OK;
  } catch (err) {
    const e = err as { responseCode?: number; command?: string; message: string };
    const permanent = e.responseCode !== undefined && e.responseCode >= 500;
    console.error(`sendmail: ${permanent ? 'refused' : 'cannot submit now (try again later)'}: ${e.message} (node at ${target}:${port})`);
    if (!permanent) return EX.TEMPFAIL;
    return /RCPT/i.test(e.command ?? '') ? EX.NOUSER : EX.DATAERR;
  } finally {
    transport.close();
  }
}

/**
 * The listener a local submission goes to: the first that needs neither AUTH (sendmail has no
 * credentials) nor implicit TLS; of those, one that expects no PROXY header if there is one.
 */
export function submissionListener(c: TandemConfig): ListenerSpec | undefined {
  const usable = resolveListeners(c).filter((l) => l.auth !== 'required' && l.tls !== 'implicit');
  return usable.find((l) => l.proxyProtocol === false) ?? usable[0];
}

/**
 * Connect to the node; if the listener expects a PROXY header from our address (the receiver's
 * own test, smtp-server's isAddressAllowed, on our end of the connection), send a v1 header
 * with this connection's real ends first. Then nodemailer speaks SMTP on the socket.
 */
function connectWithProxyHeader(
  host: string, port: number, proxyProtocol: boolean | string[], timeoutMs: number,
  done: (err: Error | null, socket?: { connection: net.Socket }) => void,
): void {
  const socket = net.connect({ host, port });
  const timer = setTimeout(() => socket.destroy(Object.assign(new Error(`connection to ${host}:${port} timed out`), { code: 'ETIMEDOUT' })), timeoutMs);
  socket.once('error', (err) => { clearTimeout(timer); done(err); });
  socket.once('connect', () => {
    clearTimeout(timer);
    socket.removeAllListeners('error');
    socket.on('error', () => undefined); // nodemailer adds its own handler and reports it
    if (isAddressAllowed(proxyProtocol, socket.localAddress)) {
      const family = net.isIPv6(socket.localAddress!) ? 'inet6' : 'inet';
      socket.write(proxyV1Line({
        command: 'proxy', family,
        source: { address: socket.localAddress!, port: socket.localPort! },
        destination: { address: socket.remoteAddress!, port: socket.remotePort! },
      }));
    }
    done(null, { connection: socket });
  });
}
