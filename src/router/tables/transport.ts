/**
 * router/tables/transport.ts — parse transport(5) table values and look keys up in Postfix order.
 *
 * Values understood (transport names are case-insensitive):
 *   smtp:[host]:port, smtp:[host]   fixed host, no MX lookup, default port 25; IPv6 as [::1]:2525
 *                                   (also [ipv6:::1]); a bracketed name is looked up by A/AAAA only
 *   smtp:host, smtp:host:port       MX lookup of host (default port 25)
 *   smtp:  (or :, or an empty       MX lookup of the recipient's own domain, port 25
 *          nexthop)
 *   :nexthop                        an empty transport name means smtp (Postfix default_transport)
 *   lmtp:host:port, lmtp:[host]:port, lmtp:host   LMTP over TCP, default port 24 (no MX lookup)
 *   maildir                         the virtual mailbox path of the address
 *   error:text, error               refuse: {type:'error'}; text without an enhanced status code
 *                                   gets "5.0.0 " in front
 * What can go wrong: anything else throws an Error saying what is allowed; the caller adds file:line.
 * Config keys: none.
 */
import ipaddr from 'ipaddr.js';
import { DOMAIN } from '../../util/names.ts';

export type TransportSpec =
  | { kind: 'smtp-fixed'; host: string; port: number }
  | { kind: 'smtp-mx'; domain: string; port: number }
  | { kind: 'smtp-recipient-mx'; port: number }
  | { kind: 'lmtp'; host: string; port: number }
  | { kind: 'maildir' }
  | { kind: 'error'; message: string };

const HOSTNAME = new RegExp(`^(?=.{1,253}$)${DOMAIN}\\.?$`, 'i');
const ENHANCED_CODE = /^[245]\.\d{1,3}\.\d{1,3}(\s|$)/;

/** Parse one transport table value. Throws Error describing the accepted syntax. */
export function parseTransportValue(value: string): TransportSpec {
  const text = value.trim();
  const colon = text.indexOf(':');
  const name = (colon < 0 ? text : text.slice(0, colon)).toLowerCase();
  const nexthop = colon < 0 ? '' : text.slice(colon + 1).trim();

  switch (name) {
    case 'maildir':
      if (nexthop !== '') throw new Error(`"${value}": maildir takes no next hop (the path comes from virtual_mailboxes)`);
      return { kind: 'maildir' };
    case 'error': {
      const message = nexthop === '' ? 'delivery refused by the transport map' : nexthop;
      return { kind: 'error', message: ENHANCED_CODE.test(message) ? message : `5.0.0 ${message}` };
    }
    case '':
    case 'smtp': {
      if (colon < 0) throw new Error(`"${value}" is not a transport; use smtp:[host]:port, smtp:host, smtp:, lmtp:host:port, maildir or error:text`);
      if (nexthop === '') return { kind: 'smtp-recipient-mx', port: 25 };
      const hop = parseNexthop(nexthop, 25, value);
      return hop.bracketed ? { kind: 'smtp-fixed', host: hop.host, port: hop.port } : { kind: 'smtp-mx', domain: hop.host, port: hop.port };
    }
    case 'lmtp': {
      if (nexthop === '') throw new Error(`"${value}": lmtp needs a host, e.g. lmtp:[127.0.0.1]:24`);
      if (nexthop.toLowerCase().startsWith('unix:') || nexthop.startsWith('/')) {
        throw new Error(`"${value}": LMTP over UNIX sockets is not supported; use lmtp:host:port`);
      }
      const hop = parseNexthop(nexthop, 24, value);
      return { kind: 'lmtp', host: hop.host, port: hop.port };
    }
    default:
      throw new Error(`"${value}": unknown transport "${name}"; use smtp, lmtp, maildir or error`);
  }
}

/** Split "[host]:port", "[host]", "host:port" or "host" and check both parts. */
function parseNexthop(nexthop: string, defaultPort: number, value: string): { host: string; port: number; bracketed: boolean } {
  let host: string;
  let portText: string | undefined;
  let bracketed = false;
  if (nexthop.startsWith('[')) {
    const close = nexthop.indexOf(']');
    if (close < 0) throw new Error(`"${value}": missing "]" after the host`);
    host = nexthop.slice(1, close).replace(/^ipv6:/i, '');
    const rest = nexthop.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) throw new Error(`"${value}": expected ":port" after "]"`);
    portText = rest === '' ? undefined : rest.slice(1);
    bracketed = true;
    if (!ipaddr.isValid(host) && !HOSTNAME.test(host)) throw new Error(`"${value}": "${host}" is neither an IP address nor a host name`);
    if (ipaddr.IPv4.isValid(host) && !ipaddr.IPv4.isValidFourPartDecimal(host)) {
      throw new Error(`"${value}": write IPv4 addresses as four decimal parts`);
    }
  } else {
    const parts = nexthop.split(':');
    if (parts.length > 2) throw new Error(`"${value}": IPv6 addresses must be in brackets, e.g. smtp:[2001:db8::1]:25`);
    host = parts[0];
    portText = parts[1];
    if (!HOSTNAME.test(host)) throw new Error(`"${value}": "${host}" is not a host name (IP addresses go in brackets: [192.0.2.1])`);
  }
  let port = defaultPort;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      throw new Error(`"${value}": port "${portText}" must be a number from 1 to 65535`);
    }
    port = Number(portText);
  }
  return { host: host.toLowerCase().replace(/\.$/, ''), port, bracketed };
}

/**
 * Keys to try for an address, in transport(5) order: the address (and without +detail), the
 * domain, each parent domain with a leading dot (not for [address literals]), then "*". `includeWildcard: false` leaves out "*".
 */
export function transportLookupKeys(address: string, baseAddress: string | undefined, domain: string, includeWildcard = true): string[] {
  const keys = [address];
  if (baseAddress && baseAddress !== address) keys.push(baseAddress);
  keys.push(domain);
  if (domain.startsWith('[')) return includeWildcard ? [...keys, '*'] : keys;
  const labels = domain.split('.');
  for (let i = 1; i < labels.length; i++) keys.push('.' + labels.slice(i).join('.'));
  if (includeWildcard) keys.push('*');
  return keys;
}
