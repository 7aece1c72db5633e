/**
 * router/resolver.ts — the routing semantics shared by every router: tables, directory, and
 * both together. A router is this algorithm over a RoutingSource (where the keys are looked up).
 *
 * Semantics (documented in full in tables/table-router.ts, which these were taken from):
 *  - An address in a local domain is looked up in this order (first hit wins): aliases
 *    "user@d" (or "user" without +detail, then bare "user"), mailbox "user@d", alias "@d",
 *    mailbox "@d"; otherwise unknown.
 *  - A key that is both mailbox and alias ("a: a, archive") delivers to its mailbox and to the
 *    other targets. An alias or list with more than maxExpansion targets (counting unusable
 *    ones the source skipped) → {type:'invalid'}; one whose expansion is empty → {type:'invalid'}.
 *  - Expansion is depth-first; an address already on the current path is kept as a final
 *    address (loop-safe); finals are deduplicated; more than maxExpansion finals, maxDepth
 *    nesting levels or maxExpansion × maxDepth lookups → {type:'invalid'}.
 *  - Non-local: relay domain (exact or ".parent") or a non-"*" transport entry → relay for
 *    anyone; otherwise relay for authorised clients only.
 *  - routeAddress: transport keys in transport(5) order (the first key with an entry wins; a
 *    malformed entry throws only when it is that first one), then local mailbox / 5.1.1, address
 *    literal, relay host, MX.
 * What can go wrong: a source that cannot answer throws (TempLookupError from the directory);
 * the error passes through unchanged, so the receiver answers 451 and the queue defers.
 * Config keys: none (the caller passes the options).
 */
import type { MailboxOwner, RecipientResolution, Route } from './types.ts';
import { parseAddress, type ParsedAddress } from './tables/address.ts';
import { transportLookupKeys, type TransportSpec } from './tables/transport.ts';
import { TandemError } from '../util/errors.ts';

export type DomainKind = 'local' | 'relay';

/** What one lookup key ("user@d", "@d" or bare "user") is. */
export interface AddressInfo {
  /** Absolute maildir path when the key is a mailbox. */
  mailbox?: string;
  /** Owner of the mailbox's files (the directory's uidNumber/gidNumber), when known. */
  mailboxOwner?: MailboxOwner;
  /**
   * Alias/list targets (raw: "user@d", bare "user" or "@other"), when the key is an alias. Empty
   * only when declaredTargets is over the limit (the source did not read them); otherwise an
   * empty list is refused as an alias with no targets.
   */
  targets?: readonly string[];
  /**
   * How many targets the entry lists, counting those the source skipped as unusable (default
   * targets.length). More than maxExpansion refuses the expansion, whatever survived.
   */
  declaredTargets?: number;
}

/** Where the keys come from: table files, the directory, or both in turn. */
export interface RoutingSource {
  /** 'local', 'relay' or undefined for a domain or a ".parent" key; local wins over relay. */
  domainKind(key: string): Promise<DomainKind | undefined>;
  /** What an address key is; undefined if it is neither mailbox nor alias. */
  address(key: string): Promise<AddressInfo | undefined>;
  /**
   * The transport entry for each key (same order as keys); undefined where none; an Error
   * (TempLookupError) where the entry is malformed — thrown only if it is the entry chosen.
   */
  transports(keys: readonly string[]): Promise<ReadonlyArray<TransportSpec | Error | undefined>>;
}

export interface ResolverOptions {
  maxExpansion: number;
  maxDepth: number;
  relayHost?: { host: string; port: number };
}

/** Thrown inside expansion to stop it; turned into {type:'invalid'}. */
class ExpansionLimit extends TandemError {
  readonly code = 'ROUTE_EXPANSION_LIMIT';
}

