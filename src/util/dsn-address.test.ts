/**
 * dsn-address.test.ts — ORCPT and DSN address types: xtext and utf-8-addr encodings.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  normaliseOrcptInCommand, decodeUtf8Addr, decodeXtext, dsnAddressField, encodeUtf8AddrXtext, encodeXtext, orcptParam, parseOrcpt,
} from './dsn-address.ts';

test('xtext round-trips "+", "=", spaces and UTF-8 octets', () => {
  for (const s of ['a+b=c@x.test', 'with space@x', 'jöran@example.test', '日本@example.test', 'plain@x']) {
    const enc = encodeXtext(s);
    assert.match(enc, /^[\x21-\x3c\x3e-\x7e]*$/, enc);
    assert.equal(decodeXtext(enc), s);
  }
  assert.equal(encodeXtext('a+b@x'), 'a+2Bb@x');
});

test('utf-8-addr-xtext: non-ASCII, "+", "=" and "\\" as \\x{HEX}; decodes back (RFC 6533 §3)', () => {
  assert.equal(encodeUtf8AddrXtext('jöran@pf.test'), 'j\\x{F6}ran@pf.test');
  assert.equal(encodeUtf8AddrXtext('日本+x@example.test'), '\\x{65E5}\\x{672C}\\x{2B}x@example.test');
  for (const s of ['jöran@pf.test', '日本+x=y\\z@example.test', '😀@x.test']) assert.equal(decodeUtf8Addr(encodeUtf8AddrXtext(s)), s);
  assert.equal(decodeUtf8Addr('日本@example.test'), '日本@example.test', 'unitext (raw UTF-8) is read too');
  assert.equal(decodeUtf8Addr('bad\\x{D800}@x'), undefined);
  assert.equal(decodeUtf8Addr('bad\\q@x'), undefined);
});

test('parseOrcpt keeps the type; smtp-server\'s octet-per-char xtext decoding is undone', () => {
  assert.deepEqual(parseOrcpt('rfc822;a+b@x.test'), { type: 'rfc822', address: 'a+b@x.test' });
  assert.deepEqual(parseOrcpt('RFC822;A@X'), { type: 'rfc822', address: 'A@X' });
  assert.deepEqual(parseOrcpt('utf-8;j\\x{F6}ran@pf.test'), { type: 'utf-8', address: 'jöran@pf.test' });
  assert.deepEqual(parseOrcpt('utf-8;jöran@pf.test'), { type: 'utf-8', address: 'jöran@pf.test' });
  // "+C3+B6" decoded by smtp-server one character per octet
  assert.deepEqual(parseOrcpt('rfc822;j\u00c3\u00b6ran@pf.test'), { type: 'utf-8', address: 'jöran@pf.test' });
  assert.deepEqual(parseOrcpt('x400;/C=DE/ADMD=x/'), { type: 'x400', address: '/C=DE/ADMD=x/' });
  assert.equal(parseOrcpt('no-semicolon'), undefined);
  assert.equal(parseOrcpt('rfc822;'), undefined);
});

test('orcptParam passes each type on as given; dsnAddressField writes raw UTF-8 only in global reports', () => {
  assert.equal(orcptParam({ type: 'rfc822', address: 'a+b@x' }), 'rfc822;a+b@x');
  assert.equal(orcptParam({ type: 'utf-8', address: 'jöran@pf.test' }), 'utf-8;j\\x{F6}ran@pf.test');
  assert.equal(orcptParam({ type: 'utf-8', address: 'ascii@pf.test' }), 'utf-8;ascii@pf.test');
  assert.equal(dsnAddressField({ type: 'rfc822', address: 'a@x' }, true), 'rfc822; a@x');
  assert.equal(dsnAddressField({ type: 'rfc822', address: '日本@x' }, true), 'utf-8; 日本@x');
  assert.equal(dsnAddressField({ type: 'utf-8', address: '日本@x' }, false), 'utf-8; \\x{65E5}\\x{672C}@x');
});

test('normaliseOrcptInCommand: a UTF-8 xtext ORCPT becomes utf-8-addr-xtext; other lines are left alone', () => {
  const line = (s: string) => Buffer.from(s, 'utf8');
  assert.equal(normaliseOrcptInCommand(line('RCPT TO:<日本@x.test> ORCPT=rfc822;+E6+97+A5+E6+9C+AC@x.test NOTIFY=SUCCESS')).toString('utf8'),
    'RCPT TO:<日本@x.test> ORCPT=utf-8;\\x{65E5}\\x{672C}@x.test NOTIFY=SUCCESS');
  for (const same of ['RCPT TO:<a@x> ORCPT=rfc822;a+2Bb@x', 'RCPT TO:<a@x>', 'RCPT TO:<a@x> ORCPT=rfc822;a+0D+0Ab@x']) {
    const b = line(same);
    assert.equal(normaliseOrcptInCommand(b), b, same);
  }
});
