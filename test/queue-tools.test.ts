/**
 * The everyday tools of a Postfix admin against a real node process: `tandem sendmail` (-t -i,
 * exit 75 when the node is down), `queue show --body` (control characters escaped), `queue
 * shape`, hold/release/delete by selection (a bulk delete needs --yes), `queue flush --spool` on
 * a running node refused, `route`, `config show` (secrets masked), POST /reload reporting what
 * needs a restart, the CLI's help and --version; and an action on a stopped node's spool writes
 * its tracking line (as the running node's do); `queue requeue` after an alias change, on a
 * running node and on a stopped one's spool (postsuper -r); `sendmail` to a listener that expects
 * the PROXY protocol from loopback (HAProxy on the same host).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { trackProcesses } from './harness/procs.ts';
import { freePort } from './harness/ports.ts';
import { startNode, writeNodeConfig } from './harness/node.ts';
import { runCli } from './harness/tandem.ts';
import { eventually } from './harness/wait.ts';
import { sendMail } from './harness/smtp-client.ts';
import { startSmtpServer } from './harness/channel-servers.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

const trackLines = (file: string) => readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));

test('help, help of a subcommand and --version exit 0; help of `dir add` lists only its options', async () => {
  const version = await runCli(['--version']);
  assert.equal(version.code, 0);
  assert.equal(version.stdout.trim(), JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version);
  const help = await runCli(['help']);
  assert.equal(help.code, 0);
  const sub = await runCli(['help', 'queue', 'list']);
  assert.equal(sub.code, 0);
  assert.match(sub.stdout, /^Usage: tandem queue list/);
  const dirAdd = await runCli(['dir', 'add', '--help']);
  assert.doesNotMatch(dirAdd.stdout, /--ldif/);
  assert.match(dirAdd.stdout, /--maildir/);
});

test('queue tools, sendmail, route, config show and reload on a running node; an action on the stopped spool is tracked', { timeout: 240_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-qtools-'));
  const smtpPort = await freePort();
  const closed = await freePort(); // nothing listens: relayed mail stays deferred
  const tracking = path.join(dir, 'tracking.log');
  const overrides = { smtp: { listen: `127.0.0.1:${smtpPort}` }, relay: { host: `127.0.0.1:${closed}` } };
  const config = writeNodeConfig(dir, overrides);
  const node = await startNode({ config, listen: `127.0.0.1:${smtpPort}`, admin: '127.0.0.1:0' });
  const admin = `127.0.0.1:${node.admin!.port}`;
  const q = (...args: string[]) => runCli(['queue', ...args, '--admin', admin]);

  // sendmail -t -i: recipients from To/Cc/Bcc, Bcc removed, a lone "." does not end the message
  const sent = await runCli(['sendmail', '-t', '-i', '-f', 'cron@tandem.test', '--config', config], {
    stdin: 'To: x@remote.test\nBcc: y@remote.test\nSubject: nightly \u001b[31mred\n\nline one\n.\nline after the dot\n',
  });
  assert.equal(sent.code, 0, sent.stderr);
  const second = await runCli(['sendmail', '-f', 'other@tandem.test', '--config', config, 'z@elsewhere.test'], { stdin: 'Subject: two\n\nbody\n' });
  assert.equal(second.code, 0, second.stderr);
  const list = await eventually('two messages queued', async () => {
    const r = await q('list', '--json');
    const rows = JSON.parse(r.stdout).rows;
    return rows.length === 2 && rows;
  });
  const first = list.find((r: any) => r.sender === 'cron@tandem.test');
  assert.equal(first.recipients, 2, 'To and Bcc recipients');

  const show = await q('show', first.queueId, '--body');
  assert.equal(show.code, 0, show.stderr);
  assert.match(show.stdout, /line after the dot/);
  assert.doesNotMatch(show.stdout, /^Bcc:/m);
  assert.match(show.stdout, /^From: <cron@tandem\.test>$/m, 'From: added');
  assert.ok(!show.stdout.includes('\u001b'), 'no raw escape character reaches the terminal');
  assert.match(show.stdout, /nightly \\x1b\[31mred/);

  const shape = await q('shape', '--json');
  assert.deepEqual(JSON.parse(shape.stdout).rows.map((r: any) => `${r.domain} ${r.total}`).sort(), ['elsewhere.test 1', 'remote.test 2']);

  // selection by filter: hold the mail for remote.test only, then release it
  const held = await q('hold', '--domain', 'remote.test');
  assert.equal(held.code, 0, held.stderr);
  assert.match(held.stdout, new RegExp(`${first.queueId}: held`));
  const states = JSON.parse((await q('list', '--json')).stdout).rows.map((r: any) => `${r.sender} ${r.state}`);
  assert.ok(states.includes('cron@tandem.test hold') && !states.includes('other@tandem.test hold'), states.join(', '));
  assert.equal((await q('release', 'ALL')).code, 0);

  // flush through the spool of a running node: refused, not "nothing to do"
  const spoolDir = path.join(dir, 'spool', 'a');
  const flushSpool = await runCli(['queue', 'flush', '--spool', spoolDir]);
  assert.equal(flushSpool.code, 75, flushSpool.stdout + flushSpool.stderr);
  assert.match(flushSpool.stderr, /the node is running/);

  // route: how an address resolves, without sending
  const route = await runCli(['route', 'someone@remote.test', '--config', config, '--client', '192.0.2.1']);
  assert.equal(route.code, 1, 'a client outside relay networks may not relay there');
  assert.match(route.stdout, /may NOT relay/);
  assert.match(route.stdout, new RegExp(`smtp to \\[127\\.0\\.0\\.1\\]:${closed}`));

  // reload: a change that needs a restart is reported, a live one applied
  writeNodeConfig(dir, { ...overrides, smtp: { ...overrides.smtp, max_recipients: 7 }, log: { level: 'warn' } });
  const reload = await fetch(`http://${admin}/reload`, { method: 'POST' });
  const reloaded = await reload.json() as { applied: string[]; restartNeeded: string[] };
  assert.equal(reload.status, 200);
  assert.deepEqual(reloaded.restartNeeded, ['smtp.max_recipients']);
  assert.ok(reloaded.applied.includes('log.level'));

  // bulk delete: refused without --yes when no terminal can ask; done with it
  const refused = await q('delete', 'ALL');
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /2 message\(s\) match; nothing deleted/);
  assert.equal(JSON.parse((await q('list', '--json')).stdout).rows.length, 2);
  const other = list.find((r: any) => r.sender === 'other@tandem.test');
  const deleted = await q('delete', '--from', 'cron@tandem.test', '--yes');
  assert.equal(deleted.code, 0, deleted.stderr);
  assert.deepEqual(JSON.parse((await q('list', '--json')).stdout).rows.map((r: any) => r.queueId), [other.queueId]);

  // the node stops: sendmail says "try again later"; actions on its spool are tracked
  await node.stop();
  const down = await runCli(['sendmail', '--config', config, 'x@remote.test'], { stdin: 'Subject: later\n\nx\n' });
  assert.equal(down.code, 75, down.stderr);
  const before = trackLines(tracking).length;
  const hold = await runCli(['queue', 'hold', other.queueId, '--spool', spoolDir, '--config', config]);
  assert.equal(hold.code, 0, hold.stderr);
  const added = trackLines(tracking).slice(before);
  assert.deepEqual(added.map((l) => `${l.event} ${l.queueId} ${l.by}`), [`held ${other.queueId} cli`]);

  // config show masks secrets
  writeFileSync(config, YAML.stringify({ ...YAML.parse(readFileSync(config, 'utf8')), admin: { token: 'very-secret-token' } }));
  const shown = await runCli(['config', 'show', '--config', config]);
  assert.equal(shown.code, 0, shown.stderr);
  assert.ok(!shown.stdout.includes('very-secret-token'));
  assert.match(shown.stdout, /token: "?\*{8}"?/);
  assert.match(shown.stdout, /max_connections: 100/, 'defaults are shown');
  const onlySet = await runCli(['config', 'show', '-n', '--config', config]);
  assert.doesNotMatch(onlySet.stdout, /max_connections/);
});

test('queue requeue after an alias change (postsuper -r): the new members get the queued mail with its NOTIFY/ORCPT, delivered ones never again; also on a stopped node\'s spool', { timeout: 240_000 }, async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-requeue-'));
  // the next hop: later@ is refused for now (450), everyone else accepted
  const sink = await startSmtpServer({ rcpt: (a) => (a.startsWith('later@') ? { code: 450, message: 'try later' } : undefined) });
  t.after(() => sink.close());
  const aliases = path.join(dir, 'aliases');
  writeFileSync(aliases, 'team@tandem.test  a@remote.test, later@remote.test\n');
  const tracking = path.join(dir, 'tracking.log');
  // no retry of later@ while the test works (the harness's 1-5 s backoff could put an attempt
  // under way just as requeue comes, which then answers "pending" and runs after it)
  const config = writeNodeConfig(dir, { relay: { host: `127.0.0.1:${sink.port}` }, local: { domains: ['tandem.test'] }, tables: { aliases }, queue: { min_backoff: '1h', max_backoff: '2h' } });
  const spoolDir = path.join(dir, 'spool', 'a');
  const start = () => startNode({ config, admin: '127.0.0.1:0' });
  let node = await start();
  const admin = () => `127.0.0.1:${node.admin!.port}`;
  const reload = async () => assert.equal((await fetch(`http://${admin()}/reload`, { method: 'POST' })).status, 200);
  const delivered = (address: string) => sink.messages.flatMap((m) => m.rcptDsn).filter((r) => r.address === address);
  const queued = async () => JSON.parse((await runCli(['queue', 'list', '--json', '--admin', admin()])).stdout).rows;

  const sent = await sendMail(node.smtp.port, 'sender@client.test', ['team@tandem.test'], 'Subject: to the team\r\n\r\nhello\r\n', '127.0.0.1', { notify: ['SUCCESS', 'FAILURE'] });
  assert.ok(sent.ok && sent.queueId, sent.response);
  await eventually('a@ delivered, later@ deferred', async () => delivered('a@remote.test').length === 1 && (await queued())[0]?.state === 'deferred');

  // the list changes: later@ leaves, b@ and c@ join; the node reloads its tables, then requeue
  writeFileSync(aliases, 'team@tandem.test  a@remote.test, b@remote.test, c@remote.test\n');
  await reload();
  const requeued = await runCli(['queue', 'requeue', sent.queueId!, '--admin', admin()]);
  assert.equal(requeued.code, 0, requeued.stdout + requeued.stderr);
  const newId = new RegExp(`^${sent.queueId!.replace(/\./g, '\\.')}: requeued as (\\S+) \\(2 recipient\\(s\\)\\); no longer expanded to later@remote\\.test$`, 'm').exec(requeued.stdout)?.[1];
  assert.ok(newId, requeued.stdout);
  await eventually('b@ and c@ delivered, the queue empty', async () => delivered('c@remote.test').length === 1 && (await queued()).length === 0);
  for (const rcpt of ['b@remote.test', 'c@remote.test']) {
    assert.deepEqual(delivered(rcpt), [{ address: rcpt, notify: ['SUCCESS', 'FAILURE'], orcpt: 'rfc822;team@tandem.test' }], `${rcpt}: NOTIFY as given at RCPT, ORCPT the address the client gave`);
  }
  assert.equal(delivered('a@remote.test').length, 1, 'a@ was not sent the message again');
  const line = trackLines(tracking).find((l) => l.event === 'requeued');
  assert.deepEqual([line?.queueId, line?.newQueueId, line?.dropped], [sent.queueId, newId, ['later@remote.test']]);

  // a stopped node: requeue on its spool (with its config, for the tables); delivered once it starts
  writeFileSync(aliases, 'team@tandem.test  later@remote.test\n');
  await reload();
  const second = await sendMail(node.smtp.port, 'sender@client.test', ['team@tandem.test'], 'Subject: second\r\n\r\nhello\r\n');
  assert.ok(second.ok, second.response);
  await eventually('later@ deferred', async () => (await queued())[0]?.state === 'deferred');
  await node.stop();
  writeFileSync(aliases, 'team@tandem.test  d@remote.test\n');
  const offline = await runCli(['queue', 'requeue', 'ALL', '--spool', spoolDir, '--config', config]);
  assert.equal(offline.code, 0, offline.stdout + offline.stderr);
  assert.match(offline.stdout, new RegExp(`^${second.queueId!.replace(/\./g, '\\.')}: requeued as \\S+ \\(1 recipient\\(s\\)\\); no longer expanded to later@remote\\.test$`, 'm'));
  node = await start();
  await eventually('d@ delivered after the start', async () => delivered('d@remote.test').length === 1 && (await queued()).length === 0);
  assert.equal(trackLines(tracking).filter((l) => l.event === 'requeued' && l.by === 'cli').length, 1);
  await node.stop();
});

test('sendmail submits to a listener that expects the PROXY protocol from loopback (as behind HAProxy on the same host)', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-sendmail-proxy-'));
  const smtpPort = await freePort();
  const closed = await freePort();
  // socket_timeout: without a header the node would wait this long, then close the connection
  const config = writeNodeConfig(dir, { smtp: { listen: `127.0.0.1:${smtpPort}`, proxy_protocol: ['127.0.0.1'], socket_timeout: '5s' }, relay: { host: `127.0.0.1:${closed}` } });
  const node = await startNode({ config, listen: `127.0.0.1:${smtpPort}`, admin: '127.0.0.1:0' });
  const sent = await runCli(['sendmail', '-f', 'cron@tandem.test', '--config', config, 'x@remote.test'], { stdin: 'Subject: through the PROXY listener\n\nbody\n' });
  assert.equal(sent.code, 0, sent.stderr);
  const admin = `127.0.0.1:${node.admin!.port}`;
  const rows = await eventually('queued', async () => {
    const r = JSON.parse((await runCli(['queue', 'list', '--json', '--admin', admin])).stdout).rows;
    return r.length === 1 && r;
  });
  const show = await runCli(['queue', 'show', rows[0].queueId, '--admin', admin, '--json']);
  assert.equal(JSON.parse(show.stdout).envelope.client.address, '127.0.0.1', 'the node saw the local client the header named');
  await node.stop();
});
