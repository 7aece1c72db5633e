/**
 * smtp.greeting_delay: by default the 220 comes at once (a client that pipelines its EHLO with
 * the connect is served); with a delay, a client that talks before the greeting gets 421 and a
 * patient one is served. Real smtp-server on loopback, raw sockets as the clients.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { pino } from 'pino';
import { SmtpReceiver, type ReceiverDeps } from './smtp-receiver.ts';
import { installGreetingDelay } from './greeting-delay.ts';
import { configSchema } from '../config/schema.ts';
import type { Router } from '../router/types.ts';

const router: Router = {
  async resolveRecipient(a: string) { return { type: 'local', addresses: [a] }; },
  async routeAddress() { return { type: 'maildir', path: '/nowhere' }; },
  async reload() {},
  health: () => undefined,
  async close() {},
};

async function start(smtp: Record<string, unknown>): Promise<number> {
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
  } as unknown as ReceiverDeps;
  const r = new SmtpReceiver(deps);
  after(() => r.close());
  return (await r.listen()).port;
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
