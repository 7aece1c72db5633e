/**
 * lmtp.test.ts — LmtpChannel against smtp-server in LMTP mode: one reply per recipient after
 * DATA, RCPT rejections, connection reuse.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LmtpChannel } from './lmtp.ts';
import { makeJob, startSmtpServer } from '../../test/harness/channel-servers.ts';

const opts = { heloName: 'tandem.test', connectTimeout: 2000, commandTimeout: 5000 };

test('LMTP: per-recipient replies after DATA, and RCPT rejections', async () => {
  const server = await startSmtpServer({
    lmtp: true,
    rcpt: (a) => (a.startsWith('unknown') ? { code: 550, message: 'No such mailbox' } : undefined),
    lmtpData: (a) => (a.startsWith('full') ? { code: 452, message: 'Mailbox full' } : a.startsWith('bad') ? { code: 554, message: 'Sieve rejected' } : undefined),
  });
  const channel = new LmtpChannel(opts);
  try {
    const route = { type: 'lmtp' as const, host: '127.0.0.1', port: server.port };
    const results = await channel.deliver(makeJob(route, ['ok1@example.com', 'full@example.com', 'unknown@example.com', 'bad@example.com', 'ok2@example.com']));
    const byIndex = new Map(results.map((r) => [r.index, r]));
    assert.equal(results.length, 5);
    assert.equal(byIndex.get(0)?.outcome, 'delivered');
    assert.match(byIndex.get(0)!.reply, /^250 .*delivered to ok1@example\.com/);
    assert.equal(byIndex.get(1)?.outcome, 'deferred');
    assert.match(byIndex.get(1)!.reply, /^452 .*Mailbox full/);
    assert.equal(byIndex.get(2)?.outcome, 'failed');
    assert.match(byIndex.get(2)!.reply, /^550 .*No such mailbox/);
    assert.equal(byIndex.get(3)?.outcome, 'failed');
    assert.match(byIndex.get(3)!.reply, /^554 .*Sieve rejected/);
    assert.equal(byIndex.get(4)?.outcome, 'delivered');
    assert.match(byIndex.get(4)!.reply, /delivered to ok2@example\.com/);
    assert.equal(byIndex.get(0)?.via, `127.0.0.1[127.0.0.1]:${server.port}`);

    // The connection is reused for the next message.
    const again = await channel.deliver(makeJob(route, ['ok3@example.com']));
    assert.equal(again[0].outcome, 'delivered');
    assert.equal(server.connections, 1);
  } finally {
    await channel.close();
    await server.close();
  }
});

test('LMTP: the only recipient rejected after DATA fails, the channel refuses smtp routes', async () => {
  const server = await startSmtpServer({ lmtp: true, lmtpData: () => ({ code: 550, message: 'Quota exceeded permanently' }) });
  const channel = new LmtpChannel(opts);
  try {
    const [r] = await channel.deliver(makeJob({ type: 'lmtp', host: '127.0.0.1', port: server.port }, ['a@example.com']));
    assert.equal(r.outcome, 'failed');
    assert.match(r.reply, /^550 .*Quota/);
    await assert.rejects(channel.deliver(makeJob({ type: 'smtp', host: '127.0.0.1', port: server.port, mx: false }, ['a@example.com'])), /bug/);
  } finally {
    await channel.close();
    await server.close();
  }
});
