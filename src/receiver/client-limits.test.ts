/**
 * client-limits.test.ts — the anvil's counting: per-address and per-network connection
 * counts, sliding-window rates, exceptions, AUTH failure rates (a fake clock, no timers).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClientLimits, clientKey, networkKey, type ClientLimitsOptions } from './client-limits.ts';

function limits(o: Partial<ClientLimitsOptions> = {}) {
  let now = 1_000_000;
  const l = new ClientLimits({
    clientConnections: 2, networkConnections: 0, connectionRate: 0, messageRate: 0, recipientRate: 0, authFailureRate: 0,
    windowMs: 60_000, isExempt: () => false, now: () => now, ...o,
  });
  return { l, advance: (ms: number) => { now += ms; } };
}

test('addresses and networks are keyed as Postfix counts them (IPv4-mapped IPv6 is IPv4)', () => {
  assert.equal(clientKey('::ffff:192.0.2.7'), '192.0.2.7');
  assert.equal(networkKey('192.0.2.7'), '192.0.2.0/24');
  assert.equal(networkKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
});

test('concurrent connections per address: refused at the limit, free again after release', () => {
  const { l } = limits();
  assert.equal(l.connect('192.0.2.1'), undefined);
  assert.equal(l.connect('::ffff:192.0.2.1'), undefined);
  assert.equal(l.connect('192.0.2.1')?.limit, 'client_connections');
  assert.equal(l.connect('192.0.2.2'), undefined, 'another address is not affected');
  l.release('192.0.2.1');
  assert.equal(l.connect('192.0.2.1'), undefined);
  assert.equal(l.connections('192.0.2.1'), 2);
  l.close();
});

test('per /24 and per /64 network', () => {
  const { l } = limits({ clientConnections: 0, networkConnections: 3 });
  for (let i = 1; i <= 3; i++) assert.equal(l.connect(`192.0.2.${i}`), undefined);
  assert.equal(l.connect('192.0.2.99')?.limit, 'network_connections');
  assert.equal(l.connect('192.0.3.1'), undefined);
  for (let i = 1; i <= 3; i++) assert.equal(l.connect(`2001:db8::${i}`), undefined);
  assert.equal(l.connect('2001:db8::ffff:1')?.limit, 'network_connections');
  l.close();
});

test('rates slide: refused within the window, allowed again when the oldest event leaves it', () => {
  const { l, advance } = limits({ clientConnections: 0, connectionRate: 2, messageRate: 1, recipientRate: 3 });
  assert.equal(l.connect('192.0.2.1'), undefined);
  advance(30_000);
  assert.equal(l.connect('192.0.2.1'), undefined);
  assert.equal(l.connect('192.0.2.1')?.limit, 'connection_rate');
  advance(30_001);
  assert.equal(l.connect('192.0.2.1'), undefined, 'the first one is out of the window');
  assert.equal(l.message('192.0.2.1'), undefined);
  assert.equal(l.message('192.0.2.1')?.limit, 'message_rate');
  for (let i = 0; i < 3; i++) assert.equal(l.recipient('192.0.2.1'), undefined);
  assert.equal(l.recipient('192.0.2.1')?.limit, 'recipient_rate');
  l.close();
});

test('exempt clients (relay networks) are held to no connection or rate limit, but to the AUTH failure rate', () => {
  const { l } = limits({ clientConnections: 1, messageRate: 1, authFailureRate: 2, isExempt: (a) => a === '127.0.0.1' });
  for (let i = 0; i < 5; i++) assert.equal(l.connect('127.0.0.1'), undefined);
  for (let i = 0; i < 5; i++) assert.equal(l.message('127.0.0.1'), undefined);
  l.authFailed('127.0.0.1');
  assert.equal(l.authBlocked('127.0.0.1'), undefined);
  l.authFailed('127.0.0.1');
  assert.equal(l.authBlocked('127.0.0.1')?.limit, 'auth_failure_rate');
  l.close();
});
