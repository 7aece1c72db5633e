/**
 * receiver/sender-auth.ts — sender authentication of inbound mail (SPF, DKIM, DMARC, ARC with
 * mailauth) and DKIM signing of outbound mail, plus the DNS resolver both use.
 *
 * Verification (policy per listener, config sender_auth.policy / smtp.listeners[].sender_auth):
 *  - record: mailauth's Authentication-Results (and Received-SPF) header goes on top of the
 *    message; the message is accepted whatever the results.
 *  - enforce: as record, and DMARC fail with p=reject → 550 5.7.1; with p=quarantine → the
 *    message is queued on hold (`tandem queue release` lets it go); a DMARC fail that rests on
 *    a DNS failure (SPF or DKIM temperror), or a DMARC temperror → 451 4.4.3: a DNS failure is
 *    never a 5xx.
 * Authentication-Results fields that already carry our authserv-id (node.hostname) are
 * removed from the message first (RFC 8601 §5): a sender cannot forge our verdict.
 * DNS: node's dns Resolver (the system's servers, or sender_auth.dns_servers) with a timeout
 * and one try, and a small cache (answers and NXDOMAIN/NODATA for dns_cache_ttl, at most
 * dns_cache_entries; a failure is not cached). A timeout or SERVFAIL surfaces in mailauth's
 * results as temperror.
 * Signing: a message from a trusted client (authenticated, or from relay.networks) whose From:
 * domain has a key (dkim-keys.ts: dkim.keys, or the directory with dkim.directory) gets a
 * DKIM-Signature (rsa-sha256 or ed25519, relaxed/relaxed, mailauth's default header list) on
 * top.
 * mailauth is imported on first use: it is large (~0.7 s of CPU to load), and a node without
 * sender authentication or signing never needs it.
 */
import { Resolver } from 'node:dns/promises';
import { SmtpReplyError } from '../util/errors.ts';
import { findHeader } from '../util/message-headers.ts';
import type { DkimKeys, SigningKey } from './dkim-keys.ts';

export type SenderAuthPolicy = 'off' | 'record' | 'enforce';

export interface SenderAuthVerdict {
  /** Header fields to put on top of the message (CRLF-terminated). */
  headers: string;
  /** Queue the message on hold (DMARC quarantine under enforce). */
  hold: boolean;
  /** Short form for logs: "spf=pass dkim=fail dmarc=fail (p=reject)". */
  summary: string;
}

type Answer = { expires: number; value?: unknown; error?: NodeJS.ErrnoException };
const NEGATIVE = new Set(['ENOTFOUND', 'ENODATA']);

/** mailauth's resolver(name, rrtype) over node's Resolver, with a timeout and a small cache. */
export class CachingResolver {
  private readonly resolver: Resolver;
  private readonly cache = new Map<string, Answer>();

  constructor(private readonly o: { servers?: string[]; timeoutMs: number; ttlMs: number; maxEntries: number }) {
    this.resolver = new Resolver({ timeout: o.timeoutMs, tries: 1 });
    if (o.servers?.length) this.resolver.setServers(o.servers);
  }

  readonly resolve = async (name: string, rrtype: string): Promise<any> => {
    const key = `${rrtype} ${name.toLowerCase()}`;
    const hit = this.cache.get(key);
    if (hit && hit.expires > Date.now()) {
      if (hit.error) throw hit.error;
      return hit.value;
    }
    try {
      const value = await this.resolver.resolve(name, rrtype as 'TXT');
      this.remember(key, { expires: Date.now() + this.o.ttlMs, value });
      return value;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code && NEGATIVE.has(e.code)) this.remember(key, { expires: Date.now() + this.o.ttlMs, error: e });
      throw err;
    }
  };

  private remember(key: string, a: Answer): void {
    if (this.cache.size >= this.o.maxEntries) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, a);
  }
}