/** Resolve a RCPT address over `source` (see header). */
export async function resolveRecipientWith(source: RoutingSource, opts: ResolverOptions, address: string): Promise<RecipientResolution> {
  const parsed = parseAddress(address);
  if (!parsed) return { type: 'invalid', reason: `"${address}" is not an address of the form user@domain` };

  const local = (await source.domainKind(parsed.domain)) === 'local';
  if (local && !(await aliasTargets(source, parsed)) && !(await mailboxPath(source, parsed))) return { type: 'unknown-user' };

  let addresses: string[];
  try {
    addresses = await expand(source, opts, parsed.address);
  } catch (err) {
    if (err instanceof ExpansionLimit) return { type: 'invalid', reason: err.message };
    throw err;
  }
  if (addresses.length === 0) return { type: 'invalid', reason: `${parsed.address} expands to no deliverable address` };
  if (local) return { type: 'local', addresses };
  return { type: 'relay', addresses, authorizedOnly: !(await isRelayable(source, parsed)) };
}

/** Route a final address over `source` (see header). */
export async function routeAddressWith(source: RoutingSource, opts: ResolverOptions, address: string): Promise<Route> {
  const parsed = parseAddress(address);
  if (!parsed) return { type: 'error', message: `5.1.3 <${address}>: not an address of the form user@domain` };

  const spec = chosen(await source.transports(transportLookupKeys(parsed.address, parsed.base, parsed.domain)));
  if (spec) return transportRoute(source, parsed, spec);
  if ((await source.domainKind(parsed.domain)) === 'local') {
    const mailbox = await mailboxOf(source, parsed);
    return mailbox ? maildirRoute(mailbox) : { type: 'error', message: `5.1.1 <${parsed.address}>: unknown user` };
  }
  if (parsed.domain.startsWith('[')) {
    return { type: 'smtp', host: addressLiteralHost(parsed.domain), port: 25, mx: false };
  }
  if (opts.relayHost) return { type: 'smtp', host: opts.relayHost.host, port: opts.relayHost.port, mx: false };
  return { type: 'smtp', domain: parsed.domain, port: 25, mx: true };
}

/** Expand `root` through the aliases into deduplicated final addresses (see header). */
async function expand(source: RoutingSource, opts: ResolverOptions, root: string): Promise<string[]> {
  const finals = new Set<string>();
  const path = new Set<string>();
  const maxSteps = opts.maxExpansion * opts.maxDepth;
  let steps = 0;

  const addFinal = (address: string): void => {
    finals.add(address);
    if (finals.size > opts.maxExpansion) throw new ExpansionLimit(`alias expansion of ${root} exceeds ${opts.maxExpansion} addresses`);
  };
  const visit = async (address: string, depth: number): Promise<void> => {
    if (++steps > maxSteps) throw new ExpansionLimit(`alias expansion of ${root} exceeds ${maxSteps} lookups; lists are nested too widely`);
    const parsed = parseAddress(address);
    const targets = parsed && (await aliasTargets(source, parsed));
    if (!targets) return addFinal(address);
    if (targets.declared > opts.maxExpansion) throw new ExpansionLimit(`alias expansion of ${root} exceeds ${opts.maxExpansion} addresses`);
    if (targets.list.length === 0) throw new ExpansionLimit(`${address} is an alias with no targets`);
    if (depth >= opts.maxDepth) throw new ExpansionLimit(`alias expansion of ${root} exceeds ${opts.maxDepth} nesting levels`);
    path.add(address);
    for (const target of targets.list) {
      if (path.has(target)) addFinal(target);
      else await visit(target, depth + 1);
    }
    path.delete(address);
  };
  await visit(root, 0);
  return [...finals];
}

/**
 * Alias targets for an address, qualified, in the lookup order of the header, with the number
 * the entry declares; undefined if none.
 */
