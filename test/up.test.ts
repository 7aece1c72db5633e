/**
 * `tandem up`: a local cluster on one machine, as the README shows it — two node processes,
 * HAProxy in front (it is installed by .ci/run), the demo's example.test mailboxes. Mail sent to
 * the front door lands in the Maildirs, `tandem cluster status` sees both nodes, and Ctrl-C
 * (SIGINT) stops every process it started. `tandem up --sites 2`: a front door per site, copies
 * at two holders, and a site killed as printed has its queues taken over by the other.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pidAlive } from '../src/util/pid.ts';
import { trackProcesses, spawnProcess } from './harness/procs.ts';
import { freePort, parseHostPort } from './harness/ports.ts';
import { cliArgs, REPO_ROOT } from './harness/build.ts';
import { runCli } from './harness/tandem.ts';
import { sendMail } from './harness/smtp-client.ts';
import { eventually } from './harness/wait.ts';
import { RawSmtpClient } from './harness/raw-smtp.ts';
import { opensslMissing } from './harness/cluster-certs.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

// the bound covers the worst graceful stop after the crash and restart of b: a may be handing b's
// spool back (its secondary finishes its deliveries, up to 45 s) while both nodes stop (up to 60 s)
test('tandem up: two nodes behind HAProxy deliver to the demo mailboxes; Ctrl-C stops everything', { timeout: 240_000, skip: !existsSync('/usr/sbin/haproxy') && 'HAProxy is not installed (.ci/run installs it)' }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-up-'));
  const listen = `127.0.0.1:${await freePort()}`;
  const up = await spawnProcess(process.execPath, [...cliArgs(), 'up', '--dir', dir, '--listen', listen], {
    cwd: REPO_ROOT, name: 'tandem-up', readyMatch: (j) => j.event === 'up', readyTimeoutMs: 60_000,
  });
  const info = up.readyLine!.json as any;
  assert.equal(info.haproxy, true);
  assert.equal(info.smtp, listen);
  assert.equal(info.nodes.length, 2);

  const front = parseHostPort(listen);
  const sent = await sendMail(front.port, 'you@example.org', ['team@example.test'], 'Subject: hello\r\n\r\nthrough the balancer\r\n', front.host);
  assert.ok(sent.ok, sent.response);
  for (const who of ['alice', 'bob']) {
    await eventually(`the message in ${who}'s Maildir`, () => existsSync(path.join(dir, 'mail', who, 'new')) && readdirSync(path.join(dir, 'mail', who, 'new')).length === 1);
  }
  const status = await runCli(['cluster', 'status', '--config', path.join(dir, 'cluster.yaml'), '--json']);
  assert.equal(status.code, 0, status.stderr);
  assert.deepEqual(JSON.parse(status.stdout).nodes.map((n: any) => `${n.id} ${n.status}`), ['a alive', 'b alive']);

  // a client connecting straight to a node (not through the balancer) is greeted at once:
  // only the balancer's address must send a PROXY header
  const direct = parseHostPort(info.nodes[0].smtp);
  const raw = await RawSmtpClient.connect(direct.port, direct.host);
  const greeting = await raw.readReply(5_000);
  assert.equal((greeting as any).code, 220, JSON.stringify(greeting));
  raw.close();

  // crash node b and start it again with the printed command: Ctrl-C must stop it too
  process.kill(-info.nodes[1].pid, 'SIGKILL');
  const line = await up.waitForLine((l) => l.text.includes(' start --config ') && l.text.includes('--node-id b'), 30_000);
  const restarted = await spawnProcess('bash', ['-c', `exec ${line.text.trim()}`], {
    cwd: REPO_ROOT, name: 'node-b-restarted', readyMatch: (j) => j.event === 'ready', readyTimeoutMs: 60_000,
  });
  up.kill('SIGINT');
  const exit = await up.exited;
  assert.equal(exit.code, 0);
  for (const n of info.nodes) assert.equal(pidAlive(n.pid), false, `node ${n.id} (pid ${n.pid}) stopped`);
  assert.equal((await restarted.exited).code, 0, 'the node restarted by hand was stopped by Ctrl-C (gracefully)');
});

test('tandem up --sites 2: a front door per site, every message at its partner and in the other site; site dc1 killed: dc2 takes its queues over (witness) and Ctrl-C stops everything', { timeout: 240_000, skip: (!existsSync('/usr/sbin/haproxy') && 'HAProxy is not installed (.ci/run installs it)') || opensslMissing }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-up-sites-'));
  const listen = `127.0.0.1:${await freePort()}`;
  const up = await spawnProcess(process.execPath, [...cliArgs(), 'up', '--sites', '2', '--dir', dir, '--listen', listen], {
    cwd: REPO_ROOT, name: 'tandem-up-sites', readyMatch: (j) => j.event === 'up', readyTimeoutMs: 90_000,
  });
  const info = up.readyLine!.json as any;
  assert.deepEqual(info.nodes.map((n: any) => `${n.id} ${n.site}`), ['a dc1', 'b dc1', 'c dc2', 'd dc2']);
  assert.equal(info.sites.length, 2);
  for (const [i, door] of info.sites.entries()) {
    const at = parseHostPort(door.smtp);
    const sent = await sendMail(at.port, 'you@example.org', ['alice@example.test'], `Subject: through ${door.site}\r\n\r\nhello\r\n`, at.host);
    assert.ok(sent.ok, sent.response);
    await eventually(`message ${i + 1} in alice's Maildir`, () => existsSync(path.join(dir, 'mail', 'alice', 'new')) && readdirSync(path.join(dir, 'mail', 'alice', 'new')).length === i + 1);
  }
  const config = path.join(dir, 'cluster.yaml');
  const status = JSON.parse((await runCli(['cluster', 'status', '--config', config, '--json'])).stdout);
  for (const id of ['a', 'b', 'c', 'd']) {
    const r = status.views[id].replication;
    assert.equal(r.holders.length, 2, `${id} keeps copies at two holders`);
  }
  // lose site dc1 as printed: its nodes' process groups (and its etcd member, when there is one)
  const dc1 = info.nodes.filter((n: any) => n.site === 'dc1');
  for (const n of dc1) process.kill(-n.pid, 'SIGKILL');
  const member = (info.witness ?? []).find((w: any) => w.name === 'dc1');
  if (member) process.kill(-member.pid, 'SIGKILL');
  if (!info.witness?.length) assert.equal((await runCli(['cluster', 'takeover', '--site', 'dc1', '--config', config], { timeoutMs: 60_000 })).code, 0);
  await eventually('dc2 delivering dc1\'s queues', async () => {
    const s = JSON.parse((await runCli(['cluster', 'status', '--config', config, '--json'])).stdout);
    return s.spools.find((x: any) => x.spool === 'a')?.deliverer === 'c' && s.spools.find((x: any) => x.spool === 'b')?.deliverer === 'd';
  }, 60_000);
  up.kill('SIGINT');
  assert.equal((await up.exited).code, 0);
  for (const n of info.nodes) assert.equal(pidAlive(n.pid), false, `node ${n.id} (pid ${n.pid}) stopped`);
  for (const w of info.witness ?? []) assert.equal(pidAlive(w.pid), false, `etcd member ${w.name} stopped`);
});
