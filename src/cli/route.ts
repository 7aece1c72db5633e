/**
 * cli/route.ts — `tandem route ADDRESS… [--client IP] [--json]`: how addresses resolve, as the
 * node would at RCPT time and at delivery, without sending mail (as `postmap -q`): ours, relayed
 * or unknown; alias and list expansion; the transport and next hop of each final address; and,
 * with --client, whether that client may relay (relay.networks and tables.relay_networks).
 *
 * Exit codes: 0 every address is accepted; 1 one is refused (unknown user, bad alias, relaying
 * denied for --client); 75 a lookup cannot be answered now (directory down); 78 config error.
 */
import { createRouter, loadRelayNetworks } from '../node/wiring.ts';
import { routeKey, type Route } from '../router/types.ts';
import { ConfigError, TempLookupError } from '../util/errors.ts';
import { EXIT } from './exit-codes.ts';
import { loadCliConfig, type CliConfigOptions } from './cli-config.ts';

function describe(route: Route): string {
  switch (route.type) {
    case 'maildir': return `maildir ${route.path}`;
    case 'lmtp': return `lmtp ${route.host}:${route.port}`;
    case 'error': return `refused by the transport table: ${route.message}`;
    case 'smtp': return route.mx ? `smtp by MX of ${route.domain} (port ${route.port})` : `smtp to [${route.host}]:${route.port}`;
  }
}

export async function runRoute(addresses: string[], opts: CliConfigOptions & { client?: string; json?: boolean }): Promise<number> {
  let router;
  let networks;
  try {
    const c = await loadCliConfig(opts);
    router = await createRouter(c);
    networks = await loadRelayNetworks(c);
  } catch (err) {
    console.error(`tandem route: ${err instanceof ConfigError ? 'configuration error in ' : ''}${(err as Error).message}`);
    return EXIT.CONFIG;
  }
  let code: number = EXIT.OK;
  const out: unknown[] = [];
  try {
    for (const address of addresses) {
      try {
        const r = await router.resolveRecipient(address);
        const mayRelay = opts.client === undefined ? undefined : networks.contains(opts.client);
        const finals = r.type === 'local' || r.type === 'relay' ? r.addresses : [];
        const routes = [];
        for (const a of finals) {
          const route = await router.routeAddress(a);
          routes.push({ address: a, route, nexthop: routeKey(route), text: describe(route) });
        }
        const refused = r.type === 'unknown-user' || r.type === 'invalid' || (r.type === 'relay' && r.authorizedOnly && mayRelay === false) || routes.some((x) => x.route.type === 'error');
        if (refused) code = EXIT.FAILED;
        out.push({ address, resolution: r, routes, ...(mayRelay !== undefined ? { client: opts.client, mayRelay } : {}), accepted: !refused });
        if (opts.json) continue;
        const head = r.type === 'local' ? 'local domain: accepted'
          : r.type === 'relay' ? (r.authorizedOnly ? `not our domain: relayed only for clients in relay networks or authenticated${mayRelay === undefined ? '' : mayRelay ? ` (client ${opts.client} may relay)` : ` (client ${opts.client} may NOT relay: 554 relay denied)`}` : 'relay domain: accepted and relayed')
            : r.type === 'unknown-user' ? 'local domain, no such user: 550 refused at RCPT'
              : `refused at RCPT: ${r.reason}`;
        console.log(`${address}: ${head}`);
        for (const x of routes) console.log(`  ${x.address === address ? '' : `→ ${x.address}  `}${x.text}  (next hop ${x.nexthop})`);
      } catch (err) {
        if (!(err instanceof TempLookupError)) throw err;
        code = EXIT.TEMPFAIL;
        out.push({ address, error: err.message });
        if (!opts.json) console.log(`${address}: cannot be looked up now (451 at RCPT): ${err.message}`);
      }
    }
  } finally {
    if ('close' in router) await router.close();
  }
  if (opts.json) console.log(JSON.stringify(out, null, 2));
  return code;
}
