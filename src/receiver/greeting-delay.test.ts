/**
 * The replaced SMTPConnection.init. smtp.greeting_delay: by default the 220 comes at once (a
 * client that pipelines its EHLO with the connect is served); with a delay, a client that talks
 * before the greeting gets 421 and a patient one is served. smtp.connection_wait: a connection
 * beyond max_connections waits for a slot and is greeted when one frees up; after the wait, 421.
 * Real smtp-server on loopback, raw sockets as the clients.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { pino } from 'pino';
import { SmtpReceiver, type ReceiverDeps } from './smtp-receiver.ts';
import { CONNECTION_SLOTS_OPTION, installGreetingDelay } from './greeting-delay.ts';
import type { ConnectionSlots } from './connection-slots.ts';
import { configSchema } from '../config/schema.ts';
import type { Router } from '../router/types.ts';

const router: Router = {
  async resolveRecipient(a: string) { return { type: 'local', addresses: [a] }; },
  async routeAddress() { return { type: 'maildir', path: '/nowhere' }; },
  async reload() {},
  health: () => undefined,
  async close() {},
};

const refused: string[] = [];

async function startReceiver(smtp: Record<string, unknown>): Promise<{ port: number; slots: ConnectionSlots }> {
  const config = configSchema.parse({ node: { id: 'a', hostname: 'mx.test' }, smtp: { listen: '127.0.0.1:0', ...smtp } });
  const deps = {
    config, router,
    beginMessage: () => { throw new Error('no message in these tests'); },
    newQueueId: () => 'Q1.a',
    tracking: { record: async () => {} },
    logger: pino({ level: 'silent' }),
    isRelayClient: () => true,
    acceptState: () => ({ type: 'accepting' }),
    onQueued: () => {},
    metrics: { received() {}, rejected() {}, limitRefused: (limit: string) => refused.push(limit) },
  } as unknown as ReceiverDeps;
  const r = new SmtpReceiver(deps);
  after(() => r.close());
  const { port } = await r.listen();
  return { port, slots: (r as unknown as { server: { options: Record<string, ConnectionSlots> } }).server.options[CONNECTION_SLOTS_OPTION] };
}

async function start(smtp: Record<string, unknown>): Promise<number> {
  return (await startReceiver(smtp)).port;
}

/** A raw client: `next()` resolves with the next complete reply (or "closed"). */
function client(port: number): { next(): Promise<string>; send(line: string): void; close(): void } {
  const s = net.connect(port, '127.0.0.1');
  s.setEncoding('utf8');
  s.on('error', () => {});
  let buf = '';
  const replies: string[] = [];
  let wake: (() => void) | undefined;
  s.on('data', (d: string) => {
    buf += d;
    for (let m; (m = /^(\d{3}) .*\r\n/m.exec(buf)); ) {
      replies.push(buf.slice(0, m.index + m[0].length));
      buf = buf.slice(m.index + m[0].length);
    }
    wake?.();
  });
  s.on('close', () => { replies.push('closed'); wake?.(); });
  return {
    async next() {
      while (!replies.length) await new Promise<void>((r) => (wake = r));
      return replies.shift()!;
    },
    send: (line) => void s.write(`${line}\r\n`),
    close: () => void s.destroy(),
  };
}

/** Until `cond` holds (the server's side of a connection is set up on its own turn of the loop). */
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setImmediate(r));
}

/** Connect; optionally send `early` with the connect; collect reply lines until `until` matches or the peer closes. */
async function talk(port: number, early: string | undefined, until: RegExp): Promise<string[]> {
  const s = net.connect(port, '127.0.0.1');
  if (early) s.write(early);
  let text = '';
  s.setEncoding('utf8');
  s.on('data', (d: string) => {
    text += d;
    if (until.test(text) && !s.writableEnded) s.end('QUIT\r\n');
  });
  s.on('error', () => {});
  await once(s, 'close');
  return text.split('\r\n').filter(Boolean);
}

test('the installed smtp-server matches the init() that greeting_delay replaces', () => {
  assert.equal(installGreetingDelay(), true, 'smtp-server changed: review src/receiver/greeting-delay.ts');
});

test('greeting_delay 0 (the default): the greeting comes at once and an EHLO sent with the connect is served', async () => {
  const port = await start({});
  const lines = await talk(port, 'EHLO client.test\r\n', /^250 /m);
  assert.match(lines[0], /^220 mx\.test ESMTP/);
  assert.ok(lines.some((l) => /^250[ -]mx\.test/.test(l)), lines.join('\n'));
  assert.ok(!lines.some((l) => l.startsWith('421')), lines.join('\n'));
});

test('greeting_delay set: a client that talks before the greeting gets 421, a patient one is greeted', async () => {
  const port = await start({ greeting_delay: '300ms' });
  const early = await talk(port, 'EHLO spammer.test\r\n', /^421 /m);
  assert.match(early.join('\n'), /^421 .*talk too soon/im);
  assert.ok(!early.some((l) => l.startsWith('250')), early.join('\n'));

  const patient = await talk(port, undefined, /^220 /m);
  assert.match(patient[0], /^220 mx\.test ESMTP/);
});

test('connection_wait: beyond max_connections a connection waits, not greeted, and gets the first slot freed', async () => {
  const { port, slots } = await startReceiver({ max_connections: 2, connection_wait: '30s' });
  const a = client(port);
  const b = client(port);
  assert.match(await a.next(), /^220 /);
  assert.match(await b.next(), /^220 /);
  const c = client(port);
  await until(() => slots.waiting === 1);
  let cReplied = false;
  const cGreeting = c.next().then((r) => { cReplied = true; return r; });
  // the two in session still work while c waits
  b.send('EHLO b.test');
  assert.match(await b.next(), /^250[ -]/);
  assert.equal(cReplied, false, 'c is not greeted while both slots are taken');
  a.send('QUIT');
  assert.match(await a.next(), /^221 /);
  assert.match(await cGreeting, /^220 mx\.test ESMTP/, 'c is greeted once a has quit, not refused');
  c.send('EHLO c.test');
  assert.match(await c.next(), /^250[ -]/);
  for (const x of [a, b, c]) x.close();
});

test('connection_wait: a connection that waits in vain gets 421 and is counted; the sessions in progress are untouched', async () => {
  const { port } = await startReceiver({ max_connections: 1, connection_wait: '300ms' });
  const a = client(port);
  assert.match(await a.next(), /^220 /);
  const before = refused.length;
  const started = Date.now();
  const b = client(port);
  assert.match(await b.next(), /^421 .*Too many connected clients/);
  assert.ok(Date.now() - started >= 250, `refused after ${Date.now() - started} ms, before its wait was up`);
  assert.equal(await b.next(), 'closed');
  assert.deepEqual(refused.slice(before), ['max_connections']);
  a.send('EHLO a.test');
  assert.match(await a.next(), /^250[ -]/);
  a.close();
});

test('connection_wait 0s: smtp-server\'s behaviour, 421 at once beyond max_connections', async () => {
  const { port } = await startReceiver({ max_connections: 1, connection_wait: '0s' });
  const a = client(port);
  assert.match(await a.next(), /^220 /);
  const b = client(port);
  assert.match(await b.next(), /^421 .*Too many connected clients/);
  a.close();
  b.close();
});
