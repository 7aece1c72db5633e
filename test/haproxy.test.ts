/**
 * haproxy.test.ts — two real Tandem nodes behind a real HAProxy (test/harness/haproxy.ts:
 * round robin, HTTP check of each node's admin /health, PROXY v2 to the SMTP ports), each
 * node relaying to its own real sink process, so the sinks count what each node delivered.
 *
 *  (a) mail through the balancer reaches both nodes, and the Received: header names the real
 *      client (127.0.0.2) carried by PROXY v2, not the balancer;
 *  (b) `tandem node drain` takes a node out: HAProxy marks it DOWN, new mail all goes to the
 *      other, the drained node still delivers what it had queued; `resume` brings it back UP;
 *  (c) kill -9 of a node (its whole process group): DOWN within ~2 s; a retrying client loses
 *      nothing it got 250 for (the killed node's queue is delivered when it restarts on its spool);
 *  (d) the shipped deploy/haproxy.cfg passes `haproxy -c`, and, with the example addresses
 *      replaced by these nodes' and the daemon/chroot/user lines dropped, carries mail to both.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trackProcesses } from './harness/procs.ts';
import { startSink, type Sink } from './harness/sink.ts';
import { startNode, writeNodeConfig, type RunningNode } from './harness/node.ts';
import { startHaproxy, runHaproxyConfig, HAPROXY_BIN, type Haproxy } from './harness/haproxy.ts';
import { execFileSync } from 'node:child_process';
import { REPO_ROOT } from './harness/node.ts';
import { freePort } from './harness/ports.ts';
import { runCli, writeTables } from './harness/tandem.ts';
import { sendMail } from './harness/smtp-client.ts';
import { RawSmtpClient } from './harness/raw-smtp.ts';
import { runLoad } from './harness/load.ts';
import { eventually } from './harness/wait.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-haproxy-test-'));
const TOKEN = 'lb-test-token';

interface Member { name: string; dir: string; config: string; smtpPort: number; adminPort: number; sinkPort: number; sinkOut: string; node: RunningNode; sink: Sink }
const members: Record<'a' | 'b', Member> = {} as any;
let lb: Haproxy;

async function startMember(name: 'a' | 'b'): Promise<RunningNode> {
  const m = members[name];
  return startNode({ config: m.config, listen: `127.0.0.1:${m.smtpPort}`, admin: `127.0.0.1:${m.adminPort}`, logFile: path.join(m.dir, 'tandem.out') });
}

before(async () => {
  for (const name of ['a', 'b'] as const) {
    const d = path.join(dir, name);
    mkdirSync(d);
    const sink = await startSink({ out: path.join(d, 'sink.jsonl') });
    const tables = writeTables(d, { virtual_mailboxes: 'bob@example.test bob/\n' });
    const config = writeNodeConfig(d, {
      node: { id: name, hostname: `${name}.tandem.test` },
      smtp: { proxy_protocol: ['127.0.0.1'] },
      relay: { host: sink.address },
      local: { domains: ['example.test'], maildir_root: path.join(d, 'mail') },
      tables: { virtual_mailboxes: tables.virtual_mailboxes },
      queue: { min_backoff: '1s', max_backoff: '1s' },
      admin: { token: TOKEN },
    });
    members[name] = { name, dir: d, config, smtpPort: await freePort(), adminPort: await freePort(), sinkPort: sink.port, sinkOut: sink.outFile, sink, node: undefined as unknown as RunningNode };
    members[name].node = await startMember(name);
  }
  lb = await startHaproxy({
    backends: (['a', 'b'] as const).map((n) => ({ name: n, smtp: members[n].node.smtp, admin: members[n].node.admin! })),
  });
  await Promise.all([lb.waitServerState('a', 'UP'), lb.waitServerState('b', 'UP')]);
});
after(() => lb?.stop());

const admin = (m: Member) => `127.0.0.1:${m.adminPort}`;
const testIds = (s: Sink) => new Set(s.readRecords().map((r) => r.testId));

/** One message through the balancer; asserts the 250. */
async function sendThroughLb(testId: string): Promise<void> {
  const res = await sendMail(lb.smtp.port, 'sender@client.test', ['someone@remote.test'], `Subject: ${testId}\r\nX-Test-Id: ${testId}\r\n\r\nhello\r\n`);
  assert.match(res.response, /^250 /, `${testId}: ${res.response}`);
}

