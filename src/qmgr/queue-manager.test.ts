/**
 * Unit tests of the queue manager over a real spool folder, with a scripted channel and router:
 * per-recipient state survives a restart (or a takeover by another process), backoff, expiry,
 * DSNs (never to the null sender), hold/release/delete.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { QueueManager } from './queue-manager.ts';
import { Spool } from '../spool/index.ts';
import { configSchema } from '../config/schema.ts';
import { TrackingLog, readTrackingLog } from '../track/tracking-log.ts';
import { NoSuchMessageError, TempLookupError } from '../util/errors.ts';
import type { Channel, DeliveryJob, RecipientResult } from '../channels/types.ts';
import type { Router } from '../router/types.ts';
import type { Envelope } from '../spool/types.ts';

type Verdict = 'delivered' | 'deferred' | 'failed' | 'unreachable';

/** Managers made by setup(): stopped after each test even when it fails, so no timer keeps the file running; then their folders go. */
const running = new Set<QueueManager>();
const dirs = new Set<string>();
afterEach(async () => {
  await Promise.all([...running].map((q) => q.stop()));
  running.clear();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs.clear();
});

function setup(verdict: (address: string, attempt: number) => Verdict | Promise<Verdict>, queue: Record<string, unknown> = {}, wrapSpool: (s: Spool) => Spool = (s) => s, mayDeliver?: () => boolean) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-qmgr-'));
  dirs.add(dir);
  const config = configSchema.parse({ node: { id: 'q', hostname: 'q.test' }, queue: { min_backoff: '50ms', max_backoff: '100ms', ...queue } });
  const jobs: DeliveryJob[] = [];
  const attempts = new Map<string, number>();
  const channel: Channel = {
    async deliver(job) {
      jobs.push(job);
      return Promise.all(job.recipients.map(async (r): Promise<RecipientResult> => {
        const n = (attempts.get(r.address) ?? 0) + 1;
        attempts.set(r.address, n);
        const v = await verdict(r.address, n);
        if (v === 'unreachable') return { index: r.index, outcome: 'deferred', reply: 'connect ECONNREFUSED 127.0.0.1:25', via: 'next' };
        return { index: r.index, outcome: v, reply: v === 'delivered' ? '250 2.0.0 ok' : v === 'failed' ? '550 5.1.1 no such user' : '451 4.3.0 try later', via: 'next[127.0.0.1]:25' };
      }));
    },
  };
  /** The alias table (RCPT address → final addresses) the router expands with; tests change it. */
  const aliases = new Map<string, string[] | Error>();
  const router: Router = {
    async resolveRecipient(a) {
      const targets = aliases.get(a);
      if (targets instanceof Error) throw targets;
      return { type: 'local', addresses: targets ?? [a] };
    },
    async routeAddress(a) { return { type: 'smtp', domain: a.split('@')[1], port: 25, mx: true }; },
    async reload() {},
    health() { return undefined; },
    async close() {},
  };
  const trackFile = path.join(dir, 'track.log');
  const make = async () => {
    const spool = wrapSpool(await Spool.open(path.join(dir, 'spool'), { nodeId: 'q' }));
    const tracking = new TrackingLog(trackFile, 'q');
    const qmgr = new QueueManager({ config, spool, router, channelFor: () => channel, tracking, logger: pino({ level: 'silent' }), ...(mayDeliver ? { mayDeliver } : {}) });
    running.add(qmgr);
    return { spool, qmgr };
  };
  return { dir, jobs, attempts, aliases, make, track: () => readTrackingLog(trackFile) };
}

function envelope(spool: Spool, sender: string, rcpts: string[], arrivedAt = Date.now()): Envelope {
  return { queueId: spool.newQueueId(), nodeId: 'q', sender, recipients: rcpts.map((a) => ({ address: a, original: a })), arrivedAt, messageId: '<m@x>', client: { address: '127.0.0.1', helo: 'x' } };
}
const body = Buffer.from('Subject: t\r\n\r\nbody\r\n');

