/**
 * The pre-forked standby secondary (cluster.standby_secondary, docs/ha.md "Standby secondary"),
 * with real node processes over a shared spool root.
 * A node keeps one secondary process forked and idle; a standby killed on its own is replaced;
 * at a takeover the survivor hands the dead node's spool to the standby it had before the kill
 * (the same pid, which says so in its ready line), in the order takeover → secondary ready →
 * first delivery, and forks the next standby. Every accepted message is delivered once.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pidAlive } from '../src/util/pid.ts';
import { trackProcesses } from './harness/procs.ts';
import { startSink, type Sink } from './harness/sink.ts';
import { runLoad } from './harness/load.ts';
import { freePort } from './harness/ports.ts';
import { createCluster } from './harness/cluster.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

test('a takeover is served by the standby forked before the kill; a standby that crashes is replaced, and a used one too', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-standby-'));
  const hopPort = await freePort();
  // every deferred message is due again before b can take the spool over (as in bench/failover.ts)
  const cluster = await createCluster({ dir, relayHost: `127.0.0.1:${hopPort}`, extra: { queue: { min_backoff: '1s', max_backoff: '1s' } } });
  let sink: Sink | undefined;
  try {
    await cluster.start('a');
    const b = await cluster.start('b');
    await cluster.waitFor('a and b alive', async () => (await cluster.status('a')).peers[0].status.type === 'alive' && (await cluster.status('b')).peers[0].status.type === 'alive');
    const standbyOf = async (id: string, not?: number) => cluster.waitFor(`a ready standby secondary on ${id}${not ? ` other than pid ${not}` : ''}`, async () => {
      const s = (await cluster.status(id)).standby;
      return s?.ready && s.pid !== not && s.pid as number;
    }, 60_000);

    // a standby that dies on its own (here: kill -9 of that process alone) is replaced
    const first = await standbyOf('b');
    process.kill(first, 'SIGKILL');
    const exited = await b.proc.waitForLine((l) => l.json?.event === 'standby-exited' && l.json.pid === first, 30_000);
    assert.equal(exited.json!.signal, 'SIGKILL');
    const standby = await standbyOf('b', first);
    assert.equal((await cluster.status('b')).secondaries.length, 0, 'a standby is no secondary: it holds no spool');

    const total = 30;
    const smtpA = cluster.addresses.get('a')!.smtp;
    const load = await runLoad({ host: smtpA.host, port: smtpA.port, total, concurrency: 3, sizeBytes: 1024, from: 'load@client.test', to: (i) => `r${i}@remote.test`, runId: 'standby' });
    assert.equal(load.accepted.size, total);
    await cluster.waitFor('every message deferred on a (next hop down)', async () => readdirSync(path.join(dir, 'spool', 'a', 'deferred')).length === total);

    const ready = b.proc.waitForLine((l) => l.json?.event === 'secondary-ready' && l.json.secondary === 'a', 60_000, { includePast: false });
    const killedAt = Date.now();
    await cluster.kill('a');
    sink = await startSink({ listen: `127.0.0.1:${hopPort}` });
    const readyLine = await ready;
    assert.equal(readyLine.json!.pid, standby, 'the secondary over a\'s spool is the process that was b\'s standby before the kill');
    assert.equal(readyLine.json!.standby, true, 'its ready line says it was the standby');
    const status = await cluster.waitForTakeover('b', 'a', killedAt);
    assert.equal(status.secondaries[0].pid, standby);

    await sink.waitForCount(total, 60_000);
    const got = sink.countsByTestId();
    for (const id of load.accepted) assert.equal(got.get(id), 1, `${id} delivered exactly once`);
    // the sink records a message just before the secondary writes its tracking line
    const delivered = await cluster.waitFor('b\'s secondary to record its deliveries', async () => {
      const d = cluster.trackingEvents().filter((e) => e.event === 'delivered');
      return d.length === total && d;
    });
    assert.ok(delivered.every((e) => e.node === 'b' && e.secondary === 'a'), 'b\'s secondary delivered a\'s queue');
    // the order of events (log and tracking times have millisecond resolution): claim, then the
    // standby's ready line, then the first delivery — the standby delivered, nothing before it
    const takeover = cluster.trackingEvents().find((e) => e.event === 'takeover' && e.spool === 'a')!;
    const claimedAt = Date.parse(takeover.t);
    const readyAt = Date.parse(readyLine.json!.time as string);
    const firstDeliveryAt = Math.min(...delivered.map((e) => Date.parse(e.t)));
    assert.ok(claimedAt >= killedAt && claimedAt <= readyAt && readyAt <= firstDeliveryAt, `claim ${claimedAt} <= ready ${readyAt} <= first delivery ${firstDeliveryAt}`);
    console.log(`# standby: kill -> claim ${claimedAt - killedAt} ms, claim -> standby delivering ${readyAt - claimedAt} ms, -> first delivery recorded ${firstDeliveryAt - readyAt} ms`);

    // the standby used, b forks the next one; the secondary it became keeps running
    const next = await standbyOf('b', standby);
    assert.ok(pidAlive(standby), 'the secondary (once the standby) still runs');
    assert.notEqual(next, first);

    // the node's stop ends its standby too (it holds nothing to finish)
    await cluster.stopAll();
    await cluster.waitFor('the standby to exit with its node', async () => !pidAlive(next), 10_000);
  } finally {
    await cluster.stopAll();
    await sink?.stop();
  }
});
