/**
 * router/tables/address.ts — split and normalise mail addresses for table lookups.
 *
 * Addresses are lower-cased as a whole. XXX: RFC 5321 says local parts may be case-sensitive;
 * like most sites (and Postfix lookups) we treat them case-insensitively, so "Bob@x" and "bob@x"
 * are the same mailbox. The split is at the last '@' so quoted local parts with '@' survive.
 * `base` is the address without "+detail" (Postfix recipient_delimiter = '+'); it is undefined
 * when there is no detail or the local part would be empty ("+x@d").
 * What can go wrong: parseAddress returns undefined for text that is not local@domain.
 * Config keys: none.
 */

const RECIPIENT_DELIMITER = '+';

export interface ParsedAddress {
  /** The whole address, lower-cased, trailing dot of the domain removed. */
  address: string;
  local: string;
  domain: string;
  /** local part without +detail, or undefined. */
  baseLocal?: string;
  /** address without +detail, or undefined. */
  base?: string;
}

/** Lower-case a domain and drop one trailing dot. */
export function normalizeDomain(domain: string): string {
  return domain.trim().toLowerCase().replace(/\.$/, '');
}

/** Parse "local@domain"; undefined if either part is empty or the text has whitespace. */
export function parseAddress(text: string): ParsedAddress | undefined {
  const trimmed = text.trim().replace(/^<(.*)>$/, '$1');
  const at = trimmed.lastIndexOf('@');
  if (at <= 0 || at === trimmed.length - 1 || /\s/.test(trimmed)) return undefined;
  const local = trimmed.slice(0, at).toLowerCase();
  const domain = normalizeDomain(trimmed.slice(at + 1));
  if (domain === '') return undefined;
  const address = `${local}@${domain}`;
  const plus = local.indexOf(RECIPIENT_DELIMITER);
  if (plus > 0) {
    const baseLocal = local.slice(0, plus);
    return { address, local, domain, baseLocal, base: `${baseLocal}@${domain}` };
  }
  return { address, local, domain };
}
