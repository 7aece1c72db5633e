/**
 * hostile-clients.test.ts — a raw-socket attacker against a node process, from a loopback
 * address outside relay.networks (127.0.0.2; only 127.0.0.1 is trusted): per-client
 * connection limits, command and DATA deadlines, stress timeouts, error and junk command
 * limits, parameter and header checks, untrusted routing, and the spool free-space floor.
 * Each refusal shows in /metrics (tandem_smtp_limit_refusals_total).
 * Legit mail goes to a local Maildir (example.test); relay.test is a relay domain.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trackProcesses } from './harness/procs.ts';
import { startNode, writeNodeConfig, type RunningNode } from './harness/node.ts';
import { writeTables } from './harness/tandem.ts';
import { sendMail } from './harness/smtp-client.ts';
import { RawSmtpClient, type RawReply } from './harness/raw-smtp.ts';
import { eventually } from './harness/wait.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

const ATTACKER = '127.0.0.2';
const OTHER = '127.0.0.3';
const show = (r: RawReply) => (r.type === 'reply' ? r.text : JSON.stringify(r));

async function metrics(node: RunningNode): Promise<string> {
  return (await fetch(`http://127.0.0.1:${node.admin!.port}/metrics`)).text();
}

function refusals(text: string, limit: string): number {
  const m = new RegExp(`tandem_smtp_limit_refusals_total\\{limit="${limit}"\\} (\\d+)`).exec(text);
  return m ? Number(m[1]) : 0;
}

/** Connect from `from` and read the greeting. */
async function greeted(port: number, from: string): Promise<RawSmtpClient> {
  const c = await RawSmtpClient.connect(port, '127.0.0.1', 5000, from);
  const greeting = await c.readReply(10_000);
  assert.ok(greeting.type === 'reply' && greeting.code === 220, `greeting: ${show(greeting)}`);
  return c;
}

/** Connect from `from`, read the greeting, EHLO. */
async function session(port: number, from: string): Promise<RawSmtpClient> {
  const c = await greeted(port, from);
  assert.match(show(await c.command('EHLO attacker.test')), /^250/);
  return c;
}