async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 5000) {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('a restart (or another process on the same spool) re-sends only to recipients not yet done', async () => {
  // first run: ok@ delivered, bad@ fails (DSN), later@ deferred; the queue manager is then stopped
  const t = setup((a, n) => (a.startsWith('ok') ? 'delivered' : a.startsWith('bad') ? 'failed' : n >= 2 ? 'delivered' : 'deferred'), { min_backoff: '1h', max_backoff: '2h' });
  const first = await t.make();
  await first.qmgr.start();
  const env = envelope(first.spool, 'sender@x.test', ['ok@r.test', 'bad@r.test', 'later@r.test']);
  await first.spool.commit(env, body);
  first.qmgr.enqueue(env.queueId, body.length);
  await until('deferral', async () => (await first.spool.find(env.queueId)) === 'deferred');
  await first.qmgr.stop();
  const qf = await first.spool.read(env.queueId, 'deferred');
  assert.deepEqual(qf.pending, [2], 'only later@ is still pending on disk');
  assert.equal(qf.deferral?.attempts, 1);

  // second run over the same folder: flush so the deferred message is tried now
  const jobsBefore = t.jobs.length;
  const second = await t.make();
  await second.qmgr.start();
  // the restart keeps the retry time recorded in the file (an hour away) ...
  await until('the old schedule', () => second.qmgr.list().find((m) => m.queueId === env.queueId)?.nextAttemptAt === qf.deferral?.nextAttemptAt);
  assert.equal(t.jobs.length, jobsBefore, 'nothing was re-sent before its retry time');
  // ... until the operator flushes the queue
  second.qmgr.flush();
  await until('message done', async () => (await second.spool.find(env.queueId)) === undefined);
  const resent = t.jobs.slice(jobsBefore).filter((j) => j.queueId === env.queueId).flatMap((j) => j.recipients.map((r) => r.address));
  assert.deepEqual(resent, ['later@r.test']);
  assert.equal(t.attempts.get('ok@r.test'), 1, 'the delivered recipient was not sent again');
  await second.qmgr.stop();
});

test('a permanent failure sends one DSN to the sender; never to the null sender', async () => {
  const t = setup((a) => (a === 'sender@x.test' ? 'delivered' : 'failed'));
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  const env = envelope(spool, 'sender@x.test', ['bad@r.test']);
  await spool.commit(env, body);
  qmgr.enqueue(env.queueId, body.length);
  const nullSender = envelope(spool, '', ['bad2@r.test']);
  await spool.commit(nullSender, body);
  qmgr.enqueue(nullSender.queueId, body.length);
  await until('the DSN delivered', () => t.jobs.some((j) => j.recipients[0].address === 'sender@x.test'));
  await until('queue empty', async () => (await spool.list()).length === 0);
  const dsns = t.jobs.filter((j) => j.recipients[0].address === 'sender@x.test');
  assert.equal(dsns.length, 1, 'exactly one DSN (for the message with a sender)');
  assert.equal(dsns[0].sender, '', 'the DSN itself has the null sender');
  assert.match(dsns[0].message.whole!.toString(), /multipart\/report/);
  const events = t.track();
  assert.equal(events.filter((e) => e.event === 'bounced').length, 2);
  assert.equal(events.filter((e) => e.event === 'dsn').length, 1);
  await qmgr.stop();
});

test('deferred mail is retried with backoff and expires after max_lifetime with a DSN', async () => {
  const t = setup((a) => (a === 'sender@x.test' ? 'delivered' : 'deferred'), { max_lifetime: '2s' });
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  const env = envelope(spool, 'sender@x.test', ['slow@r.test']);
  await spool.commit(env, body);
  qmgr.enqueue(env.queueId, body.length);
  await until('expiry DSN', () => t.jobs.some((j) => j.recipients[0].address === 'sender@x.test'), 10_000);
  assert.ok((t.attempts.get('slow@r.test') ?? 0) >= 2, 'retried before expiring');
  const dsn = t.jobs.find((j) => j.recipients[0].address === 'sender@x.test')!;
  assert.match(dsn.message.whole!.toString(), /expired/i);
  assert.ok(t.track().some((e) => e.event === 'expired' && e.recipient === 'slow@r.test'));
  await until('queue empty', async () => (await spool.list()).length === 0);
  await qmgr.stop();
});

test('hold keeps a message from delivery until release; delete removes it without a DSN', async () => {
  let open = false;
  const t = setup(() => (open ? 'delivered' : 'deferred'), { min_backoff: '1h', max_backoff: '2h' });
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  const env = envelope(spool, 'sender@x.test', ['r@r.test']);
  await spool.commit(env, body);
  qmgr.enqueue(env.queueId, body.length);
  await until('deferred, and done with', async () => (await spool.find(env.queueId)) === 'deferred' && qmgr.list().some((m) => m.queueId === env.queueId && !m.busy));
  // the file is in deferred/ a moment before the attempt has finished recording it: then hold
  // answers 'pending' and holds it right after
  assert.match(await qmgr.hold(env.queueId), /^(held|pending)$/);
  await until('held', async () => (await spool.find(env.queueId)) === 'hold');
  // the file moves to hold/ a moment before the manager's own view says so
  await until('held in the manager', () => qmgr.list().some((m) => m.queueId === env.queueId && m.state === 'hold' && !m.busy));
  open = true;
  assert.equal(qmgr.flush(), 0, 'a held message is not flushed');
  await until('released', async () => (await qmgr.release(env.queueId)) === 'released');
  await until('delivered after release', async () => (await spool.find(env.queueId)) === undefined);

  open = false;
  const env2 = envelope(spool, 'sender@x.test', ['r2@r.test']);
  await spool.commit(env2, body);
  qmgr.enqueue(env2.queueId, body.length);
  await until('deferred', async () => (await spool.find(env2.queueId)) === 'deferred');
  assert.match(await qmgr.remove(env2.queueId), /^(deleted|pending)$/);
  await until('deleted', async () => (await spool.find(env2.queueId)) === undefined);
  assert.ok(!t.jobs.some((j) => j.sender === ''), 'no DSN for an operator delete');
  await assert.rejects(qmgr.hold('NOPE.X.q'), (err: unknown) => err instanceof NoSuchMessageError && err.code === 'QUEUE_NO_SUCH_MESSAGE' && /no message/.test(err.message));
  await qmgr.stop();
});

test('a slow destination does not hold up mail for other destinations', async () => {
  let releaseSlow!: () => void;
  const slowGate = new Promise<void>((r) => (releaseSlow = r));
  const t = setup(async (a) => {
    if (a.endsWith('@slow.test')) await slowGate;
    return 'delivered' as Verdict;
  }, { destination_concurrency: 2, total_concurrency: 10 });
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  for (let i = 0; i < 60; i++) {
    const env = envelope(spool, 'sender@x.test', [`r${i}@slow.test`]);
    await spool.commit(env, body);
    qmgr.enqueue(env.queueId, body.length);
  }
  const fast = envelope(spool, 'sender@x.test', ['r@fast.test']);
  await spool.commit(fast, body);
  qmgr.enqueue(fast.queueId, body.length);
  await until('the fast destination delivered while the slow one hangs', async () => (await spool.find(fast.queueId)) === undefined);
  assert.equal(t.jobs.filter((j) => j.recipients[0].address.endsWith('@slow.test')).length, 2, 'only destination_concurrency deliveries to the slow one at a time');
  releaseSlow();
  await until('all delivered', async () => (await spool.list()).length === 0);
  await qmgr.stop();
});

test('a restart on a large queue for one slow destination reads files only as that destination takes them; another destination\'s mail keeps moving', async () => {
  let releaseSlow!: () => void;
  const slowGate = new Promise<void>((r) => (releaseSlow = r));
  const reads: string[] = [];
  const counting = (spool: Spool) => new Proxy(spool, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target);
      if (prop !== 'readForDelivery') return typeof v === 'function' ? v.bind(target) : v;
      return (id: string, state: Parameters<Spool['readForDelivery']>[1]) => {
        reads.push(id);
        return target.readForDelivery(id, state);
      };
    },
  });
  const t = setup(async (a) => {
    if (a.endsWith('@slow.test')) await slowGate;
    return 'delivered' as Verdict;
  }, { destination_concurrency: 2, total_concurrency: 10 }, counting);
  // what a node's restart (or a takeover) finds: 200 messages for the slow destination, then one for another
  const before = await t.make();
  for (let i = 0; i < 200; i++) await before.spool.commit(envelope(before.spool, 'sender@x.test', [`r${i}@slow.test`]), body);
  const fast = envelope(before.spool, 'sender@x.test', ['r@fast.test']);
  await before.spool.commit(fast, body);
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  await until('the fast destination delivered while the slow one hangs', async () => (await spool.find(fast.queueId)) === undefined);
  assert.equal(t.jobs.filter((j) => j.recipients[0].address.endsWith('@slow.test')).length, 2, 'destination_concurrency deliveries to the slow one');
  assert.equal(reads.filter((id) => id !== fast.queueId).length, 2, 'only the files being delivered were read, not the 198 waiting');
  releaseSlow();
  await until('all delivered', async () => (await spool.list()).length === 0);
  const counts = new Map<string, number>();
  for (const j of t.jobs) for (const r of j.recipients) counts.set(r.address, (counts.get(r.address) ?? 0) + 1);
  assert.equal(counts.size, 201);
  assert.ok([...counts.values()].every((n) => n === 1), 'each message delivered once');
  assert.equal(reads.length, 201, 'each file read once for delivery');
  await qmgr.stop();
});

