/**
 * Process-level tests of a node's life cycle and of the less common channels: a graceful stop
 * with deliveries in flight (exit 0, nothing lost, nothing sent twice), LMTP with per-recipient
 * replies through the transport map, and the optional delay warning.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trackProcesses } from './harness/procs.ts';
import { startSink } from './harness/sink.ts';
import { startNode, writeNodeConfig } from './harness/node.ts';
import { writeTables } from './harness/tandem.ts';
import { runLoad } from './harness/load.ts';
import { sendMail } from './harness/smtp-client.ts';
import { freePort } from './harness/ports.ts';
import { readTrackingLog } from '../src/track/tracking-log.ts';
import { eventually } from './harness/wait.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

test('SIGTERM with deliveries in flight: exit 0, and after a restart everything arrives exactly once', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-term-'));
  const sink = await startSink({ delayMs: 150 }); // a slow next hop keeps deliveries in flight
  const config = writeNodeConfig(dir, { node: { id: 't' }, relay: { host: sink.address }, queue: { destination_concurrency: 10 } });
  const smtpPort = await freePort();
  const start = (name: string) => startNode({ config, listen: `127.0.0.1:${smtpPort}`, logFile: path.join(dir, `${name}.out`) });
  let node = await start('node-1');
  const total = 300;
  const load = await runLoad({ host: '127.0.0.1', port: smtpPort, total, concurrency: 10, sizeBytes: 2048, from: 'a@client.test', to: (i) => `r${i}@remote.test` });
  assert.equal(load.accepted.size, total);
  await sink.waitForCount(20, 30_000);
  const exit = await node.stop(30_000);
  assert.equal(exit.code, 0, `graceful stop exits 0 (got ${JSON.stringify(exit)})`);
  assert.ok(node.proc.lines.some((l) => l.json?.event === 'stopped'), 'the node says it stopped');
  const atStop = sink.count();
  assert.ok(atStop < total, 'some mail was still queued at the stop');

  node = await start('node-2');
  await sink.waitForCount(total, 60_000);
  const got = sink.countsByTestId();
  for (const id of load.accepted) assert.equal(got.get(id), 1, `${id} delivered exactly once`);
  await eventually('spool drained', () => readdirSync(path.join(dir, 'spool', 't', 'deferred')).length === 0 && readdirSync(path.join(dir, 'spool', 't', 'active')).length === 0);
  await node.stop();
  await sink.stop();
});

test('LMTP through the transport map: per-recipient replies, one delivered and one bounced', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-lmtp-'));
  const lmtp = await startSink({ lmtp: true, failRcpt: [{ pattern: '^gone@', code: 550 }] });
  const tables = writeTables(dir, { transport: `lmtp.test lmtp:[127.0.0.1]:${lmtp.port}\n` });
  const config = writeNodeConfig(dir, { node: { id: 'l' }, relay: { networks: ['127.0.0.0/8'] }, tables: { transport: tables.transport } });
  const node = await startNode({ config, logFile: path.join(dir, 'node.out') });
  const res = await sendMail(node.smtp.port, '', ['here@lmtp.test', 'gone@lmtp.test'], 'Subject: lmtp\r\nX-Test-Id: lmtp-1\r\n\r\nhi\r\n');
  assert.equal(res.ok, true, res.response);
  const tracking = path.join(dir, 'tracking.log');
  const events = await eventually('both outcomes in the tracking log', () => {
    if (!existsSync(tracking)) return undefined;
    const ev = readTrackingLog(tracking).filter((e) => e.queueId === res.queueId);
    return ev.some((e) => e.event === 'delivered') && ev.some((e) => e.event === 'bounced') ? ev : undefined;
  });
  assert.equal(events.find((e) => e.event === 'delivered')?.recipient, 'here@lmtp.test');
  assert.match(String(events.find((e) => e.event === 'bounced')?.reply), /^550/);
  assert.equal(events.filter((e) => e.event === 'dsn').length, 0, 'no DSN for a message from the null sender');
  const rec = lmtp.readRecords().find((r) => r.testId === 'lmtp-1');
  assert.deepEqual(rec?.to, ['here@lmtp.test']);
  await node.stop();
  await lmtp.stop();
});

test('delay warning: a sender is told once that a message is still being retried', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-delay-'));
  const closed = await freePort();
  const tables = writeTables(dir, { virtual_mailboxes: 'alice@example.test alice/\n' });
  const config = writeNodeConfig(dir, {
    node: { id: 'd' },
    relay: { host: `127.0.0.1:${closed}` },
    local: { domains: ['example.test'], maildir_root: path.join(dir, 'mail') },
    tables: { virtual_mailboxes: tables.virtual_mailboxes },
    queue: { delay_warning: '1s', min_backoff: '300ms', max_backoff: '600ms' },
  });
  const node = await startNode({ config, logFile: path.join(dir, 'node.out') });
  const res = await sendMail(node.smtp.port, 'alice@example.test', ['far@remote.test'], 'Subject: slow\r\n\r\nhi\r\n');
  assert.equal(res.ok, true);
  const inbox = path.join(dir, 'mail', 'alice', 'new');
  const files = await eventually('a delay DSN', () => (existsSync(inbox) && readdirSync(inbox).length ? readdirSync(inbox) : undefined), 20_000);
  const dsn = readFileSync(path.join(inbox, files[0]), 'utf8');
  assert.match(dsn, /^Subject: Delayed Mail/m);
  assert.match(dsn, /Action: delayed/);
  assert.match(dsn, /Will-Retry-Until: /);
  // the message is still queued, and a later retry does not warn again
  await eventually('two more attempts', () => readTrackingLog(path.join(dir, 'tracking.log')).filter((e) => e.event === 'deferred').length >= 4, 20_000);
  assert.equal(readdirSync(inbox).length, 1, 'one warning only');
  assert.ok(readdirSync(path.join(dir, 'spool', 'd', 'deferred')).includes(res.queueId!));
  await node.stop();
});