/** As session(), once the node has counted the address's earlier connections as closed (their closes reach it a moment after ours). */
async function sessionOnceFree(port: number, from: string): Promise<RawSmtpClient> {
  const end = Date.now() + 10_000;
  for (;;) {
    try {
      return await session(port, from);
    } catch (err) {
      if (Date.now() > end || !/too many connections/.test(String((err as Error).message))) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function mailCount(dir: string): number {
  const d = path.join(dir, 'mail', 'bob', 'new');
  return existsSync(d) ? readdirSync(d).length : 0;
}

async function startTestNode(dir: string, smtp: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<RunningNode> {
  const tables = writeTables(dir, { virtual_mailboxes: 'bob@example.test bob/\n' });
  return startNode({
    config: writeNodeConfig(dir, {
      node: { id: 'h', hostname: 'tandem.test' },
      smtp,
      relay: { networks: ['127.0.0.1/32'], domains: ['relay.test'] },
      local: { domains: ['example.test'], maildir_root: path.join(dir, 'mail') },
      tables: { virtual_mailboxes: tables.virtual_mailboxes },
      ...extra,
    }),
    admin: '127.0.0.1:0',
    logFile: path.join(dir, 'tandem.out'),
  });
}

describe('a hostile client against one node', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-hostile-'));
  let node: RunningNode;

  before(async () => {
    // a shorter error sleep than Postfix's 1 s keeps the junk-command test short
    node = await startTestNode(dir, { max_connections: 100, socket_timeout: '3s', limits: { error_sleep_time: '500ms' } });
  });

  test('one client with 500 connections holds at most 50 of them; another client is still served', async () => {
    const held: RawSmtpClient[] = [];
    try {
      const opened = await Promise.allSettled(Array.from({ length: 500 }, () => RawSmtpClient.connect(node.smtp.port, '127.0.0.1', 10_000, ATTACKER)));
      for (const o of opened) if (o.status === 'fulfilled') held.push(o.value);
      const replies = await Promise.all(held.map((c) => c.readReply(15_000).catch(() => ({ type: 'closed' } as RawReply))));
      const greeted = replies.filter((r) => r.type === 'reply' && r.code === 220).length;
      assert.ok(greeted <= 50, `the attacker got ${greeted} sessions (limit 50)`);
      assert.ok(replies.some((r) => r.type === 'reply' && /^421 4\.7\.0 .*too many connections from 127\.0\.0\.2/m.test(r.text)),
        'the connections over the limit are told why');
      // while the attacker still holds its 50 sessions
      const res = await sendMail(node.smtp.port, 'x@client.test', ['bob@example.test'], 'Subject: served\r\n\r\nstill served\r\n', '127.0.0.1');
      assert.equal(res.ok, true, res.response);
      const other = await RawSmtpClient.connect(node.smtp.port, '127.0.0.1', 5000, OTHER);
      assert.match(show(await other.readReply(10_000)), /^220 /, 'a client from another address is greeted');
      other.close();
      assert.ok(refusals(await metrics(node), 'client_connections') >= 1);
    } finally {
      for (const c of held) c.close();
    }
  });

  test('an idle client is cut at the command deadline (421 4.4.2), a trickle of bytes does not extend it', async () => {
    const c = await sessionOnceFree(node.smtp.port, ATTACKER);
    const start = Date.now();
    c.write('NO'); // half a command, then more bytes now and then: not a command
    const trickle = setInterval(() => c.write('O'), 500);
    try {
      const r = await c.readReply(10_000);
      assert.match(show(r), /^421 4\.4\.2 /);
      assert.ok(Date.now() - start < 6000, `cut after ${Date.now() - start} ms (deadline 3 s)`);
      assert.equal(await c.waitClosed(5000), true);
    } finally {
      clearInterval(trickle);
      c.close();
    }
  });

  test('a DATA phase trickled at a few bytes a second is cut (421 4.4.2) and nothing is queued', async () => {
    const before = mailCount(dir);
    const c = await session(node.smtp.port, ATTACKER);
    assert.match(show(await c.command('MAIL FROM:<slow@client.test>')), /^250/);
    assert.match(show(await c.command('RCPT TO:<bob@example.test>')), /^250/);
    assert.match(show(await c.command('DATA')), /^354/);
    c.write('Subject: slow\r\n\r\n');
    const trickle = setInterval(() => c.write('x'), 200);
    try {
      const r = await c.readReply(15_000);
      assert.match(show(r), /^421 4\.4\.2 .*timeout exceeded while receiving the message/);
    } finally {
      clearInterval(trickle);
      c.close();
    }
    assert.equal(mailCount(dir), before, 'the partial message was not delivered');
    assert.ok(refusals(await metrics(node), 'data_timeout') >= 1);
  });

  test('junk commands beyond 100 count as errors: the session ends with 421 4.7.0 after 20 of them', async () => {
    const c = await session(node.smtp.port, ATTACKER);
    let n = 0;
    let last: RawReply = { type: 'closed' };
    for (; n < 200; n++) {
      last = await c.command('NOOP');
      if (!(last.type === 'reply' && last.code === 250)) break;
    }
    if (last.type === 'reply' && last.code === 250) last = await c.readReply(); // the 421 follows the limit's reply
    assert.match(show(last), /^421 4\.7\.0 .*too many errors/);
    assert.ok(n >= 100 && n <= 121, `NOOPs answered: ${n}`);
    assert.equal(await c.waitClosed(5000), true);
  });

  test('after 10 errors every reply comes 0.5 s late (smtpd_soft_error_limit, smtpd_error_sleep_time); the 20th ends the session', async () => {
    const c = await session(node.smtp.port, ATTACKER);
    const timed = async (line: string) => {
      const start = Date.now();
      const reply = await c.command(line);
      return { reply, ms: Date.now() - start };
    };
    let fast = 0;
    for (let i = 1; i <= 10; i++) {
      const { reply, ms } = await timed('RCPT TO:<bob@example.test>'); // no MAIL yet: 503
      assert.match(show(reply), /^503 /);
      fast += ms;
    }
    assert.ok(fast < 10 * 500, `the first 10 errors were not delayed (${fast} ms for all 10)`);
    for (let i = 11; i <= 15; i++) {
      const { reply, ms } = await timed('RCPT TO:<bob@example.test>');
      assert.match(show(reply), /^503 /);
      assert.ok(ms >= 490, `error ${i} answered after ${ms} ms, not after the 500 ms error sleep`);
    }
    const ok = await timed('RSET');
    assert.match(show(ok.reply), /^250 /);
    assert.ok(ok.ms >= 490, `every reply is delayed after the soft limit, a 250 too (${ok.ms} ms)`);
    for (let i = 16; i <= 19; i++) assert.match(show(await c.command('RCPT TO:<bob@example.test>')), /^503 /);
    assert.match(show(await c.command('RCPT TO:<bob@example.test>')), /^503 /, 'the 20th error is answered');
    assert.match(show(await c.readReply()), /^421 4\.7\.0 .*too many errors/, 'then the session ends (hard limit 20)');
    assert.equal(await c.waitClosed(5000), true);
  });

  test('unknown MAIL/RCPT parameters get 555 5.5.4; ENVID over 100 and ORCPT over 500 characters get 501 5.5.4', async () => {
    const c = await session(node.smtp.port, ATTACKER);
    assert.match(show(await c.command('MAIL FROM:<a@client.test> FOO=bar')), /^555 5\.5\.4 /);
    assert.match(show(await c.command(`MAIL FROM:<a@client.test> ENVID=${'e'.repeat(101)}`)), /^501 5\.5\.4 .*ENVID/);
    assert.match(show(await c.command(`MAIL FROM:<a@client.test> ENVID=${'e'.repeat(100)}`)), /^250/);
    assert.match(show(await c.command('RCPT TO:<bob@example.test> XYZZY=1')), /^555 5\.5\.4 /);
    assert.match(show(await c.command(`RCPT TO:<bob@example.test> ORCPT=rfc822;${'o'.repeat(494)}@x.test`)), /^501 5\.5\.4 .*ORCPT/);
    assert.match(show(await c.command(`RCPT TO:<bob@example.test> ORCPT=rfc822;${'o'.repeat(486)}@x.test`)), /^250/);
    await c.command('QUIT');
    c.close();
  });

  test('the percent hack and bang paths into a relay domain are refused for untrusted clients (554 5.7.1)', async () => {
    const c = await session(node.smtp.port, ATTACKER);
    assert.match(show(await c.command('MAIL FROM:<a@client.test>')), /^250/);
    assert.match(show(await c.command('RCPT TO:<victim%elsewhere.test@relay.test>')), /^554 5\.7\.1 .*routing/);
    assert.match(show(await c.command('RCPT TO:<elsewhere.test!victim@relay.test>')), /^554 5\.7\.1 /);
    assert.match(show(await c.command('RCPT TO:<someone@relay.test>')), /^250/, 'a plain address in the relay domain is fine');
    await c.command('QUIT');
    c.close();
  });

  test('a header field over 100 KiB gets 552 5.6.0, more than 50 Received: headers 554 5.4.6; nothing is delivered', async () => {
    const before = mailCount(dir);
    const big = await sendMail(node.smtp.port, 'a@client.test', ['bob@example.test'], `Subject: big\r\nX-Big: ${'y'.repeat(110_000)}\r\n\r\nbody\r\n`);
    assert.match(big.response, /^552 5\.6\.0 /);
    const folded = await sendMail(node.smtp.port, 'a@client.test', ['bob@example.test'], `Subject: folded\r\nX-Big: a\r\n${' b'.repeat(60_000).replace(/(.{900})/g, '$1\r\n ')}\r\n\r\nbody\r\n`);
    assert.match(folded.response, /^552 5\.6\.0 /, 'continuation lines count toward the field');
    const loop = await sendMail(node.smtp.port, 'a@client.test', ['bob@example.test'], `${'Received: from x by y; Thu, 1 Jan 2026 00:00:00 +0000\r\n'.repeat(51)}Subject: loop\r\n\r\nbody\r\n`);
    assert.match(loop.response, /^554 5\.4\.6 /);
    const fifty = await sendMail(node.smtp.port, 'a@client.test', ['bob@example.test'], `${'Received: from x by y; Thu, 1 Jan 2026 00:00:00 +0000\r\n'.repeat(49)}Subject: ok\r\n\r\nbody\r\n`);
    assert.equal(fifty.ok, true, fifty.response);
    await eventually('the one good message delivered', () => mailCount(dir) === before + 1);
  });
});

describe('stress: near the connection limit idle clients get the short timeout', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-stress-'));
  let node: RunningNode;
  before(async () => {
    node = await startTestNode(dir, { max_connections: 10, socket_timeout: '300s', limits: { stress_percent: 50, stress_timeout: '1s' } });
  });

  test('a session already idle when stress begins gets the short deadline too (not the 300 s it started with)', async () => {
    const early = await session(node.smtp.port, ATTACKER); // 1 of 10 slots: its deadline is 300 s
    let others: RawSmtpClient[] = [];
    try {
      // five more: 6 of 10, stress from 5
      others = await Promise.all(Array.from({ length: 5 }, () => greeted(node.smtp.port, ATTACKER)));
      const start = Date.now();
      assert.match(show(await early.readReply(15_000)), /^421 4\.4\.2 .*timeout/);
      assert.ok(Date.now() - start < 10_000, `closed ${Date.now() - start} ms after stress began`);
      assert.equal(await early.waitClosed(5000), true);
      // the five were greeted under stress: they go after 1 s as well (and free their slots for the next test)
      for (const r of await Promise.all(others.map((c) => c.readReply(15_000)))) assert.match(show(r), /^421 4\.4\.2 /);
    } finally {
      early.close();
      for (const c of others) c.close();
    }
  });

  test('with 6 of 10 slots taken, an idle session is closed after about 1 s, not 300 s', async () => {
    // all six connected and greeted first, then EHLO: each command deadline is set while the node is near its limit
    const held = await Promise.all(Array.from({ length: 6 }, () => greeted(node.smtp.port, ATTACKER)));
    for (const c of held) assert.match(show(await c.command('EHLO attacker.test')), /^250/);
    try {
      const start = Date.now();
      const replies = await Promise.all(held.map((c) => c.readReply(15_000)));
      for (const r of replies) assert.match(show(r), /^421 4\.4\.2 /);
      assert.ok(Date.now() - start < 10_000, `closed after ${Date.now() - start} ms`);
      assert.ok(refusals(await metrics(node), 'command_timeout') >= 6);
    } finally {
      for (const c of held) c.close();
    }
  });
});

describe('spool free-space floor', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-minfree-'));
  let node: RunningNode;
  before(async () => {
    node = await startTestNode(dir, {}, { spool: { root: path.join(dir, 'spool'), min_free: '100000000GiB' } });
  });

  test('below spool.min_free, MAIL gets 452 4.3.1 (never a 250 that could not be kept)', async () => {
    const c = await session(node.smtp.port, OTHER);
    assert.match(show(await c.command('MAIL FROM:<a@client.test>')), /^452 4\.3\.1 /);
    await c.command('QUIT');
    c.close();
  });
});