async function aliasTargets(source: RoutingSource, a: ParsedAddress): Promise<{ list: string[]; declared: number } | undefined> {
  const aliasOf = async (key: string | undefined) => {
    const info = key === undefined ? undefined : await source.address(key);
    return info?.targets ? info : undefined;
  };
  let info = (await aliasOf(a.address)) ?? (await aliasOf(a.base));
  if (!info && (await source.domainKind(a.domain)) === 'local') info = (await aliasOf(a.local)) ?? (await aliasOf(a.baseLocal));
  if (!info && !(await explicitMailbox(source, a))) info = await aliasOf('@' + a.domain);
  if (!info?.targets) return undefined;
  return { list: info.targets.map((target) => qualify(target, a)), declared: info.declaredTargets ?? info.targets.length };
}

/** The entry of the first key that has one; a malformed one (an Error) is thrown. */
function chosen(specs: ReadonlyArray<TransportSpec | Error | undefined>): TransportSpec | undefined {
  const spec = specs.find((s) => s !== undefined);
  if (spec instanceof Error) throw spec;
  return spec;
}

/** "@other" → local@other; bare "user" → user@domain of the address; else unchanged. */
function qualify(target: string, a: ParsedAddress): string {
  if (target.startsWith('@')) return a.local + target;
  if (!target.includes('@')) return `${target}@${a.domain}`;
  return target;
}

type Mailbox = AddressInfo & { mailbox: string };
const isMailbox = (info: AddressInfo | undefined): info is Mailbox => info?.mailbox !== undefined;

async function explicitMailbox(source: RoutingSource, a: ParsedAddress): Promise<Mailbox | undefined> {
  const exact = await source.address(a.address);
  if (isMailbox(exact)) return exact;
  const base = a.base !== undefined ? await source.address(a.base) : undefined;
  return isMailbox(base) ? base : undefined;
}

async function mailboxOf(source: RoutingSource, a: ParsedAddress): Promise<Mailbox | undefined> {
  const explicit = await explicitMailbox(source, a);
  if (explicit) return explicit;
  const catchAll = await source.address('@' + a.domain);
  return isMailbox(catchAll) ? catchAll : undefined;
}

async function mailboxPath(source: RoutingSource, a: ParsedAddress): Promise<string | undefined> {
  return (await mailboxOf(source, a))?.mailbox;
}

function maildirRoute(m: Mailbox): Route {
  return { type: 'maildir', path: m.mailbox, ...(m.mailboxOwner ? { owner: m.mailboxOwner } : {}) };
}

/** A relay domain (exact or ".parent" key) or an address/domain transport entry other than "*". */
async function isRelayable(source: RoutingSource, a: ParsedAddress): Promise<boolean> {
  const keys = transportLookupKeys(a.address, a.base, a.domain, false);
  if (chosen(await source.transports(keys))) return true;
  for (const key of keys.slice(a.base ? 2 : 1)) {
    if ((await source.domainKind(key)) === 'relay') return true;
  }
  return false;
}

async function transportRoute(source: RoutingSource, a: ParsedAddress, spec: TransportSpec): Promise<Route> {
  switch (spec.kind) {
    case 'smtp-fixed': return { type: 'smtp', host: spec.host, port: spec.port, mx: false };
    case 'smtp-mx': return { type: 'smtp', domain: spec.domain, port: spec.port, mx: true };
    case 'smtp-recipient-mx': return a.domain.startsWith('[')
      ? { type: 'smtp', host: addressLiteralHost(a.domain), port: spec.port, mx: false }
      : { type: 'smtp', domain: a.domain, port: spec.port, mx: true };
    case 'lmtp': return { type: 'lmtp', host: spec.host, port: spec.port };
    case 'error': return { type: 'error', message: spec.message };
    case 'maildir': {
      const mailbox = await mailboxOf(source, a);
      return mailbox
        ? maildirRoute(mailbox)
        : { type: 'error', message: `5.1.1 <${a.address}>: unknown user (the transport map says maildir, but there is no mailbox for it)` };
    }
  }
}

/** "[192.0.2.1]" or "[ipv6:2001:db8::1]" → the IP text. */
function addressLiteralHost(domain: string): string {
  return domain.slice(1, -1).replace(/^ipv6:/, '');
}
