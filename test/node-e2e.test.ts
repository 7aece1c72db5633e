/**
 * End-to-end tests of one real `tandem` node process: a real SMTP client, a real SMTP sink
 * process as next hop, real Maildirs, the real CLI against the admin API and the spool.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, appendFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { simpleParser } from 'mailparser';
import { trackProcesses, spawnProcess } from './harness/procs.ts';
import { cliArgs } from './harness/build.ts';
import { startSink, type Sink } from './harness/sink.ts';
import { runCli, writeTables } from './harness/tandem.ts';
import { startNode, writeNodeConfig, type RunningNode } from './harness/node.ts';
import { sendMail } from './harness/smtp-client.ts';
import { freePort } from './harness/ports.ts';
import { eventually } from './harness/wait.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-e2e-'));
let sink: Sink;
let node: RunningNode;
let adminUrl: string;
let closedPort: number;
let tables: Record<string, string>;

function config(): string {
  return `
node: { id: a, hostname: tandem.test }
smtp: { listen: "127.0.0.1:0" }
spool: { root: ${dir}/spool }
local: { maildir_root: ${dir}/mail }
tables:
  local_domains: ${tables.local_domains}
  virtual_mailboxes: ${tables.virtual_mailboxes}
  aliases: ${tables.aliases}
  transport: ${tables.transport}
relay: { host: "127.0.0.1:${sink.port}", networks: ["127.0.0.0/8"] }
queue: { min_backoff: 1s, max_backoff: 2s }
delivery: { connect_timeout: 2s }
tracking: { path: ${dir}/tracking.log }
admin: { listen: "127.0.0.1:0" }
`;
}

/** Files delivered into a mailbox's new/ folder, parsed. */
async function mailbox(name: string) {
  const d = path.join(dir, 'mail', name, 'new');
  if (!existsSync(d)) return [];
  return Promise.all(readdirSync(d).map(async (f) => {
    const raw = readFileSync(path.join(d, f));
    return Object.assign(await simpleParser(raw), { raw: raw.toString('utf8') });
  }));
}


const msg = (subject: string, extra = '') => `From: alice@example.test\r\nSubject: ${subject}\r\n${extra}\r\nhello ${subject}\r\n`;

before(async () => {
  closedPort = await freePort();
  sink = await startSink({ failRcpt: [{ pattern: '^reject@', code: 550 }] });
  tables = writeTables(dir, {
    local_domains: 'example.test ok\n',
    virtual_mailboxes: 'alice@example.test alice/\nbob@example.test bob/\n',
    aliases: 'team@example.test alice@example.test, bob@example.test\n',
    transport: `down.test smtp:[127.0.0.1]:${closedPort}\n`,
  });
  node = await startNode({ config: writeNodeConfig(dir, {}, config()), admin: '127.0.0.1:0', logFile: path.join(dir, 'tandem.out') });
  adminUrl = `http://127.0.0.1:${node.admin!.port}`;
});

