import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseSurvivor } from './survivor.ts';

const node = (id: string, site: string, partner?: string) => ({ id, site, heartbeat: { host: '127.0.0.1', port: 1 }, ...(partner ? { partner } : {}) });
const nodes = [node('a', 'x', 'b'), node('b', 'x', 'a'), node('c', 'y'), node('d', 'x')];
const live = (...ids: string[]) => (id: string) => ids.includes(id);

test('the partner takes over first', () => {
  assert.equal(chooseSurvivor(nodes, 'a', live('b', 'c', 'd')), 'b');
});

test('without a live partner: the next live node of the same site, then other sites', () => {
  assert.equal(chooseSurvivor(nodes, 'a', live('c', 'd')), 'd');
  assert.equal(chooseSurvivor(nodes, 'a', live('c')), 'c');
  assert.equal(chooseSurvivor(nodes, 'c', live('a', 'b', 'd')), 'd', 'c has no partner: the next node after it');
});

test('nobody live, or an unknown spool: nobody', () => {
  assert.equal(chooseSurvivor(nodes, 'a', live()), undefined);
  assert.equal(chooseSurvivor(nodes, 'zz', live('a')), undefined);
});
