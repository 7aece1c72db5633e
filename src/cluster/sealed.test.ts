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
