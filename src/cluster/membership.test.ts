import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Membership, type NetworkInfo } from './membership.ts';

const timing = { heartbeatInterval: 250, deadAfter: 2500 };
const info = (state: NetworkInfo['state'] = 'ready'): NetworkInfo => ({ boot: 1, state, queue: 0, claims: [] });

function setup() {
  let t = 1000;
  const m = new Membership(['b'], timing, () => t);
  let counter = 0;
  // every call is one pass: the disk slot is read (a new counter when `disk`, else the same)
  const beat = (net = true, disk = true, state: NetworkInfo['state'] = 'ready') => {
    if (net) m.noteNetwork('b', info(state));
    m.noteDisk('b', { boot: 1, counter: disk ? ++counter : counter });
  };
  return { m, beat, advance: (ms: number) => { t += ms; } };
}

test('a peer with both heartbeats is alive; silent for dead_after on both it is dead', () => {
  const { m, beat, advance } = setup();
  beat();
  assert.equal(m.status('b').type, 'alive');
  advance(1000);
  beat(false, false);
  assert.equal(m.status('b').type, 'suspect');
  advance(1499);
  beat(false, false);
  assert.notEqual(m.status('b').type, 'dead');
  advance(1);
  beat(false, false);
  assert.equal(m.status('b').type, 'dead');
  beat();
  assert.equal(m.status('b').type, 'alive', 'a peer that beats again is alive again');
});

test('a network partition alone never makes a peer dead while its disk heartbeat moves', () => {
  const { m, beat, advance } = setup();
  for (let i = 0; i < 100; i++) {
    advance(250);
    beat(false, true);
  }
  assert.equal(m.status('b').type, 'suspect');
  assert.ok(m.isLive('b'));
});

test('a disk heartbeat that repeats the same counter is silence', () => {
  const { m, advance } = setup();
  for (let i = 0; i < 11; i++) {
    advance(250);
    m.noteNetwork('b', info());
    m.noteDisk('b', { boot: 1, counter: 7 });
  }
  assert.equal(m.status('b').type, 'suspect');
});

test('a peer that says it fenced itself is dead once its disk heartbeat has stopped for dead_after', () => {
  const { m, beat, advance } = setup();
  beat();
  for (let i = 0; i < 9; i++) {
    advance(250);
    beat(true, false, 'fenced');
  }
  assert.equal(m.status('b').type, 'fenced');
  assert.equal(m.isLive('b'), false);
  advance(250);
  beat(true, false, 'fenced');
  assert.equal(m.status('b').type, 'dead');
});

test('a peer never seen beating is dead only after 4 × dead_after (a slow start is not a death)', () => {
  const { m, advance } = setup();
  m.noteDisk('b', { boot: 1, counter: 7 }); // an old beat in its slot, from before we started
  for (let i = 0; i < 39; i++) {
    advance(250);
    m.noteDisk('b', { boot: 1, counter: 7 });
  }
  assert.notEqual(m.status('b').type, 'dead');
  advance(250);
  m.noteDisk('b', { boot: 1, counter: 7 });
  assert.equal(m.status('b').type, 'dead');
});

test('a peer whose disk slot cannot be read is never declared dead (nothing is known)', () => {
  const { m, beat, advance } = setup();
  beat();
  advance(10_000); // no network heartbeat, no successful read of its slot
  assert.equal(m.status('b').type, 'suspect');
});

test('a read that began before a stall does not make an old beat look fresh', () => {
  let t = 1000;
  const m = new Membership(['b'], timing, () => t);
  m.noteDisk('b', { boot: 1, counter: 1 }, t);
  const readBegan = t;
  t += 3000; // the observer stalls while the read is in flight
  m.noteDisk('b', { boot: 1, counter: 2 }, readBegan);
  assert.ok(m.view()[0].diskAgeMs >= 3000, 'the change is dated from when the read began');
  m.noteDisk('b', { boot: 1, counter: 2 }); // a fresh read: nothing new since
  assert.equal(m.status('b').type, 'dead');
});

test('draining and returning peers: draining is live; a starting peer is not back yet', () => {
  const { m, beat } = setup();
  beat(true, true, 'draining');
  assert.equal(m.status('b').type, 'draining');
  assert.ok(m.isBack('b'));
  beat(true, true, 'starting');
  assert.equal(m.isBack('b'), false);
  beat(true, true, 'returning');
  assert.ok(m.isBack('b'));
});

test('a peer whose disk slot keeps changing without opening (another secret) is unauthenticated, never dead, and cannot take over', () => {
  let t = 1000;
  const m = new Membership(['b'], timing, () => t);
  const other = (n: number) => `deadbeef… {"node":"b","counter":${n}} signed with another secret`;
  m.noteDisk('b', undefined, t, other(1));
  assert.notEqual(m.status('b').type, 'unauthenticated', 'one read proves nothing: the slot may be a stale leftover');
  t += 250;
  m.noteDisk('b', undefined, t, other(2));
  assert.equal(m.status('b').type, 'unauthenticated');
  // the slot stops changing and no network heartbeat ever opens: still never dead
  for (let i = 0; i < 200; i++) {
    t += 250;
    m.noteDisk('b', undefined, t, other(2));
  }
  assert.equal(m.status('b').type, 'unauthenticated', 'never dead: we never could tell whose writes they were');
  assert.ok(m.isLive('b'), 'its spool is not taken over');
  assert.equal(m.canTakeOver('b'), false, 'it is not chosen to take a spool over');
  assert.equal(m.isBack('b'), false);
  // the operator fixes the secret: a beat that opens clears it
  m.noteNetwork('b', info());
  m.noteDisk('b', { boot: 2, counter: 1 }, t);
  assert.equal(m.status('b').type, 'alive');
});

test('an unchanging slot that does not open (a leftover from before a secret change) is silence, as before', () => {
  let t = 1000;
  const m = new Membership(['b'], timing, () => t);
  for (let i = 0; i < 60; i++) {
    t += 250;
    m.noteDisk('b', undefined, t, 'leftover signed with an old secret');
  }
  assert.equal(m.status('b').type, 'dead', 'a node that never beat is dead after 4 x dead_after');
});
