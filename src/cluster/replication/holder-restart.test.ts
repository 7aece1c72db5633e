/**
 * holder-restart.test.ts — the shadow holder as its own process (test/harness/shadow-holder-main.ts),
 * killed with SIGKILL while an origin copies, then started again on the same port and folder.
 *
 * What must hold (issue 9, "Shadow holder killed"): with the accept-unprotected policy the
 * origin goes on, every message it accepted meanwhile is listed unprotected; when the holder is
 * back, reprotect() copies them and the count returns to 0; every copy acknowledged before the
 * kill is still on the holder's disk after it (fsync before ack).
 * Skipped (with the reason) when openssl is not installed.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { encodeQueueFile } from '../../spool/queuefile.ts';
import { makeQueueIdGenerator } from '../../spool/queueid.ts';
import { makeClusterCerts, opensslMissing, type ClusterCerts } from '../../../test/harness/cluster-certs.ts';
import { spawnProcess, trackProcesses, type Proc } from '../../../test/harness/procs.ts';
import { ShadowClient, type ClientState } from './client.ts';
import { spoolIdentity } from './identity.ts';

const procs = trackProcesses();
after(() => procs.stopAll());

const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-holder-restart-'));
const nextId = makeQueueIdGenerator('a');

function queueFile(): { queueId: string; bytes: Buffer } {
  const queueId = nextId();
  const bytes = encodeQueueFile({
    queueId, nodeId: 'a', sender: 'alice@example.test', arrivedAt: Date.now(), messageId: '',
    recipients: [{ address: 'bob@example.test', original: 'bob@example.test' }], client: { address: '127.0.0.1', helo: 'client.test' },
  }, Buffer.from(`Subject: ${queueId}\r\n\r\nhello\r\n`));
  return { queueId, bytes };
}

describe('shadow holder killed and restarted', { skip: opensslMissing }, () => {
  let certs: ClusterCerts;
  const root = path.join(dir, 'shadow');
  const startHolder = (port: number): Promise<Proc> => spawnProcess(process.execPath, [
    '--import', 'tsx', path.resolve('test/harness/shadow-holder-main.ts'),
    JSON.stringify({ root, port, origins: ['a'], ca: certs.ca, ...certs.nodes.b }),
  ], { readyMatch: (j) => j.event === 'holder-ready', name: 'shadow-holder' });
  const storedIds = (spoolId: string): Set<string> => new Set(readdirSync(path.join(root, 'a', spoolId, 'incoming')));

  before(() => {
    certs = makeClusterCerts(dir, ['a', 'b']);
  });

  test('copies made meanwhile are unprotected, then protected again when the holder returns', async () => {
    const spoolId = await spoolIdentity(path.join(dir, 'spool-a'));
    let holder = await startHolder(0);
    const port = Number(holder.readyLine?.json?.port);
    const client = new ShadowClient({
      origin: 'a', spoolId, holder: { nodeId: 'b', host: '127.0.0.1', port },
      tls: { ca: certs.ca, ...certs.nodes.a }, policy: 'accept-unprotected', ackTimeoutMs: 5000, backoff: { minMs: 50, maxMs: 500 },
    });
    const states: ClientState[] = [];
    client.on('state', (s: ClientState) => states.push(s));
    const waitState = (want: ClientState): Promise<void> => (client.state === want ? Promise.resolve() : new Promise((resolve) => {
      const on = (s: ClientState): void => {
        if (s === want) {
          client.off('state', on);
          resolve();
        }
      };
      client.on('state', on);
    }));
    const committed = new Map<string, Buffer>(); // the origin's spool, as far as this test goes
    try {
      // Before the kill: 200 copies, all acknowledged.
      const first = Array.from({ length: 200 }, queueFile);
      for (const f of first) committed.set(f.queueId, f.bytes);
      const acked = await Promise.all(first.map((f) => client.copy(f.queueId, f.bytes)));
      assert.equal(acked.filter((o) => o.protected).length, 200);

      // Kill -9 with copies in flight: whatever was acknowledged must be on disk; the rest is unprotected.
      const during = Array.from({ length: 200 }, queueFile);
      for (const f of during) committed.set(f.queueId, f.bytes);
      const inFlight = Promise.all(during.map((f) => client.copy(f.queueId, f.bytes)));
      await holder.killHard();
      const outcomes = await inFlight;
      await waitState('down');
      const ackedDuring = during.filter((_, i) => outcomes[i].protected).map((f) => f.queueId);
      const onDisk = storedIds(spoolId);
      for (const id of [...first.map((f) => f.queueId), ...ackedDuring]) assert.ok(onDisk.has(id), `acknowledged copy ${id} survived the kill`);
      assert.equal(client.unprotectedCount, during.length - ackedDuring.length, 'every copy not acknowledged is listed unprotected');

      // While the holder is down, the origin goes on accepting (one copy only).
      const outage = Array.from({ length: 50 }, queueFile);
      for (const f of outage) committed.set(f.queueId, f.bytes);
      const outageOutcomes = await Promise.all(outage.map((f) => client.copy(f.queueId, f.bytes)));
      assert.ok(outageOutcomes.every((o) => !o.protected && o.action === 'accept-unprotected'));
      const unprotectedBefore = client.unprotectedCount;
      assert.ok(unprotectedBefore >= 50, `unprotected: ${unprotectedBefore}`);
      // One of them is delivered (finished) during the outage: it needs no copy any more.
      const finished = outage[0].queueId;
      committed.delete(finished);
      client.discard([{ queueId: finished, finished: true }]);

      // The holder comes back on the same port and folder; the client reconnects by itself.
      holder = await startHolder(port);
      await waitState('up');
      const result = await client.reprotect(async (id) => committed.get(id));
      assert.equal(result.failed, 0, JSON.stringify(result));
      assert.equal(client.unprotectedCount, 0, 'no message is left with one copy');
      const after = storedIds(spoolId);
      for (const id of committed.keys()) assert.ok(after.has(id), `${id} is held again`);
      assert.ok(states.includes('down') && states.at(-1) === 'up', `states: ${states.join(' → ')}`);
    } finally {
      await client.close();
      await holder.stop();
    }
  });
});
