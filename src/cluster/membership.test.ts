import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Membership, type NetworkInfo } from './membership.ts';

const timing = { heartbeatInterval: 250, deadAfter: 2500 };
const info = (state: NetworkInfo['state'] = 'ready'): NetworkInfo => ({ boot: 1, state, queue: 0, claims: [] });

function setup() {
  let t = 1000;
  const m = new Membership(['b'], timing, () => t);
  let counter = 0;
  const beat = (net = true, disk = true, state: NetworkInfo['state'] = 'ready') => {
    if (net) m.noteNetwork('b', info(state));
    if (disk) m.noteDisk('b', { boot: 1, counter: ++counter });
  };
  return { m, beat, advance: (ms: number) => { t += ms; } };
}

test('a peer with both heartbeats is alive; silent for dead_after on both it is dead', () => {
  const { m, beat, advance } = setup();
  beat();
  assert.equal(m.status('b').type, 'alive');
  advance(1000);
  assert.equal(m.status('b').type, 'suspect');
  advance(1499);
  assert.notEqual(m.status('b').type, 'dead');
  advance(1);
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

test('a peer never heard of is dead after the grace period, not at once', () => {
  const { m, advance } = setup();
  assert.notEqual(m.status('b').type, 'dead');
  advance(2500);
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
