import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { NetHeartbeat, type Heartbeat } from './net-heartbeat.ts';
import { Sealer } from './sealed.ts';

const sealer = new Sealer('heartbeat-secret-for-the-tests');

async function receiver(peers: string[]) {
  const got: Heartbeat[] = [];
  const rejected: string[] = [];
  let notify = () => {};
  const hb = new NetHeartbeat({ id: 'a', address: { host: '127.0.0.1', port: 0 } }, peers.map((id) => ({ id, address: { host: '127.0.0.1', port: 9 } })), sealer,
    (h) => { got.push(h); notify(); }, (reason) => { rejected.push(reason); notify(); });
  const address = await hb.start();
  const client = dgram.createSocket('udp4');
  const send = (text: string) => new Promise<void>((resolve) => {
    const before = got.length + rejected.length;
    notify = () => { if (got.length + rejected.length > before) resolve(); };
    client.send(Buffer.from(text), address.port, address.host);
  });
  return { hb, got, rejected, send, close: () => { hb.close(); client.close(); } };
}

const beat = (over: Partial<Heartbeat> = {}): Heartbeat => ({ node: 'b', boot: 100, seq: 1, sent: Date.now(), state: 'ready', queue: 0, claims: [], ...over });

test('a sealed heartbeat from a peer is taken; forged, replayed, stale and unknown ones are dropped and counted', async () => {
  const r = await receiver(['b']);
  try {
    await r.send(sealer.seal(beat()));
    assert.equal(r.got.length, 1);
    await r.send(new Sealer('an-attacker-without-the-secret').seal(beat({ seq: 2 })));
    await r.send(sealer.seal(beat()));
    await r.send(sealer.seal(beat({ seq: 3, sent: Date.now() - 60_000 })));
    await r.send(sealer.seal(beat({ node: 'x', seq: 4 })));
    await r.send('garbage');
    await r.send(sealer.seal(beat({ boot: 99, seq: 50 })));
    assert.deepEqual(r.rejected, ['bad-signature', 'replay', 'stale', 'unknown-node', 'malformed', 'replay']);
    assert.equal(r.got.length, 1);
    await r.send(sealer.seal(beat({ boot: 101, seq: 1 })));
    assert.equal(r.got.length, 2, 'a new boot of the peer starts its sequence again');
    assert.equal(r.hb.rejected.replay, 2);
  } finally {
    r.close();
  }
});