test('a list address is expanded and delivered into each member\'s Maildir, with tracking', async () => {
  const res = await sendMail(node.smtp.port, 'sender@remote.test', ['team@example.test'], msg('to the team'));
  assert.equal(res.ok, true, res.response);
  const [a, b] = await eventually('both mailboxes', async () => {
    const a = await mailbox('alice'); const b = await mailbox('bob');
    return a.length && b.length ? [a, b] : undefined;
  });
  assert.equal(a[0].subject, 'to the team');
  assert.match(a[0].raw, /^Delivered-To: alice@example\.test\r?$/m);
  assert.match(b[0].raw, /^Delivered-To: bob@example\.test\r?$/m);
  assert.match(String(a[0].headers.get('received')), /by tandem\.test \(Tandem\)/);
  const events = readFileSync(path.join(dir, 'tracking.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const mine = events.filter((e) => e.queueId === res.queueId);
  assert.deepEqual(mine.map((e) => e.event).filter((e) => e !== 'routed').sort(), ['delivered', 'delivered', 'received']);
  const routed = mine.filter((e) => e.event === 'routed').map((e) => e.nexthop).sort();
  assert.deepEqual(routed, [`maildir:${path.join(dir, 'mail', 'alice')}`, `maildir:${path.join(dir, 'mail', 'bob')}`]);
  assert.deepEqual(mine.filter((e) => e.event === 'delivered').map((e) => e.original), ['team@example.test', 'team@example.test']);
});

test('remote mail is relayed to the relay host; unknown local users get 550 5.1.1', async () => {
  const res = await sendMail(node.smtp.port, 'alice@example.test', ['someone@remote.test'], msg('relayed', 'X-Test-Id: e2e-relay-1\r\n'));
  assert.equal(res.ok, true, res.response);
  await sink.waitForCount(1, 15_000);
  const rec = sink.readRecords().find((r) => r.testId === 'e2e-relay-1');
  assert.ok(rec, 'the sink received the relayed message');
  assert.deepEqual(rec.to, ['someone@remote.test']);
  const unknown = await sendMail(node.smtp.port, 'x@remote.test', ['nobody@example.test'], msg('nobody'));
  assert.equal(unknown.ok, false);
  assert.match(unknown.response, /^550 5\.1\.1 /);
});

test('a permanent failure at the next hop bounces with an RFC 3464 DSN to the sender', async () => {
  const res = await sendMail(node.smtp.port, 'alice@example.test', ['reject@remote.test'], msg('will bounce'));
  assert.equal(res.ok, true);
  const dsn = await eventually('a DSN in alice\'s mailbox', async () => (await mailbox('alice')).find((m) => /Undelivered/i.test(m.subject ?? '')));
  assert.match(dsn.raw, /^Content-Type: multipart\/report;[^]*report-type="?delivery-status/im);
  assert.match(dsn.text ?? '', /reject@remote\.test/);
  // mailparser folds message/delivery-status into text: check the MIME part in the raw message
  const status = /Content-Type: message\/delivery-status[^]*?\r?\n\r?\n([^]*?)\r?\n--/i.exec(dsn.raw)?.[1];
  assert.ok(status, 'a message/delivery-status part');
  assert.match(status, /Final-Recipient: rfc822; ?reject@remote\.test/i);
  assert.match(status, /Action: failed/);
  assert.match(status, /Status: 5\.\d\.\d/);
  assert.match(status, /Diagnostic-Code: smtp; ?550/);
  // the DSN's envelope sender is null: the maildir copy says so
  assert.match(dsn.raw, /^Return-Path: <>\r?$/m);
});

test('NOTIFY=SUCCESS on a final delivery gets a "delivered" DSN; without it, none', async () => {
  const before = (await mailbox('bob')).length;
  const res = await sendMail(node.smtp.port, 'bob@example.test', ['alice@example.test'], msg('please confirm'), '127.0.0.1', { notify: 'SUCCESS', ret: 'HDRS' });
  assert.equal(res.ok, true, res.response);
  const dsn = await eventually('a success DSN for bob', async () => (await mailbox('bob')).find((m) => /Successful Mail Delivery|Delivery Status|delivered/i.test(m.subject ?? '')));
  assert.match(dsn.raw, /Action: delivered/);
  assert.match(dsn.raw, /Status: 2\.\d\.\d/);
  assert.match(dsn.raw, /Final-Recipient: rfc822; ?alice@example\.test/i);
  const plain = await sendMail(node.smtp.port, 'bob@example.test', ['alice@example.test'], msg('no receipt'));
  await eventually('the plain message delivered', async () => (await mailbox('alice')).some((m) => m.subject === 'no receipt'));
  assert.equal((await mailbox('bob')).length, before + 1, 'only the message with NOTIFY=SUCCESS was reported');
  assert.ok(plain.ok);
});

test('queue commands on a running node: deferred message listed, held, released, deleted', async () => {
  const res = await sendMail(node.smtp.port, 'alice@example.test', ['x@down.test'], msg('deferred'));
  assert.equal(res.ok, true);
  const id = res.queueId!;
  await eventually('the message to be deferred', async () => {
    const l = await runCli(['queue', 'list', '--admin', adminUrl, '--json']);
    return JSON.parse(l.stdout).rows.find((r: any) => r.queueId === id && r.state === 'deferred');
  });
  const show = await runCli(['queue', 'show', id, '--admin', adminUrl]);
  assert.equal(show.code, 0, show.stderr);
  assert.match(show.stdout, /recipient: <x@down\.test>: pending/);
  assert.match(show.stdout, /deferred: +\d+ attempt/);
  assert.equal((await runCli(['queue', 'hold', id, '--admin', adminUrl])).code, 0);
  let listed = JSON.parse((await runCli(['queue', 'list', '--admin', adminUrl, '--json'])).stdout);
  assert.equal(listed.rows.find((r: any) => r.queueId === id)?.state, 'hold');
  const rel = await runCli(['queue', 'release', id, '--admin', adminUrl]);
  assert.match(rel.stdout, /released/);
  const flush = await runCli(['queue', 'flush', '--admin', adminUrl]);
  assert.equal(flush.code, 0);
  await eventually('delete to succeed', async () => /deleted/.test((await runCli(['queue', 'delete', id, '--admin', adminUrl])).stdout));
  listed = JSON.parse((await runCli(['queue', 'list', '--admin', adminUrl, '--json'])).stdout);
  assert.equal(listed.rows.find((r: any) => r.queueId === id), undefined);
  const missing = await runCli(['queue', 'show', 'NOSUCHID.X.a', '--admin', adminUrl]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /no message NOSUCHID/);
});

test('SIGHUP reloads tables: a new mailbox is accepted without a restart', async () => {
  const before = await sendMail(node.smtp.port, 'x@remote.test', ['carol@example.test'], msg('carol'));
  assert.match(before.response, /^550 5\.1\.1/);
  appendFileSync(tables.virtual_mailboxes, 'carol@example.test carol/\n');
  node.proc.kill('SIGHUP');
  await node.proc.waitForLine((l) => l.json?.event === 'reloaded', 10_000);
  const res = await sendMail(node.smtp.port, 'x@remote.test', ['carol@example.test'], msg('carol'));
  assert.equal(res.ok, true, res.response);
  await eventually('carol\'s mail', async () => (await mailbox('carol')).length === 1);
});

test('config check names the key, the value and what is allowed (exit 78)', async () => {
  const good = await runCli(['config', 'check', path.join(dir, 'tandem.yaml')]);
  assert.equal(good.code, 0, good.stdout + good.stderr);
  assert.match(good.stdout, /configuration OK/);
  const badFile = path.join(dir, 'bad.yaml');
  appendFileSync(badFile, 'queue:\n  max_lifetime: "five days"\n');
  const bad = await runCli(['config', 'check', badFile]);
  assert.equal(bad.code, 78);
  assert.match(bad.stdout, /queue\.max_lifetime: .*not a duration.*"five days"/);
});

test('the admin API reports health for the load balancer and Prometheus metrics', async () => {
  const health = await fetch(`${adminUrl}/health`);
  assert.equal(health.status, 200);
  assert.deepEqual(await health.json(), { status: 'ready', state: 'ready', node: 'a' });
  const metrics = await (await fetch(`${adminUrl}/metrics`)).text();
  const received = Number(/^tandem_messages_received_total (\d+)/m.exec(metrics)?.[1]);
  assert.ok(received >= 3, `tandem_messages_received_total counts accepted mail (got ${received})`);
  assert.match(metrics, /^tandem_deliveries_total\{outcome="delivered",channel="maildir"\} \d+/m);
  assert.match(metrics, /^tandem_deliveries_total\{outcome="failed",channel="smtp"\} \d+/m);
  assert.match(metrics, /^tandem_queue_messages\{state="deferred"\} \d+/m);
  assert.match(metrics, /^tandem_dsn_total\{kind="failure"\} 1$/m);
});

test('SIGTERM stops the node gracefully (exit 0); the stopped spool is listed and changed offline', async () => {
  const res = await sendMail(node.smtp.port, 'alice@example.test', ['y@down.test'], msg('left queued'));
  assert.equal(res.ok, true);
  const spoolDir = path.join(dir, 'spool', 'a');
  const busy = await runCli(['queue', 'hold', res.queueId!, '--spool', spoolDir]);
  assert.equal(busy.code, 75, 'a running node owns its spool');
  const exit = await node.proc.stop(20_000);
  assert.equal(exit.code, 0);
  const list = await runCli(['queue', 'list', '--spool', spoolDir]);
  assert.equal(list.code, 0);
  assert.match(list.stdout, new RegExp(res.queueId!.replace(/\./g, '\\.')));
  const del = await runCli(['queue', 'delete', res.queueId!, '--spool', spoolDir]);
  assert.equal(del.code, 0, del.stderr);
  const after = await runCli(['queue', 'list', '--spool', spoolDir, '--json']);
  assert.equal(JSON.parse(after.stdout).rows.some((r: any) => r.queueId === res.queueId), false);
});

test('a SIGTERM during the start (as soon as the pid file is written) stops the node gracefully once it is up: exit 0, never killed by the default action', async () => {
  const d = mkdtempSync(path.join(os.tmpdir(), 'tandem-early-term-'));
  const pidFile = path.join(d, 'tandem.pid');
  const proc = await spawnProcess(process.execPath, [...cliArgs(), 'start', '--config', writeNodeConfig(d), '--listen', '127.0.0.1:0', '--pid-file', pidFile], { name: 'early-sigterm' });
  try {
    await eventually('the pid file', () => existsSync(pidFile), 30_000);
    process.kill(proc.pid, 'SIGTERM');
    const exit = await proc.exited;
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, proc.output());
    const events = proc.output().split('\n').filter((l) => l.startsWith('{')).map((l) => String(JSON.parse(l).event));
    assert.ok(events.includes('ready') && events.includes('stopped'), `started, then stopped: ${events.join(', ')}`);
    assert.equal(existsSync(pidFile), false, 'the pid file is removed');
  } finally {
    await proc.killHard();
  }
});
