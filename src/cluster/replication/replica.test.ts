/**
 * replica.test.ts — the replication TLS files as a node (and `tandem config check`) reads them:
 * one config for every node ({node} in the file names), and clear errors for a certificate of
 * another node, of another CA, or a missing file. Certificates made with openssl.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeClusterCerts, opensslMissing } from '../../../test/harness/cluster-certs.ts';
import { configSchema } from '../../config/schema.ts';
import { holdersOf, originsOf, takeoverRank } from './placement.ts';
import { replicationTls } from './replica.ts';

test('replication TLS: {node} picks each node\'s files; another node\'s certificate, another CA, a missing file are refused by name', { skip: opensslMissing }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tandem-repl-tls-'));
  const certs = makeClusterCerts(dir, ['a', 'b']);
  writeFileSync(path.join(dir, 'mallory.pem'), certs.foreign.cert);
  writeFileSync(path.join(dir, 'mallory.key'), certs.foreign.key);
  const config = (cert: string, key: string) => configSchema.parse({
    node: { id: 'a' },
    cluster: {
      secret: 'a-cluster-secret-0123456789', storage: 'replicated',
      replication: { tls: { ca: path.join(dir, 'cluster-ca.pem'), cert: path.join(dir, cert), key: path.join(dir, key) } },
      nodes: [{ id: 'a', heartbeat: '127.0.0.1:1', replication: '127.0.0.1:3' }, { id: 'b', heartbeat: '127.0.0.1:2', replication: '127.0.0.1:4' }],
    },
  });
  const shared = config('node-{node}.pem', 'node-{node}.key');
  assert.ok((await replicationTls(shared, 'a')).cert.toString().includes('BEGIN CERTIFICATE'));
  await replicationTls(shared, 'b');
  await assert.rejects(replicationTls(config('node-b.pem', 'node-b.key'), 'a'), /node-b\.pem is for "CN=b", not node a: its CN must be the node id/);
  await assert.rejects(replicationTls(config('mallory.pem', 'mallory.key'), 'a'), /mallory\.pem was not issued by the cluster CA/);
  await assert.rejects(replicationTls(config('node-a.pem', 'node-b.key'), 'a'), /do not go together/);
  await assert.rejects(replicationTls(config('nope-{node}.pem', 'node-a.key'), 'a'), /cluster\.replication\.tls\.cert: cannot read .*nope-a\.pem/);
});

test('placement: a node\'s copies are at its partner, else at the next node; each node knows whose copies it keeps', () => {
  const nodes = configSchema.parse({
    node: { id: 'a' },
    cluster: { secret: 'a-cluster-secret-0123456789', nodes: [{ id: 'a', heartbeat: '127.0.0.1:1', partner: 'c' }, { id: 'b', heartbeat: '127.0.0.1:2' }, { id: 'c', heartbeat: '127.0.0.1:3' }] },
  }).cluster!.nodes;
  assert.deepEqual(['a', 'b', 'c'].map((id) => holdersOf(nodes, id)), [['c'], ['c'], ['a']]);
  assert.deepEqual(originsOf(nodes, 'c'), ['a', 'b']);
  assert.deepEqual(originsOf(nodes, 'a'), ['c']);
  assert.deepEqual(originsOf(nodes, 'b'), []);
});

test('placement over two sites: the local holder in the own site, the remote copy at the same position in the next site; takeover order follows', () => {
  const node = (id: string, site: string, partner?: string) => ({ id, heartbeat: `127.0.0.1:${id.charCodeAt(0)}`, site, ...(partner ? { partner } : {}) });
  const nodes = configSchema.parse({
    node: { id: 'a' },
    // no partners in dc2: the next node of the same site holds, not the next node of the list
    cluster: { secret: 'a-cluster-secret-0123456789', nodes: [node('a', 'dc1', 'b'), node('b', 'dc1', 'a'), node('c', 'dc2'), node('d', 'dc2'), node('e', 'dc1')] },
  }).cluster!.nodes;
  assert.deepEqual(['a', 'b', 'c', 'd', 'e'].map((id) => holdersOf(nodes, id)), [['b'], ['a'], ['d'], ['c'], ['a']]);
  assert.deepEqual(['a', 'b', 'c', 'd', 'e'].map((id) => holdersOf(nodes, id, true)), [['b', 'c'], ['a', 'd'], ['d', 'a'], ['c', 'b'], ['a', 'c']]);
  assert.deepEqual(originsOf(nodes, 'c', true), ['a', 'd', 'e']);
  assert.deepEqual(originsOf(nodes, 'c', false), ['d']);
  assert.deepEqual(takeoverRank(nodes, 'a', 'b', true), { rank: 0, before: [] });
  assert.deepEqual(takeoverRank(nodes, 'a', 'c', true), { rank: 1, before: ['b'] });
  assert.equal(takeoverRank(nodes, 'a', 'd', true).rank, -1);
  // a node alone in its site keeps its first copy in another site
  const lone = configSchema.parse({
    node: { id: 'a' },
    cluster: { secret: 'a-cluster-secret-0123456789', nodes: [node('a', 'dc1'), node('b', 'dc2'), node('c', 'dc2')] },
  }).cluster!.nodes;
  assert.deepEqual(holdersOf(lone, 'a', true), ['b']);
  assert.deepEqual(holdersOf(lone, 'c', true), ['b', 'a']);
});