/** The domain of the (first) From: address, lower-cased. */
export function fromDomain(headers: string): string | undefined {
  const from = findHeader(headers, 'From');
  const m = from && /@([A-Za-z0-9.-]+)\s*>?\s*(?:,|$|\))/.exec(from);
  return m?.[1]?.toLowerCase();
}

/** Remove Authentication-Results fields carrying our authserv-id (with their continuation lines). */
export function withoutOurAuthResults(head: Buffer, authservId: string): Buffer {
  const text = head.toString('latin1');
  const lines = text.split(/(?<=\n)/);
  const out: string[] = [];
  let dropping = false;
  const ours = new RegExp(`^Authentication-Results:\\s*${authservId.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s*(;|$)`, 'i');
  for (const line of lines) {
    if (line[0] === ' ' || line[0] === '\t') {
      if (!dropping) out.push(line);
      continue;
    }
    dropping = ours.test(line);
    if (!dropping) out.push(line);
  }
  return out.length === lines.length ? head : Buffer.from(out.join(''), 'latin1');
}

export class SenderAuth {
  constructor(private readonly o: { hostname: string; resolver: CachingResolver; dkim: DkimKeys }) {}

  /** Could a trusted client's message be signed (then it is held whole until the end of DATA)? */
  get signs(): boolean {
    return this.o.dkim.any;
  }

  /** The signing key of a From: domain (dkim-keys.ts); throws TempLookupError when it cannot be known now. */
  signingKey(domain: string): Promise<SigningKey | undefined> {
    return this.o.dkim.keyFor(domain);
  }

  /** DKIM-Signature header field(s) for `message` (whole, as it will be queued). */
  async sign(message: Buffer, domain: string, key: SigningKey): Promise<string> {
    const { dkimSign } = await import('mailauth');
    const res = await dkimSign(message, { canonicalization: 'relaxed/relaxed', signatureData: [{ signingDomain: domain, selector: key.selector, privateKey: key.privateKey }] } as any);
    if (res.errors.length) throw new Error(`DKIM signing for ${domain} failed: ${res.errors.map((e) => e.message).join('; ')}`);
    return res.signatures;
  }

  /** Verify SPF, DKIM, DMARC and ARC; throws the SMTP reply under `enforce` when refused. */
  async verify(message: Buffer, ctx: { ip: string; helo: string; sender: string }, policy: 'record' | 'enforce'): Promise<SenderAuthVerdict> {
    const { authenticate } = await import('mailauth');
    const r = await authenticate(message, {
      ip: ctx.ip, helo: ctx.helo, sender: ctx.sender, mta: this.o.hostname, resolver: this.o.resolver.resolve, disableBimi: true, trustReceived: false,
    } as any);
    const spf = r.spf ? r.spf.status.result : 'none';
    const dkims = (r.dkim?.results ?? []).map((d: any) => d.status.result as string);
    const dmarc = r.dmarc ? r.dmarc.status.result : 'none';
    const p = r.dmarc ? (r.dmarc as any).policy as string : undefined;
    const summary = `spf=${spf} dkim=${dkims.join(',') || 'none'} dmarc=${dmarc}${p ? ` (p=${p})` : ''}`;
    const headers = r.headers.replace(/\r?\n/g, '\r\n');
    if (policy === 'record') return { headers, hold: false, summary };
    const dnsTrouble = spf === 'temperror' || dkims.some((x) => x === 'temperror') || dmarc === 'temperror';
    if (dmarc === 'temperror' || (dmarc === 'fail' && dnsTrouble && p !== 'none')) {
      throw new SmtpReplyError(451, '4.4.3', `Error: sender authentication could not be completed (DNS failure: ${summary}); try again later`);
    }
    if (dmarc === 'fail' && p === 'reject') {
      throw new SmtpReplyError(550, '5.7.1', `Error: message rejected by the DMARC policy of the From: domain (${summary})`);
    }
    return { headers, hold: dmarc === 'fail' && p === 'quarantine', summary };
  }
}
