/**
 * node/wiring.ts — build the parts of a node that both `tandem start` and `tandem config check`
 * need from the config, in one place: the table router, the relay networks, the password table
 * and the channel options.
 *
 * Exports: createRouter, loadRelayNetworks, loadPasswords, channelOptions.
 * Reads config keys: tables.*, local.*, relay.*, smtp.auth_passwords, node.hostname, delivery.*.
 */
import type { TandemConfig } from '../config/schema.ts';
import { TableRouter, NetworkList, loadNetworkTable, PasswordTable } from '../router/index.ts';
import type { ChannelSetOptions } from '../channels/index.ts';

type Warn = (msg: string, fields?: object) => void;

export function createRouter(c: TandemConfig, warn?: Warn): Promise<TableRouter> {
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
  };
}
