/**
 * node/wiring.ts — build the parts of a node that both `tandem start` and `tandem config check`
 * need from the config, in one place: the router (tables, or directory with tables), the relay
 * networks, the password table and the channel options.
 *
 * Reads config keys: tables.*, local.*, relay.*, directory.*, smtp.auth_passwords, node.hostname,
 * delivery.*.
 * With a directory: section createRouter returns a DirectoryRouter over the directory and the
 * tables together (tables first, see router/directory/directory-router.ts); it does not contact
 * the directory, so a node starts while the directory is down (lookups then answer 451).
 */
import { directorySite, type TandemConfig } from '../config/schema.ts';
import { readFile } from 'node:fs/promises';
import { TableRouter, NetworkList, loadNetworkTable, PasswordTable } from '../router/index.ts';
import { DirectoryRouter, DirectorySource, DirectoryPool, type DirectoryPoolOptions } from '../router/directory/index.ts';
import type { Router } from '../router/types.ts';
import type { DirectoryDkimLookup } from '../receiver/index.ts';
import type { ChannelSetOptions } from '../channels/index.ts';
import { ownerLookup } from '../channels/maildir-owner.ts';

type Warn = (msg: string, fields?: object) => void;

/** Callbacks for directory metrics and logs. */
export type DirectoryHooks = Pick<DirectoryPoolOptions, 'onRequest' | 'onStateChange'>;

/** The table router, or with directory: configured the directory router (tables first). */
export async function createRouter(c: TandemConfig, warn?: Warn, hooks: DirectoryHooks = {}): Promise<Router> {
  const tables = await createTableRouter(c, warn);
  if (!c.directory) return tables;
  const pool = await createDirectoryPool(c, hooks);
  const directory = new DirectorySource({
    pool,
    baseDn: c.directory.base_dn,
    maildirRoot: c.local.maildir_root,
    maxTargets: c.local.max_alias_expansion,
    cache: { ttlMs: c.directory.cache_ttl, negativeTtlMs: c.directory.negative_cache_ttl, maxStaleMs: c.directory.max_stale, maxEntries: c.directory.cache_max_entries },
    warn: warn ?? ((msg) => process.emitWarning(msg)),
  });
  return new DirectoryRouter(pool, directory, tables.resolverOptions(), tables);
}

/** The directory's DKIM key entries by domain, for a router with a directory (receiver/dkim-keys.ts). */
export function directoryDkimLookup(router: Router): DirectoryDkimLookup | undefined {
  return router instanceof DirectoryRouter ? (domain) => router.directory.dkimEntry(domain) : undefined;
}

/** A pool over directory.servers (throws if no directory: section or the password file is unreadable). */
export async function createDirectoryPool(c: TandemConfig, hooks: DirectoryHooks = {}): Promise<DirectoryPool> {
  const d = c.directory;
  if (!d) throw new Error('the configuration has no directory: section');
  let bindPassword = d.bind_password;
  if (d.bind_password_file) {
    try {
      bindPassword = (await readFile(d.bind_password_file, 'utf8')).replace(/\r?\n$/, '');
    } catch (err) {
      throw new Error(`directory.bind_password_file: cannot read ${d.bind_password_file}: ${(err as Error).message}`);
    }
  }
  const site = directorySite(c);
  return new DirectoryPool({
    servers: d.servers,
    ...(site !== undefined ? { site } : {}),
    ...(d.bind_dn !== undefined ? { bindDn: d.bind_dn } : {}),
    ...(bindPassword !== undefined ? { bindPassword } : {}),
    connectTimeoutMs: d.connect_timeout,
    operationTimeoutMs: d.operation_timeout,
    backoffMs: d.server_backoff,
    ...hooks,
  });
}

function createTableRouter(c: TandemConfig, warn?: Warn): Promise<TableRouter> {
  return TableRouter.create({
    tables: c.tables,
    localDomains: c.local.domains,
    relayDomains: c.relay.domains,
    maildirRoot: c.local.maildir_root,
    maxExpansion: c.local.max_alias_expansion,
    maxDepth: c.local.max_alias_depth,
    ...(c.relay.host ? { relayHost: c.relay.host } : {}),
    ...(warn ? { warn } : {}),
  });
}

/** relay.networks plus the keys of tables.relay_networks. */
export async function loadRelayNetworks(c: TandemConfig): Promise<NetworkList> {
  const entries = [...c.relay.networks];
  if (c.tables.relay_networks) entries.push(...(await loadNetworkTable(c.tables.relay_networks)));
  return NetworkList.parse(entries, 'relay.networks');
}

export async function loadPasswords(c: TandemConfig): Promise<PasswordTable | undefined> {
  return c.smtp.auth_passwords ? PasswordTable.load(c.smtp.auth_passwords) : undefined;
}

export function channelOptions(c: TandemConfig): ChannelSetOptions {
  return {
    heloName: c.node.hostname,
    connectTimeout: c.delivery.connect_timeout,
    commandTimeout: c.delivery.command_timeout,
    requireTls: c.delivery.tls_security_level !== 'may',
    tlsRejectUnauthorized: c.delivery.tls_security_level === 'verify',
    ...(Object.keys(c.local.maildir_owners).length > 0 ? { maildir: { owners: ownerLookup(c.local.maildir_owners) } } : {}),
  };
}