test('(a) mail through HAProxy reaches both nodes; Received: names the real client via PROXY v2', async () => {
  for (let i = 0; i < 6; i++) await sendThroughLb(`rr-${i}`);
  const rr = (n: 'a' | 'b') => [...testIds(members[n].sink)].filter((t) => t?.startsWith('rr-'));
  await eventually('all 6 messages at the sinks', () => rr('a').length + rr('b').length === 6);
  const ids = [rr('a'), rr('b')];
  assert.ok(ids[0].length >= 2 && ids[1].length >= 2, `round robin over both nodes: a=${ids[0].length} b=${ids[1].length}`);

  // a client at 127.0.0.2 (not the balancer's 127.0.0.1) to a local Maildir, twice: one per node
  for (let i = 0; i < 2; i++) {
    const c = await RawSmtpClient.connect(lb.smtp.port, '127.0.0.1', 5_000, '127.0.0.2');
    const greeting = await c.readReply();
    assert.ok(greeting.type === 'reply' && greeting.code === 220, JSON.stringify(greeting));
    await c.command('EHLO client.test');
    await c.command('MAIL FROM:<sender@client.test>');
    await c.command('RCPT TO:<bob@example.test>');
    await c.command('DATA');
    c.write(`Subject: trace ${i}\r\n\r\nhello\r\n.\r\n`);
    const done = await c.readReply(10_000);
    assert.ok(done.type === 'reply' && done.code === 250, JSON.stringify(done));
    await c.command('QUIT');
    c.close();
  }
  const delivered = (n: 'a' | 'b') => {
    const d = path.join(members[n].dir, 'mail', 'bob', 'new');
    return existsSync(d) ? readdirSync(d).map((f) => readFileSync(path.join(d, f), 'latin1')) : [];
  };
  const all = await eventually('both trace messages in a Maildir', () => { const m = [...delivered('a'), ...delivered('b')]; return m.length === 2 && m; });
  for (const raw of all) {
    const received = /^Received: [^]*?(?=\r?\n\S)/m.exec(raw)?.[0] ?? '';
    assert.match(received, /\[127\.0\.0\.2\]/, `the real client in ${received}`);
    assert.doesNotMatch(received, /127\.0\.0\.1/, 'not the balancer');
  }
});

test('(b) drain: HAProxy takes the node out, the other takes all new mail, queued mail is still delivered; resume brings it back', async () => {
  const a = members.a;
  // a's next hop goes away: what a accepts now stays queued on a
  await a.sink.stop();
  for (let i = 0; i < 6; i++) await sendThroughLb(`queued-${i}`);
  const queuedOnA = await eventually('a accepted some of them', async () => {
    const res = await runCli(['queue', 'list', '--admin', admin(a), '--token', TOKEN, '--json']);
    const rows = JSON.parse(res.stdout).rows as unknown[];
    return rows.length > 0 && rows.length;
  });

  const denied = await runCli(['node', 'drain', '--admin', admin(a)]);
  assert.equal(denied.code, 2, `no token: refused, exit 2 (${denied.stderr})`);
  const drained = await runCli(['node', 'drain', '--admin', admin(a), '--token', TOKEN]);
  assert.equal(drained.code, 0, drained.stderr);
  const t0 = Date.now();
  await lb.waitServerState('a', 'DOWN', 5_000);
  const drainToDownMs = Date.now() - t0;
  const health = await runCli(['node', 'health', '--admin', admin(a), '--json']);
  assert.equal(health.code, 1, 'health exits 1 while draining');
  assert.equal(JSON.parse(health.stdout).state, 'draining');
  assert.equal(JSON.parse(health.stdout).httpStatus, 503);
  const direct = await fetch(`http://${admin(a)}/health`);
  assert.equal(direct.status, 503);
  assert.equal((await direct.json()).state, 'draining');
  console.log(`# drain → HAProxy DOWN after ${drainToDownMs} ms; ${queuedOnA} message(s) queued on a`);

  for (let i = 0; i < 6; i++) await sendThroughLb(`drained-${i}`);
  await eventually('all 6 new messages at b\'s sink', () => [...testIds(members.b.sink)].filter((t) => t?.startsWith('drained-')).length === 6);

  // a's next hop is back: a, still draining, delivers its queue
  a.sink = await startSink({ listen: `127.0.0.1:${a.sinkPort}`, out: a.sinkOut });
  await eventually('a delivered all it had queued', () => {
    const all = new Set([...testIds(a.sink), ...testIds(members.b.sink)]);
    return Array.from({ length: 6 }, (_, i) => `queued-${i}`).every((t) => all.has(t));
  }, 15_000);
  assert.equal([...testIds(a.sink)].filter((t) => t?.startsWith('drained-')).length, 0, 'nothing new went to the drained node');
  assert.equal((await runCli(['node', 'health', '--admin', admin(a)])).code, 1, 'still draining after delivering');

  const resumed = await runCli(['node', 'resume', '--admin', admin(a), '--token', TOKEN]);
  assert.equal(resumed.code, 0, resumed.stderr);
  await lb.waitServerState('a', 'UP', 5_000);
  assert.equal((await runCli(['node', 'health', '--admin', admin(a)])).code, 0);
});