test('a destination that cannot be reached is not tried again for a while: its mail is deferred at once', async () => {
  const t = setup((a) => (a.endsWith('@down.test') ? 'unreachable' : 'deferred'), { min_backoff: '1h', max_backoff: '2h' });
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  const first = envelope(spool, 'sender@x.test', ['a@down.test']);
  await spool.commit(first, body);
  qmgr.enqueue(first.queueId, body.length);
  await until('first deferred', async () => (await spool.find(first.queueId)) === 'deferred');
  const second = envelope(spool, 'sender@x.test', ['b@down.test']);
  await spool.commit(second, body);
  qmgr.enqueue(second.queueId, body.length);
  await until('second deferred', async () => (await spool.find(second.queueId)) === 'deferred');
  assert.equal(t.jobs.length, 1, 'the second message was not tried');
  assert.match((await spool.read(second.queueId, 'deferred')).deferral!.lastReply, /^4\.4\.1 .*unreachable a moment ago \(connect ECONNREFUSED/);
  // a server that answers, even with 4xx, keeps a destination alive
  const other = envelope(spool, 'sender@x.test', ['c@busy.test']);
  await spool.commit(other, body);
  qmgr.enqueue(other.queueId, body.length);
  await until('other deferred', async () => (await spool.find(other.queueId)) === 'deferred');
  const again = envelope(spool, 'sender@x.test', ['d@busy.test']);
  await spool.commit(again, body);
  qmgr.enqueue(again.queueId, body.length);
  await until('tried again', () => t.jobs.length === 3);
  await qmgr.stop();
});

test('if the DSN cannot be queued, delivered recipients are recorded and the failed ones stay pending', async () => {
  let dsnFails = true;
  const t = setup((a) => (a.startsWith('ok') || a === 'sender@x.test' ? 'delivered' : 'failed'), {}, (spool) => new Proxy(spool, {
    get(target, prop) {
      if (prop === 'commit') {
        return async (env: Envelope, msg: Buffer) => {
          if (env.sender === '' && dsnFails) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
          return target.commit(env, msg);
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  }));
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  const env = envelope(spool, 'sender@x.test', ['ok@r.test', 'bad@r.test']);
  await spool.commit(env, body);
  qmgr.enqueue(env.queueId, body.length);
  await until('deferred, and done with', async () => (await spool.find(env.queueId)) === 'deferred' && qmgr.list().some((m) => m.queueId === env.queueId && !m.busy));
  const qf = await spool.read(env.queueId, 'deferred');
  assert.deepEqual(qf.pending, [1], 'ok@ is recorded as delivered; bad@ waits for its DSN');
  dsnFails = false;
  qmgr.flush();
  await until('done', async () => (await spool.list()).length === 0);
  assert.equal(t.attempts.get('ok@r.test'), 1, 'the delivered recipient was not sent twice');
  assert.equal(t.jobs.filter((j) => j.sender === '').length, 1, 'one DSN in the end');
  await qmgr.stop();
});

test('recipients for one next hop go in one transaction, each with its own NOTIFY and ORCPT passed to the channel', async () => {
  const t = setup(() => 'delivered');
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  const env = envelope(spool, 'sender@x.test', ['a@r.test', 'b@r.test', 'c@r.test']);
  env.recipients[0].notify = ['NEVER'];
  env.recipients[1].orcpt = { type: 'utf-8', address: 'jöran@x.test' };
  env.recipients[2].original = 'list@x.test';
  await spool.commit(env, body);
  qmgr.enqueue(env.queueId, body.length);
  await until('delivered', async () => (await spool.list()).length === 0);
  const jobs = t.jobs.filter((j) => j.queueId === env.queueId);
  assert.equal(jobs.length, 1, 'one transaction: the channel sends the parameters per RCPT');
  const [a, b, c] = jobs[0].recipients;
  assert.deepEqual(a.notify, ['NEVER']);
  assert.deepEqual(b.orcpt, { type: 'utf-8', address: 'jöran@x.test' }, 'ORCPT kept as given through the spool');
  assert.equal(c.original, 'list@x.test');
  await qmgr.stop();
});

test('delivery starts while the start-up scan runs; mail arriving meanwhile is delivered exactly once', async () => {
  const t = setup(() => 'delivered');
  const first = await t.make();
  for (let i = 0; i < 300; i++) await first.spool.commit(envelope(first.spool, 's@x.test', [`old${i}@r.test`]), body);
  const { spool, qmgr } = await t.make();
  const { scanned } = await qmgr.start();
  // new mail while the scan is under way: the scan will also see it in incoming/
  const fresh = envelope(spool, 's@x.test', ['new@r.test']);
  await spool.commit(fresh, body);
  qmgr.enqueue(fresh.queueId, body.length, { envelope: fresh, message: body });
  assert.equal((await scanned).queued >= 300, true);
  await until('all delivered', async () => (await spool.list()).length === 0);
  const counts = new Map<string, number>();
  for (const j of t.jobs) for (const r of j.recipients) counts.set(r.address, (counts.get(r.address) ?? 0) + 1);
  assert.equal(counts.size, 301);
  assert.ok([...counts.values()].every((n) => n === 1), 'no message delivered twice');
  await qmgr.stop();
});

/** A spool whose `method` fails as told (the real spool does the rest). */
function failing(method: 'commit' | 'move', shouldFail: (...args: any[]) => boolean, after = false) {
  return (spool: Spool) => new Proxy(spool, {
    get(target, prop) {
      if (prop === method) {
        return async (...args: any[]) => {
          const fail = shouldFail(...args);
          const err = Object.assign(new Error(`${method}: EIO (test)`), { code: 'EIO' });
          if (fail && !after) throw err;
          const result = await (target as any)[method](...args);
          if (fail && after) throw err;
          return result;
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

test('a delay DSN that cannot be queued does not make delivered recipients be sent again', async () => {
  const t = setup((a) => (a.startsWith('ok') ? 'delivered' : 'deferred'), { delay_warning: '1s' }, failing('commit', (env: Envelope) => env.sender === ''));
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  const env = envelope(spool, 'sender@x.test', ['ok@a.test', 'later@b.test'], Date.now() - 60_000);
  await spool.commit(env, body);
  qmgr.enqueue(env.queueId, body.length);
  await until('three tries of the deferred recipient', () => (t.attempts.get('later@b.test') ?? 0) >= 3);
  assert.equal(t.attempts.get('ok@a.test'), 1);
  await qmgr.stop();
});

test('a message whose move failed after the rename is found where it is and tried again', async () => {
  let failOnce = true;
  const t = setup(() => 'deferred', {}, failing('move', (_id: string, _from: string, to: string) => to === 'deferred' && failOnce && !(failOnce = false), true));
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  const env = envelope(spool, 'sender@x.test', ['r@b.test']);
  await spool.commit(env, body);
  qmgr.enqueue(env.queueId, body.length);
  await until('tried again after the failed move', () => (t.attempts.get('r@b.test') ?? 0) >= 2);
  assert.equal(await spool.find(env.queueId), 'deferred');
  assert.ok(qmgr.list().some((m) => m.queueId === env.queueId), 'still scheduled');
  await qmgr.stop();
});

test('a group failing with an internal error does not abandon the other groups of the message', async () => {
  let throws = 2;
  const t = setup(async (a) => {
    if (a.endsWith('@b.test') && throws-- > 0) throw new TypeError('bug in a channel');
    if (a.endsWith('@a.test')) await new Promise((r) => setTimeout(r, 50)); // still delivering when b fails
    return 'delivered' as Verdict;
  });
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  const env = envelope(spool, 'sender@x.test', ['r@a.test', 'r@b.test']);
  await spool.commit(env, body);
  qmgr.enqueue(env.queueId, body.length);
  await until('both delivered', async () => (await spool.list()).length === 0, 10_000);
  assert.equal(t.attempts.get('r@a.test'), 1, 'the healthy group was delivered once');
  await qmgr.stop();
});

test('a delivery gate that shuts during an attempt and opens again by itself: the message is still delivered (nobody calls resume)', async () => {
  // open when the attempt is started, shut when the delivery would begin, open from then on
  const gate = [true, false];
  const t = setup(() => 'delivered', {}, (s) => s, () => gate.shift() ?? true);
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  const env = envelope(spool, 'sender@x.test', ['one@r.test']);
  await spool.commit(env, body);
  qmgr.enqueue(env.queueId, body.length);
  await until('the delivery', () => t.jobs.length === 1, 3000);
  await until('the message to leave the queue', async () => (await spool.find(env.queueId)) === undefined);
  assert.equal(gate.length, 0, 'the gate was shut once in between');
  await qmgr.stop();
});

test('a next hop\'s backlog that goes back to the ready queue all at once is delivered in arrival order', async () => {
  // one delivery at a time to r.test: m0 delivers (held in the channel by the test), m1 waits
  // for its slot, m2..m7 wait unread in the next hop's backlog. The delivery gate shuts (a
  // fencing) before m0 ends: m0's end hands the slot to m1 and sends m2 back to the ready queue;
  // m1 may not deliver, gives its slot back, and with nothing under way there any more the rest
  // of the backlog (m3..m7) goes back at once.
  let finishFirst!: () => void;
  const first = new Promise<void>((r) => (finishFirst = r));
  let open = true;
  const t = setup(async (a) => {
    if (a === 'm0@r.test') await first;
    return 'delivered' as Verdict;
  }, { destination_concurrency: 1 }, (s) => s, () => open);
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  const envs: Envelope[] = [];
  for (let i = 0; i < 8; i++) {
    const env = envelope(spool, 'sender@x.test', [`m${i}@r.test`]);
    await spool.commit(env, body);
    envs.push(env);
  }
  for (const env of envs) qmgr.enqueue(env.queueId, body.length, { envelope: env, message: body });
  await until('m0 under way', () => t.jobs.length === 1);
  open = false;
  finishFirst();
  await until('m0 done', async () => (await spool.find(envs[0].queueId)) === undefined);
  assert.equal(t.jobs.length, 1, 'nothing else started while the gate was shut');
  open = true;
  qmgr.resume();
  await until('all delivered', async () => (await spool.list()).length === 0);
  const order = t.jobs.map((j) => j.recipients[0].address);
  assert.deepEqual([...order].sort(), envs.map((e) => e.recipients[0].address).sort(), 'each message delivered once');
  const block = ['m3@r.test', 'm4@r.test', 'm5@r.test', 'm6@r.test', 'm7@r.test'];
  assert.deepEqual(order.filter((a) => block.includes(a)), block, 'the backlog that came back at once leaves in arrival order, oldest first');
  await qmgr.stop();
});

test('flush forgets the dead-destination memory (as postqueue -f): the flushed mail is really tried', async () => {
  const t = setup((a) => (a.endsWith('@down.test') ? 'unreachable' : 'deferred'), { min_backoff: '1h', max_backoff: '2h' });
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  const ids: string[] = [];
  for (const rcpt of ['a@down.test', 'b@down.test']) {
    const env = envelope(spool, 'sender@x.test', [rcpt]);
    await spool.commit(env, body);
    qmgr.enqueue(env.queueId, body.length);
    await until(`${rcpt} deferred`, async () => (await spool.find(env.queueId)) === 'deferred');
    ids.push(env.queueId);
  }
  assert.equal(t.jobs.length, 1, 'the second message was skipped by the dead-destination memory');
  assert.equal(qmgr.flush(), 2);
  await until('both tried after the flush', () => t.jobs.length === 3);
  await qmgr.stop();
});

test('flush of one message (postqueue -i) tries only that one, past the dead-destination memory', async () => {
  const t = setup((a) => (a.endsWith('@down.test') ? 'unreachable' : 'deferred'), { min_backoff: '1h', max_backoff: '2h' });
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  const ids: string[] = [];
  for (const rcpt of ['a@down.test', 'b@down.test', 'c@down.test']) {
    const env = envelope(spool, 'sender@x.test', [rcpt]);
    await spool.commit(env, body);
    qmgr.enqueue(env.queueId, body.length);
    // deferred on disk and in the queue manager (the move's folder fsyncs come between the two)
    await until(`${rcpt} deferred`, async () => (await spool.find(env.queueId)) === 'deferred' && qmgr.list().find((m) => m.queueId === env.queueId)?.nextAttemptAt !== undefined);
    ids.push(env.queueId);
  }
  assert.equal(t.jobs.length, 1);
  assert.equal(qmgr.flush([ids[1]]), 1);
  await until('the flushed message tried', () => t.jobs.length === 2);
  assert.deepEqual(t.jobs[1].recipients.map((r) => r.address), ['b@down.test']);
  await qmgr.stop();
  // the others wait for their retry time (an hour): tried once (a) or not at all (c) — their state in
  // the list may be 'active' for a moment when the dead-destination memory lapses on a loaded machine
  assert.equal(t.jobs.length, 2, 'only the flushed message was tried again');
});

test('requeue (postsuper -r) expands aliases again: new members get the mail, done recipients never again, ORCPT/NOTIFY kept', async () => {
  const t = setup((a) => (a.endsWith('@down.test') ? 'deferred' : 'delivered'), { min_backoff: '1h', max_backoff: '2h' });
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  // as the receiver queued it: list@ expanded to a@ and b@ (ORCPT and NOTIFY given at RCPT), x@ as it is
  const orcpt = { type: 'rfc822', address: 'list@l.test' } as const;
  const env = envelope(spool, 'sender@x.test', []);
  env.recipients = [
    { address: 'a@ok.test', original: 'list@l.test', orcpt, notify: ['SUCCESS', 'FAILURE'] },
    { address: 'b@down.test', original: 'list@l.test', orcpt, notify: ['SUCCESS', 'FAILURE'] },
    { address: 'x@down.test', original: 'x@down.test' },
  ];
  await spool.commit(env, body);
  qmgr.enqueue(env.queueId, body.length);
  await until('deferred, and done with', async () => (await spool.find(env.queueId)) === 'deferred' && qmgr.list().some((m) => m.queueId === env.queueId && !m.busy));
  assert.equal(t.attempts.get('a@ok.test'), 1);

  // the table changes: the list loses b@ and gains c@ (and a@ again); x@ now expands to itself and y@
  t.aliases.set('list@l.test', ['a@ok.test', 'c@new.test', 'A@OK.TEST']);
  t.aliases.set('x@down.test', ['x@down.test', 'y@new.test']);
  const result = await qmgr.requeue(env.queueId);
  const newId = /^requeued as (\S+) \(3 recipient\(s\)\); no longer expanded to b@down\.test$/.exec(result)?.[1];
  assert.ok(newId, result);
  await until('c@ and y@ delivered', () => t.attempts.get('c@new.test') === 1 && t.attempts.get('y@new.test') === 1);
  await until('the new message deferred for x@', async () => (await spool.find(newId)) === 'deferred');
  assert.equal(await spool.find(env.queueId), undefined, 'the old queue file is gone');
  assert.equal(t.attempts.get('a@ok.test'), 1, 'a@ (delivered before) is never sent again');
  assert.equal(t.attempts.get('b@down.test'), 1, 'b@ (no longer in the list) is not tried again');

  const qf = await spool.read(newId, 'deferred');
  assert.deepEqual(qf.envelope.recipients, [
    { address: 'c@new.test', original: 'list@l.test', orcpt, notify: ['SUCCESS', 'FAILURE'] },
    { address: 'x@down.test', original: 'x@down.test' },
    { address: 'y@new.test', original: 'x@down.test' },
  ]);
  assert.deepEqual(qf.pending, [1]);
  assert.equal(qf.envelope.arrivedAt, env.arrivedAt, 'the arrival time (max_lifetime) is the original one');
  assert.equal(qf.deferral?.attempts, 2, 'the retry history goes with it');
  const job = t.jobs.find((j) => j.recipients.some((r) => r.address === 'c@new.test'))!;
  assert.deepEqual(job.recipients.find((r) => r.address === 'c@new.test'), { index: 0, address: 'c@new.test', original: 'list@l.test', orcpt, notify: ['SUCCESS', 'FAILURE'] });
  const line = (await t.track()).find((l) => l.event === 'requeued');
  assert.deepEqual({ queueId: line?.queueId, newQueueId: line?.newQueueId, dropped: line?.dropped, by: line?.by },
    { queueId: env.queueId, newQueueId: newId, dropped: ['b@down.test'], by: 'admin-api' });
  await qmgr.stop();
});

test('requeue: a held message stays held under its new id; a lookup that fails leaves the message as it was', async () => {
  const t = setup(() => 'deferred', { min_backoff: '1h', max_backoff: '2h' });
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  const env = envelope(spool, 'sender@x.test', ['list@l.test']);
  await spool.commit(env, body);
  await qmgr.enqueueHeld(env.queueId, body.length);
  assert.equal(await spool.find(env.queueId), 'hold');

  t.aliases.set('list@l.test', new TempLookupError('directory unreachable'));
  await assert.rejects(qmgr.requeue(env.queueId), TempLookupError);
  assert.equal(await spool.find(env.queueId), 'hold', 'nothing changed');

  t.aliases.set('list@l.test', ['m1@l.test', 'm2@l.test']);
  const newId = /^requeued as (\S+) .*\(held\)$/.exec(await qmgr.requeue(env.queueId))?.[1];
  assert.ok(newId);
  assert.equal(await spool.find(newId), 'hold');
  assert.equal(await spool.find(env.queueId), undefined);
  assert.deepEqual((await spool.read(newId, 'hold')).envelope.recipients.map((r) => r.address), ['m1@l.test', 'm2@l.test']);
  assert.equal(t.jobs.length, 0, 'nothing was delivered');
  assert.equal(qmgr.list().find((m) => m.queueId === newId)?.state, 'hold');
  await qmgr.stop();
});

test('requeue: when every address of the new expansion is already done, the message leaves the queue (recorded), nothing is sent again', async () => {
  const t = setup((a) => (a.startsWith('gone') ? 'deferred' : 'delivered'), { min_backoff: '1h', max_backoff: '2h' });
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  const env = envelope(spool, 'sender@x.test', []);
  env.recipients = [{ address: 'a@l.test', original: 'list@l.test' }, { address: 'gone@l.test', original: 'list@l.test' }];
  await spool.commit(env, body);
  qmgr.enqueue(env.queueId, body.length);
  await until('deferred, and done with', async () => (await spool.find(env.queueId)) === 'deferred' && qmgr.list().some((m) => m.queueId === env.queueId && !m.busy));
  t.aliases.set('list@l.test', ['a@l.test']); // gone@ left the list
  assert.equal(await qmgr.requeue(env.queueId), 'removed: every address of the new expansion is already done; no longer expanded to gone@l.test');
  assert.equal(await spool.find(env.queueId), undefined);
  assert.equal(qmgr.list().length, 0);
  assert.equal(t.jobs.length, 1, 'a@ is not sent again');
  const line = (await t.track()).find((l) => l.event === 'requeued');
  assert.deepEqual([line?.newQueueId, line?.dropped], [undefined, ['gone@l.test']]);
  await qmgr.stop();
});

test('bounded active queue: more messages than queue.active_message_limit are all delivered once, never more than the limit in memory', async () => {
  let inMemory = 0;
  let qmgrRef: QueueManager | undefined;
  const t = setup(() => {
    inMemory = Math.max(inMemory, qmgrRef!.list().length);
    return 'delivered';
  }, { active_message_limit: 10 });
  const { spool, qmgr } = await t.make();
  qmgrRef = qmgr;
  await qmgr.start();
  const ids: string[] = [];
  for (let i = 0; i < 60; i++) {
    const env = envelope(spool, 's@x.test', [`m${i}@r.test`]);
    await spool.commit(env, body);
    qmgr.enqueue(env.queueId, body.length, { envelope: env, message: body });
    ids.push(env.queueId);
  }
  await until('all delivered', async () => (await spool.list()).length === 0);
  const counts = new Map<string, number>();
  for (const j of t.jobs) for (const r of j.recipients) counts.set(r.address, (counts.get(r.address) ?? 0) + 1);
  assert.equal(counts.size, 60, 'every message delivered');
  assert.ok([...counts.values()].every((n) => n === 1), 'no message delivered twice');
  assert.ok(inMemory <= 10, `at most 10 messages in memory (saw ${inMemory})`);
});

test('bounded active queue: a restart with more than the limit queued delivers all once, earliest due first', async () => {
  const t = setup(() => 'delivered', { active_message_limit: 10 });
  const first = await t.make();
  const now = Date.now();
  // 40 deferred messages, due in the past in a shuffled order (due time i seconds ago... reversed)
  const due = new Map<string, number>();
  for (let i = 0; i < 40; i++) {
    const env = envelope(first.spool, 's@x.test', [`d${i}@r.test`]);
    await first.spool.commit(env, body);
    const at = now - 60_000 + ((i * 7) % 40) * 1000;
    await first.spool.appendStatus(env.queueId, 'incoming', [{ type: 'deferral', at: now - 120_000, attempts: 1, nextAttemptAt: at, lastReply: '451 later' }]);
    await first.spool.move(env.queueId, 'incoming', 'deferred');
    await first.spool.setDueTime(env.queueId, at);
    due.set(`d${i}@r.test`, at);
  }
  const { spool, qmgr } = await t.make();
  const { scanned } = await qmgr.start();
  assert.equal((await scanned).queued, 10, 'the start-up scan reads in only the limit');
  // counts() sees every message, on disk too (those delivered since the scan are gone: the count is exact now)
  const queued = Object.values(qmgr.counts()).reduce((a, b) => a + b, 0);
  const sent = t.jobs.reduce((n, j) => n + j.recipients.length, 0);
  assert.ok(queued <= 40 && queued + sent >= 40, `counts() still sees every message: ${queued} queued, ${sent} delivered`);
  assert.equal(qmgr.index.complete, true);
  await until('all delivered', async () => (await spool.list()).length === 0);
  const order = t.jobs.flatMap((j) => j.recipients.map((r) => r.address));
  assert.equal(order.length, 40, 'each delivered once');
  assert.equal(new Set(order).size, 40);
  const byDue = [...due].sort((a, b) => a[1] - b[1]).map(([a]) => a);
  const position = (a: string): number => order.indexOf(a);
  const lastOfFirst = Math.max(...byDue.slice(0, 10).map(position));
  const firstOfLast = Math.min(...byDue.slice(30).map(position));
  assert.ok(lastOfFirst < firstOfLast, `the 10 earliest due go before the 10 latest (order ${order.join(' ')})`);
});

test('bounded active queue: deferred mail waits on disk, new mail still goes, flush brings the waiting mail back', async () => {
  let down = true;
  const delivered = new Map<string, number>();
  const t = setup((a) => {
    if (a.startsWith('slow') && down) return 'unreachable';
    delivered.set(a, (delivered.get(a) ?? 0) + 1);
    return 'delivered';
  }, { active_message_limit: 10, min_backoff: '1h', max_backoff: '2h' });
  const { spool, qmgr } = await t.make();
  await qmgr.start();
  const commit = async (rcpt: string): Promise<string> => {
    const env = envelope(spool, 's@x.test', [rcpt]);
    await spool.commit(env, body);
    qmgr.enqueue(env.queueId, body.length, { envelope: env, message: body });
    return env.queueId;
  };
  const slow: string[] = [];
  for (let i = 0; i < 25; i++) slow.push(await commit(`slow${i}@down.test`));
  await until('25 deferred', async () => (await spool.list('deferred')).length === 25);
  assert.ok(qmgr.list().length <= 10, 'the deferred messages are not all kept in memory');
  // memory is not clogged by the deferred mail: new mail is delivered at once
  for (let i = 0; i < 5; i++) await commit(`fast${i}@up.test`);
  await until('new mail delivered', () => [...Array(5).keys()].every((i) => delivered.get(`fast${i}@up.test`) === 1));
  // a message on disk only can still be shown to and acted on by the operator
  await qmgr.hold(slow[0]);
  assert.equal(await spool.find(slow[0]), 'hold');
  await assert.rejects(qmgr.hold('0000000AA.AAAAAAAA.q'), NoSuchMessageError);
  down = false;
  assert.ok(qmgr.flush() >= 24, 'flush counts the deferred messages on disk (as the last walk counted them)');
  await until('all but the held one delivered', async () => (await spool.list()).length === 1);
  for (let i = 1; i < 25; i++) assert.equal(delivered.get(`slow${i}@down.test`), 1, `slow${i} delivered once`);
  assert.equal(delivered.get('slow0@down.test'), undefined, 'the held message was not delivered');
});

test('bounded active queue: held messages filling the memory do not keep new mail from being delivered', async () => {
  const t = setup(() => 'delivered', { active_message_limit: 10 });
  const first = await t.make();
  const held: string[] = [];
  for (let i = 0; i < 15; i++) {
    const env = envelope(first.spool, 's@x.test', [`held${i}@r.test`]);
    await first.spool.commit(env, body);
    await first.spool.move(env.queueId, 'incoming', 'hold');
    held.push(env.queueId);
  }
  const { spool, qmgr } = await t.make();
  const { scanned } = await qmgr.start();
  assert.equal((await scanned).queued, 10, 'memory is full of held messages');
  assert.equal(qmgr.counts().hold, 15, 'counts() sees all the held messages');
  for (let i = 0; i < 5; i++) {
    const env = envelope(spool, 's@x.test', [`new${i}@r.test`]);
    await spool.commit(env, body);
    qmgr.enqueue(env.queueId, body.length, { envelope: env, message: body });
  }
  await until('the new mail delivered', async () => (await spool.list()).length === 15);
  assert.deepEqual(t.jobs.flatMap((j) => j.recipients.map((r) => r.address)).sort(), ['new0@r.test', 'new1@r.test', 'new2@r.test', 'new3@r.test', 'new4@r.test']);
  // a held message put back on disk is still released by the operator, and then delivered
  assert.equal(await qmgr.release(held[14]), 'released');
  await until('the released message delivered', () => t.jobs.length === 6);
  assert.equal(qmgr.counts().hold, 14);
});

test('envelope index: follows receive, partial delivery, hold, release, delete and a restart, on disk too', async () => {
  // "later@" recipients are deferred, the others delivered; 10 messages in memory at most
  const t = setup((a) => (a.startsWith('later@') ? 'deferred' : 'delivered'), { active_message_limit: 10, min_backoff: '10m', max_backoff: '1h' });
  const { spool, qmgr } = await t.make();
  await (await qmgr.start()).scanned;
  const sent: Envelope[] = [];
  for (let i = 0; i < 24; i++) {
    const env = envelope(spool, `S${i % 2}@From.test`, [`now${i}@a.test`, `later@${i % 3 === 0 ? 'b' : 'c'}.test`]);
    await spool.commit(env, body);
    qmgr.enqueue(env.queueId, body.length, { envelope: env, message: body });
    sent.push(env);
  }
  await until('all deferred', async () => (await spool.list('deferred')).length === 24, 10_000);
  /** The index against the files: the same ids, states and pending recipients. */
  const agrees = async (q: QueueManager, s: Spool) => {
    const files = (await s.list()).filter((e) => e.state !== 'corrupt');
    const { selected } = q.index.select({});
    assert.deepEqual(selected.map((x) => `${x.queueId} ${x.state}`).sort(), files.map((e) => `${e.queueId} ${e.state}`).sort());
    for (const e of files) {
      const info = await s.readInfo(e.queueId, e.state);
      assert.deepEqual(q.index.get(e.queueId)?.recipients, info.pending.map((i) => info.envelope.recipients[i].address.toLowerCase()), e.queueId);
    }
  };
  assert.ok(qmgr.index.complete);
  await agrees(qmgr, spool);
  assert.equal(qmgr.index.count({ domain: 'a.test' }), 0, 'delivered recipients no longer match');
  assert.equal(qmgr.index.count({ domain: 'b.test' }), 8);
  assert.equal(qmgr.index.count({ sender: 's1@from.test' }), 12);
  assert.equal(qmgr.index.get(sent[0].queueId)?.lastReply, '451 4.3.0 try later');
  assert.equal(await qmgr.hold(sent[0].queueId), 'held');
  assert.equal(await qmgr.hold(sent[1].queueId), 'held');
  assert.equal(await qmgr.release(sent[1].queueId), 'released');
  assert.equal(await qmgr.remove(sent[2].queueId), 'deleted');
  await until('released one deferred again', async () => (await spool.find(sent[1].queueId)) === 'deferred' && !qmgr.isBusy(sent[1].queueId));
  await agrees(qmgr, spool);
  assert.deepEqual(qmgr.counts(), { incoming: 0, active: 0, deferred: 22, hold: 1 });
  await qmgr.stop();
  // a restart: the index is read again from the files, those beyond the memory limit too
  const again = await t.make();
  const { scanned } = await again.qmgr.start();
  assert.equal((await scanned).indexed, 23);
  await agrees(again.qmgr, again.spool);
  assert.deepEqual(again.qmgr.index.select({ state: 'hold' }).selected.map((x) => x.queueId), [sent[0].queueId]);
  await again.qmgr.stop();
});
