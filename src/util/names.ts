/**
 * util/names.ts — the syntax of names that several parts check: node ids and domain names.
 * One definition each, so the config, the spool, the tables and the directory agree.
 */

/** A node id: 1 to 32 of a-z, 0-9, "_" and "-", starting with a letter or digit (also a folder name, and the end of every queue id). */
export const NODE_ID = '[a-z0-9][a-z0-9_-]{0,31}';
export const NODE_ID_PATTERN = new RegExp(`^${NODE_ID}$`);
export const NODE_ID_RULE = 'node ids are 1-32 characters: a-z, 0-9, "_" and "-", starting with a letter or digit';

/** A domain name in lower case: dot-separated labels of a-z, 0-9, "_" and "-" ("-" not at either end of a label). */
export const DOMAIN = '[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*';
export const DOMAIN_PATTERN = new RegExp(`^${DOMAIN}$`);
/** A domain, or ".domain" for its subdomains (Postfix table style). */
export const DOMAIN_OR_SUBDOMAINS_PATTERN = new RegExp(`^\\.?${DOMAIN}$`);

/** A DKIM selector: one DNS label or several, dotted (the key is published at <selector>._domainkey.<domain>). */
export const DKIM_SELECTOR_PATTERN = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/;
