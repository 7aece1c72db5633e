/**
 * bad-input.test.ts — a node process faced with damaged data: damaged queue files in its spool,
 * a full disk under the spool, and malformed SMTP from clients. What a mail administrator needs
 * in every case: nothing acknowledged is lost, damaged files are kept aside in corrupt/ with a
 * warning naming them, a client is never told 250 for mail that is not safely queued (nor 5xx
 * for our own trouble), and the node keeps accepting and delivering mail afterwards.
 *
 * Processes: Tandem nodes and sink processes, all stopped in after(). The full-disk test mounts
 * a 3 MB tmpfs as the spool root (needs root; skipped with the reason otherwise) and unmounts it
 * in after(), even when the test fails.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trackProcesses } from './harness/procs.ts';
import { startSink, type Sink } from './harness/sink.ts';
import { startNode, writeNodeConfig, type RunningNode } from './harness/node.ts';
import { freePort } from './harness/ports.ts';
import { sendMail } from './harness/smtp-client.ts';
import { RawSmtpClient, type RawReply } from './harness/raw-smtp.ts';
import { makeQueueIdGenerator } from '../src/spool/queueid.ts';
import { eventually } from './harness/wait.ts';

const procs = trackProcesses();
const mounts: string[] = [];
after(async () => {
  await procs.stopAll();
  for (const m of mounts) {
    const r = spawnSync('umount', [m], { encoding: 'utf8' });
    if (r.status !== 0) console.error(`# could not unmount ${m}: ${r.stderr}`);
  }
});


/** A message with an X-Test-Id header (the sink records it) and `bodyBytes` of text body. */
function testMessage(testId: string, bodyBytes = 100): string {
  const line = 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd\r\n';
  return `From: sender@client.test\r\nSubject: ${testId}\r\nX-Test-Id: ${testId}\r\n\r\n${line.repeat(Math.ceil(bodyBytes / line.length))}`;
}

const files = (dir: string) => (existsSync(dir) ? readdirSync(dir).sort() : []);
const show = (r: RawReply) => (r.type === 'reply' ? r.text : JSON.stringify(r));

test('damaged queue files are moved to corrupt/ with a warning; good mail is still delivered', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-bad-spool-'));
  const sinkPort = await freePort(); // nothing listens yet: mail stays deferred
  const config = writeNodeConfig(dir, {
    node: { id: 'bi', hostname: 'tandem.test' },
    relay: { host: `127.0.0.1:${sinkPort}` },
    queue: { min_backoff: '500ms', max_backoff: '1s' },
    delivery: { connect_timeout: '2s' },
  });
  const spool = path.join(dir, 'spool', 'bi');
  let node = await startNode({ config, logFile: path.join(dir, 'node-1.out') });
  const sent = await sendMail(node.smtp.port, 'sender@client.test', ['rcpt@remote.test'], testMessage('bi-deferred', 8_000));
  assert.equal(sent.ok, true, sent.response);
  const goodId = sent.queueId!;
  await eventually('the message to be deferred (next hop down)', () => files(path.join(spool, 'deferred')).includes(goodId));
  assert.equal((await node.stop()).code, 0);

  // with the node stopped: a garbage file in active/, a truncated copy of a real queue file
  // and an empty file in deferred/, each under a well-formed queue id of this node
  const newId = makeQueueIdGenerator('bi');
  const [garbageId, truncatedId, emptyId] = [newId(), newId(), newId()];
  const good = readFileSync(path.join(spool, 'deferred', goodId));
  const damaged = new Map<string, { state: string; bytes: Buffer }>([
    [garbageId, { state: 'active', bytes: Buffer.from('this is not a queue file\n\0\xff\xfe garbage') }],
    [truncatedId, { state: 'deferred', bytes: good.subarray(0, Math.floor(good.length / 2)) }],
    [emptyId, { state: 'deferred', bytes: Buffer.alloc(0) }],
  ]);
  for (const [id, { state, bytes }] of damaged) writeFileSync(path.join(spool, state, id), bytes);

  node = await startNode({ config, logFile: path.join(dir, 'node-2.out') });
  for (const [id, { state }] of damaged) {
    const warning = await node.proc.waitForLine((l) => l.json?.level === 40 && l.json?.queueId === id, 5_000)
      .catch(() => assert.fail(`no warning naming ${id} (damaged, in ${state}/); output:\n${node.proc.output()}`));
    assert.match(String(warning.json?.msg), /corrupt/, warning.text);
  }
  // the scan of the spool runs on after the node is ready; it logs when it is through
  const recovered = (await node.proc.waitForLine((l) => l.json?.event === 'spool-recovered', 10_000)).json;
  assert.equal(recovered?.quarantined, 3, JSON.stringify(recovered));
  assert.deepEqual(files(path.join(spool, 'corrupt')), [...damaged.keys()].sort(), 'all three in corrupt/');
  for (const [id, { bytes }] of damaged) {
    assert.ok(readFileSync(path.join(spool, 'corrupt', id)).equals(bytes), `${id} kept byte for byte`);
  }
  for (const state of ['incoming', 'active', 'hold']) assert.deepEqual(files(path.join(spool, state)), [], `${state}/ is clean`);
  assert.deepEqual(files(path.join(spool, 'deferred')), [goodId], 'the good message is still queued');

  const sink = await startSink({ listen: `127.0.0.1:${sinkPort}` });
  await eventually('the deferred message at the sink once it is up', () => sink.readRecords().find((r) => r.testId === 'bi-deferred'));
  await eventually('the delivered message to leave the spool', () => files(path.join(spool, 'deferred')).length === 0);

  const fresh = await sendMail(node.smtp.port, 'sender@client.test', ['other@remote.test'], testMessage('bi-after-corrupt'));
  assert.equal(fresh.ok, true, fresh.response);
  await eventually('the new message at the sink', () => sink.readRecords().find((r) => r.testId === 'bi-after-corrupt'));
  assert.deepEqual(sink.countsByTestId(), new Map([['bi-deferred', 1], ['bi-after-corrupt', 1]]));
  assert.deepEqual(files(path.join(spool, 'corrupt')), [...damaged.keys()].sort(), 'corrupt/ is never emptied by the node');
  assert.equal(node.proc.exitStatus, undefined, 'the node is still running');
});

