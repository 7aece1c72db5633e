/**
 * router/networks.ts — lists of client networks (relay networks, like Postfix mynetworks).
 *
 * Entries are CIDRs ("10.0.0.0/8", "2001:db8::/32") or single addresses ("192.0.2.1", "::1";
 * a Postfix-style "[::1]/128" is accepted too). IPv4 must be written as four decimal parts.
 * An IPv4-mapped IPv6 client ("::ffff:127.0.0.1") matches IPv4 entries, and an IPv4 client
 * matches "::ffff:a.b.c.d/n" entries. Entries with host bits set ("10.0.0.1/8") are refused:
 * they are almost always a typo. A string entry may hold several networks separated by
 * commas or whitespace (as mynetworks does).
 * Network tables (loadNetworkTable): keys are networks; the value must be empty or OK /
 * PERMIT / RELAY — anything else (e.g. REJECT from a Postfix cidr table) is refused rather
 * than silently treated as "allowed".
 * What can go wrong: a bad entry → Error naming the entry and its source (file:line for tables).
 * contains() never throws: text that is not an IP address is in no network.
 * Config keys: none directly (the caller passes relay.networks, or tables.relay_networks).
 */
import ipaddr from 'ipaddr.js';
import { loadTableEntries, TableFormatError } from './tables/table-file.ts';

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

/** contains() remembers this many recent clients' answers (a list is never changed: a reload builds a new one). */
const MEMO_LIMIT = 4096;

export class NetworkList implements Iterable<string> {
  private readonly v4: [ipaddr.IPv4, number][];
  private readonly v6: [ipaddr.IPv6, number][];
  /** Answers by client address text: parsing it cost about 40 us, asked at each connection and RCPT. */
  private readonly memo = new Map<string, boolean>();

  private constructor(v4: [ipaddr.IPv4, number][], v6: [ipaddr.IPv6, number][]) {
    this.v4 = v4;
    this.v6 = v6;
  }

  /** Parse entries; `source` (e.g. "relay.networks") is named in errors. */
  static parse(entries: string[], source = 'network list'): NetworkList {
    const v4: [ipaddr.IPv4, number][] = [];
    const v6: [ipaddr.IPv6, number][] = [];
    for (const entry of entries) {
      for (const token of entry.split(/[\s,]+/).filter((t) => t !== '')) {
        let range: Range;
        try {
          range = parseNetwork(token);
        } catch (err) {
          throw new Error(`${source}: ${(err as Error).message}`);
        }
        if (range[0].kind() === 'ipv4') v4.push(range as [ipaddr.IPv4, number]);
        else v6.push(range as [ipaddr.IPv6, number]);
      }
    }
    return new NetworkList(v4, v6);
  }

  /** Number of networks in the list. */
  get size(): number {
    return this.v4.length + this.v6.length;
  }

  /** The networks as "address/bits" strings, e.g. to merge lists: NetworkList.parse([...a, ...b]). */
  *[Symbol.iterator](): Iterator<string> {
    for (const [addr, bits] of [...this.v4, ...this.v6]) yield `${addr.toString()}/${bits}`;
  }

  /** Whether the client IP (as from socket.remoteAddress) is in one of the networks. */
  contains(ip: string): boolean {
    let known = this.memo.get(ip);
    if (known === undefined) {
      known = this.lookup(ip);
      if (this.memo.size >= MEMO_LIMIT) this.memo.clear(); // many clients: start again rather than track age
      this.memo.set(ip, known);
    }
    return known;
  }

  private lookup(ip: string): boolean {
    let addr: ipaddr.IPv4 | ipaddr.IPv6;
    try {
      addr = ipaddr.parse(ip.trim());
    } catch {
      return false;
    }
    let v4: ipaddr.IPv4 | undefined;
    let v6: ipaddr.IPv6 | undefined;
    if (addr.kind() === 'ipv4') {
      v4 = addr as ipaddr.IPv4;
      v6 = v4.toIPv4MappedAddress();
    } else {
      v6 = addr as ipaddr.IPv6;
      if (v6.isIPv4MappedAddress()) v4 = v6.toIPv4Address();
    }
    if (v4 && this.v4.some((range) => v4.match(range))) return true;
    return this.v6.some((range) => v6.match(range));
  }
}

/** Parse one network: CIDR or single address, with optional [brackets] around the address. */
function parseNetwork(token: string): Range {
  const m = /^\[([^\]]+)\](\/\d+)?$/.exec(token);
  const text = m ? m[1] + (m[2] ?? '') : token;
  const [addrText, bitsText] = text.split('/', 2);
  if (!ipaddr.isValid(addrText) || (ipaddr.IPv4.isValid(addrText) && !ipaddr.IPv4.isValidFourPartDecimal(addrText))) {
    throw new Error(`"${token}" is not an IP address or network (use e.g. 192.0.2.0/24, 192.0.2.1, 2001:db8::/32 or ::1)`);
  }
  const addr = ipaddr.parse(addrText);
  const maxBits = addr.kind() === 'ipv4' ? 32 : 128;
  if (bitsText !== undefined && (!/^\d{1,3}$/.test(bitsText) || Number(bitsText) > maxBits)) {
    throw new Error(`"${token}": prefix length must be from 0 to ${maxBits}`);
  }
  const bits = bitsText === undefined ? maxBits : Number(bitsText);
  const network = addr.kind() === 'ipv4'
    ? ipaddr.IPv4.networkAddressFromCIDR(`${addrText}/${bits}`)
    : ipaddr.IPv6.networkAddressFromCIDR(`${addrText}/${bits}`);
  if (network.toNormalizedString() !== addr.toNormalizedString()) {
    throw new Error(`"${token}" has host bits set; did you mean ${network.toString()}/${bits}?`);
  }
  return [addr, bits];
}

const ALLOW_VALUES = new Set(['', 'ok', 'permit', 'relay']);

/** Load a table whose keys are networks (values empty or OK/PERMIT/RELAY). */
export async function loadNetworkTable(file: string, opts: { name?: string; warn?: (msg: string, fields?: object) => void } = {}): Promise<NetworkList> {
  const entries = await loadTableEntries(file, { name: opts.name, warn: opts.warn, valueRequired: false, colonKeys: false });
  const networks: string[] = [];
  for (const [key, { value, line }] of entries) {
    if (!ALLOW_VALUES.has(value.toLowerCase())) {
      throw new TableFormatError(file, line, `network ${key} has value "${value}"; only an empty value or OK is allowed (this table lists allowed networks)`);
    }
    try {
      parseNetwork(key);
    } catch (err) {
      throw new TableFormatError(file, line, (err as Error).message);
    }
    networks.push(key);
  }
  return NetworkList.parse(networks, file);
}
