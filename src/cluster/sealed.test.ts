import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Sealer, UnsealError } from './sealed.ts';

const sealer = new Sealer('a-cluster-secret-of-some-length');

test('a sealed record opens with the same secret', () => {
  const text = sealer.seal({ node: 'a', seq: 3 });
  assert.deepEqual(sealer.open(text), { node: 'a', seq: 3 });
});

test('another secret, an altered record or garbage is refused with a reason', () => {
  const text = sealer.seal({ node: 'a', seq: 3 });
  const reason = (f: () => unknown) => { try { f(); return 'accepted'; } catch (e) { assert.ok(e instanceof UnsealError); return e.reason; } };
  assert.equal(reason(() => new Sealer('another-secret-of-some-length').open(text)), 'bad-signature');
  assert.equal(reason(() => sealer.open(text.replace('"seq":3', '"seq":4'))), 'bad-signature');
  assert.equal(reason(() => sealer.open('{"node":"a"}')), 'malformed');
  assert.equal(reason(() => sealer.open('')), 'malformed');
});

test('rotation: records are sealed with the signing secret only and opened with it or an accepted one', () => {
  const oldOnly = new Sealer('the-old-cluster-secret-0123456789');
  const rotating = new Sealer('the-new-cluster-secret-0123456789', ['the-old-cluster-secret-0123456789']);
  const newOnly = new Sealer('the-new-cluster-secret-0123456789');
  assert.deepEqual(rotating.open(oldOnly.seal({ n: 1 })), { n: 1 }, 'what an old node signs opens during the window');
  assert.equal(rotating.openedWithAccepted, 1, 'and is counted, so the operator sees when nobody signs with the old one any more');
  assert.deepEqual(newOnly.open(rotating.seal({ n: 2 })), { n: 2 }, 'a rotating node signs with the new secret');
  assert.equal(rotating.openedWithAccepted, 1);
  assert.throws(() => oldOnly.open(rotating.seal({ n: 3 })), (e) => e instanceof UnsealError && e.reason === 'bad-signature');
});
