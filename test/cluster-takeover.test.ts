/**
 * Cluster takeover and handback with real node processes over a shared spool root.
 * The hard case first: next hop down, everything queued on node a, then a's whole process group
 * is killed; the survivor b must claim a's spool, start a secondary process over it and deliver
 * all of it once the next hop is back; a restarted a gets its spool back (handback) and
 * delivers from it again; nothing is delivered twice. `tandem cluster status` shows the dead
 * node's queue as its secondary reports it (drained), not the depth it last announced.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trackProcesses } from './harness/procs.ts';
import { startSink } from './harness/sink.ts';
import { runLoad } from './harness/load.ts';
import { freePort } from './harness/ports.ts';
import { createCluster } from './harness/cluster.ts';
import { runCli } from './harness/tandem.ts';
import { sendMail } from './harness/smtp-client.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

const queued = (dir: string, spool: string) =>
  ['incoming', 'active', 'deferred'].reduce((n, s) => n + readdirSync(path.join(dir, 'spool', spool, s)).length, 0);

test('next hop down, everything queued on a, a killed: b takes a\'s spool over and delivers it; a comes back and gets it back', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-takeover-'));
  const sinkPort = await freePort();
  const cluster = await createCluster({ dir, relayHost: `127.0.0.1:${sinkPort}` });
  await cluster.start('a');
  await cluster.start('b');
  await cluster.waitFor('a and b to see each other alive', async () => (await cluster.status('a')).peers[0].status.type === 'alive' && (await cluster.status('b')).peers[0].status.type === 'alive');

  const total = 60;
  const smtpA = cluster.addresses.get('a')!.smtp;
  const first = await runLoad({ host: smtpA.host, port: smtpA.port, total, concurrency: 4, sizeBytes: 1024, from: 'load@client.test', to: (i) => `r${i}@remote.test`, runId: 'first' });
  assert.equal(first.accepted.size, total);
  await cluster.waitFor('every message deferred on a (next hop down)', async () => readdirSync(path.join(dir, 'spool', 'a', 'deferred')).length === total);

  const killedAt = Date.now();
  await cluster.kill('a');
  const status = await cluster.waitForTakeover('b', 'a', killedAt);
  const tookMs = Date.now() - killedAt;
  assert.equal(status.peers[0].status.type, 'dead');
  const takeover = cluster.trackingEvents().find((e) => e.event === 'takeover' && e.spool === 'a');
  assert.equal(takeover?.node, 'b', 'the takeover is in the tracking log');
  assert.equal(takeover?.epoch, 2, 'epoch 1 is a\'s own (written when it joined), 2 is b\'s claim');

  const cli = await runCli(['cluster', 'status', '--config', cluster.config, '--json']);
  assert.equal(cli.code, 0, cli.stderr);
  const merged = JSON.parse(cli.stdout);
  assert.equal(merged.nodes.find((n: any) => n.id === 'a').status, 'dead', 'tandem cluster status shows a dead');
  assert.deepEqual(merged.spools.find((x: any) => x.spool === 'a'), { ...merged.spools.find((x: any) => x.spool === 'a'), deliverer: 'b', epoch: 2 });
  const table = await runCli(['cluster', 'status', '--config', cluster.config]);
  assert.match(table.stdout, /^a\s+test\s+dead/m);
  assert.match(table.stdout, /^a\s+test\s+b \(takeover\)\s+2/m);

  const sink = await startSink({ listen: `127.0.0.1:${sinkPort}` });
  await sink.waitForCount(total, 60_000);
  await cluster.waitFor('a\'s spool to drain', async () => queued(dir, 'a') === 0);
  // cluster status shows dead a's queue as b's secondary reports it now, not the 60 a last announced
  const fresh = await cluster.waitFor('cluster status to show a\'s queue drained', async () => {
    const r = await runCli(['cluster', 'status', '--config', cluster.config, '--json']);
    const a = JSON.parse(r.stdout).nodes.find((n: any) => n.id === 'a');
    return a.queue === 0 && a;
  });
  assert.equal(fresh.queueFrom, 'secondary on b');
  assert.match((await runCli(['cluster', 'status', '--config', cluster.config])).stdout, /^a\s+test\s+dead\s+.*\s0 \(secondary on b\)\s/m);
  const delivered = cluster.trackingEvents().filter((e) => e.event === 'delivered');
  assert.ok(delivered.every((e) => e.node === 'b' && e.secondary === 'a'), 'b\'s secondary delivered a\'s queue');
  console.log(`# takeover: a killed, b's secondary running ${tookMs} ms later; ${total} queued messages delivered from a's spool`);

  await cluster.start('a');
  await cluster.waitFor('the handback of a\'s spool', async () => {
    const s = await cluster.status('a');
    return s.ownSpool === 'delivering' && (await cluster.status('b')).secondaries.length === 0;
  });
  assert.ok(cluster.trackingEvents().some((e) => e.event === 'handback' && e.spool === 'a' && e.node === 'b' && Date.parse(e.t) >= killedAt));

  const second = await runLoad({ host: smtpA.host, port: smtpA.port, total: 20, concurrency: 2, sizeBytes: 512, from: 'load@client.test', to: (i) => `s${i}@remote.test`, runId: 'second' });
  await sink.waitForCount(total + 20, 30_000);
  const got = sink.countsByTestId();
  for (const id of [...first.accepted, ...second.accepted]) assert.equal(got.get(id), 1, `${id} delivered exactly once`);
  // (the sink records a message just before the node writes its tracking line)
  await cluster.waitFor('a\'s 20 deliveries from its own spool in the tracking log', async () =>
    cluster.trackingEvents().filter((e) => e.event === 'delivered' && e.node === 'a' && !e.secondary).length === 20);
  await cluster.stopAll();
  await sink.stop();
});

test('operator actions: fence a node by hand, unfence it, hand its spool back by hand (auto_handback off)', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-operator-'));
  const sink = await startSink();
  const cluster = await createCluster({ dir, relayHost: sink.address, cluster: { auto_handback: false } });
  try {
    await cluster.start('a');
    await cluster.start('b');
    await cluster.waitFor('a and b alive', async () => (await cluster.status('a')).peers[0].status.type === 'alive' && (await cluster.status('b')).peers[0].status.type === 'alive');

    const fencedAt = Date.now();
    const fence = await runCli(['cluster', 'fence', 'b', '--config', cluster.config]);
    assert.equal(fence.code, 0, fence.stderr);
    const health = await fetch(`http://127.0.0.1:${cluster.addresses.get('b')!.admin.port}/health`);
    assert.equal(health.status, 503);
    assert.equal((await health.json()).status, 'fenced');
    await cluster.waitForTakeover('a', 'b', fencedAt);

    assert.equal((await runCli(['cluster', 'unfence', 'b', '--config', cluster.config])).code, 0);
    const returning = await cluster.waitFor('b unfenced, its spool still held by a', async () => {
      const s = await cluster.status('b');
      return !s.fenced && s;
    });
    assert.equal(returning.ownSpool, 'claimed-by-other');
    assert.equal(returning.state, 'returning');
    // auto_handback off: b stays out of service until the operator hands its spool back, so
    // nothing it took in could wait undelivered in a spool nobody delivers (issue 8)
    const returningHealth = await fetch(`http://127.0.0.1:${cluster.addresses.get('b')!.admin.port}/health`);
    assert.equal(returningHealth.status, 503, 'the balancer takes a returning node out');
    assert.equal((await returningHealth.json()).status, 'returning');
    const refused = await sendMail(cluster.addresses.get('b')!.smtp.port, 'x@client.test', ['y@remote.test'], 'Subject: t\r\n\r\nx\r\n').catch((err) => ({ ok: false, response: String(err.response ?? err.message) }));
    assert.equal(refused.ok, false);
    assert.match(refused.response, /^421 4\.3\.2 .*returning/, 'a returning node refuses mail with a 4xx while it waits for the handback');
    const viaA = await sendMail(cluster.addresses.get('a')!.smtp.port, 'x@client.test', ['y@remote.test'], 'Subject: t\r\nX-Test-Id: meanwhile-1\r\n\r\nx\r\n');
    assert.ok(viaA.ok, viaA.response);
    await sink.waitForCount(1, 15_000);

    const handback = await runCli(['cluster', 'handback', 'b', '--config', cluster.config]);
    assert.equal(handback.code, 0, handback.stderr);
    assert.match(handback.stdout, /spool b handed back by a/);
    await cluster.waitFor('b delivering from its own spool again', async () => (await cluster.status('b')).ownSpool === 'delivering');
    assert.equal((await fetch(`http://127.0.0.1:${cluster.addresses.get('b')!.admin.port}/health`)).status, 200, 'back in the balancer after the handback');
    const viaB = await sendMail(cluster.addresses.get('b')!.smtp.port, 'x@client.test', ['y@remote.test'], 'Subject: t\r\nX-Test-Id: after-1\r\n\r\nx\r\n');
    assert.ok(viaB.ok, viaB.response);
    await sink.waitForCount(2, 15_000);
    assert.equal(sink.countsByTestId().get('meanwhile-1'), 1);
    assert.equal(sink.countsByTestId().get('after-1'), 1);
    const again = await runCli(['cluster', 'handback', 'b', '--config', cluster.config]);
    assert.equal(again.code, 1, 'a spool nobody holds cannot be handed back');
  } finally {
    await cluster.stopAll();
    await sink.stop();
  }
});
