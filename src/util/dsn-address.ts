/**
 * util/dsn-address.ts — DSN address types: the ORCPT parameter (RFC 3461 §4.2) and the
 * Original-Recipient/Final-Recipient fields, for the `rfc822` type and RFC 6533's `utf-8` type.
 *
 * Encodings:
 *  - xtext (RFC 3461 §4): "+" and "=" and octets outside 0x21–0x7E as "+HH" (UTF-8 octets).
 *  - utf-8-addr-xtext (RFC 6533 §3): ASCII as is except "+", "=", "\" and controls, which — like
 *    every non-ASCII character — are written "\x{HEX}" (the Unicode code point). It is valid
 *    xtext, so it travels with or without SMTPUTF8; Postfix writes `ORCPT=utf-8;j\x{F6}ran@x`.
 *  - utf-8-addr-unitext (with SMTPUTF8): raw UTF-8, the same "\x{HEX}" escapes for the rest.
 *    decodeUtf8Addr reads both.
 * An ORCPT is kept as its type and the decoded address, and passed on in the same type: an
 * `rfc822` one with xtext, a `utf-8` one as utf-8-addr-xtext; other types (x400, …) unchanged.
 * An `rfc822` ORCPT that turns out to hold non-ASCII (a client bug) becomes `utf-8`: rfc822
 * cannot carry it.
 *
 * Postfix 3.7 sends a UTF-8 original recipient as `ORCPT=rfc822;+E6+97+A5…` (xtext of the
 * UTF-8 octets). smtp-server decodes xtext one octet per character and refuses the whole RCPT
 * (501 5.1.3) when an octet falls in 0x80–0x9F, which it takes for a C1 control:
 * normaliseOrcptInCommand rewrites such a parameter, before smtp-server reads the command, into
 * the equivalent RFC 6533 form `ORCPT=utf-8;\x{65E5}\x{672C}@…` (decoded back to the same address).
 *
 * What can go wrong: a malformed value (no ";", an empty address, a bad "\x{…}") → parseOrcpt
 * returns undefined and the caller answers 501; nothing here throws.
 * Config read: none.
 */

/** An ORCPT as given: address type (lower case) and the decoded address. */
export interface OriginalRecipient {
  type: string;
  address: string;
}

const NON_ASCII = /[^\x00-\x7f]/;

/** True when the address cannot be written in the rfc822 type (RFC 6533 §3). */
export function needsUtf8Type(address: string): boolean {
  return NON_ASCII.test(address);
}

/** xtext-encode (RFC 3461 §4); non-ASCII characters are encoded as their UTF-8 octets. */
export function encodeXtext(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    out += byte < 0x21 || byte > 0x7e || byte === 0x2b || byte === 0x3d
      ? `+${byte.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(byte);
  }
  return out;
}

/** xtext-decode; "+HH" octets that form UTF-8 become their characters. */
export function decodeXtext(value: string): string {
  if (!value.includes('+')) return value;
  const bytes: number[] = [];
  const raw = Buffer.from(value, 'utf8');
  for (let i = 0; i < raw.length; i++) {
    const hex = raw[i] === 0x2b ? /^[0-9A-Fa-f]{2}/.exec(raw.subarray(i + 1, i + 3).toString('latin1')) : null;
    if (hex) {
      bytes.push(parseInt(hex[0], 16));
      i += 2;
    } else {
      bytes.push(raw[i]);
    }
  }
  return latin1OrUtf8(Buffer.from(bytes));
}

/** utf-8-addr-xtext (RFC 6533 §3): pure ASCII, valid xtext. */
export function encodeUtf8AddrXtext(address: string): string {
  let out = '';
  for (const ch of address) {
    const cp = ch.codePointAt(0)!;
    const plain = cp >= 0x21 && cp <= 0x7e && ch !== '+' && ch !== '=' && ch !== '\\';
    out += plain ? ch : `\\x{${cp.toString(16).toUpperCase()}}`;
  }
  return out;
}

/** Decode utf-8-addr-xtext or utf-8-addr-unitext; undefined when an escape is malformed. */
export function decodeUtf8Addr(value: string): string | undefined {
  let bad = false;
  const out = value.replace(/\\x\{([0-9A-Fa-f]{1,6})\}|\\/g, (m, hex: string | undefined) => {
    const cp = hex === undefined ? -1 : parseInt(hex, 16);
    if (cp < 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      bad = true;
      return m;
    }
    return String.fromCodePoint(cp);
  });
  return bad ? undefined : out;
}

/**
 * Parse an ORCPT value. `value` is what smtp-server hands over: already xtext-decoded, one
 * character per decoded octet (so "+C3+B6" arrives as "Ã¶"; raw UTF-8 arrives decoded).
 */
export function parseOrcpt(value: string): OriginalRecipient | undefined {
  const semi = value.indexOf(';');
  if (semi <= 0) return undefined;
  const type = value.slice(0, semi).trim().toLowerCase();
  const rest = latin1OrUtf8FromString(value.slice(semi + 1).trim());
  if (!/^[a-z0-9!#$%&'*+/=?^_`{|}~-]+$/.test(type) || rest === '') return undefined;
  if (type === 'utf-8') {
    const address = decodeUtf8Addr(rest);
    return address ? { type, address } : undefined;
  }
  if (type === 'rfc822' && needsUtf8Type(rest)) return { type: 'utf-8', address: rest };
  return { type, address: rest };
}

