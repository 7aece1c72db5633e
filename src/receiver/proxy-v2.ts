/**
 * receiver/proxy-v2.ts — parser of the PROXY protocol version 2 header (HAProxy's
 * `send-proxy-v2`), and its translation into the equivalent version 1 text line.
 *
 * Hand-written on purpose (the protocol is a 16-byte binary preamble plus addresses; see
 * haproxy's doc/proxy-protocol.txt §2.2). The npm libraries looked at were not good enough:
 * proxy-protocol-js 4.0.6 does not frame the header by its length field (the bytes after the
 * addresses, i.e. the SMTP session, come back as "TLV data") and turns a truncated address
 * block into zeros instead of an error; @balena/proxy-protocol-parser 1.0.2 has one release and
 * an outdated ip-address 5 dependency. Neither reads a header arriving in pieces.
 *
 * What can go wrong: every malformed input throws ProxyHeaderError with a stable code; a header
 * not yet complete is reported as `incomplete` (never guessed). TLVs after the addresses are
 * skipped (we use none); a LOCAL command (the balancer's own health check) and the UNSPEC/UNIX
 * families carry no client address: the connection's own address stands.
 * Reads no config keys.
 */
import ipaddr from 'ipaddr.js';
import { TandemError } from '../util/errors.ts';

/** The 12 bytes every v2 header starts with. */
export const PROXY_V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const FIXED_LENGTH = 16;

export type ProxyHeaderErrorCode =
  | 'PROXY_SIGNATURE' | 'PROXY_VERSION' | 'PROXY_COMMAND' | 'PROXY_FAMILY' | 'PROXY_LENGTH' | 'PROXY_V1_SYNTAX';

/** A PROXY header that cannot be accepted; the connection must be closed. */
export class ProxyHeaderError extends TandemError {
  constructor(readonly code: ProxyHeaderErrorCode, message: string) {
    super(message);
    this.name = 'ProxyHeaderError';
  }
}

export interface ProxyEndpoint { address: string; port: number }

/** What a complete v2 header says. */
export type ProxyV2Header =
  | { command: 'local' }
  | { command: 'proxy'; family: 'unspec' | 'unix' }
  | { command: 'proxy'; family: 'inet' | 'inet6'; source: ProxyEndpoint; destination: ProxyEndpoint };

export type ProxyV2Result =
  | { type: 'incomplete' }
  /** `length`: bytes the header takes at the start of the input (the rest is the session). */
  | { type: 'header'; header: ProxyV2Header; length: number };

/** Parse a v2 header at the start of `input` (which may hold only part of it so far). */
export function parseProxyV2(input: Buffer): ProxyV2Result {
  const sigBytes = Math.min(input.length, PROXY_V2_SIGNATURE.length);
  if (!input.subarray(0, sigBytes).equals(PROXY_V2_SIGNATURE.subarray(0, sigBytes))) {
    throw new ProxyHeaderError('PROXY_SIGNATURE', 'not a PROXY protocol v2 signature');
  }
  if (input.length < FIXED_LENGTH) return { type: 'incomplete' };
  const versionCommand = input[12];
  if (versionCommand >> 4 !== 2) throw new ProxyHeaderError('PROXY_VERSION', `PROXY v2 header with version ${versionCommand >> 4}`);
  const command = versionCommand & 0x0f;
  if (command > 1) throw new ProxyHeaderError('PROXY_COMMAND', `PROXY v2 header with unknown command ${command}`);
  const familyByte = input[13];
  const family = familyByte >> 4;
  if (family > 3 || (familyByte & 0x0f) > 2) throw new ProxyHeaderError('PROXY_FAMILY', `PROXY v2 header with unknown address family/transport 0x${familyByte.toString(16)}`);
  const length = FIXED_LENGTH + input.readUInt16BE(14);
  if (input.length < length) return { type: 'incomplete' };
  if (command === 0) return { type: 'header', header: { command: 'local' }, length };

  const addressBytes = [0, 12, 36, 216][family];
  if (length - FIXED_LENGTH < addressBytes) {
    throw new ProxyHeaderError('PROXY_LENGTH', `PROXY v2 header length ${length - FIXED_LENGTH} is too short for its address family (${addressBytes} bytes)`);
  }
  if (family === 0) return { type: 'header', header: { command: 'proxy', family: 'unspec' }, length };
  if (family === 3) return { type: 'header', header: { command: 'proxy', family: 'unix' }, length };
  const size = family === 1 ? 4 : 16;
  const at = FIXED_LENGTH;
  const source = { address: formatIp(input.subarray(at, at + size)), port: input.readUInt16BE(at + 2 * size) };
  const destination = { address: formatIp(input.subarray(at + size, at + 2 * size)), port: input.readUInt16BE(at + 2 * size + 2) };
  return { type: 'header', header: { command: 'proxy', family: family === 1 ? 'inet' : 'inet6', source, destination }, length };
}

/** An address from its bytes; an IPv4-mapped IPv6 address is given as IPv4 (as Postfix does). */
function formatIp(bytes: Buffer): string {
  const addr = ipaddr.fromByteArray([...bytes]);
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()) return (addr as ipaddr.IPv6).toIPv4Address().toString();
  return addr.toString();
}

/** The v1 text line saying the same as a v2 header (what smtp-server's own reader takes). */
export function proxyV1Line(header: ProxyV2Header): string {
  if (header.command === 'local' || !('source' in header)) return 'PROXY UNKNOWN\r\n';
  const { source: s, destination: d } = header;
  // a v4 source in a v6 header (mapped) becomes v4 above; v1 wants one family for both ends
  const v6 = s.address.includes(':') || d.address.includes(':');
  const fam = (a: string) => (v6 && !a.includes(':') ? `::ffff:${a}` : a);
  return `PROXY ${v6 ? 'TCP6' : 'TCP4'} ${fam(s.address)} ${fam(d.address)} ${s.port} ${d.port}\r\n`;
}

const PORT = '(?:0|[1-9]\\d{0,4})';
const V1_LINE = new RegExp(`^PROXY (?:UNKNOWN[^\\r\\n]*|TCP4 (\\S+) (\\S+) ${PORT} ${PORT}|TCP6 (\\S+) (\\S+) ${PORT} ${PORT})\\r\\n$`);

/** Is `line` (up to and including its LF) a well-formed v1 header? */
export function isProxyV1Line(line: string): boolean {
  const m = V1_LINE.exec(line);
  if (!m) return false;
  if (m[1] !== undefined) return ipaddr.IPv4.isValidFourPartDecimal(m[1]) && ipaddr.IPv4.isValidFourPartDecimal(m[2]);
  if (m[3] !== undefined) return ipaddr.IPv6.isValid(m[3]) && ipaddr.IPv6.isValid(m[4]);
  return true;
}
