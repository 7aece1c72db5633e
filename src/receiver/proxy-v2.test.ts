/**
 * receiver/proxy-v2.test.ts — the PROXY v2 parser on headers built byte by byte as HAProxy
 * sends them: IPv4, IPv6, LOCAL (health checks), TLVs, truncated input, garbage.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseProxyV2, proxyV1Line, isProxyV1Line, PROXY_V2_SIGNATURE, ProxyHeaderError } from './proxy-v2.ts';

/** A v2 header: version/command byte, family/transport byte, address block (+ TLVs). */
function v2(verCmd: number, famProto: number, body: Buffer): Buffer {
  const len = Buffer.alloc(2);
  len.writeUInt16BE(body.length);
  return Buffer.concat([PROXY_V2_SIGNATURE, Buffer.from([verCmd, famProto]), len, body]);
}
const port = (n: number) => { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; };
const ipv4Body = Buffer.concat([Buffer.from([192, 0, 2, 10]), Buffer.from([10, 0, 0, 1]), port(40001), port(25)]);
const v6 = (s: string) => Buffer.from(s.split(':').flatMap((h) => [parseInt(h, 16) >> 8, parseInt(h, 16) & 0xff]));
const ipv6Body = Buffer.concat([v6('2001:db8:0:0:0:0:0:10'), v6('2001:db8:0:0:0:0:0:1'), port(50000), port(2525)]);

const codeOf = (fn: () => unknown) => {
  try { fn(); } catch (err) { assert.ok(err instanceof ProxyHeaderError, String(err)); return err.code; }
  return 'no error';
};

test('an IPv4 PROXY header gives the client address and port, and its own length', () => {
  const session = Buffer.from('EHLO client.test\r\n');
  const r = parseProxyV2(Buffer.concat([v2(0x21, 0x11, ipv4Body), session]));
  assert.deepEqual(r, {
    type: 'header', length: 28,
    header: { command: 'proxy', family: 'inet', source: { address: '192.0.2.10', port: 40001 }, destination: { address: '10.0.0.1', port: 25 } },
  });
  assert.equal(proxyV1Line(r.type === 'header' ? r.header : { command: 'local' }), 'PROXY TCP4 192.0.2.10 10.0.0.1 40001 25\r\n');
});

test('an IPv6 PROXY header, with TLVs after the addresses that are skipped', () => {
  const tlv = Buffer.from([0x05, 0x00, 0x03, 0x61, 0x62, 0x63]); // PP2_TYPE_UNIQUE_ID "abc"
  const r = parseProxyV2(v2(0x21, 0x21, Buffer.concat([ipv6Body, tlv])));
  assert.equal(r.type, 'header');
  if (r.type !== 'header' || r.header.command !== 'proxy' || !('source' in r.header)) return;
  assert.equal(r.length, 16 + 36 + 6);
  assert.deepEqual(r.header.source, { address: '2001:db8::10', port: 50000 });
  assert.equal(proxyV1Line(r.header), 'PROXY TCP6 2001:db8::10 2001:db8::1 50000 2525\r\n');
});

test('an IPv4-mapped IPv6 source is given as IPv4', () => {
  const body = Buffer.concat([v6('0:0:0:0:0:ffff:c000:20a'), v6('0:0:0:0:0:0:0:1'), port(1), port(2)]);
  const r = parseProxyV2(v2(0x21, 0x21, body));
  assert.ok(r.type === 'header' && r.header.command === 'proxy' && 'source' in r.header);
  assert.equal(r.header.source.address, '192.0.2.10');
  assert.equal(proxyV1Line(r.header), 'PROXY TCP6 ::ffff:192.0.2.10 ::1 1 2\r\n');
});

test('LOCAL (the balancer\'s own health check) and UNSPEC carry no client address', () => {
  const local = parseProxyV2(v2(0x20, 0x00, Buffer.alloc(0)));
  assert.deepEqual(local, { type: 'header', length: 16, header: { command: 'local' } });
  assert.equal(proxyV1Line({ command: 'local' }), 'PROXY UNKNOWN\r\n');
  // LOCAL with an address block: the addresses are ignored, the length still framed
  const localWithAddr = parseProxyV2(v2(0x20, 0x11, ipv4Body));
  assert.deepEqual(localWithAddr, { type: 'header', length: 28, header: { command: 'local' } });
  assert.deepEqual(parseProxyV2(v2(0x21, 0x00, Buffer.alloc(0))), { type: 'header', length: 16, header: { command: 'proxy', family: 'unspec' } });
});

test('a header arriving in pieces is incomplete until its last byte', () => {
  const full = v2(0x21, 0x11, ipv4Body);
  for (let n = 0; n < full.length; n++) {
    assert.deepEqual(parseProxyV2(full.subarray(0, n)), { type: 'incomplete' }, `after ${n} bytes`);
  }
  assert.equal(parseProxyV2(full).type, 'header');
});

test('malformed headers are refused with stable codes', () => {
  assert.equal(codeOf(() => parseProxyV2(Buffer.from('EHLO client.test\r\n'))), 'PROXY_SIGNATURE');
  assert.equal(codeOf(() => parseProxyV2(Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x00]))), 'PROXY_SIGNATURE');
  assert.equal(codeOf(() => parseProxyV2(v2(0x11, 0x11, ipv4Body))), 'PROXY_VERSION');
  assert.equal(codeOf(() => parseProxyV2(v2(0x22, 0x11, ipv4Body))), 'PROXY_COMMAND');
  assert.equal(codeOf(() => parseProxyV2(v2(0x21, 0x41, ipv4Body))), 'PROXY_FAMILY');
  assert.equal(codeOf(() => parseProxyV2(v2(0x21, 0x13, ipv4Body))), 'PROXY_FAMILY');
  // length field shorter than an IPv4 address block (truncated by the sender)
  assert.equal(codeOf(() => parseProxyV2(v2(0x21, 0x11, ipv4Body.subarray(0, 8)))), 'PROXY_LENGTH');
  assert.equal(codeOf(() => parseProxyV2(v2(0x21, 0x21, ipv4Body))), 'PROXY_LENGTH');
});

test('random garbage never parses as a header', () => {
  for (let i = 0; i < 500; i++) {
    const junk = Buffer.from(Array.from({ length: 1 + (i % 40) }, () => Math.floor(Math.random() * 256)));
    if (junk[0] === 0x0d) junk[0] = 0x41; // keep it off the signature's first byte
    assert.equal(codeOf(() => parseProxyV2(junk)), 'PROXY_SIGNATURE');
  }
});

test('v1 lines are checked as smtp-server would need them', () => {
  assert.equal(isProxyV1Line('PROXY TCP4 192.0.2.10 127.0.0.1 40000 25\r\n'), true);
  assert.equal(isProxyV1Line('PROXY TCP6 2001:db8::10 ::1 40000 25\r\n'), true);
  assert.equal(isProxyV1Line('PROXY UNKNOWN\r\n'), true);
  assert.equal(isProxyV1Line('PROXY TCP4 evil.example 127.0.0.1 1 2\r\n'), false);
  assert.equal(isProxyV1Line('PROXY TCP4 192.0.2.10 127.0.0.1 1\r\n'), false);
  assert.equal(isProxyV1Line('PROXY TCP6 192.0.2.10 ::1 1 2\r\n'), false);
  assert.equal(isProxyV1Line('PROXY TCP4 192.0.2.10 127.0.0.1 1 2\n'), false);
});
