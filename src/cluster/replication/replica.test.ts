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
import { holderOf, originsOf } from './placement.ts';
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
  assert.deepEqual(['a', 'b', 'c'].map((id) => holderOf(nodes, id)), ['c', 'c', 'a']);
  assert.deepEqual(originsOf(nodes, 'c'), ['a', 'b']);
  assert.deepEqual(originsOf(nodes, 'a'), ['c']);
  assert.deepEqual(originsOf(nodes, 'b'), []);
});
