/**
 * envelope-index.test.ts — the queue manager's envelope index against a plain model (an array
 * of objects filtered the obvious way): after random adds, changes and removals (enough to grow
 * every table, recycle slots and compact the arena), every filter, page and count agrees.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EnvelopeIndex, type IndexedMessage, type IndexFilter } from './envelope-index.ts';
import { makeQueueIdGenerator } from '../spool/queueid.ts';
import type { QueueState } from '../spool/types.ts';

const NOW = Date.UTC(2026, 11, 7, 12, 0, 0);

function model(all: Map<string, IndexedMessage>, f: IndexFilter, now = NOW): string[] {
  const dom = (a: string) => (a.includes('@') ? a.slice(a.lastIndexOf('@') + 1) : '');
  return [...all.values()].filter((m) => {
    if (f.ids && !f.ids.includes(m.queueId)) return false;
    if (f.state && m.state !== f.state) return false;
    if (f.sender !== undefined && m.sender !== (f.sender === '<>' ? '' : f.sender.toLowerCase())) return false;
    if (f.senderDomain !== undefined && !(m.sender.includes('@') && dom(m.sender) === f.senderDomain.toLowerCase())) return false;
    if (f.recipient !== undefined && !m.recipients.includes(f.recipient.toLowerCase())) return false;
    if (f.domain !== undefined && !m.recipients.some((r) => dom(r) === f.domain!.toLowerCase())) return false;
    if (f.olderThanMs !== undefined && Math.floor(m.arrivedAt / 1000) * 1000 > now - f.olderThanMs) return false;
    return true;
  }).map((m) => m.queueId).sort();
}

test('EnvelopeIndex: filters, pages, counts and shape agree with a plain model through adds, changes and removals', () => {
  let seed = 11;
  const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
  let clock = NOW - 3_600_000;
  const ids = [makeQueueIdGenerator('mx1', () => clock), makeQueueIdGenerator('b-2', () => clock)];
  const index = new EnvelopeIndex();
  const all = new Map<string, IndexedMessage>();
  const states: QueueState[] = ['incoming', 'active', 'deferred', 'hold'];
  const addr = () => `${['u', 'Üser', 'list-x', 'a.b'][rnd(4)]}${rnd(300)}@${['Example.ORG', 'b.test', 'c.test', 'd.example'][rnd(4)]}`;
  for (let round = 0; round < 6000; round++) {
    const op = rnd(10);
    const keys = [...all.keys()];
    if (op < 5 || keys.length === 0) {
      clock += rnd(2000);
      const id = rnd(50) === 0 ? `foreign-${round}` : ids[rnd(2)]();
      const m: IndexedMessage = {
        queueId: id, state: states[rnd(4)], sender: rnd(5) === 0 ? '' : addr().toLowerCase(),
        recipients: Array.from({ length: 1 + rnd(4) }, () => addr().toLowerCase()), arrivedAt: clock - rnd(3_000_000), size: 100 + rnd(100_000),
        ...(rnd(2) ? { nextAttemptAt: (Math.ceil(NOW / 1000) + rnd(9000)) * 1000, lastReply: `451 4.7.1 try later (${rnd(5)})` } : {}),
      };
      m.arrivedAt = Math.floor(m.arrivedAt / 1000) * 1000;
      index.set(id, m);
      all.set(id, m);
    } else if (op < 8) {
      const id = keys[rnd(keys.length)];
      const m = all.get(id)!;
      const recipients = m.recipients.filter(() => rnd(2) === 0);
      const state = states[rnd(4)];
      index.update(id, { state, recipients, lastReply: '452 4.2.2 mailbox full', nextAttemptAt: NOW + 60_000 });
      all.set(id, { ...m, state, recipients, lastReply: '452 4.2.2 mailbox full', nextAttemptAt: NOW + 60_000 });
    } else {
      const id = keys[rnd(keys.length)];
      index.delete(id);
      all.delete(id);
    }
  }
  assert.ok(all.size > 2000, `${all.size} messages left`);
  assert.equal(index.size, all.size);
  for (const m of all.values()) assert.deepEqual(index.get(m.queueId), m);
  assert.equal(index.get('0ZZZZZZZZ.00000000.mx1'), undefined);
  assert.equal(index.has('nope'), false);

  const some = [...all.values()][17];
  const filters: IndexFilter[] = [
    {}, { state: 'hold' }, { sender: '' }, { sender: '<>' }, { sender: some.sender || 'x@y' }, { senderDomain: 'b.test' }, { senderDomain: 'EXAMPLE.org' },
    { recipient: some.recipients[0] ?? 'u1@b.test' }, { recipient: 'ÜSER7@b.test' }, { domain: 'c.test' }, { domain: 'nowhere.test' },
    { domain: 'd.example', state: 'deferred' }, { olderThanMs: 1_800_000 }, { ids: [some.queueId, 'gone.id'] }, { ids: [some.queueId], state: some.state },
  ];
  for (const f of filters) {
    const { selected, missing } = index.select(f, NOW);
    assert.deepEqual(selected.map((x) => x.queueId).sort(), model(all, f), JSON.stringify(f));
    if (!f.ids) assert.equal(index.count(f, NOW), selected.length, `count ${JSON.stringify(f)}`);
    for (const x of selected) assert.equal(x.state, all.get(x.queueId)!.state);
    if (f.ids) assert.deepEqual(missing, f.ids.filter((id) => !all.has(id)));
  }
  // pages: newest queue id first, the first pages (to 1,000 messages) by one pass, the later ones by a sort
  const newest = [...all.keys()].sort().reverse();
  for (const p of [1, 2, 20, 21, 40, 101, 120]) {
    const { rows, total } = index.page({}, p, 50, NOW);
    assert.equal(total, all.size);
    assert.deepEqual(rows.map((r) => r.queueId), newest.slice((p - 1) * 50, p * 50), `page ${p}`);
  }
  const held = index.page({ state: 'hold' }, 1, 10, NOW);
  assert.deepEqual(held.rows.map((r) => r.queueId), model(all, { state: 'hold' }).reverse().slice(0, 10));

  const counts = { incoming: 0, active: 0, deferred: 0, hold: 0 } as Record<string, number>;
  for (const m of all.values()) counts[m.state]++;
  assert.deepEqual(index.counts(), counts);

  const shape = index.shape({ edgesMin: [30, 60], perRecipient: true, now: NOW });
  const want = new Map<string, number[]>();
  for (const m of all.values()) {
    const min = (Math.floor(NOW / 1000) - m.arrivedAt / 1000) / 60;
    const b = min <= 30 ? 0 : min <= 60 ? 1 : 2;
    for (const r of m.recipients) {
      const d = r.slice(r.lastIndexOf('@') + 1);
      const c = want.get(d) ?? [0, 0, 0];
      c[b]++;
      want.set(d, c);
    }
  }
  assert.deepEqual(new Map([...shape.rows].filter(([, c]) => c.some((n) => n > 0))), want);
  assert.equal(shape.messages, all.size);
  const perMessage = index.shape({ edgesMin: [30, 60], perRecipient: false, state: 'hold', now: NOW });
  assert.equal(perMessage.messages, counts.hold);
  assert.equal([...perMessage.rows.values()].reduce((n, c) => n + c.reduce((a, b) => a + b, 0), 0),
    [...all.values()].filter((m) => m.state === 'hold').reduce((n, m) => n + new Set(m.recipients.map((r) => r.slice(r.lastIndexOf('@') + 1))).size, 0));

  // everything removed: nothing left anywhere
  for (const id of all.keys()) index.delete(id);
  assert.equal(index.size, 0);
  assert.deepEqual(index.select({}, NOW).selected, []);
  assert.deepEqual(index.counts(), { incoming: 0, active: 0, deferred: 0, hold: 0 });
});
