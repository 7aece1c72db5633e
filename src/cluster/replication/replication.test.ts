/**
 * replication.test.ts — shadow copies over real sockets on loopback: a ShadowHolder (HTTP/2,
 * TLS 1.3, client certificates from a cluster CA made by openssl) storing into a real folder
 * with fsync, and ShadowClients as an origin would use them.
 *
 * What a mail administrator relies on: a copy is acknowledged only once it is on the holder's
 * disk, exactly as committed; many copies share one connection; discard notices keep the
 * per-recipient state and remove finished copies; a replaced disk (new spool identity) does not
 * mix with the old copies; bad input on the replication port is refused, counted, stores
 * nothing, and the holder keeps serving good clients.
 * Skipped (with the reason) when openssl is not installed.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, existsSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import os from 'node:os';
import path from 'node:path';
import { encodeQueueFile } from '../../spool/queuefile.ts';
import { makeQueueIdGenerator } from '../../spool/queueid.ts';
import type { Envelope, RecipientStatus } from '../../spool/types.ts';
import { makeClusterCerts, opensslMissing, type ClusterCerts } from '../../../test/harness/cluster-certs.ts';
import { ShadowStore } from './shadow-store.ts';
import { ShadowHolder } from './holder.ts';
import { ShadowClient, type ShadowClientOptions } from './client.ts';
import { spoolIdentity } from './identity.ts';
import { HEADERS, PATHS, type RefusalReason } from './protocol.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-replication-'));
let certs: ClusterCerts;
const nextId = makeQueueIdGenerator('a');

/** A committed queue file from node a with `n` recipients (and ~size bytes of message). */
function queueFile(n = 1, size = 200, id = nextId()): { queueId: string; bytes: Buffer } {
  const env: Envelope = {
    queueId: id, nodeId: 'a', sender: 'alice@example.test', arrivedAt: Date.now(), messageId: `<${id}@example.test>`,
    recipients: Array.from({ length: n }, (_, i) => ({ address: `r${i}@example.test`, original: `r${i}@example.test` })),
    client: { address: '127.0.0.1', helo: 'client.test' },
  };
  const message = Buffer.from(`Subject: test ${id}\r\n\r\n${'x'.repeat(size)}\r\n`);
  return { queueId: id, bytes: encodeQueueFile(env, message) };
}

function delivered(index: number): RecipientStatus {
  return { index, type: 'delivered', at: Date.now(), reply: '250 2.0.0 ok', via: 'sink' };
}

/** Files held for origin a's spool `spoolId` in the state folders (tmp excluded). */
function held(store: ShadowStore, spoolId: string): string[] {
  const base = store.folder('a', spoolId);
  if (!existsSync(base)) return [];
  return ['incoming', 'active', 'deferred', 'hold', 'corrupt'].flatMap((s) => (existsSync(path.join(base, s)) ? readdirSync(path.join(base, s)) : []));
}

function clientOptions(port: number, spoolId: string, over: Partial<ShadowClientOptions> = {}): ShadowClientOptions {
  return {
    origin: 'a', spoolId, holder: { nodeId: 'b', host: '127.0.0.1', port },
    tls: { ca: certs.ca, ...certs.nodes.a }, policy: 'accept-unprotected', ackTimeoutMs: 10_000, ...over,
  };
}

/** Sum of the refusal counters. */
const refused = (h: ShadowHolder): number => Object.values(h.refusals).reduce((a, b) => a + b, 0);

