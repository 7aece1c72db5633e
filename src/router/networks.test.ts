/**
 * router/networks.test.ts — tests of NetworkList (IPv4, IPv6, mapped addresses, bad entries)
 * and loadNetworkTable over a real temp file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { NetworkList, loadNetworkTable } from './networks.ts';

test('IPv4 CIDRs and single addresses', () => {
  const list = NetworkList.parse(['10.0.0.0/8', '192.0.2.1', '198.51.100.0/24, 203.0.113.128/25']);
  assert.equal(list.size, 4);
  for (const ip of ['10.1.2.3', '192.0.2.1', '198.51.100.255', '203.0.113.200']) assert.ok(list.contains(ip), ip);
  for (const ip of ['11.0.0.1', '192.0.2.2', '203.0.113.1', 'not-an-ip', '']) assert.ok(!list.contains(ip), ip);
});

test('IPv6 entries, brackets and zone ids', () => {
  const list = NetworkList.parse(['::1', '2001:db8::/32', '[fe80::]/10']);
  for (const ip of ['::1', '2001:db8:1::5', 'fe80::1%eth0']) assert.ok(list.contains(ip), ip);
  for (const ip of ['::2', '2001:db9::1', '127.0.0.1']) assert.ok(!list.contains(ip), ip);
});

test('IPv4-mapped IPv6 clients match IPv4 entries, and mapped entries match IPv4 clients', () => {
  const list = NetworkList.parse(['127.0.0.0/8', '::ffff:192.0.2.0/120']);
  assert.ok(list.contains('::ffff:127.0.0.1'));
  assert.ok(list.contains('192.0.2.9'));
  assert.ok(list.contains('::ffff:192.0.2.9'));
  assert.ok(!list.contains('::ffff:10.0.0.1'));
});

test('0.0.0.0/0 and ::/0 match everything of their family', () => {
  assert.ok(NetworkList.parse(['0.0.0.0/0']).contains('203.0.113.5'));
  assert.ok(!NetworkList.parse(['0.0.0.0/0']).contains('2001:db8::1'));
  assert.ok(NetworkList.parse(['::/0']).contains('2001:db8::1'));
});

test('bad entries name the entry and the source', () => {
  assert.throws(() => NetworkList.parse(['10.0.0.0/33'], 'relay.networks'), /^Error: relay.networks: "10.0.0.0\/33": prefix length must be from 0 to 32/);
  assert.throws(() => NetworkList.parse(['10.0.0.1/8'], 'relay.networks'), /relay.networks: "10.0.0.1\/8" has host bits set; did you mean 10.0.0.0\/8\?/);
  assert.throws(() => NetworkList.parse(['localhost'], 'relay.networks'), /relay.networks: "localhost" is not an IP address/);
  assert.throws(() => NetworkList.parse(['10.1'], 'x'), /"10.1" is not an IP address/);
  assert.throws(() => NetworkList.parse(['2001:db8::/200'], 'x'), /prefix length must be from 0 to 128/);
});

test('iterating a list gives entries that parse back to the same list', () => {
  const list = NetworkList.parse(['10.0.0.0/8', '::1', '::ffff:192.0.2.0/120']);
  const copy = NetworkList.parse([...list]);
  assert.deepEqual([...copy], [...list]);
  assert.ok(copy.contains('::ffff:192.0.2.1'));
});

test('loadNetworkTable: keys are networks, values empty or OK, errors with file:line', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tandem-net-'));
  try {
    const file = path.join(dir, 'relay_networks');
    await writeFile(file, '# clients\n10.0.0.0/8 OK\n2001:db8:: \n[::1]/128\n');
    const list = await loadNetworkTable(file);
    assert.ok(list.contains('10.9.9.9'));
    assert.ok(list.contains('2001:db8::'));
    assert.ok(list.contains('::1'));
    assert.ok(!list.contains('2001:db8::1'));

    await writeFile(file, '10.0.0.0/8\n192.0.2.0/24 REJECT\n');
    await assert.rejects(loadNetworkTable(file), /relay_networks:2: network 192.0.2.0\/24 has value "REJECT"/);
    await writeFile(file, '10.0.0.0/8\n\n300.1.1.1\n');
    await assert.rejects(loadNetworkTable(file), /relay_networks:3: "300.1.1.1" is not an IP address/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('answers stay right when asked again and when more clients ask than the list remembers', () => {
  const list = NetworkList.parse(['10.0.0.0/8']);
  const answers = (): boolean[] => Array.from({ length: 5000 }, (_, i) => list.contains(i % 2 ? `10.0.${i >> 8}.${i & 255}` : `11.0.${i >> 8}.${i & 255}`));
  const first = answers();
  assert.deepEqual(first, Array.from({ length: 5000 }, (_, i) => i % 2 === 1));
  assert.deepEqual(answers(), first, 'the same answers from memory as from parsing');
  assert.ok(!list.contains('not an address') && !list.contains('not an address'));
  assert.ok(list.contains('10.1.2.3') && !NetworkList.parse(['192.0.2.0/24']).contains('10.1.2.3'), 'each list answers for itself');
});
