/**
 * router/tables/transport.test.ts — tests of transport(5) value parsing and lookup key order.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseTransportValue, transportLookupKeys } from './transport.ts';

test('every accepted transport syntax', () => {
  const cases: [string, unknown][] = [
    ['smtp:[mail.example.com]:2525', { kind: 'smtp-fixed', host: 'mail.example.com', port: 2525 }],
    ['smtp:[192.0.2.1]', { kind: 'smtp-fixed', host: '192.0.2.1', port: 25 }],
    ['smtp:[::1]:2525', { kind: 'smtp-fixed', host: '::1', port: 2525 }],
    ['smtp:[ipv6:2001:db8::1]', { kind: 'smtp-fixed', host: '2001:db8::1', port: 25 }],
    ['SMTP:Relay.Example.com', { kind: 'smtp-mx', domain: 'relay.example.com', port: 25 }],
    ['smtp:relay.example.com:587', { kind: 'smtp-mx', domain: 'relay.example.com', port: 587 }],
    ['smtp:', { kind: 'smtp-recipient-mx', port: 25 }],
    [':[192.0.2.9]', { kind: 'smtp-fixed', host: '192.0.2.9', port: 25 }],
    ['lmtp:[127.0.0.1]:2424', { kind: 'lmtp', host: '127.0.0.1', port: 2424 }],
    ['lmtp:dovecot.local', { kind: 'lmtp', host: 'dovecot.local', port: 24 }],
    ['lmtp:dovecot:24', { kind: 'lmtp', host: 'dovecot', port: 24 }],
    ['lmtp:[::1]', { kind: 'lmtp', host: '::1', port: 24 }],
    ['maildir', { kind: 'maildir' }],
    ['error:5.1.2 no such domain', { kind: 'error', message: '5.1.2 no such domain' }],
    ['error:mail for this domain is refused', { kind: 'error', message: '5.0.0 mail for this domain is refused' }],
    ['error', { kind: 'error', message: '5.0.0 delivery refused by the transport map' }],
  ];
  for (const [value, expected] of cases) assert.deepEqual(parseTransportValue(value), expected, value);
});

test('malformed transport values are refused with a reason', () => {
  const cases: [string, RegExp][] = [
    ['smtp:2001:db8::1', /IPv6 addresses must be in brackets/],
    ['smtp:[::1', /missing "\]"/],
    ['smtp:[::1]x', /expected ":port"/],
    ['smtp:[host]:0', /port "0" must be a number from 1 to 65535/],
    ['smtp:host:99999', /port "99999"/],
    ['smtp:[not a host]', /neither an IP address nor a host name/],
    ['smtp:192.0.2.1x_!', /not a host name/],
    ['uucp:host', /unknown transport "uucp"/],
    ['lmtp:', /lmtp needs a host/],
    ['lmtp:unix:/var/run/lmtp', /UNIX sockets is not supported/],
    ['maildir:/x', /maildir takes no next hop/],
    ['relay', /unknown transport/],
    ['smtp', /is not a transport/],
  ];
  for (const [value, pattern] of cases) assert.throws(() => parseTransportValue(value), pattern, value);
});

test('lookup keys follow transport(5): address, base address, domain, parents, *', () => {
  assert.deepEqual(transportLookupKeys('u+x@a.b.example.com', 'u@a.b.example.com', 'a.b.example.com'),
    ['u+x@a.b.example.com', 'u@a.b.example.com', 'a.b.example.com', '.b.example.com', '.example.com', '.com', '*']);
  assert.deepEqual(transportLookupKeys('u@example.com', undefined, 'example.com', false), ['u@example.com', 'example.com', '.com']);
  assert.deepEqual(transportLookupKeys('u@[192.0.2.1]', undefined, '[192.0.2.1]'), ['u@[192.0.2.1]', '[192.0.2.1]', '*']);
});
