/**
 * cli/track-command.ts — `tandem track`: where is a message? Searches the tracking index of
 * every node of the cluster and prints one timeline per message.
 *
 *   tandem track [--from ADDR|DOMAIN] [--to ADDR|DOMAIN] [--queue-id ID] [--message-id ID]
 *                [--outcome EVENT] [--since 1h|ISO] [--until …] [--limit N]
 *                (--config FILE | --admin URL) [--token T] [--json]
 *
 * The search is the admin API's GET /track?scope=cluster (track/track-routes.ts), asked of
 * --admin, or of the first node of the config's cluster.nodes (else its admin.listen) that
 * answers; that node asks the others and merges. A node that did not answer is named on stderr.
 * Exit codes: 0 (also when nothing matched: the output says so); 1 the query was refused (bad
 * time, unknown outcome); 2 usage or a refused token; 69 no node reachable; 78 configuration error.
 */
import { readFileSync } from 'node:fs';
import { loadConfig } from '../config/load.ts';
import { ConfigError } from '../util/errors.ts';
import { EXIT } from './exit-codes.ts';
import { adminBase } from './admin-client.ts';
import { httpJson } from '../util/http-json.ts';
import type { ClusterTrackResult } from '../track/search.ts';

interface TrackOpts {
  from?: string; to?: string; queueId?: string; messageId?: string; outcome?: string; since?: string; until?: string; limit?: string;
  config?: string; admin?: string; token?: string; json?: boolean;
}

export async function runTrackCommand(opts: TrackOpts): Promise<number> {
  let bases: string[] = [];
  let token = opts.token ?? process.env.TANDEM_ADMIN_TOKEN;
  let ca: Buffer | undefined;
  if (opts.admin) bases = [adminBase(opts.admin)];
  else if (opts.config) {
    try {
      const c = await loadConfig(opts.config);
      const scheme = c.admin.tls ? 'https' : 'http';
      const addrs = c.cluster ? c.cluster.nodes.map((n) => n.admin).filter((a) => a !== undefined) : c.admin.listen ? [c.admin.listen] : [];
      bases = addrs.map((a) => adminBase(a).replace(/^http:/, `${scheme}:`));
      token ??= c.admin.token;
      if (c.admin.tls?.ca) ca = readFileSync(c.admin.tls.ca);
    } catch (err) {
      if (err instanceof ConfigError) { console.error(`tandem track: configuration error in ${err.message}`); return EXIT.CONFIG; }
      throw err;
    }
    if (bases.length === 0) { console.error(`tandem track: ${opts.config} names no admin address (admin.listen, or cluster.nodes[].admin)`); return EXIT.CONFIG; }
  } else {
    console.error('tandem track: say where to search: --config FILE (every node of its cluster) or --admin HOST:PORT');
    return EXIT.USAGE;
  }
  const params = new URLSearchParams({ scope: 'cluster' });
  for (const [k, v] of Object.entries({ from: opts.from, to: opts.to, queueId: opts.queueId, messageId: opts.messageId, outcome: opts.outcome, since: opts.since, until: opts.until, limit: opts.limit })) {
    if (v) params.set(k, v);
  }
  const errors: string[] = [];
  for (const base of bases) {
    const r = await httpJson(`${base}/track?${params}`, { ...(token ? { token } : {}), ...(ca ? { ca } : {}), timeoutMs: 15_000 });
    if (!r.ok) { errors.push(`${base}: ${r.error}`); continue; }
    if (r.status === 401 || r.status === 403) { console.error(`tandem track: ${r.body?.error ?? `HTTP ${r.status}`}`); return EXIT.USAGE; }
    if (r.status === 400 || r.status === 404) { console.error(`tandem track: ${r.body?.error ?? `HTTP ${r.status}`}`); return EXIT.FAILED; }
    if (r.status !== 200) { errors.push(`${base}: HTTP ${r.status}`); continue; }
    const result = r.body as ClusterTrackResult;
    for (const [n, st] of Object.entries(result.nodes)) if (st !== 'ok') console.error(`tandem track: node ${n} did not answer (${st}); its events are missing`);
    if (opts.json) { console.log(JSON.stringify(result, null, 2)); return EXIT.OK; }
    if (result.messages.length === 0) console.log('no message matched');
    for (const m of result.messages) {
      console.log(`${m.queueId}  ${m.status}  from ${m.sender === '' ? '<>' : m.sender ?? '?'} to ${m.recipients.join(', ') || '?'}${m.messageId ? `  ${m.messageId}` : ''}`);
      for (const e of m.events) {
        const who = `${e.node}${e.secondary ? ` (secondary for ${e.secondary})` : ''}`;
        const what = [e.recipient, Array.isArray(e.recipients) ? (e.recipients as string[]).join(',') : undefined, e.nexthop ? `via ${e.nexthop}` : undefined,
          !e.queueId && e.spool ? `spool ${e.spool} epoch ${e.epoch}` : undefined, e.reply ?? e.reason].filter(Boolean).join('  ');
        console.log(`  ${e.t}  ${e.event.padEnd(9)} ${who.padEnd(6)} ${what}`);
      }
    }
    return EXIT.OK;
  }
  console.error(`tandem track: no node answered: ${errors.join('; ')}`);
  return EXIT.UNAVAILABLE;
}