/**
 * The ORCPT value for a RCPT command, before the final xtext encoding (nodemailer xtext-encodes
 * the whole parameter; utf-8-addr-xtext is left as it is by that).
 */
export function orcptParam(o: OriginalRecipient): string {
  if (o.type === 'utf-8' || needsUtf8Type(o.address)) return `utf-8;${encodeUtf8AddrXtext(o.address)}`;
  return `${o.type};${o.address}`;
}

/**
 * An address field of a delivery-status block: "rfc822; a@b" for ASCII addresses, else
 * "utf-8; …" — raw UTF-8 in message/global-delivery-status, utf-8-addr-xtext in the plain one.
 */
export function dsnAddressField(o: OriginalRecipient, global: boolean): string {
  if (o.type === 'utf-8' || needsUtf8Type(o.address)) {
    return `utf-8; ${global ? escapeUnitext(o.address) : encodeUtf8AddrXtext(o.address)}`;
  }
  return `${o.type}; ${o.address}`;
}

/** utf-8-address in a global report: raw UTF-8, controls and "\" escaped. */
function escapeUnitext(address: string): string {
  return address.replace(/[\x00-\x20\x7f\\]/g, (ch) => `\\x{${ch.codePointAt(0)!.toString(16).toUpperCase()}}`);
}

/** Octets as UTF-8 when they are valid UTF-8 with non-ASCII in it, else as latin1. */
function latin1OrUtf8(bytes: Buffer): string {
  const utf8 = bytes.toString('utf8');
  return utf8.includes('\ufffd') && !bytes.includes(Buffer.from('\ufffd')) ? bytes.toString('latin1') : utf8;
}

/** smtp-server's one-char-per-octet decoding undone where that gives valid UTF-8. */
function latin1OrUtf8FromString(s: string): string {
  if (!/[\x80-\xff]/.test(s) || /[^\x00-\xff]/.test(s)) return s;
  const bytes = Buffer.from(s, 'latin1');
  const utf8 = bytes.toString('utf8');
  return utf8.includes('\ufffd') ? s : utf8;
}

/**
 * A RCPT command line with an xtext ORCPT whose octets are UTF-8 → the same line with that ORCPT
 * as utf-8-addr-xtext (see header); any other line is returned unchanged (the same Buffer).
 */
export function normaliseOrcptInCommand(line: Buffer): Buffer {
  const text = line.toString('utf8');
  const m = /(\sORCPT=)([^;\s]+);(\S*\+[0-9A-Fa-f]{2}\S*)/i.exec(text);
  if (!m) return line;
  const decoded = decodeXtext(m[3]);
  if (!needsUtf8Type(decoded) || /[\x00-\x1f\x7f-\x9f]/.test(decoded)) return line; // ASCII, or really a control: left to smtp-server
  return Buffer.from(text.slice(0, m.index) + m[1] + `utf-8;${encodeUtf8AddrXtext(decoded)}` + text.slice(m.index + m[0].length), 'utf8');
}