test('full disk: a message that does not fit gets 451 4.3.0, leaves nothing behind, and is accepted once there is room', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-full-'));
  const mnt = path.join(dir, 'spoolfs');
  mkdirSync(mnt);
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', mnt], { encoding: 'utf8' });
  if (mounted.error || mounted.status !== 0) {
    t.skip(`needs root to mount a tmpfs: ${mounted.error?.message ?? mounted.stderr.trim()}`);
    return;
  }
  mounts.push(mnt);
  const sink = await startSink();
  const config = writeNodeConfig(dir, {
    node: { id: 'fd', hostname: 'tandem.test' },
    // the free-space floor off: this is the case of space running out after MAIL (the floor's
    // early 452 is tested in hostile-clients.test.ts)
    spool: { root: mnt, min_free: 0 },
    relay: { host: sink.address },
    tracking: { path: path.join(dir, 'tracking.log') }, // not on the small disk
  });
  const node = await startNode({ config, logFile: path.join(dir, 'node.out') });
  const spool = path.join(mnt, 'fd');

  const filler = path.join(mnt, 'filler');
  const free = () => { const s = statfsSync(mnt); return s.bavail * s.bsize; };
  writeFileSync(filler, Buffer.alloc(free() - 100 * 1024));
  assert.ok(free() <= 150 * 1024, `about 100 KB left, not ${free()}`);

  const big = testMessage('fd-big', 500 * 1024);
  const refused = await sendMail(node.smtp.port, 'sender@client.test', ['rcpt@remote.test'], big);
  assert.equal(refused.ok, false, `a message that cannot be stored must not get 250: ${refused.response}`);
  assert.match(refused.response, /^451 4\.3\.0 /, 'a temporary failure: the client keeps the message and retries');
  for (const state of ['tmp', 'incoming', 'active', 'deferred']) {
    assert.deepEqual(files(path.join(spool, state)), [], `nothing half-written left in ${state}/`);
  }
  await node.proc.waitForLine((l) => l.json?.level === 50 && /spool commit failed/.test(String(l.json?.msg)), 5_000);
  assert.equal(node.proc.exitStatus, undefined, 'the node is still running');

  rmSync(filler);
  const accepted = await sendMail(node.smtp.port, 'sender@client.test', ['rcpt@remote.test'], big);
  assert.equal(accepted.ok, true, accepted.response);
  const rec = await eventually('the message at the sink', () => sink.readRecords().find((r) => r.testId === 'fd-big'));
  assert.ok(rec.size >= 500 * 1024, `the whole message arrived (${rec.size} bytes)`);
  await eventually('the spool to drain', () => ['incoming', 'active', 'deferred'].every((s) => files(path.join(spool, s)).length === 0));
  assert.equal(sink.countsByTestId().get('fd-big'), 1, 'the refused attempt was not delivered as well');
  await node.stop();
  // the tracking log is what an administrator searches: a message refused with 451 was never
  // queued, so it must not appear as `received` (it would look like mail lost in the queue)
  const received = readFileSync(path.join(dir, 'tracking.log'), 'utf8').trim().split('\n')
    .map((l) => JSON.parse(l)).filter((e) => e.event === 'received').map((e) => e.queueId);
  assert.deepEqual(received, [accepted.queueId], 'only the message that got 250 is logged as received');
});

