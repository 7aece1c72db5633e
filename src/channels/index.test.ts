/**
 * index.test.ts — ChannelSet dispatch by route type, the error channel, close().
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChannelSet, ErrorChannel, LmtpChannel, MaildirChannel, SmtpChannel } from './index.ts';
import { makeJob, startSmtpServer } from '../../test/harness/channel-servers.ts';

const opts = { heloName: 'tandem.test', connectTimeout: 2000, commandTimeout: 5000 };

test('channelFor dispatches by route type and reuses one channel per type', () => {
  const set = new ChannelSet(opts);
  const smtp = set.channelFor({ type: 'smtp', host: 'h', port: 25, mx: false });
  assert.ok(smtp instanceof SmtpChannel);
  assert.equal(set.channelFor({ type: 'smtp', domain: 'example.com', port: 25, mx: true }), smtp);
  assert.ok(set.channelFor({ type: 'lmtp', host: 'h', port: 24 }) instanceof LmtpChannel);
  assert.ok(set.channelFor({ type: 'maildir', path: '/x' }) instanceof MaildirChannel);
  assert.ok(set.channelFor({ type: 'error', message: 'x' }) instanceof ErrorChannel);
});

test('error routes fail every recipient with the route text', async () => {
  const set = new ChannelSet(opts);
  const route = { type: 'error' as const, message: 'Mail to this domain is not accepted' };
  const results = await set.channelFor(route).deliver(makeJob(route, ['a@x.example', 'b@x.example']));
  assert.deepEqual(results.map((r) => [r.index, r.outcome]), [[0, 'failed'], [1, 'failed']]);
  assert.equal(results[0].reply, '5.0.0 Mail to this domain is not accepted');
  const coded = { type: 'error' as const, message: '550 5.7.1 Relay to this domain is forbidden' };
  assert.equal((await set.channelFor(coded).deliver(makeJob(coded, ['a@x.example'])))[0].reply, coded.message);
});

test('close() closes the cached SMTP and LMTP connections', async () => {
  const smtpServer = await startSmtpServer();
  const lmtpServer = await startSmtpServer({ lmtp: true });
  const set = new ChannelSet(opts);
  try {
    const smtpRoute = { type: 'smtp' as const, host: '127.0.0.1', port: smtpServer.port, mx: false as const };
    const lmtpRoute = { type: 'lmtp' as const, host: '127.0.0.1', port: lmtpServer.port };
    assert.equal((await set.channelFor(smtpRoute).deliver(makeJob(smtpRoute, ['a@example.com'])))[0].outcome, 'delivered');
    assert.equal((await set.channelFor(lmtpRoute).deliver(makeJob(lmtpRoute, ['a@example.com'])))[0].outcome, 'delivered');
    await set.close();
    assert.equal((set.channelFor(smtpRoute) as SmtpChannel).idleConnections, 0);
    assert.equal((set.channelFor(lmtpRoute) as LmtpChannel).idleConnections, 0);
  } finally {
    await Promise.all([smtpServer.close(), lmtpServer.close()]);
  }
});