test('(c) kill -9 of a node: HAProxy marks it DOWN within ~2 s and a retrying client loses nothing it got 250 for', async () => {
  const b = members.b;
  const load = runLoad({
    host: lb.smtp.host, port: lb.smtp.port, total: 400, concurrency: 4, sizeBytes: 2048,
    from: 'load@client.test', to: (i) => `rcpt${i}@remote.test`, runId: 'kill', socketTimeoutMs: 10_000,
  });
  await eventually('load under way', () => members.a.sink.count() + b.sink.count() > 120, 30_000);
  await b.node.proc.killHard();
  const killedAt = Date.now();
  await lb.waitServerState('b', 'DOWN', 5_000);
  const detectMs = Date.now() - killedAt;
  console.log(`# kill -9 → HAProxy DOWN after ${detectMs} ms`);
  assert.ok(detectMs < 2_500, `marked DOWN within ~2 s (took ${detectMs} ms)`);

  const result = await load;
  assert.equal(result.failed.size, 0, `no message given up: ${[...result.failed.values()].slice(0, 3).join('; ')}`);
  assert.equal(result.accepted.size, 400);

  // b restarts on its spool (same ports): HAProxy takes it back, and its queue is delivered
  b.node = await startMember('b');
  await lb.waitServerState('b', 'UP', 10_000);
  const missing = await eventually('every accepted message at a sink', () => {
    const got = new Set([...testIds(members.a.sink), ...testIds(b.sink)]);
    const lost = [...result.accepted].filter((t) => !got.has(t));
    return lost.length === 0 ? [] : false;
  }, 30_000).catch(() => {
    const got = new Set([...testIds(members.a.sink), ...testIds(b.sink)]);
    return [...result.accepted].filter((t) => !got.has(t));
  });
  assert.deepEqual(missing, [], 'every message that got a 250 reached a sink');
  console.log(`# load: ${result.accepted.size} accepted, ${result.attempts} attempts, errors ${JSON.stringify(result.errors)}`);
});

test('(d) the shipped deploy/haproxy.cfg is valid and, with these nodes\' addresses, carries mail to both', async () => {
  const shipped = path.join(REPO_ROOT, 'deploy/haproxy.cfg');
  assert.match(execFileSync(HAPROXY_BIN, ['-c', '-f', shipped], { encoding: 'utf8' }), /Configuration file is valid/);

  const d = mkdtempSync(path.join(os.tmpdir(), 'tandem-deploy-cfg-'));
  const port = await freePort();
  const statsSocket = path.join(d, 'admin.sock');
  const nodes = { mx1: members.a, mx2: members.b };
  let text = readFileSync(shipped, 'utf8')
    .replace(/^ *(daemon|chroot .*|user .*|group .*|log \/dev\/log .*)$/gm, '')
    .replace(/^( *stats socket) \/run\/haproxy\/admin\.sock /m, `$1 ${statsSocket} `)
    .replace(/^( *bind) :25$/m, `$1 127.0.0.1:${port}`)
    .replace(/^( *bind) 127\.0\.0\.1:8404$/m, `$1 127.0.0.1:${await freePort()}`);
  for (const [name, m] of Object.entries(nodes)) {
    text = text.replace(new RegExp(`^( *server ${name}) \\S+:25 (.*) port 8025$`, 'm'), `$1 127.0.0.1:${m.smtpPort} $2 port ${m.adminPort}`);
  }
  assert.ok(text.includes(`stats socket ${statsSocket} `), 'the stats socket moved to the temp folder');
  assert.equal((text.match(/127\.0\.0\.1:\d+ send-proxy-v2 check port \d+/g) ?? []).length, 2, `both server lines rewritten:\n${text}`);
  const configFile = path.join(d, 'haproxy.cfg');
  writeFileSync(configFile, text);
  const shippedLb = await runHaproxyConfig({ dir: d, configFile, smtp: { host: '127.0.0.1', port }, statsSocket, backend: 'tandem_smtp', servers: 2 });
  try {
    await Promise.all([shippedLb.waitServerState('mx1', 'UP'), shippedLb.waitServerState('mx2', 'UP')]);
    const before = { a: members.a.sink.count(), b: members.b.sink.count() };
    for (let i = 0; i < 4; i++) {
      const res = await sendMail(port, 'sender@client.test', ['someone@remote.test'], `Subject: deploy ${i}\r\nX-Test-Id: deploy-${i}\r\n\r\nhello\r\n`);
      assert.match(res.response, /^250 /);
    }
    await eventually('the 4 messages at the sinks', () => members.a.sink.count() - before.a + members.b.sink.count() - before.b >= 4);
    assert.ok(members.a.sink.count() > before.a && members.b.sink.count() > before.b, 'both nodes took some');
  } finally {
    await shippedLb.stop();
  }
});