test('malformed SMTP input gets a clear error or a closed connection, never a hang, and the node keeps serving', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-badsmtp-'));
  const sink: Sink = await startSink();
  const node: RunningNode = await startNode({
    config: writeNodeConfig(dir, { node: { id: 'ms', hostname: 'tandem.test' }, relay: { host: sink.address } }),
    logFile: path.join(dir, 'node.out'),
  });
  const port = node.smtp.port;
  let n = 0;

  /** A client that sends well-formed mail afterwards is accepted and its mail delivered. */
  const stillServes = async () => {
    const id = `ms-ok-${++n}`;
    const res = await sendMail(port, 'sender@client.test', ['rcpt@remote.test'], testMessage(id));
    assert.equal(res.ok, true, `a normal message after the bad input: ${res.response}`);
    await eventually(`${id} at the sink`, () => sink.readRecords().find((r) => r.testId === id));
  };
  /** Connected, greeted, EHLO done. */
  const session = async () => {
    const c = await RawSmtpClient.connect(port);
    assert.match(show(await c.readReply()), /^220 /);
    assert.match(show(await c.command('EHLO client.test')), /^250 /m);
    return c;
  };
  const refused = (r: RawReply, what: string) =>
    assert.ok(r.type === 'closed' || (r.type === 'reply' && r.code >= 400 && r.code < 600), `${what}: want a 4xx/5xx or a closed connection, got ${show(r)}`);
  const clear = (r: RawReply, what: string) =>
    assert.ok(r.type === 'closed' || (r.type === 'reply' && r.code >= 200 && r.code < 600), `${what}: want an SMTP reply or a closed connection, got ${show(r)}`);

  await t.test('commands ending in bare LF', async () => {
    const c = await RawSmtpClient.connect(port);
    assert.match(show(await c.readReply()), /^220 /);
    for (const line of ['EHLO client.test', 'MAIL FROM:<lf@client.test>', 'RCPT TO:<lf@remote.test>', 'RSET', 'QUIT']) {
      c.write(`${line}\n`);
      const r = await c.readReply();
      clear(r, line);
      if (r.type === 'closed') break;
    }
    c.close();
    await stillServes();
  });

  await t.test('a NUL byte in MAIL FROM and in RCPT TO', async () => {
    const c = await session();
    refused(await c.command('MAIL FROM:<nul\0byte@client.test>'), 'NUL in MAIL FROM');
    if (!c.isClosed) {
      const mail = await c.command('MAIL FROM:<sender@client.test>');
      if (mail.type === 'reply' && mail.code === 250) refused(await c.command('RCPT TO:<nul\0byte@remote.test>'), 'NUL in RCPT TO');
    }
    c.close();
    await stillServes();
  });

  await t.test('a 1 MB command line, and 1 MB without any line ending', async () => {
    const long = await session();
    long.write(`MAIL FROM:<${'a'.repeat(1 << 20)}@client.test>\r\n`);
    refused(await long.readReply(10_000), '1 MB MAIL FROM line');
    long.close();
    const endless = await session();
    endless.write('x'.repeat(1 << 20));
    refused(await endless.readReply(10_000), '1 MB without a line ending');
    endless.close();
    await stillServes();
  });

  await t.test('50 pipelined garbage commands', async () => {
    const c = await session();
    c.write(Array.from({ length: 50 }, (_, i) => `\x01\x7fGARBAGE${i} \xff\xfe <>@@\r\n`).join(''));
    const replies: RawReply[] = [];
    for (let i = 0; i < 50; i++) {
      const r = await c.readReply();
      if (r.type === 'closed') break;
      replies.push(r);
    }
    assert.ok(replies.length > 0 || c.isClosed, 'some answer');
    for (const r of replies) refused(r, 'a garbage command');
    c.close();
    await stillServes();
  });

  await t.test('a DATA body with bare LF line endings and NUL bytes: refused, or accepted and delivered', async () => {
    const c = await session();
    assert.match(show(await c.command('MAIL FROM:<sender@client.test>')), /^250 /);
    assert.match(show(await c.command('RCPT TO:<rcpt@remote.test>')), /^250 /);
    assert.match(show(await c.command('DATA')), /^354 /);
    const body = 'From: sender@client.test\nSubject: bare LF\nX-Test-Id: ms-bare-lf\n\nline one\nline\0two with a NUL\n.\nMAIL FROM:<smuggled@client.test>\nthe end\n';
    c.write(`${body}\r\n.\r\n`);
    const r = await c.readReply(10_000);
    clear(r, 'end of a bare-LF DATA');
    await c.command('QUIT');
    c.close();
    if (r.type === 'reply' && r.code === 250) {
      const rec = await eventually('the accepted bare-LF message at the sink', () => sink.readRecords().find((x) => x.testId === 'ms-bare-lf'));
      assert.deepEqual(rec.to, ['rcpt@remote.test']);
      assert.ok(rec.size >= body.length, `the whole body arrived (${rec.size} bytes)`);
    } else {
      refused(r, 'end of a bare-LF DATA');
    }
    await stillServes();
    assert.equal(sink.readRecords().some((x) => x.from === 'smuggled@client.test'), false, 'nothing smuggled after a bare-LF dot line');
  });

  assert.equal(node.proc.exitStatus, undefined, 'the node is still running');
  const counts = sink.countsByTestId();
  for (let i = 1; i <= n; i++) assert.equal(counts.get(`ms-ok-${i}`), 1, `ms-ok-${i} delivered exactly once`);
});