describe('shadow replication over HTTP/2 with mutual TLS', { skip: opensslMissing }, () => {
  let store: ShadowStore;
  let holder: ShadowHolder;
  const clients: ShadowClient[] = [];
  const client = (spoolId: string, over: Partial<ShadowClientOptions> = {}): ShadowClient => {
    const c = new ShadowClient(clientOptions(holder.port, spoolId, over));
    clients.push(c);
    return c;
  };
  const refusalsSeen: Array<{ reason: RefusalReason; detail: string }> = [];
  /** Called on each refusal; a waiter returning true is done and removed. */
  let refusalWaiters: Array<(reason: RefusalReason) => boolean> = [];

  before(async () => {
    certs = makeClusterCerts(dir, ['a', 'b', 'c']);
    store = await ShadowStore.open(path.join(dir, 'shadow'));
    holder = await ShadowHolder.start({
      store, origins: ['a'], tls: { ca: certs.ca, ...certs.nodes.b }, maxCopyBytes: 1024 * 1024,
      onRefusal: (reason, detail) => {
        refusalsSeen.push({ reason, detail });
        refusalWaiters = refusalWaiters.filter((w) => !w(reason));
      },
    });
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await holder?.close();
  });

  test('a copy is acknowledged only once it is in the shadow folder, byte for byte as committed', async () => {
    const spoolId = await spoolIdentity(path.join(dir, 'spool-a'));
    assert.equal(await spoolIdentity(path.join(dir, 'spool-a')), spoolId, 'the spool identity is stable');
    const c = client(spoolId);
    const { queueId, bytes } = queueFile(2);
    const outcome = await c.copy(queueId, bytes);
    assert.deepEqual(outcome, { protected: true, result: 'stored' });
    // At the moment of the ack the file is in incoming/ (renamed after its fsync), tmp/ is empty.
    const file = path.join(store.folder('a', spoolId), 'incoming', queueId);
    assert.ok(readFileSync(file).equals(bytes), 'the stored copy is the committed file, unchanged');
    assert.deepEqual(readdirSync(path.join(store.folder('a', spoolId), 'tmp')), []);
    assert.equal((await store.identity('a'))?.current, spoolId, 'the origin spool identity is recorded');
    // A retry after a lost ack is acknowledged again without a second copy.
    assert.deepEqual(await c.copy(queueId, bytes), { protected: true, result: 'duplicate' });
    assert.equal(held(store, spoolId).filter((f) => f === queueId).length, 1);
  });

  test('1,000 copies pipelined over one connection, all stored', async () => {
    const spoolId = (await store.identity('a'))!.current;
    const c = client(spoolId, { maxInFlight: 32 });
    const files = Array.from({ length: 1000 }, () => queueFile(1, 4096));
    const before = held(store, spoolId).length;
    const outcomes = await Promise.all(files.map((f) => c.copy(f.queueId, f.bytes)));
    assert.equal(outcomes.filter((o) => o.protected).length, 1000, JSON.stringify(outcomes.find((o) => !o.protected)));
    assert.ok(c.stats.maxInFlight > 1, `copies overlapped on the connection (max in flight ${c.stats.maxInFlight})`);
    assert.ok(c.stats.maxInFlight <= 32, 'never more than maxInFlight');
    assert.equal(c.stats.connects, 1, 'one connection');
    assert.equal(held(store, spoolId).length, before + 1000);
  });

  test('discard notices update the per-recipient state and remove finished copies', async () => {
    const spoolId = (await store.identity('a'))!.current;
    const c = client(spoolId);
    const two = queueFile(2);
    const gone = queueFile(3);
    for (const f of [two, gone]) assert.equal((await c.copy(f.queueId, f.bytes)).protected, true);

    c.discard([{ queueId: two.queueId, statuses: [delivered(0)] }, { queueId: gone.queueId, finished: true }, { queueId: 'unknown.id.a', finished: true }]);
    await new Promise<void>((resolve) => c.once('discarded', () => resolve()));
    const entry = (await store.list('a')).find((e) => e.queueId === two.queueId);
    assert.deepEqual(entry?.pending, [1], 'recipient 0 is done on the copy: a takeover sends only recipient 1');
    assert.equal((await store.list('a')).some((e) => e.queueId === gone.queueId), false, 'a finished message is removed');

    c.discard([{ queueId: two.queueId, statuses: [delivered(1)] }]);
    await new Promise<void>((resolve) => c.once('discarded', () => resolve()));
    assert.equal(held(store, spoolId).includes(two.queueId), false, 'all recipients done: the copy is removed');
    assert.ok(c.stats.discardLagMs.every((ms) => ms < 5000), `discard lag ${c.stats.discardLagMs}`);
    assert.equal(c.pendingDiscards, 0);
  });

  test('a new spool identity (disk replaced) keeps the old copies apart and refuses the old identity', async () => {
    const oldId = (await store.identity('a'))!.current;
    const oldCount = held(store, oldId).length;
    const newId = randomUUID();
    const c = client(newId);
    const f = queueFile();
    assert.equal((await c.copy(f.queueId, f.bytes)).protected, true);
    const identity = await store.identity('a');
    assert.equal(identity?.current, newId);
    assert.deepEqual(identity?.retired.map((r) => r.spoolId), [oldId]);
    assert.equal(held(store, oldId).length, oldCount, 'the old copies stay, for the holder to deliver');
    assert.deepEqual(held(store, newId), [f.queueId]);

    const stale = client(oldId);
    const g = queueFile();
    const before = holder.refusals['retired-identity'];
    const outcome = await stale.copy(g.queueId, g.bytes);
    assert.equal(outcome.protected, false);
    assert.equal(holder.refusals['retired-identity'], before + 1);
    assert.equal(held(store, oldId).includes(g.queueId) || held(store, newId).includes(g.queueId), false);
  });

  describe('bad input on the replication port', () => {
    /** Stored files over every identity of origin a. */
    const storedCount = async (): Promise<number> => {
      const id = await store.identity('a');
      return id ? [id.current, ...id.retired.map((r) => r.spoolId)].reduce((n, s) => n + held(store, s).length, 0) : 0;
    };

    /** After each bad input: counted under `reason`, nothing stored, a good client still served. */
    async function expectRefused(reason: RefusalReason, attempt: () => Promise<unknown>): Promise<void> {
      const before = { count: holder.refusals[reason], total: refused(holder), stored: await storedCount() };
      // TLS refusals are counted by the server when it sees the handshake fail, which may be a
      // moment after the client gave up: wait for the refusal event (bounded).
      const counted = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no refusal counted as ${reason}; seen: ${JSON.stringify(refusalsSeen.slice(-3))}`)), 10_000);
        refusalWaiters.push((r) => {
          if (r !== reason) return false;
          clearTimeout(timer);
          resolve();
          return true;
        });
      });
      await attempt();
      await counted;
      assert.equal(holder.refusals[reason], before.count + 1, `refused as ${reason}; seen: ${JSON.stringify(refusalsSeen.slice(-3))}`);
      assert.equal(refused(holder), before.total + 1, 'counted once, under one reason');
      assert.equal(await storedCount(), before.stored, 'nothing stored');
      const good = client((await store.identity('a'))!.current);
      const f = queueFile();
      assert.equal((await good.copy(f.queueId, f.bytes)).protected, true, 'the holder still serves a good client');
    }

    /** Open a TLS connection with the given credentials; resolves when it ends either way. */
    const tlsAttempt = (opts: tls.ConnectionOptions): Promise<string> => new Promise((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port: holder.port, ca: certs.ca, servername: 'b', ALPNProtocols: ['h2'], ...opts });
      socket.on('error', (err) => resolve(`error: ${err.message}`));
      socket.on('close', () => resolve('closed'));
      socket.on('secureConnect', () => socket.write('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'));
    });

    /** A raw HTTP/2 session as node c or a would open it, to send requests the client never would. */
    const rawSession = (pem = certs.nodes.a): Promise<http2.ClientHttp2Session> => new Promise((resolve, reject) => {
      const s = http2.connect(`https://127.0.0.1:${holder.port}`, { ca: certs.ca, ...pem, servername: 'b' });
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    const post = (s: http2.ClientHttp2Session, headers: Record<string, string>, body: Buffer): Promise<number> => new Promise((resolve, reject) => {
      const req = s.request({ ':method': 'POST', ':path': PATHS.copy, ...headers });
      req.on('response', (h) => resolve(Number(h[':status'])));
      req.on('error', reject);
      req.end(body);
    });
    const goodHeaders = async (queueId: string, seq: number): Promise<Record<string, string>> => ({
      [HEADERS.origin]: 'a', [HEADERS.spoolId]: (await store.identity('a'))!.current, [HEADERS.queueId]: queueId, [HEADERS.seq]: String(seq),
    });

    test('no client certificate', () => expectRefused('tls-no-client-certificate', () => tlsAttempt({})));
    test('a certificate from another CA', () => expectRefused('tls-untrusted-certificate', () => tlsAttempt(certs.foreign)));
    test('garbage bytes instead of TLS', () => expectRefused('tls-not-tls', () => new Promise<void>((resolve) => {
      const s = net.connect(holder.port, '127.0.0.1', () => s.end(Buffer.from('EHLO garbage\r\n\x00\x01\x02'.repeat(50), 'latin1')));
      s.on('error', () => resolve());
      s.on('close', () => resolve());
    })));
    test('TLS with the cluster certificate but not HTTP/2', () => expectRefused('not-http2', () => tlsAttempt({ ...certs.nodes.a, ALPNProtocols: ['http/1.1'] })));
    test('a replayed frame: a sequence number used again on the connection', () => expectRefused('replayed', async () => {
      const s = await rawSession();
      const f = queueFile();
      assert.equal(await post(s, await goodHeaders(f.queueId, 5), f.bytes), 200);
      const g = queueFile();
      assert.equal(await post(s, await goodHeaders(g.queueId, 5), g.bytes), 400);
      s.destroy();
      await new Promise((r) => setImmediate(r));
      // The first was a genuine copy: take it out of the count again.
      const spoolId = (await store.identity('a'))!.current;
      await store.applyDiscards('a', spoolId, [{ queueId: f.queueId, finished: true }]);
    }));
    test('the same queue id with other content', () => expectRefused('conflict', async () => {
      const spoolId = (await store.identity('a'))!.current;
      const [first] = held(store, spoolId);
      const other = queueFile(1, 300, first);
      const outcome = await client(spoolId).copy(first, other.bytes);
      assert.equal(outcome.protected, false);
    }));
    test('a copy from a node this holder is not the shadow of', () => expectRefused('unknown-origin', async () => {
      const s = await rawSession(certs.nodes.c);
      const f = queueFile();
      assert.equal(await post(s, { ...(await goodHeaders(f.queueId, 1)), [HEADERS.origin]: 'c' }, f.bytes), 403);
      s.destroy();
    }));
    test('a request naming another origin than its certificate', () => expectRefused('origin-mismatch', async () => {
      const s = await rawSession();
      const f = queueFile();
      assert.equal(await post(s, { ...(await goodHeaders(f.queueId, 1)), [HEADERS.origin]: 'c' }, f.bytes), 403);
      s.destroy();
    }));
    test('a body that is not a queue file', () => expectRefused('bad-queue-file', async () => {
      const s = await rawSession();
      assert.equal(await post(s, await goodHeaders(nextId(), 1), Buffer.from('TANDEMQ1\nnot really')), 400);
      s.destroy();
    }));
    test('an oversized body', () => expectRefused('oversized', async () => {
      const s = await rawSession();
      const f = queueFile(1, 2 * 1024 * 1024);
      assert.equal(await post(s, await goodHeaders(f.queueId, 1), f.bytes), 413);
      s.destroy();
    }));
    test('a malformed discard batch', () => expectRefused('bad-request', async () => {
      const s = await rawSession();
      const status = await new Promise<number>((resolve, reject) => {
        const req = s.request({ ':method': 'POST', ':path': PATHS.discard, [HEADERS.origin]: 'a', [HEADERS.spoolId]: randomUUID(), [HEADERS.seq]: '1' });
        req.on('response', (h) => resolve(Number(h[':status'])));
        req.on('error', reject);
        req.end('{"notices":[{"queueId":"x","statuses":[{"index":-1}]}]}');
      });
      assert.equal(status, 400);
      s.destroy();
    }));
  });

  test('holder unreachable: the refuse policy gives the 451 reply; accept-unprotected lists the message', async () => {
    const spoolId = (await store.identity('a'))!.current;
    // A port with nothing listening: bind one, note it, close it.
    const free = await new Promise<number>((resolve) => {
      const srv = net.createServer().listen(0, '127.0.0.1', () => {
        const { port } = srv.address() as net.AddressInfo;
        srv.close(() => resolve(port));
      });
    });
    const refuse = new ShadowClient({ ...clientOptions(free, spoolId), policy: 'refuse', backoff: { minMs: 50, maxMs: 200 } });
    const accept = new ShadowClient({ ...clientOptions(free, spoolId), policy: 'accept-unprotected', backoff: { minMs: 50, maxMs: 200 } });
    clients.push(refuse, accept);
    const f = queueFile();
    const r = await refuse.copy(f.queueId, f.bytes);
    assert.equal(r.protected, false);
    assert.ok(!r.protected && r.action === 'refuse' && /^451 4\.4\.0 /.test(r.reply ?? ''), JSON.stringify(r));
    assert.equal(refuse.unprotectedCount, 0, 'a refused message is not kept');
    const a = await accept.copy(f.queueId, f.bytes);
    assert.ok(!a.protected && a.action === 'accept-unprotected', JSON.stringify(a));
    assert.deepEqual(accept.unprotectedIds(), [f.queueId]);
    accept.discard([{ queueId: f.queueId, finished: true }]);
    assert.equal(accept.unprotectedCount, 0, 'a message finished while unprotected needs no copy');
  });
});
